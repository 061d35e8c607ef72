// @kuasar/quark-sandboxer: application-kernel pods (gVisor runsc tested; Quark adapter untested).
export { quarkSandboxerSpec } from './sandboxer-spec';
export type { QuarkSpecOptions } from './sandboxer-spec';
export { QuarkSandboxer, sandboxSpec } from './quark-sandboxer';
export type { QuarkSandboxerOptions } from './quark-sandboxer';
export { RunscEngine, POD_ANNOTATION, CRI_CONTAINER_TYPE, CRI_SANDBOX_ID } from './runsc-engine';
export type { RunscEngineOptions } from './runsc-engine';
export { QuarkEngine, QuarkNotInstalledError, quarkBinary } from './quark-engine';
export type { QuarkEngineOptions } from './quark-engine';
export type { SandboxEngine } from './sandbox-engine';
export {
  QUARK_CONFIG_SCHEMA, cachedRunsc, detectHost, goVersionOf, runscSettings, runscVersion, runscWarnings,
} from './config';
export type { HostFacts, QuarkConfig, RunscNetwork, RunscPlatform, RunscSettings, RunscVersion } from './config';
