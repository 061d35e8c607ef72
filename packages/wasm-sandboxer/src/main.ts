// Entry point of the wasm-sandboxer binary. Until its engine lands (issue 5) it has the framework's command
// line, so flags, help text and packaging are already final, and refuses to serve.
import { buildCommand } from '@kuasar/sandbox';

// Injected by scripts/build-bin.mjs; absent when the source runs unbundled (jest).
declare const __KUASAR_VERSION__: string | undefined;
const version = typeof __KUASAR_VERSION__ === 'string' ? __KUASAR_VERSION__ : '0.0.0-dev';

const program = buildCommand({ kind: 'wasm', version, description: 'Kuasar wasm sandboxer: WebAssembly pods on V8/WASI' })
  .action(() => {
    process.stderr.write('wasm-sandboxer: not implemented yet (issue 5)\n');
    process.exitCode = 2;
  })
  .exitOverride();
try {
  program.parse();
} catch (err) {
  // --help/--version end here with code 0; a bad flag is a usage error (2), as in the served sandboxers.
  process.exitCode = (err as { exitCode?: number }).exitCode === 0 ? 0 : 2;
}
