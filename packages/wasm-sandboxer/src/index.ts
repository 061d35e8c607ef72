export {
  WasmRunnerPool,
  TRAP_EXIT_CODE,
  OOM_EXIT_CODE,
  type WasmRunContext,
  type WasmExit,
  type WasmExitReason,
  type RunningModule,
  type RunnerLogger,
  type WasmRunnerPoolOptions,
} from './wasm-runner';
export { ModuleCache, type CompiledModule } from './module-cache';
export { capMemory, definedMemories, pagesForLimit, WASM_PAGE_BYTES, type MemoryLimits } from './wasm-binary';
export { WasmRunnerError, WasmLoadError, WasmContextError, WasmStartError, WasmPoolClosedError } from './errors';
export { WasmEngine, packWasmMetrics, type WasmEngineOptions, type WasmUsage } from './wasm-engine';
export { WasmSandboxer, CRI_SANDBOX_ID_ANNOTATION, type PodMember } from './wasm-sandboxer';
export { wasmSandboxerSpec, WASM_CONFIG_SCHEMA, type WasmSandboxerSpec } from './sandboxer-spec';
export { resolveInRootfs, resolveModule, RootfsPathError } from './rootfs-path';
