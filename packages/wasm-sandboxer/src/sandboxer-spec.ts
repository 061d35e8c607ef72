import { defineConfig, type SandboxerSpec } from '@kuasar/sandbox';
import { WasmEngine } from './wasm-engine';
import { WasmRunnerPool } from './wasm-runner';
import { WasmSandboxer } from './wasm-sandboxer';

const MIB = 1048576;

/** The `[wasm]` table of the sandboxer config file. */
export const WASM_CONFIG_SCHEMA = defineConfig({
  pool_size: {
    type: 'integer', default: 2, min: 0, max: 256,
    description: 'worker threads kept started and idle, so a container start never waits for one',
  },
  max_idle: {
    type: 'integer', default: 8, min: 0, max: 4096,
    description: 'idle workers kept when modules end (at least pool_size); each costs about 6 MiB',
  },
  module_cache_size: {
    type: 'integer', default: 64, min: 1, max: 65536,
    description: 'compiled modules kept (per digest and memory cap), least recently used evicted',
  },
  default_memory_limit_mib: {
    type: 'integer', default: 512, min: 0, max: 4096,
    description: 'linear-memory cap for containers whose spec sets no memory limit (0: none, wasm32 allows 4 GiB)',
  },
});

export interface WasmSandboxerSpec extends SandboxerSpec<typeof WASM_CONFIG_SCHEMA, WasmSandboxer> {
  /** the runner pool, once createSandboxer ran (tests and benchmarks close it) */
  readonly pool: WasmRunnerPool | undefined;
}

/** The wasm sandboxer binary for the framework: `runSandboxer(wasmSandboxerSpec(version))` is all main.ts needs. */
export function wasmSandboxerSpec(version: string): WasmSandboxerSpec {
  let pool: WasmRunnerPool | undefined;
  return {
    kind: 'wasm',
    version,
    description: 'Kuasar wasm sandboxer: WebAssembly pods on V8/WASI, one resident process serving the Sandbox Controller and Task API',
    configSchema: WASM_CONFIG_SCHEMA,
    get pool() {
      return pool;
    },
    createSandboxer(ctx) {
      const c = ctx.config;
      pool = new WasmRunnerPool({
        size: c.pool_size,
        maxIdle: Math.max(c.max_idle, c.pool_size),
        moduleCacheSize: c.module_cache_size,
        logger: ctx.logger.child({ component: 'wasm-runner' }),
      });
      return new WasmSandboxer({ logger: ctx.logger });
    },
    createEngine(ctx, sandboxer) {
      const mib = ctx.config.default_memory_limit_mib;
      const engine = new WasmEngine({ pool: pool!, logger: ctx.logger, defaultMemoryLimitBytes: mib > 0 ? mib * MIB : undefined });
      sandboxer.attachEngine(engine);
      return engine;
    },
    createTaskHooks(_ctx, sandboxer) {
      return sandboxer.hooks;
    },
    taskServiceReady(service, _ctx, sandboxer) {
      sandboxer.attachTasks(service);
    },
  };
}
