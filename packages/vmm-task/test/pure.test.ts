// The agent's pure parts on Node: request validation, crun command lines and output parsing, and
// the network set-up commands. The rest of the agent is exercised in a real guest (agent.guest.test.ts).
import { RpcError } from '@kuasar/vmm-protocol';
import { crun, networkCommands, params, parseNetwork, podCgroupLimits, podCgroupWrites } from '../src';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof RpcError ? err.code : `not an RpcError: ${String(err)}`;
  }
  return undefined;
}

describe('params', () => {
  test('container ids: accepted and rejected', () => {
    expect(params.id({ id: 'abc-1.2_x' }, 'id')).toBe('abc-1.2_x');
    for (const bad of ['', '../x', '.hidden', 'a/b', 'a b', 'x'.repeat(129), 5, null, undefined]) {
      expect(code(() => params.id({ id: bad }, 'id'))).toBe('INVALID_ARGUMENT');
    }
  });

  test('bundle paths must be absolute and stay put', () => {
    expect(params.absPath({ b: '/mnt/kuasar/c1' }, 'b')).toBe('/mnt/kuasar/c1');
    for (const bad of ['mnt/x', '/mnt/../etc', '/a\0b', 3]) expect(code(() => params.absPath({ b: bad }, 'b'))).toBe('INVALID_ARGUMENT');
  });

  test('stdio: optional stream ids, distinct, u32', () => {
    expect(params.stdio({ stdio: { stdin: 1, stdout: 3, terminal: false } })).toEqual({ stdin: 1, stdout: 3, stderr: undefined, terminal: false });
    expect(params.stdio({})).toEqual({ stdin: undefined, stdout: undefined, stderr: undefined, terminal: false });
    expect(code(() => params.stdio({ stdio: { stdout: 3, stderr: 3 } }))).toBe('INVALID_ARGUMENT');
    expect(code(() => params.stdio({ stdio: { stdout: -1 } }))).toBe('INVALID_ARGUMENT');
    expect(code(() => params.stdio({ stdio: { stdout: 2 ** 32 } }))).toBe('INVALID_ARGUMENT');
    expect(code(() => params.stdio({ stdio: 'x' }))).toBe('INVALID_ARGUMENT');
  });

  test('signals by number or name', () => {
    expect(params.signal({ s: 9 }, 's')).toBe(9);
    expect(params.signal({ s: 'SIGTERM' }, 's')).toBe(15);
    expect(params.signal({ s: 'kill' }, 's')).toBe(9);
    for (const bad of [0, 65, 'SIGNOPE', 1.5, null]) expect(code(() => params.signal({ s: bad }, 's'))).toBe('INVALID_ARGUMENT');
  });
});

describe('crun', () => {
  test('command lines use the guest state root and a per-container log', () => {
    expect(crun.createArgv('c1', '/mnt/kuasar/c1', '/run/kuasar/c1.pid', '/run/kuasar/c1.log')).toEqual([
      'crun', '--root', '/run/crun', '--log', '/run/kuasar/c1.log', 'create', '--bundle', '/mnt/kuasar/c1', '--pid-file', '/run/kuasar/c1.pid', 'c1',
    ]);
    expect(crun.execArgv('c1', '/p.json', '/p.pid', '/l').slice(5)).toEqual(['exec', '--detach', '--process', '/p.json', '--pid-file', '/p.pid', 'c1']);
    // A terminal process's pty master goes to the console socket the helper listens on.
    expect(crun.createArgv('c1', '/b', '/p', '/l', '/run/kuasar/c1.console.sock').slice(5)).toEqual(['create', '--bundle', '/b', '--pid-file', '/p', '--console-socket', '/run/kuasar/c1.console.sock', 'c1']);
    expect(crun.execArgv('c1', '/p.json', '/p.pid', '/l', '/s').slice(5)).toEqual(['exec', '--detach', '--process', '/p.json', '--pid-file', '/p.pid', '--console-socket', '/s', 'c1']);
    expect(crun.killArgv('c1', 15, true, '/l').slice(5)).toEqual(['kill', '--all', 'c1', '15']);
    expect(crun.deleteArgv('c1', true, '/l').slice(5)).toEqual(['delete', '--force', 'c1']);
    // start writes to the FIFO crun create left under its state root (crun start's own fallback keeps --root)
    expect(crun.execFifo('c1')).toBe('/run/crun/c1/exec.fifo');
    expect(crun.startArgv('c1', '/l')).toEqual(['crun', '--root', '/run/crun', '--log', '/l', 'start', 'c1']);
  });

  test('wait statuses become shell exit codes', () => {
    expect(crun.exitCode(0)).toBe(0);
    expect(crun.exitCode(7 << 8)).toBe(7);
    expect(crun.exitCode(9)).toBe(137); // killed by SIGKILL
    expect(crun.exitCode(15 | 0x80)).toBe(143); // SIGTERM with core flag
  });

  test('state, logs, cgroup files', () => {
    expect(crun.parseState('{"ociVersion":"1.0.0","id":"c","pid":42,"status":"running"}')).toEqual({ status: 'running', pid: 42 });
    expect(crun.parseState('{"status":"weird"}')).toEqual({ status: 'stopped', pid: 0 });
    expect(crun.logMessage('{"msg":"open `/x/config.json`: No such file","level":"error"}\nplain line\n')).toBe('open `/x/config.json`: No such file; plain line');
    expect(crun.cgroupPath('0::/c1\n')).toBe('/sys/fs/cgroup/c1');
    expect(crun.cgroupPath('0::/\n')).toBe('/sys/fs/cgroup');
    expect(crun.cgroupPath('1:name=x:/\n')).toBeUndefined();
    expect(crun.parseKeyValues('low 0\nhigh 2\noom_kill 3\nbad x\n')).toEqual({ low: 0, high: 2, oom_kill: 3 });
    expect(crun.parseLimit('max\n')).toBe(Number.MAX_SAFE_INTEGER);
    expect(crun.parseLimit('67108864\n')).toBe(67108864);
    expect(crun.parseLimit('')).toBeUndefined();
    expect(crun.parseProcs('12\n13\n\n')).toEqual([12, 13]);
  });
});

describe('network', () => {
  test('interfaces and routes become ip commands in a working order', () => {
    const net = parseNetwork({
      interfaces: [{ name: 'eth0', mac: '02:42:0a:58:00:05', mtu: 1450, addresses: ['10.88.0.5/16', 'fd00::5/64'] }],
      routes: [{ dest: 'default', gateway: '10.88.0.1', device: 'eth0' }, { dest: '192.168.0.0/24', device: 'eth0' }],
    });
    expect(networkCommands(net)).toEqual([
      ['ip', 'link', 'set', 'dev', 'eth0', 'down'],
      ['ip', 'link', 'set', 'dev', 'eth0', 'address', '02:42:0a:58:00:05'],
      ['ip', 'link', 'set', 'dev', 'eth0', 'mtu', '1450'],
      ['ip', 'addr', 'add', '10.88.0.5/16', 'dev', 'eth0'],
      ['ip', 'addr', 'add', 'fd00::5/64', 'dev', 'eth0'],
      ['ip', 'link', 'set', 'dev', 'eth0', 'up'],
      ['ip', 'route', 'add', 'default', 'via', '10.88.0.1', 'dev', 'eth0'],
      ['ip', 'route', 'add', '192.168.0.0/24', 'dev', 'eth0'],
    ]);
  });

  test.each([
    [{ interfaces: [{ name: 'eth0; reboot', addresses: [] }] }],
    [{ interfaces: [{ name: 'eth0', mac: 'zz:zz', addresses: [] }] }],
    [{ interfaces: [{ name: 'eth0', addresses: ['10.0.0.300/8'] }] }],
    [{ interfaces: [{ name: 'eth0', addresses: ['10.0.0.3'] }] }],
    [{ interfaces: [{ name: 'eth0', mtu: 10, addresses: [] }] }],
    [{ routes: [{ dest: 'default' }] }],
    [{ routes: [{ dest: '10.0.0.0/33', device: 'eth0' }] }],
    [{ interfaces: 'eth0' }],
    ['network'],
  ])('rejects %j with INVALID_ARGUMENT', (bad) => {
    expect(code(() => parseNetwork(bad))).toBe('INVALID_ARGUMENT');
  });
});

describe('pod cgroup (guest.updatePod)', () => {
  test('OCI resources become cgroup v2 writes; unset and zero fields leave the file alone', () => {
    expect(podCgroupWrites({ memory: { limit: 64 * 1024 * 1024 }, cpu: { quota: 50_000, period: 100_000, shares: 1024 } })).toEqual([
      ['memory.max', '67108864'],
      ['cpu.max', '50000 100000'],
      ['cpu.weight', '39'],
    ]);
    expect(podCgroupWrites({ memory: { limit: -1 }, cpu: { quota: -1 } })).toEqual([['memory.max', 'max'], ['cpu.max', 'max 100000']]);
    expect(podCgroupWrites({ memory: { limit: 0 }, cpu: { quota: 0, shares: 0 } })).toEqual([]);
    expect(podCgroupWrites({})).toEqual([]);
    // the extremes of cpu.shares map onto the ends of cpu.weight
    expect(podCgroupWrites({ cpu: { shares: 2 } })).toEqual([['cpu.weight', '1']]);
    expect(podCgroupWrites({ cpu: { shares: 262144 } })).toEqual([['cpu.weight', '10000']]);
  });

  test('bad resources are INVALID_ARGUMENT', () => {
    for (const bad of [null, [], 'x', { memory: 5 }, { memory: { limit: -2 } }, { memory: { limit: 1.5 } }, { cpu: { quota: 10 } },
      { cpu: { quota: 50_000, period: 10 } }, { cpu: { shares: '1024' } }, { memory: { limit: 2 ** 64 } }]) {
      expect(code(() => podCgroupWrites(bad))).toBe('INVALID_ARGUMENT');
    }
  });

  test('limits read back from the pod cgroup, missing files left out', () => {
    const files: Record<string, string> = { '/sys/fs/cgroup/kuasar/memory.max': '67108864\n', '/sys/fs/cgroup/kuasar/cpu.max': 'max 100000\n' };
    expect(podCgroupLimits((f) => files[f])).toEqual({ memoryMax: '67108864', cpuMax: 'max 100000' });
    expect(podCgroupLimits(() => undefined)).toEqual({});
  });
});
