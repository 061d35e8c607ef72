import * as grpc from '@grpc/grpc-js';
import { sandboxApi, timestampFromDate } from '@kuasar/api';
import type { Logger } from 'pino';
import type { SandboxController } from './controller';
import { StatusCode, UnavailableError, messageOf, statusCodeOf } from './errors';
import { bindPrivate, prepareSocketPath } from './socket';

const CLOSE_GRACE_MS = 2000;

/** The gRPC `containerd.services.sandbox.v1.Controller` service on a unix socket, backed by a SandboxController. */
export class ControllerServer {
  private readonly waits = new Set<AbortController>();

  private constructor(
    private readonly server: grpc.Server,
    readonly socketPath: string,
    private readonly logger: Logger,
  ) {}

  static async listen(socketPath: string, controller: SandboxController, logger: Logger): Promise<ControllerServer> {
    await prepareSocketPath(socketPath);
    const server = new grpc.Server();
    const self = new ControllerServer(server, socketPath, logger);
    server.addService(sandboxApi.ControllerService, self.handlers(controller));
    await bindPrivate(socketPath, () =>
      new Promise<number>((resolve, reject) =>
        server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
          err ? reject(err) : resolve(port),
        ),
      ),
    );
    logger.info({ socket: socketPath }, 'controller listening');
    return self;
  }

  /**
   * Stops serving. Pending Waits get UNAVAILABLE (containerd retries those with backoff, so a restarted sandboxer
   * picks them up); other calls get a short grace. Sandboxes are not touched.
   */
  async close(): Promise<void> {
    for (const ac of this.waits) ac.abort(new UnavailableError('sandboxer is shutting down'));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, CLOSE_GRACE_MS);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.logger.info({ socket: this.socketPath }, 'controller closed');
  }

  /** Drops the listener and every connection at once, as a crash would (tests). */
  kill(): void {
    this.server.forceShutdown();
  }

  private handlers(c: SandboxController): sandboxApi.ControllerServer {
    const unary = <Req, Res>(
      method: string,
      fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
    ): grpc.handleUnaryCall<Req, Res> => {
      return (call, callback) => {
        const id = (call.request as { sandboxId?: string }).sandboxId;
        this.logger.debug({ method, sandbox: id }, 'controller call');
        fn(call.request, call).then(
          (res) => callback(null, res),
          (err: unknown) => {
            const code = statusCodeOf(err);
            const level = code === StatusCode.NOT_FOUND || code === StatusCode.CANCELLED ? 'debug' : 'warn';
            this.logger[level]({ method, sandbox: id, code, err: messageOf(err) }, 'controller call failed');
            callback({ code, details: messageOf(err) });
          },
        );
      };
    };

    return {
      create: unary('Create', async (req: sandboxApi.ControllerCreateRequest) => {
        await c.create({
          sandboxId: req.sandboxId,
          rootfs: req.rootfs,
          options: req.options,
          netnsPath: req.netnsPath,
          annotations: req.annotations,
          sandbox: req.sandbox,
        });
        return sandboxApi.ControllerCreateResponse.fromPartial({ sandboxId: req.sandboxId });
      }),
      start: unary('Start', async (req: sandboxApi.ControllerStartRequest) => {
        const r = await c.start(req.sandboxId);
        return sandboxApi.ControllerStartResponse.fromPartial({
          sandboxId: req.sandboxId,
          pid: r.pid,
          createdAt: timestampFromDate(r.createdAt),
          labels: r.labels,
          address: r.address,
          version: r.version,
        });
      }),
      platform: unary('Platform', async (req: sandboxApi.ControllerPlatformRequest) =>
        sandboxApi.ControllerPlatformResponse.fromPartial({ platform: c.platform(req.sandboxId) }),
      ),
      stop: unary('Stop', async (req: sandboxApi.ControllerStopRequest) => {
        await c.stop(req.sandboxId, req.timeoutSecs);
        return sandboxApi.ControllerStopResponse.fromPartial({});
      }),
      wait: unary('Wait', async (req: sandboxApi.ControllerWaitRequest, call) => {
        const ac = new AbortController();
        const onCancel = () => ac.abort();
        call.once('cancelled', onCancel);
        this.waits.add(ac);
        try {
          const exit = await c.wait(req.sandboxId, ac.signal);
          return sandboxApi.ControllerWaitResponse.fromPartial({
            exitStatus: exit.exitStatus,
            exitedAt: timestampFromDate(exit.exitedAt),
          });
        } catch (err) {
          if (ac.signal.aborted && ac.signal.reason instanceof UnavailableError) throw ac.signal.reason;
          throw err;
        } finally {
          this.waits.delete(ac);
          call.removeListener('cancelled', onCancel);
        }
      }),
      status: unary('Status', async (req: sandboxApi.ControllerStatusRequest) => {
        const s = await c.status(req.sandboxId, req.verbose);
        return sandboxApi.ControllerStatusResponse.fromPartial({
          sandboxId: s.sandboxId,
          pid: s.pid,
          state: s.state,
          info: s.info,
          createdAt: timestampFromDate(s.createdAt),
          exitedAt: s.exitedAt ? timestampFromDate(s.exitedAt) : undefined,
          address: s.address,
          version: s.version,
        });
      }),
      shutdown: unary('Shutdown', async (req: sandboxApi.ControllerShutdownRequest) => {
        await c.shutdown(req.sandboxId);
        return sandboxApi.ControllerShutdownResponse.fromPartial({});
      }),
      metrics: unary('Metrics', async (req: sandboxApi.ControllerMetricsRequest) =>
        sandboxApi.ControllerMetricsResponse.fromPartial({ metrics: await c.metrics(req.sandboxId) }),
      ),
      update: unary('Update', async (req: sandboxApi.ControllerUpdateRequest) => {
        await c.update(req.sandboxId, req.sandbox, req.fields);
        return sandboxApi.ControllerUpdateResponse.fromPartial({});
      }),
    };
  }
}
