import type { Logger } from 'pino';
import { SandboxController, type RecoveryReport, type TaskEndpoint } from './controller';
import { ControllerServer } from './controller-server';
import type { Sandboxer } from './sandboxer';
import { SandboxStore } from './store';

export interface ServeOptions {
  /** Controller gRPC socket path. */
  listen: string;
  /** State dir (created 0700): `<dir>/<id>/sandbox.json`, `<dir>/task.sock`, `<dir>/tasks/`. */
  dir: string;
  sandboxer: Sandboxer;
  logger: Logger;
  /** What Start returns as the task API endpoint. */
  taskEndpoint: TaskEndpoint;
}

/** A serving sandboxer: the recovered controller and its gRPC server. */
export interface ServingSandboxer {
  controller: SandboxController;
  store: SandboxStore;
  server: ControllerServer;
  recovery: RecoveryReport;
  /** Graceful: stop serving, leave every sandbox running. */
  close(): Promise<void>;
}

/**
 * Prepares the state dir, recovers persisted sandboxes, then serves the Controller. Recovery runs before the socket
 * exists so containerd never sees a half-loaded sandboxer.
 */
export async function serveController(opts: ServeOptions): Promise<ServingSandboxer> {
  const store = new SandboxStore(opts.dir);
  await store.init();
  const controller = new SandboxController(opts.sandboxer, store, opts.logger, opts.taskEndpoint);
  const recovery = await controller.recover();
  const server = await ControllerServer.listen(opts.listen, controller, opts.logger);
  return {
    controller,
    store,
    server,
    recovery,
    close: () => server.close(),
  };
}
