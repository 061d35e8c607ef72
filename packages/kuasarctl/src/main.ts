// Entry point of the kuasarctl binary: commander wiring only; each command lives in ./commands.
import { Command, Option } from 'commander';
import type { CheckFlags } from './commands/check';
import type { ConfigFlags } from './commands/config';
import type { ExecFlags } from './commands/exec';
import type { LogsFlags } from './commands/logs';
import type { SandboxFlags } from './commands/sandboxes';

// Injected by scripts/build-bin.mjs; absent when the source runs unbundled (jest, ts-node).
declare const __KUASAR_VERSION__: string | undefined;
const version = typeof __KUASAR_VERSION__ === 'string' ? __KUASAR_VERSION__ : '0.0.0-dev';

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Errors we raise on purpose carry their exit code and need no stack; anything else is a bug worth its stack. */
function fatal(err: unknown): void {
  const code = (err as { exitCode?: unknown } | undefined)?.exitCode;
  const known = err instanceof Error && typeof code === 'number';
  process.stderr.write(`kuasarctl: ${known ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = typeof code === 'number' ? code : 1;
}

function run<A extends unknown[]>(action: (...args: A) => number | Promise<number>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      process.exitCode = await action(...args);
    } catch (err) {
      fatal(err);
    }
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

const locationOptions = (cmd: Command): Command =>
  cmd
    .option('--kinds <kinds>', 'only these sandboxer kinds, comma-separated (runc,wasm,quark,vmm)')
    .option('--dir <kind=path>', "state dir of a kind (repeatable; default: the unit's --dir, else /etc/kuasar/<kind>-sandboxer.toml, else /run/kuasar-<kind>)", collect)
    .option('--socket <kind=path>', "Controller socket of a kind (repeatable; default: the unit's --listen, else the config, else /run/<kind>-sandboxer.sock)", collect)
    .option('--offline', 'read the state dirs only; do not ask the sandboxers');

const program = new Command('kuasarctl')
  .description('Inspect and debug Kuasar sandboxers on this node')
  .version(version)
  .showHelpAfterError()
  // `inspect <sandbox-id> [options]`: arguments first, as in each command's own usage line
  .configureHelp({
    subcommandTerm: (cmd) =>
      [
        [cmd.name(), ...cmd.aliases()].join('|'),
        ...cmd.registeredArguments.map((a) => {
          const name = `${a.name()}${a.variadic ? '...' : ''}`;
          return a.required ? `<${name}>` : `[${name}]`;
        }),
        ...(cmd.options.length > 0 ? ['[options]'] : []),
      ].join(' '),
  });

locationOptions(program.command('list').alias('ls').description('list sandboxes of every sandboxer on this node (like crictl pods)'))
  .option('-o, --output <format>', 'table or json', 'table')
  .option('--no-trunc', 'show full sandbox ids')
  .addHelpText('after', '\nExit status: 0 listed (sandboxers that do not answer are noted on stderr; states are then as recorded), 1 an error.')
  .action(run((flags: SandboxFlags) => import('./commands/sandboxes').then((m) => m.listCommand(flags))));

locationOptions(program.command('inspect <sandbox-id>').description('show one sandbox (exact id or unique prefix), its record, live status and containers'))
  .option('-o, --output <format>', 'json or table', 'json')
  .addHelpText('after', '\nExit status: 0 shown, 1 not found, ambiguous, or another error.')
  .action(run((id: string, flags: SandboxFlags) => import('./commands/sandboxes').then((m) => m.inspectCommand(id, flags))));

program
  .command('check')
  .description('diagnose this node: OCI runtimes, KVM, cgroups, capabilities, containerd and its config, sandboxer sockets')
  .option('--kinds <kinds>', 'sandboxer kinds to check (default: those installed here)')
  .option('--containerd-config <path>', "containerd's config file", '/etc/containerd/config.toml')
  .addOption(new Option('--containerd-version <major>', 'containerd major version the config is for (default: from `containerd --version`)'))
  .option('--dir <kind=path>', 'state dir of a kind (repeatable)', collect)
  .option('--socket <kind=path>', 'Controller socket of a kind (repeatable)', collect)
  .option('-o, --output <format>', 'table or json', 'table')
  .addHelpText(
    'after',
    '\nEach finding is ok, warn or fail; every warn/fail comes with a fix.\n' +
      'Exit status: 0 all ok, 1 warnings only (or a usage error), 2 at least one failure.\n' +
      'The fetch-debs cache (runsc, newer containerds) is read from ${KUASAR_CACHE:-/var/cache/kuasar}.',
  )
  .action(run((flags: CheckFlags) => import('./commands/check').then((m) => m.checkCommand(flags))));

const config = program.command('config').description('print or apply configuration for the software around the sandboxers');
config
  .command('containerd')
  .description("print the containerd config that registers sandboxers, or merge it into (or remove it from) a config file")
  .option('--containerd-version <major>', '1 (1.6/1.7: shim v2 runtime), 2 (2.x: sandbox proxy plugin) or auto (containerd on PATH)', 'auto')
  .option('--kinds <kinds>', 'sandboxer kinds, comma-separated or all', 'runc')
  .option('--socket <kind=path>', 'Controller socket of a kind for 2.x proxy plugins (repeatable)', collect)
  .option('--merge <path>', 'append the missing parts to this config (backup first; a second run changes nothing)')
  .option('--unmerge <path>', 'remove the blocks --merge added for these kinds (backup first)')
  .option('--dry-run', 'with --merge/--unmerge: say what would change, write nothing')
  .addHelpText('after', '\nExit status: 0 done (or nothing to do), 1 an error, or a kind left alone because the config defines it differently.')
  .action(run((flags: ConfigFlags) => import('./commands/config').then((m) => m.configContainerdCommand(flags))));

program
  .command('logs <id>')
  .description("print what the sandboxer logged about a sandbox or container (id or unique prefix), from its unit's journal or --file")
  .option('--kinds <kinds>', 'read the journals of these kinds, comma-separated (default: the kinds whose unit is installed)')
  .option('--file <path>', 'read this file of JSON log lines instead (a sandboxer started by hand with 2>>file; repeatable)', collect)
  .option('--journal-dir <dir>', 'read the journal files in this directory (journalctl -D), e.g. copied from another node')
  .option('--since <time>', 'only lines from then on: a time (2026-11-28T21:00:00Z) or a duration back (90s, 10m, 2h, 1d)')
  .option('--tail <n>', 'only the last n lines logged so far')
  .option('-f, --follow', 'keep printing new lines until interrupted')
  .option('-o, --output <format>', 'text or json (the lines as logged, for jq)', 'text')
  .addHelpText(
    'after',
    '\nContainer output (stdout/stderr) is not here: CRI writes it under /var/log/pods (crictl logs).\n' +
      'Exit status: 0 lines printed (or --follow interrupted), 1 no such lines, an ambiguous prefix, or an unreadable log.',
  )
  .action(run((id: string, flags: LogsFlags) => import('./commands/logs').then((m) => m.logsCommand(id, flags))));
program
  .command('exec <sandbox-id> <command...>')
  .description("run a command in a VM (vmm) sandbox's guest, outside its containers, through the agent's debug channel")
  .option('-t, --tty', 'run the command on a terminal (with -i and a local terminal: raw mode, ^C goes to the command)')
  .option('-i, --stdin', 'pass stdin to the command')
  .option('--dir <kind=path>', 'state dir of a kind (repeatable; default as for list)', collect)
  .addHelpText(
    'after',
    '\nPut the command after --: kuasarctl exec <sandbox-id> -it -- sh. The terminal size is sent at start only\n' +
      '(the guest agent cannot resize a debug terminal). Leaving kills the command. For runc, wasm and quark pods use\n' +
      'crictl exec.\nExit status: the command\'s, or 1 when it could not run (unknown or non-VM sandbox, sandboxer not running).',
  )
  .action(run((id: string, command: string[], flags: ExecFlags) => import('./commands/exec').then((m) => m.execCommand(id, command, flags))));
program.command('__selftest-native', { hidden: true }).action(run(async () => (await selftestNative(), 0)));

program.parseAsync().catch(fatal);
