// Asks a running sandboxer for the live view of its sandboxes: containerd's Controller.Status over the sandboxer's
// gRPC socket, the same call CRI makes. The state dir tells what was recorded; this tells what the sandboxer sees.
import * as fs from 'node:fs';
import type { Kind } from './kinds';
import { handlerName } from './kinds';

export interface LiveStatus {
  state: string;
  pid: number;
  createdAt: Date | undefined;
  exitedAt: Date | undefined;
  /** Task API address handed to containerd. */
  address: string;
  version: number;
  /** Verbose info (info["info"] parsed when it is JSON). */
  info: Record<string, unknown>;
}

export type StatusResult = { ok: true; status: LiveStatus } | { ok: false; error: string };

export interface StatusClient {
  status(id: string, verbose: boolean): Promise<StatusResult>;
  close(): void;
}

const DEADLINE_MS = 3000;

/** A Controller client on `socket`, or undefined when no socket file is there (sandboxer not running). */
export async function connectController(kind: Kind, socket: string): Promise<StatusClient | undefined> {
  if (!fs.existsSync(socket)) return undefined;
  // Loaded here so `check`, `--help` and the offline paths do not pay for grpc-js.
  const grpc = await import('@grpc/grpc-js');
  const { sandboxApi, dateFromTimestamp } = await import('@kuasar/api');
  const client = new sandboxApi.ControllerClient(`unix://${socket}`, grpc.credentials.createInsecure());
  const toDate = (t: Parameters<typeof dateFromTimestamp>[0] | undefined) => (t ? dateFromTimestamp(t) : undefined);
  return {
    status: (id, verbose) =>
      new Promise((resolve) => {
        const req = sandboxApi.ControllerStatusRequest.fromPartial({ sandboxId: id, verbose, sandboxer: handlerName(kind) });
        client.status(req, new grpc.Metadata(), { deadline: Date.now() + DEADLINE_MS }, (err, res) => {
          if (err || !res) {
            resolve({
              ok: false,
              // grpc-js appends an empty 'Resolution note: ' to connection failures
              error: err ? `${grpc.status[err.code] ?? err.code}: ${(err.details || err.message).replace(/\s*Resolution note:\s*$/, '')}` : 'empty response',
            });
            return;
          }
          const info: Record<string, unknown> = {};
          for (const [k, v] of Object.entries(res.info)) {
            try {
              info[k] = JSON.parse(v);
            } catch {
              info[k] = v;
            }
          }
          resolve({
            ok: true,
            status: {
              state: res.state,
              pid: res.pid,
              createdAt: toDate(res.createdAt),
              exitedAt: toDate(res.exitedAt),
              address: res.address,
              version: res.version,
              info,
            },
          });
        });
      }),
    close: () => client.close(),
  };
}
