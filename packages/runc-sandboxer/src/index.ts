// @kuasar/runc-sandboxer: namespace pods for runc/crun, served by one resident sandboxer process.
export { RuncSandboxer, taskServicePodTasks, enginePodTasks, CRI_SANDBOX_ID_ANNOTATION, SANDBOX_ID_ANNOTATION } from './runc-sandboxer';
export type { PodMember, PodTasks, RuncSandboxerOptions } from './runc-sandboxer';
export { runcSandboxerSpec } from './sandboxer-spec';
export {
  setUpPodNamespaces,
  tearDownPodNamespaces,
  inspectPodNamespaces,
  readPodNamespaces,
  podNamespaceDir,
  PodNamespaceError,
  DEFAULT_POD_TOOLS,
} from './pod-namespaces';
export type { PodIsolation, PodNamespaceRequest, PodNamespaces, PodNamespaceState, PodTools, NamespaceKind } from './pod-namespaces';
export { rewriteContainerSpec, podSpecContext, podCgroupsPath, defaultCgroupParent, SpecRewriteError } from './spec-rewrite';
export type { OciSpec, OciNamespace, PodSpecContext, PodNamespaceRef } from './spec-rewrite';
export { podSettings, PodSettingsError } from './pod-settings';
export type { PodSettings } from './pod-settings';
export { podMetrics, podCgroupDirs, podCgroupPids, killPodCgroup, removePodCgroup, cgroupfsPath } from './pod-cgroup';
export {
  RUNC_CONFIG_SCHEMA,
  DEFAULT_ENGINE_OPTIONS,
  EngineOptionsError,
  engineOptionsFromAny,
  engineOptionsFromConfig,
  engineOptionsFromHandlerToml,
} from './engine-options';
export type { EngineOptions } from './engine-options';
export { EngineSelector, ENGINE_ANNOTATION, withEngineAnnotation, engineOptionsOfSpec } from './engine-select';
export type { EngineSelectOptions } from './engine-select';
