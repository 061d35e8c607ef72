import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import type { Logger } from 'pino';
import { peerCredentials, sdNotify } from '@kuasar/sys';
import { EventPublisher, TaskService, registerTaskService, type Engine, type TaskHooks } from '@kuasar/task';
import type { ServerOptions, TtrpcServer } from '@kuasar/ttrpc';
import {
  LOG_LEVELS,
  loadSandboxerConfig,
  type ConfigOf,
  type ConfigSchema,
  type FrameworkConfig,
  type LogLevel,
  tracesEndpoint,
} from './config';
import { ConfigError, messageOf } from './errors';
import { createLogger } from './logger';
import type { MetricsServer, SandboxerMetrics } from './metrics';
import type { SandboxerTracing } from './tracing';
import { type CallObserver, createObservedTtrpcServer, observeController } from './call-observer';
import type { Sandbox } from './sandbox';
import type { Sandboxer } from './sandboxer';
import { serveController, type ServingSandboxer } from './server';
import { bindPrivate } from './socket';
import { ensureTaskRelay, findTaskRelayBinary, taskRelayArgs } from './task-relay';
import { TaskSandboxes } from './task-sandbox';

export const TASK_SOCKET = 'task.sock';
/** The task API version containerd 2.x needs to call the endpoint directly instead of running a shim. */
export const TASK_API_VERSION = 3;

/** Read access to the framework's sandboxes, for engines and task hooks (e.g. to join a pod's namespaces). */
export interface SandboxLookup {
  get(id: string): Sandbox | undefined;
  list(): Sandbox[];
}

export interface SandboxerContext<S extends ConfigSchema> {
  kind: string;
  /** The kind's own config table ([<kind>] in the config file), defaults applied. */
  config: ConfigOf<S>;
  /** Framework settings after command-line overrides. */
  framework: FrameworkConfig;
  /**
   * State dir: `<dir>/<id>/` per sandbox, `<dir>/tasks/` for the task core, `<dir>/task.sock`. Kind-wide files
   * belong under a name that can never be a sandbox id, e.g. `<dir>/.runc` (ids cannot start with '.').
   */
  dir: string;
  logger: Logger;
  sandboxes: SandboxLookup;
}

/** Everything that distinguishes one sandboxer binary from another. `K` is the kind's own Sandboxer class. */
export interface SandboxerSpec<S extends ConfigSchema = ConfigSchema, K extends Sandboxer = Sandboxer> {
  /** Short name: runc, wasm, quark, vmm. Names the defaults `/run/<kind>-sandboxer.sock`, `/run/kuasar-<kind>`. */
  kind: string;
  version: string;
  description: string;
  /** The kind's config keys with their defaults ([<kind>] table). */
  configSchema: S;
  createSandboxer(ctx: SandboxerContext<S>): K | Promise<K>;
  /** The engine behind the task API; without one, Start returns no task endpoint. */
  createEngine?(ctx: SandboxerContext<S>, sandboxer: K): Engine | Promise<Engine>;
  /** Hooks into the task core (rewrite container specs to join the pod, ...). */
  createTaskHooks?(ctx: SandboxerContext<S>, sandboxer: K): TaskHooks;
  /**
   * containerd 1.6/1.7 (thin shim): make CRI's pause task (`io.kubernetes.cri.container-type=sandbox`) a sandbox of
   * this kind, created and started through the Controller from the pause's spec before the kind's prepareContainer
   * sees the pause, ended by the pause's exit and removed (after the kind's stop, which may then find the pod's main
   * process already gone) when containerd deletes the pause task. See task-sandbox.ts.
   */
  sandboxFromPauseTask?: boolean;
  /** Called once the task core exists and has recovered its containers, before anything is served. */
  taskServiceReady?(service: TaskService, ctx: SandboxerContext<S>, sandboxer: K): void | Promise<void>;
}

export interface CliOptions {
  listen?: string;
  dir?: string;
  config?: string;
  logLevel?: LogLevel;
  /** Prometheus endpoint (host:port or unix socket path); overrides [metrics] listen. */
  metricsListen?: string;
}

/** The one command line of every sandboxer binary. */
export function buildCommand(spec: Pick<SandboxerSpec, 'kind' | 'version' | 'description'>): Command {
  return new Command(`${spec.kind}-sandboxer`)
    .description(spec.description)
    .version(spec.version, '-v, --version', 'print the version and exit')
    .helpOption('-h, --help', 'show this help and exit')
    .option('--listen <socket>', `Controller gRPC unix socket (default: /run/${spec.kind}-sandboxer.sock)`)
    .option('--dir <dir>', `state directory, created 0700 (default: /run/kuasar-${spec.kind})`)
    .option('--config <file>', `TOML config file ([sandboxer] and [${spec.kind}] tables)`)
    .addOption(new Option('--log-level <level>', 'log level (default: info)').choices(LOG_LEVELS))
    .option('--metrics-listen <addr>', 'serve Prometheus /metrics on host:port or a unix socket path (default: off)')
    .showHelpAfterError()
    .allowExcessArguments(false);
}

/** A running sandboxer process: Controller, task server, and the way to stop them. */
export interface RunningSandboxer {
  serving: ServingSandboxer;
  taskServer: TtrpcServer | undefined;
  taskService: TaskService | undefined;
  /** The Prometheus endpoint, when --metrics-listen or [metrics] listen asked for one. */
  metrics: MetricsServer | undefined;
  logger: Logger;
  framework: FrameworkConfig;
  /** Graceful: stop serving and flush logs; sandboxes and containers keep running. */
  close(): Promise<void>;
}

/** Starts a sandboxer from resolved options (no argv, no signals): what runSandboxer does after parsing. */
export async function startSandboxer<S extends ConfigSchema, K extends Sandboxer>(
  spec: SandboxerSpec<S, K>,
  options: CliOptions,
  logger?: Logger,
  /**
   * The task relay program (argv before its `relay` arguments; see task-relay.ts), or how to find it. With it,
   * Start hands containerd the relay's address, so containerd's task connections survive a sandboxer crash; without
   * it, the task socket itself.
   */
  relayCommand?: string[] | (() => string[]),
): Promise<RunningSandboxer> {
  const config = await loadSandboxerConfig(spec.kind, spec.configSchema, options.config);
  const framework: FrameworkConfig = {
    listen: options.listen ?? config.sandboxer.listen,
    dir: options.dir ?? config.sandboxer.dir,
    log_level: options.logLevel ?? config.sandboxer.log_level,
  };
  if (!path.isAbsolute(framework.listen)) throw new ConfigError(`listen socket must be an absolute path, got ${framework.listen}`);
  if (!path.isAbsolute(framework.dir)) throw new ConfigError(`state dir must be an absolute path, got ${framework.dir}`);
  const log = logger ?? createLogger({ level: framework.log_level, kind: spec.kind });
  log.info({ version: spec.version, listen: framework.listen, dir: framework.dir, config: options.config }, 'sandboxer starting');

  await fs.mkdir(framework.dir, { recursive: true, mode: 0o700 });
  await fs.chmod(framework.dir, 0o700);

  let serving: ServingSandboxer | undefined;
  const sandboxes: SandboxLookup = {
    get: (id) => serving?.controller.find(id),
    list: () => serving?.controller.ids().map((id) => serving!.controller.get(id)) ?? [],
  };
  const ctx: SandboxerContext<S> = { kind: spec.kind, config: config.kind, framework, dir: framework.dir, logger: log, sandboxes };
  const sandboxer = await spec.createSandboxer(ctx);

  // Loaded only when asked for: without it no prom-client, no timing wrappers. Listening first makes a taken port
  // fail the start before any socket exists.
  const metricsListen = options.metricsListen ?? config.metrics.listen;
  let metrics: SandboxerMetrics | undefined;
  let metricsServer: MetricsServer | undefined;
  if (metricsListen) {
    const m = await import('./metrics');
    metrics = new m.SandboxerMetrics(spec.kind, () => sandboxes.list().map((s) => s.record.state));
    metricsServer = await m.MetricsServer.listen(metricsListen, metrics, log);
  }
  // Same for tracing: the OpenTelemetry SDK loads only when an endpoint is configured.
  let tracing: SandboxerTracing | undefined;
  const endpoint = tracesEndpoint(config.tracing.endpoint);
  if (endpoint) {
    const t = await import('./tracing');
    tracing = t.SandboxerTracing.start({ kind: spec.kind, endpoint, version: spec.version, logger: log });
  }
  const observers: CallObserver[] = [tracing, metrics].filter((o): o is SandboxerTracing | SandboxerMetrics => o !== undefined);

  // The task server comes up first: Start hands its address out, and containers it recovers belong to pods the
  // controller is about to recover.
  let taskServer: TtrpcServer | undefined;
  let taskService: TaskService | undefined;
  let engine: Engine | undefined;
  let publisher: EventPublisher | undefined;
  const taskSocket = path.join(framework.dir, TASK_SOCKET);
  const taskSandboxes = spec.sandboxFromPauseTask ? new TaskSandboxes(() => serving?.controller, log) : undefined;
  if (spec.createEngine) {
    engine = await spec.createEngine(ctx, sandboxer);
    publisher = new EventPublisher({ logger: log.child({ component: 'events' }) });
    taskService = new TaskService({
      engine,
      publisher,
      logger: log,
      stateDir: framework.dir,
      hooks: taskSandboxes ? taskSandboxes.hooks(spec.createTaskHooks?.(ctx, sandboxer)) : spec.createTaskHooks?.(ctx, sandboxer),
    });
    const recovered = await taskService.recover();
    if (recovered.length > 0) log.info({ containers: recovered }, 'task containers re-adopted');
    await spec.taskServiceReady?.(taskService, ctx, sandboxer);
    const ttrpcOptions: ServerOptions = {
      logger: log.child({ component: 'ttrpc' }),
      socketMode: 0o600,
      // containerd's own rule for shim sockets: only a peer with our uid/gid may call.
      peerCredentials: (socket) => peerCredentials(socket as Parameters<typeof peerCredentials>[0]),
    };
    taskServer = createObservedTtrpcServer(ttrpcOptions, observers);
    registerTaskService(taskServer, taskService);
    const server = taskServer;
    await bindPrivate(taskSocket, () => server.listen(taskSocket));
    log.info({ socket: taskSocket, ttrpcAddress: publisher.address }, 'task server listening');
  }
  let taskAddress = taskSocket;
  if (taskServer && relayCommand) {
    try {
      const program = typeof relayCommand === 'function' ? relayCommand() : relayCommand;
      taskAddress = await ensureTaskRelay(framework.dir, [...program, ...taskRelayArgs(framework.dir, framework.log_level)], log);
    } catch (err) {
      // Without the relay pods still work; only a sandboxer crash then ends containerd's task connections.
      log.error({ err: messageOf(err) }, 'task relay unavailable; handing out the task socket itself');
    }
  }

  try {
    serving = await serveController({
      listen: framework.listen,
      dir: framework.dir,
      sandboxer,
      logger: log,
      taskEndpoint: taskServer
        ? { address: `ttrpc+unix://${taskAddress}`, version: TASK_API_VERSION }
        : { address: '', version: 0 },
    });
  } catch (err) {
    await taskServer?.close(1000);
    taskService?.close();
    await closeKind(engine, sandboxer, log);
    await publisher?.close();
    await metricsServer?.close();
    await tracing?.shutdown().catch(() => undefined);
    throw err;
  }
  const running = serving;
  if (taskSandboxes && taskService) {
    await taskSandboxes.reconcile(taskService).catch((err) => log.error({ err: messageOf(err) }, 'reconciling sandboxes with their tasks failed'));
  }
  observeController(running.controller, observers);

  let closing: Promise<void> | undefined;
  return {
    serving: running,
    taskServer,
    taskService,
    metrics: metricsServer,
    logger: log,
    framework,
    close: () =>
      (closing ??= (async () => {
        log.info('sandboxer stopping; sandboxes keep running');
        await Promise.allSettled([running.close(), taskServer?.close(2000), metricsServer?.close()]);
        taskService?.close();
        await closeKind(engine, sandboxer, log);
        await publisher?.close().catch(() => undefined);
        await tracing?.shutdown().catch((err: unknown) => log.warn({ err: messageOf(err) }, 'tracing: last spans not exported'));
        log.info('sandboxer stopped');
        log.flush();
      })()),
  };
}

/**
 * The engine and the kind's sandboxer release their timers, reapers and listeners once nothing calls them any more
 * (after the servers and the task service closed), so a closed sandboxer leaves no handle behind; pods and
 * containers keep running. A failure is logged: closing must go on.
 */
async function closeKind(engine: Engine | undefined, sandboxer: Sandboxer, log: Logger): Promise<void> {
  for (const [what, x] of [['engine', engine], ['sandboxer', sandboxer]] as const) {
    try {
      await x?.close?.();
    } catch (err) {
      log.warn({ err: messageOf(err), what }, 'closing failed');
    }
  }
}

export interface RunOptions {
  argv?: readonly string[];
  /** Process exit (tests replace it). */
  exit?: (code: number) => void;
  logger?: Logger;
  /** The task relay program (argv before its arguments); default: the thin shim binary, found by findTaskRelayBinary. */
  relayCommand?: string[];
}

/** This process's own executable (a SEA binary) or script (node + a bundle): the relay is looked for next to it. */
function mainFile(): string {
  let sea = false;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    sea = (require('node:sea') as { isSea(): boolean }).isSea();
  } catch {
    sea = false; // node:sea is absent outside a SEA on some builds
  }
  return sea ? process.execPath : process.argv[1]!;
}

/**
 * The main() of every sandboxer binary: parse flags, start, tell systemd READY=1 (and keep its watchdog fed),
 * and on SIGTERM/SIGINT stop serving while leaving every pod running.
 */
export async function runSandboxer<S extends ConfigSchema, K extends Sandboxer>(
  spec: SandboxerSpec<S, K>,
  run: RunOptions = {},
): Promise<RunningSandboxer | undefined> {
  const exit = run.exit ?? ((code: number) => process.exit(code));
  const program = buildCommand(spec);
  let options: CliOptions;
  try {
    program.exitOverride();
    program.parse(run.argv ? [...run.argv] : process.argv, { from: run.argv ? 'user' : 'node' });
    options = program.opts<CliOptions>();
  } catch (err) {
    // --help and --version end here with code 0; bad flags (commander already printed why) with 2, like usage errors.
    exit((err as { exitCode?: number }).exitCode === 0 ? 0 : 2);
    return undefined;
  }

  let running: RunningSandboxer;
  try {
    // Only a real process (argv from the command line) starts a relay; KUASAR_TASK_RELAY=0 turns it off.
    const relay = run.relayCommand ?? (run.argv === undefined && process.env.KUASAR_TASK_RELAY !== '0'
      ? () => [findTaskRelayBinary(spec.kind, { main: mainFile() })]
      : undefined);
    running = await startSandboxer(spec, options, run.logger, relay);
  } catch (err) {
    process.stderr.write(`${spec.kind}-sandboxer: ${messageOf(err)}\n`);
    exit(err instanceof ConfigError ? 2 : 1);
    return undefined;
  }

  const log = running.logger;
  const watchdog = startWatchdog(log);
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'signal received');
    notify(log, 'STOPPING=1');
    if (watchdog) clearInterval(watchdog);
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
    running.close().then(
      () => exit(0),
      (err) => {
        log.error({ err: messageOf(err) }, 'error while stopping');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // Only observes: Node still crashes on an uncaught error (pods survive, the next start recovers them), but the
  // reason lands in the log first.
  process.on('uncaughtExceptionMonitor', (err, origin) => {
    log.fatal({ err: messageOf(err), stack: (err as Error)?.stack, origin }, 'sandboxer crashing');
    log.flush();
  });
  notify(log, 'READY=1');
  log.info({ listen: running.framework.listen }, 'sandboxer ready');
  return running;
}

function notify(log: Logger, state: string): void {
  try {
    sdNotify(state);
  } catch (err) {
    log.warn({ state, err: messageOf(err) }, 'sd_notify failed');
  }
}

/** systemd's watchdog: when $WATCHDOG_USEC is set (for this pid), send WATCHDOG=1 every half period. */
function startWatchdog(log: Logger): NodeJS.Timeout | undefined {
  const usec = Number(process.env.WATCHDOG_USEC);
  const forPid = process.env.WATCHDOG_PID;
  if (!Number.isFinite(usec) || usec <= 0) return undefined;
  if (forPid && Number(forPid) !== process.pid) return undefined;
  const periodMs = Math.max(1, Math.floor(usec / 2000));
  log.info({ periodMs }, 'systemd watchdog enabled');
  const timer = setInterval(() => notify(log, 'WATCHDOG=1'), periodMs);
  timer.unref();
  return timer;
}
