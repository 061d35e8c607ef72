// The pure parts of the agent, for tests on Node. The agent itself (main.ts) runs only in QuickJS.
export * as crun from './crun';
export * as params from './params';
export { networkCommands, parseNetwork } from './network';
export type { NetworkConfig, InterfaceConfig, RouteConfig } from './network';
export { POD_CGROUP, podCgroupWrites, podCgroupLimits } from './pod-cgroup';
