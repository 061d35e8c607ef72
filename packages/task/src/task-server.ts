// Serves a TaskService over ttrpc under both wire names: containerd 1.6/1.7 (and 2.x with version 2) call
// containerd.task.v2.Task, containerd 2.x with a version-3 endpoint calls containerd.task.v3.Task.
import { task } from '@kuasar/api';
import type { CallContext, ServiceImplementation, TtrpcServer } from '@kuasar/ttrpc';
import type { TaskService } from './task-service';

export function taskImplementation(s: TaskService): ServiceImplementation<typeof task.TaskV3Definition> {
  return {
    state: (r, ctx: CallContext) => s.state(r, ctx),
    create: (r, ctx: CallContext) => s.create(r, ctx),
    start: (r, ctx: CallContext) => s.start(r, ctx),
    delete: (r, ctx: CallContext) => s.delete(r, ctx),
    pids: (r, ctx: CallContext) => s.pids(r, ctx),
    pause: (r, ctx: CallContext) => s.pause(r, ctx),
    resume: (r, ctx: CallContext) => s.resume(r, ctx),
    checkpoint: (r, ctx: CallContext) => s.checkpoint(r, ctx),
    kill: (r, ctx: CallContext) => s.kill(r, ctx),
    exec: (r, ctx: CallContext) => s.exec(r, ctx),
    resizePty: (r, ctx: CallContext) => s.resizePty(r, ctx),
    closeIO: (r, ctx: CallContext) => s.closeIO(r, ctx),
    update: (r, ctx: CallContext) => s.update(r, ctx),
    wait: (r, ctx: CallContext) => s.wait(r, ctx),
    stats: (r, ctx: CallContext) => s.stats(r, ctx),
    connect: (r, ctx: CallContext) => s.connect(r, ctx),
    shutdown: (r, ctx: CallContext) => s.shutdown(r, ctx),
  };
}

/** Register `service` as containerd.task.v2.Task and containerd.task.v3.Task. */
export function registerTaskService(server: TtrpcServer, service: TaskService): void {
  const impl = taskImplementation(service);
  server.addService(task.TaskV2Definition, impl);
  server.addService(task.TaskV3Definition, impl);
}
