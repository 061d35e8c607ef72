import { ConfigError, type SandboxerSpec } from '@kuasar/sandbox';
import { EngineOptionsError, RUNC_CONFIG_SCHEMA, engineOptionsFromConfig, type EngineOptions } from './engine-options';
import { EngineSelector } from './engine-select';
import { RuncSandboxer, enginePodTasks, taskServicePodTasks } from './runc-sandboxer';

/**
 * The runc sandboxer binary for the framework: `runSandboxer(runcSandboxerSpec(version))` is all main.ts needs.
 * The framework calls createSandboxer, then createEngine, then createTaskHooks, once each.
 */
export function runcSandboxerSpec(version: string): SandboxerSpec<typeof RUNC_CONFIG_SCHEMA> {
  let sandboxer: RuncSandboxer | undefined;
  let defaults: EngineOptions | undefined;
  const made = (): RuncSandboxer => {
    if (!sandboxer) throw new Error('createSandboxer must run before createEngine/createTaskHooks');
    return sandboxer;
  };
  return {
    kind: 'runc',
    version,
    description: 'Kuasar runc sandboxer: one resident process serving the Sandbox Controller and Task API for runc/crun pods',
    configSchema: RUNC_CONFIG_SCHEMA,
    // containerd 1.6/1.7: CRI's pause task becomes a runc pod like a 2.x one (RuncSandboxer.prepareContainer)
    sandboxFromPauseTask: true,
    createSandboxer(ctx) {
      try {
        defaults = engineOptionsFromConfig(ctx.config);
      } catch (err) {
        if (err instanceof EngineOptionsError) throw new ConfigError(`[runc] ${err.message}`);
        throw err;
      }
      sandboxer = new RuncSandboxer({ logger: ctx.logger, engine: defaults });
      return sandboxer;
    },
    createEngine(ctx) {
      const engine = new EngineSelector({ defaults: defaults!, logger: ctx.logger });
      made().attachTasks(enginePodTasks(engine));
      return engine;
    },
    createTaskHooks() {
      return made().hooks;
    },
    // Through the task core once it exists: exit statuses, task records and events then stay consistent when Stop
    // ends a pod's containers or Shutdown removes the ones containerd lost.
    taskServiceReady(service) {
      made().attachTasks(taskServicePodTasks(service));
    },
  };
}
