// The one place where optional instrumentation (Prometheus metrics, OpenTelemetry traces) hooks into every
// Controller and Task call, so neither the gRPC server nor the task service knows about either.
import { TtrpcServer, type ServerOptions, type StreamHandler, type StreamKind, type UnaryHandler } from '@kuasar/ttrpc';
import type { SandboxController } from './controller';

export type CallApi = 'controller' | 'task';

/** ttrpc request metadata (gRPC Controller calls carry none at this level). */
export type CallMetadata = ReadonlyMap<string, readonly string[]>;

/** Sees every call: `around` runs `call` and returns what it returns (a value or a promise). */
export interface CallObserver {
  around<T>(api: CallApi, method: string, call: () => T, metadata?: CallMetadata): T;
}

/** SandboxController methods as the Controller service names them. */
export const CONTROLLER_METHODS = {
  create: 'Create',
  start: 'Start',
  platform: 'Platform',
  stop: 'Stop',
  wait: 'Wait',
  status: 'Status',
  shutdown: 'Shutdown',
  metrics: 'Metrics',
  update: 'Update',
} as const;

/** Runs `call` through every observer, the first one outermost. */
function chain<T>(observers: readonly CallObserver[], api: CallApi, method: string, call: () => T, metadata?: CallMetadata): T {
  let run = call;
  for (const observer of [...observers].reverse()) {
    const inner = run;
    run = () => observer.around(api, method, inner, metadata);
  }
  return run();
}

/**
 * Wraps the controller's service methods in place. The gRPC server calls these methods on this object by name for
 * each request, so wrapping them here covers every call.
 */
export function observeController(controller: SandboxController, observers: readonly CallObserver[]): void {
  if (observers.length === 0) return;
  const target = controller as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const [key, method] of Object.entries(CONTROLLER_METHODS)) {
    const original = target[key]!.bind(controller);
    target[key] = (...args: unknown[]) => chain(observers, 'controller', method, () => original(...args));
  }
}

/** A ttrpc server whose every registered handler (the task service's, registered later) runs through the observers. */
export function createObservedTtrpcServer(options: ServerOptions, observers: readonly CallObserver[]): TtrpcServer {
  if (observers.length === 0) return new TtrpcServer(options);
  return new (class extends TtrpcServer {
    override register(service: string, method: string, handler: UnaryHandler): this {
      return super.register(service, method, (payload, ctx) => chain(observers, 'task', method, () => handler(payload, ctx), ctx.metadata));
    }
    override registerStream(service: string, method: string, kind: StreamKind, handler: StreamHandler): this {
      return super.registerStream(service, method, kind, (stream, ctx) =>
        chain(observers, 'task', method, () => handler(stream, ctx), ctx.metadata),
      );
    }
  })(options);
}
