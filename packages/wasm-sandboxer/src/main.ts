// Entry point of the wasm-sandboxer binary: the framework's CLI with the wasm kind plugged in. The runner's worker
// threads are started from source text (wasm-worker.ts, `eval: true`), so the bundle and the SEA binary need no
// worker file on disk.
import { runSandboxer } from '@kuasar/sandbox';
import { wasmSandboxerSpec } from './sandboxer-spec';

// Injected by scripts/build-bin.mjs; absent when the source runs unbundled (jest).
declare const __KUASAR_VERSION__: string | undefined;
const version = typeof __KUASAR_VERSION__ === 'string' ? __KUASAR_VERSION__ : '0.0.0-dev';

void runSandboxer(wasmSandboxerSpec(version));
