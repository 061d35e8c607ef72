// Entry point of the kuasarctl binary. Subcommands are placeholders until the sandboxers expose
// their admin API; the hidden self-test proves a packaged binary can still load native code.
import { Command } from 'commander';

// Injected by scripts/build-bin.mjs; absent when the source runs unbundled (jest, ts-node).
declare const __KUASAR_VERSION__: string | undefined;
const version = typeof __KUASAR_VERSION__ === 'string' ? __KUASAR_VERSION__ : '0.0.0-dev';

function notImplemented(command: string): () => void {
  return () => {
    process.stderr.write(`kuasarctl ${command}: not implemented yet\n`);
    process.exitCode = 2;
  };
}

/**
 * Loads koffi the way every packaged sandboxer will (from the SEA asset when packaged) and makes
 * one real foreign call, so a broken asset or cache shows up here rather than in production.
 */
async function selftestNative(): Promise<void> {
  // Imported on demand: --help and --version must not pay for @kuasar/sys.
  const { loadKoffi } = await import('@kuasar/sys');
  const koffi = loadKoffi();
  const getpid = koffi.load('libc.so.6').func('int getpid()') as () => number;
  const pid = getpid();
  if (pid !== process.pid) throw new Error(`getpid() through koffi returned ${pid}, expected ${process.pid}`);
  process.stdout.write(`ok koffi ${String(koffi.version)}\n`);
}

const program = new Command('kuasarctl')
  .description('Inspect and debug Kuasar sandboxers on this node')
  .version(version);

program.command('list').description('list sandboxes').action(notImplemented('list'));
program.command('inspect <sandbox-id>').description('show one sandbox').action(notImplemented('inspect'));
program.command('check').description('check that this node can run each sandboxer kind').action(notImplemented('check'));
program.command('logs <sandbox-id>').description('print the logs of a sandbox').action(notImplemented('logs'));
program
  .command('exec <sandbox-id> <command...>')
  .description('run a command inside a sandbox')
  .action(notImplemented('exec'));
program.command('__selftest-native', { hidden: true }).action(selftestNative);

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`kuasarctl: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
