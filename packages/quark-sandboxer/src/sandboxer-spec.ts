import * as path from 'node:path';
import { ConfigError, type SandboxerSpec } from '@kuasar/sandbox';
import { taskServicePodTasks } from '@kuasar/runc-sandboxer';
import { QUARK_CONFIG_SCHEMA, detectHost, runscSettings, runscWarnings, type HostFacts } from './config';
import { QuarkEngine, quarkBinary } from './quark-engine';
import { QuarkSandboxer } from './quark-sandboxer';
import { RunscEngine, runscId } from './runsc-engine';
import type { SandboxEngine } from './sandbox-engine';

export interface QuarkSpecOptions {
  /** host facts (tests inject them); default detectHost() */
  host?: HostFacts;
}

/**
 * The quark sandboxer binary for the framework: `runSandboxer(quarkSandboxerSpec(version))` is all main.ts needs.
 * The [quark] table picks the application kernel (gVisor runsc by default, or Quark) and is checked against the
 * host before anything is served.
 */
export function quarkSandboxerSpec(version: string, o: QuarkSpecOptions = {}): SandboxerSpec<typeof QUARK_CONFIG_SCHEMA, QuarkSandboxer> {
  let engine: SandboxEngine | undefined;
  return {
    kind: 'quark',
    version,
    description: 'Kuasar quark sandboxer: application-kernel pods (gVisor runsc; Quark adapter)',
    configSchema: QUARK_CONFIG_SCHEMA,
    createSandboxer(ctx) {
      const c = ctx.config;
      const root = c.root !== '' ? c.root : path.join(ctx.dir, '.runsc');
      if (!path.isAbsolute(root)) throw new ConfigError(`[quark] root must be an absolute path, got ${JSON.stringify(c.root)}`);
      if (!path.isAbsolute(c.pause)) throw new ConfigError(`[quark] pause must be an absolute path, got ${JSON.stringify(c.pause)}`);
      if (c.engine === 'quark') {
        engine = new QuarkEngine({ binary: quarkBinary(c.quark), root: path.join(ctx.dir, '.quark'), logger: ctx.logger });
        return new QuarkSandboxer({ logger: ctx.logger, engine, pause: c.pause });
      }
      const settings = runscSettings(c, o.host ?? detectHost());
      for (const w of runscWarnings(settings.version)) ctx.logger.warn({ runsc: settings.binary }, w);
      ctx.logger.info({ runsc: settings.binary, version: settings.version.text, go: settings.version.go, platform: settings.platform, network: settings.network }, 'gVisor engine');
      engine = new RunscEngine({ binary: settings.binary, globalArgs: settings.globalArgs, root, logger: ctx.logger, exitPollMs: c.exit_poll_ms });
      return new QuarkSandboxer({ logger: ctx.logger, engine, pause: c.pause, runtimeId: runscId });
    },
    createEngine() {
      if (!engine) throw new Error('createSandboxer must run before createEngine');
      return engine;
    },
    createTaskHooks(_ctx, sandboxer) {
      return sandboxer.hooks;
    },
    taskServiceReady(service, _ctx, sandboxer) {
      sandboxer.attachTasks(taskServicePodTasks(service));
    },
  };
}
