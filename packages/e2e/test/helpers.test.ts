// The harness's own checks must be able to fail: each finder is shown a real leftover and must report it.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  SandboxerProcess, SandboxerStartError, containerdErrors, leftoverCgroups, leftoverMounts, leftoverProcesses, leftoverSockets, p50,
} from '../src';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync('/tmp/ke2e-h-');
});
afterEach(() => {
  spawnSync('umount', ['-l', path.join(dir, 'm')], { stdio: 'ignore' });
  rmSync(dir, { recursive: true, force: true });
});

test('containerdErrors: error lines naming our ids, minus the documented benign ones', () => {
  const log = [
    'time="t" level=info msg="RunPodSandbox for abc123"',
    'time="t" level=error msg="StartContainer for \\"abc123\\" failed" error="boom"',
    'time="t" level=error msg="unrelated failure of xyz"',
    'time="t" level=error msg="PodSandboxStatus for \\"abc123\\" failed" error="rpc error: code = NotFound desc = not found"',
  ].join('\n');
  expect(containerdErrors(log, ['abc123'])).toEqual([expect.stringContaining('StartContainer')]);
  expect(containerdErrors(log, ['abc123'], log.indexOf('unrelated'))).toEqual([]);
});

test('leftoverMounts and leftoverSockets see a mount and a socket under a dir', async () => {
  mkdirSync(path.join(dir, 'm'));
  expect(spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', path.join(dir, 'm')]).status).toBe(0);
  expect(leftoverMounts([dir], [])).toEqual([`mount under ${dir}: ${path.join(dir, 'm')}`]);
  const sock = path.join(dir, 'x.sock');
  const srv = net.createServer().listen(sock);
  await new Promise((r) => srv.once('listening', r));
  try {
    expect(leftoverSockets(dir)).toEqual([sock]);
    expect(leftoverSockets(dir, [sock])).toEqual([]);
  } finally {
    srv.close();
  }
});

test('leftoverProcesses names a process whose cmdline carries an id; leftoverCgroups a cgroup named after one', () => {
  const id = `leftover${process.pid}`;
  // `sh -c '…' <id>`: the id is the shell's $0, so it is in its cmdline.
  const child = spawn('sh', ['-c', 'sleep 30; true', id], { stdio: 'ignore', detached: true });
  try {
    expect(leftoverProcesses(undefined, [id]).join('\n')).toContain(`pid ${child.pid}`);
  } finally {
    process.kill(-child.pid!, 'SIGKILL'); // the group: sh and its sleep
  }
  const cg = `/sys/fs/cgroup/pids/${id}`;
  mkdirSync(cg);
  try {
    expect(leftoverCgroups([id])).toEqual([cg]);
  } finally {
    rmSync(cg, { recursive: true, force: true });
    spawnSync('rmdir', [cg]);
  }
});

test('SandboxerProcess: bad options are TypeErrors; a binary that dies at start is a SandboxerStartError with its log', async () => {
  const base = { kind: 'x', listen: path.join(dir, 'l.sock'), dir: path.join(dir, 'sb'), ttrpcAddress: '/nonexistent', logPath: path.join(dir, 'log') };
  await expect(SandboxerProcess.start({ ...base, command: [] })).rejects.toBeInstanceOf(TypeError);
  await expect(SandboxerProcess.start({ ...base, dir: 'relative', command: ['true'] })).rejects.toBeInstanceOf(TypeError);
  const script = path.join(dir, 'die.sh');
  writeFileSync(script, '#!/bin/sh\necho "no config here" >&2\nexit 3\n', { mode: 0o755 });
  const err = await SandboxerProcess.start({ ...base, command: [script] }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(SandboxerStartError);
  expect((err as Error).message).toMatch(/exited during start.*"code":3[\s\S]*no config here/);
});

test('p50 is the median and refuses no samples', () => {
  expect(p50([3, 1, 2])).toBe(2);
  expect(p50([4, 1, 3, 2])).toBe(3);
  expect(() => p50([])).toThrow(RangeError);
});
