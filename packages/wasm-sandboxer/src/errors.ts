/** Base of every error the wasm runner raises; `code` is stable for callers to branch on. */
export class WasmRunnerError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WasmRunnerError';
    this.code = code;
  }
}

/**
 * The module cannot run here: unreadable file, not a wasm module, a component, imports that WASI preview1 does not
 * provide, no `_start`, or a memory minimum above the container's limit. Maps to a failed create/start.
 */
export class WasmLoadError extends WasmRunnerError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'WasmLoadError';
  }
}

/** The run context is invalid (bad fd, non-absolute path, NUL in an argument, ...). */
export class WasmContextError extends WasmRunnerError {
  constructor(message: string) {
    super('ERR_WASM_CONTEXT', message);
    this.name = 'WasmContextError';
  }
}

/** Instantiation or WASI set-up failed inside the worker (e.g. a preopen directory that does not exist). */
export class WasmStartError extends WasmRunnerError {
  constructor(message: string) {
    super('ERR_WASM_START', message);
    this.name = 'WasmStartError';
  }
}

/** The pool was closed. */
export class WasmPoolClosedError extends WasmRunnerError {
  constructor() {
    super('ERR_WASM_POOL_CLOSED', 'the wasm runner pool is closed');
    this.name = 'WasmPoolClosedError';
  }
}
