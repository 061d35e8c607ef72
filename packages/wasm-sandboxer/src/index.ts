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
