// The grpc-js stubs work end to end over a real unix socket (server from ControllerService, client from ControllerClient).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { cri, sandboxApi, timestampNow } from '@kuasar/api';

let dir: string;
let server: grpc.Server;
let address: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kuasar-api-grpc-'));
  address = `unix://${path.join(dir, 'sb.sock')}`;
  server = new grpc.Server();
  const impl: sandboxApi.ControllerServer = {
    create: (call, cb) => cb(null, { sandboxId: call.request.sandboxId }),
    start: (call, cb) => cb(null, sandboxApi.ControllerStartResponse.fromPartial({
      sandboxId: call.request.sandboxId, pid: 1234, createdAt: timestampNow(), address: 'ttrpc+unix:///run/k/task.sock', version: 3,
      labels: { ns: String(call.metadata.get('containerd-namespace')[0]) },
    })),
    platform: (_call, cb) => cb(null, { platform: { os: 'linux', architecture: 'amd64', variant: '', osVersion: '' } }),
    stop: (_call, cb) => cb(null, {}),
    wait: (_call, cb) => cb({ code: grpc.status.UNAVAILABLE, details: 'not yet' } as grpc.ServiceError, null),
    status: (_call, cb) => cb(null, sandboxApi.ControllerStatusResponse.fromPartial({ state: 'SANDBOX_READY' })),
    shutdown: (_call, cb) => cb(null, {}),
    metrics: (_call, cb) => cb(null, { metrics: undefined }),
    update: (call, cb) => cb(call.request.sandboxer === 'kuasar' ? null : ({ code: grpc.status.INVALID_ARGUMENT } as grpc.ServiceError), {}),
  };
  server.addService(sandboxApi.ControllerService, impl);
  await new Promise<void>((resolve, reject) => server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

test('Controller.Start and Update round-trip through grpc-js', async () => {
  const client = new sandboxApi.ControllerClient(address, grpc.credentials.createInsecure());
  try {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', 'k8s.io');
    const resp = await new Promise<sandboxApi.ControllerStartResponse>((resolve, reject) =>
      client.start(sandboxApi.ControllerStartRequest.fromPartial({ sandboxId: 'sb1', sandboxer: 'kuasar' }), md, (err, r) => (err ? reject(err) : resolve(r))));
    expect(resp).toMatchObject({ sandboxId: 'sb1', pid: 1234, version: 3, address: 'ttrpc+unix:///run/k/task.sock', labels: { ns: 'k8s.io' } });
    const err = await new Promise<grpc.ServiceError | null>((resolve) =>
      client.update(sandboxApi.ControllerUpdateRequest.fromPartial({ sandboxId: 'sb1', sandboxer: 'other' }), (e) => resolve(e)));
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    const werr = await new Promise<grpc.ServiceError | null>((resolve) => client.wait({ sandboxId: 'sb1', sandboxer: '' }, (e) => resolve(e)));
    expect(werr?.code).toBe(grpc.status.UNAVAILABLE);
  } finally {
    client.close();
  }
});

test('a CRI client built from RuntimeServiceClient reports UNIMPLEMENTED from a server without the service', async () => {
  const client = new cri.RuntimeServiceClient(address, grpc.credentials.createInsecure());
  try {
    const err = await new Promise<grpc.ServiceError | null>((resolve) => client.version({ version: 'v1' }, (e) => resolve(e)));
    expect(err?.code).toBe(grpc.status.UNIMPLEMENTED);
  } finally {
    client.close();
  }
});
