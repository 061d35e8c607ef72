import * as path from 'node:path';
import { type SandboxerSpec } from '@kuasar/sandbox';
import { DEBUG_SOCKET } from './debug-socket';
import { attachPodNetwork, detachPodNetwork } from './network';
import { VMM_CONFIG_SCHEMA, resolveVmmConfig } from './config';
import { Qemu } from './qemu';
import { VmmEngine } from './vmm-engine';
import { VmmSandboxer, type PodNetwork } from './vmm-sandboxer';

export interface VmmSandboxerSpecOptions {
  /** mirrors CNI pod netns into VMs; default: network.ts (tap + tc mirred per veth) */
  network?: PodNetwork;
}

/**
 * The vmm sandboxer binary for the framework: `runSandboxer(vmmSandboxerSpec(version))` is all main.ts needs.
 * Order matters on a restart: the engine re-attaches to running VMs (preload) before the task core recovers the
 * containers in them, and the task core is ready before the replayed exits are delivered (activate).
 */
export function vmmSandboxerSpec(version: string, o: VmmSandboxerSpecOptions = {}): SandboxerSpec<typeof VMM_CONFIG_SCHEMA, VmmSandboxer> {
  let engine: VmmEngine | undefined;
  return {
    kind: 'vmm',
    version,
    description: 'Kuasar vmm sandboxer: microVM pods on QEMU, one resident process serving the Sandbox Controller and Task API',
    configSchema: VMM_CONFIG_SCHEMA,
    async createSandboxer(ctx) {
      const config = resolveVmmConfig(ctx.config);
      const hypervisor = new Qemu({ config, logger: ctx.logger });
      const log = ctx.logger.child({ component: 'pod-network' });
      const network: PodNetwork = o.network ?? {
        attach: (netnsPath) => attachPodNetwork(netnsPath, { logger: log }),
        detach: (netnsPath) => detachPodNetwork(netnsPath, { logger: log }),
      };
      const sandboxer = new VmmSandboxer({ config, hypervisor, logger: ctx.logger, network });
      await sandboxer.serveDebug(path.join(ctx.dir, DEBUG_SOCKET));
      return sandboxer;
    },
    createEngine(ctx, sandboxer) {
      engine = new VmmEngine({ pods: sandboxer.pods, logger: ctx.logger });
      sandboxer.attachEngine(engine);
      sandboxer.preload(ctx.dir);
      return engine;
    },
    createTaskHooks(_ctx, sandboxer) {
      return sandboxer.hooks;
    },
    taskServiceReady(service, _ctx, sandboxer) {
      sandboxer.attachTasks(service);
      engine?.activate();
    },
  };
}
