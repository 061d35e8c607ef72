import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { peerCredentials } from '@kuasar/sys';

let dir: string;
let server: net.Server;
let sockPath: string;
const accepted: net.Socket[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-peercred-'));
  sockPath = path.join(dir, 's.sock');
  server = net.createServer((s) => accepted.push(s));
  server.listen(sockPath);
  await once(server, 'listening');
});
afterAll(async () => {
  for (const s of accepted) s.destroy();
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function nextConnection(): Promise<net.Socket> {
  const [s] = (await once(server, 'connection')) as [net.Socket];
  return s;
}

test('a connection from this process reports our own pid, uid and gid', async () => {
  const conn = nextConnection();
  const client = net.connect(sockPath);
  await once(client, 'connect');
  const serverSide = await conn;
  const me = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
  expect(peerCredentials(serverSide)).toEqual(me);
  expect(peerCredentials(client)).toEqual(me);
  client.destroy();
});

test('a connection from a child process reports the child pid', async () => {
  const conn = nextConnection();
  const child = spawn(process.execPath, ['-e', `require('net').connect(${JSON.stringify(sockPath)}).on('connect', () => setTimeout(() => process.exit(0), 300))`], { stdio: 'ignore' });
  const serverSide = await conn;
  expect(peerCredentials(serverSide)).toEqual({ pid: child.pid, uid: 0, gid: 0 });
  await once(child, 'exit');
});

test('a socket without a file descriptor is refused clearly', () => {
  expect(() => peerCredentials(new net.Socket())).toThrow(TypeError);
});
