// @kuasar/sandbox: the framework every sandboxer binary is built from.
export * from './errors';
export * from './id';
export * from './lock';
export * from './exit';
export * from './store';
export * from './sandbox';
export * from './sandboxer';
export * from './platform';
export * from './config';
export * from './logger';
export * from './socket';
export * from './controller';
export * from './controller-server';
export * from './server';
export * from './cli';
export * from './task-relay';
// Types only: the module itself (and prom-client) is loaded by cli.ts when metrics are asked for.
export type { MetricsAddress, MetricsServer, SandboxerMetrics } from './metrics';
export * from './pod-members';
export * from './pod-stop';
export * from './task-sandbox';
export * from './containerd-view';
export { netnsPathProblem } from './netns';
