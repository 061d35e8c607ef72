// Entry point of the quark-sandboxer binary. Until its engine lands (issue 7) it has the framework's command
// line, so flags, help text and packaging are already final, and refuses to serve.
import { buildCommand } from '@kuasar/sandbox';

// Injected by scripts/build-bin.mjs; absent when the source runs unbundled (jest).
declare const __KUASAR_VERSION__: string | undefined;
const version = typeof __KUASAR_VERSION__ === 'string' ? __KUASAR_VERSION__ : '0.0.0-dev';

const program = buildCommand({ kind: 'quark', version, description: 'Kuasar quark sandboxer: application-kernel pods (gVisor runsc, Quark)' })
  .action(() => {
    process.stderr.write('quark-sandboxer: not implemented yet (issue 7)\n');
    process.exitCode = 2;
  })
  .exitOverride();
try {
  program.parse();
} catch (err) {
  // --help/--version end here with code 0; a bad flag is a usage error (2), as in the served sandboxers.
  process.exitCode = (err as { exitCode?: number }).exitCode === 0 ? 0 : 2;
}
