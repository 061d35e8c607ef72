// Placeholder entry point of the quark-sandboxer binary: the real CLI comes from @kuasar/sandbox.
// It already carries the final flags so packaging, help text and the binary tests stay stable.
import { Command } from 'commander';

// Injected by scripts/build-bin.mjs; absent when the source runs unbundled (jest, ts-node).
declare const __KUASAR_VERSION__: string | undefined;
const version = typeof __KUASAR_VERSION__ === 'string' ? __KUASAR_VERSION__ : '0.0.0-dev';

const program = new Command('quark-sandboxer')
  .description('Kuasar quark sandboxer: serves the containerd Sandbox Controller and Task API for quark pods')
  .version(version)
  .option('--listen <socket>', 'unix socket to serve on', '/run/quark-sandboxer.sock')
  .option('--dir <dir>', 'state directory', '/run/kuasar-quark')
  .option('--config <file>', 'configuration file')
  .option('--log-level <level>', 'log level (trace, debug, info, warn, error)', 'info')
  .action(() => {
    process.stderr.write('quark-sandboxer: not implemented yet\n');
    process.exitCode = 2;
  });

program.parse();
