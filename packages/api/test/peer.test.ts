// Cross-checks against other protobuf implementations:
//  - protoc (C++ protobuf) encodes/decodes text protos with the same .proto files;
//  - containerd's own containerd-shim-runc-v2 binary emits a real task DeleteResponse (`delete` action),
//    which checks our DeleteResponse/Timestamp field numbers against containerd's compiled Go code.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cgroupsV1, cri, dateFromTimestamp, task, types } from '@kuasar/api';

const protoDir = path.resolve(__dirname, '../../../protos');
const hasProtoc = spawnSync('protoc', ['--version']).status === 0;
const which = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).stdout.trim();

function protoc(args: string[], input: Buffer | string): Buffer {
  const r = spawnSync('protoc', [`-I${protoDir}`, ...args], { input });
  if (r.status !== 0) throw new Error(`protoc ${args.join(' ')} failed: ${r.stderr.toString()}`);
  return r.stdout;
}

(hasProtoc ? describe : describe.skip)('protoc as peer', () => {
  test('protoc-encoded StateResponse decodes to the same values', () => {
    const bin = protoc(['--encode=containerd.task.v2.StateResponse', 'containerd/task/v2/shim.proto'],
      'id: "c1" bundle: "/b" pid: 7 status: PAUSED terminal: true exit_status: 137 exited_at { seconds: 5 nanos: 6 } exec_id: "e1"');
    expect(task.StateResponse.decode(bin)).toEqual(task.StateResponse.fromPartial({
      id: 'c1', bundle: '/b', pid: 7, status: types.TaskStatus.PAUSED, terminal: true, exitStatus: 137, exitedAt: { seconds: 5n, nanos: 6 }, execId: 'e1',
    }));
  });

  test('protoc-encoded PodSandboxConfig decodes with linux/security context intact', () => {
    const text = `metadata { name: "p" uid: "u" namespace: "ns" attempt: 2 } hostname: "h" log_directory: "/l"
      dns_config { servers: "8.8.8.8" } port_mappings { protocol: SCTP container_port: 80 host_port: 8080 }
      labels { key: "a" value: "b" }
      linux { cgroup_parent: "/kubepods" security_context { namespace_options { network: NODE pid: CONTAINER }
              run_as_user { value: 1000 } supplemental_groups: 5 privileged: true supplemental_groups_policy: Strict }
              sysctls { key: "k" value: "v" } }`;
    const bin = protoc(['--encode=runtime.v1.PodSandboxConfig', 'cri/runtime/v1/api.proto'], text);
    const cfg = cri.PodSandboxConfig.decode(bin);
    expect(cfg.metadata).toEqual({ name: 'p', uid: 'u', namespace: 'ns', attempt: 2 });
    expect(cfg.portMappings[0]).toEqual({ protocol: cri.Protocol.SCTP, containerPort: 80, hostPort: 8080, hostIp: '' });
    expect(cfg.labels).toEqual({ a: 'b' });
    expect(cfg.linux?.cgroupParent).toBe('/kubepods');
    expect(cfg.linux?.sysctls).toEqual({ k: 'v' });
    const sc = cfg.linux?.securityContext;
    expect(sc?.namespaceOptions?.network).toBe(cri.NamespaceMode.NODE);
    expect(sc?.namespaceOptions?.pid).toBe(cri.NamespaceMode.CONTAINER);
    expect(sc?.runAsUser).toEqual({ value: 1000n });
    expect(sc?.supplementalGroups).toEqual([5n]);
    expect(sc?.privileged).toBe(true);
    expect(sc?.supplementalGroupsPolicy).toBe(cri.SupplementalGroupsPolicy.Strict);
  });

  test('protoc-encoded cgroups v1 Metrics decodes (uint64 beyond 2^53)', () => {
    const bin = protoc(['--encode=io.containerd.cgroups.v1.Metrics', 'cgroups/v1/metrics.proto'],
      'memory { usage { limit: 9223372036854771712 usage: 4096 } total_rss: 7 } cpu { usage { total: 1 per_cpu: 2 per_cpu: 3 } }');
    const m = cgroupsV1.Metrics.decode(bin);
    expect(m.memory?.usage?.limit).toBe(9223372036854771712n);
    expect(m.memory?.totalRss).toBe(7n);
    expect(m.cpu?.usage?.perCpu).toEqual([2n, 3n]);
  });

  test('our CreateTaskRequest decodes in protoc to the same fields', () => {
    const msg = task.CreateTaskRequest.fromPartial({
      id: 'c1', bundle: '/b', rootfs: [{ type: 'overlay', source: 'overlay', options: ['lowerdir=/l'] }], stdout: '/o',
      options: { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from([0x48, 0x01]) },
    });
    const text = protoc(['--decode=containerd.task.v2.CreateTaskRequest', 'containerd/task/v2/shim.proto'], Buffer.from(task.CreateTaskRequest.encode(msg).finish())).toString();
    expect(text).toContain('id: "c1"');
    expect(text).toContain('bundle: "/b"');
    expect(text).toMatch(/rootfs \{\s+type: "overlay"\s+source: "overlay"\s+options: "lowerdir=\/l"\s+\}/);
    expect(text).toContain('stdout: "/o"');
    expect(text).toMatch(/options \{\s+type_url: "containerd.runc.v1.Options"\s+value: "H\\001"\s+\}/);
  });
});

const shim = which('containerd-shim-runc-v2');
const runc = which('runc');
const canRunShim = shim !== '' && runc !== '' && process.getuid?.() === 0;
if (!canRunShim) console.log(`peer.test: skipping containerd-shim-runc-v2 check (shim="${shim}", runc="${runc}", root=${process.getuid?.() === 0})`);

(canRunShim ? test : test.skip)('containerd-shim-runc-v2 `delete` output decodes as task.DeleteResponse', () => {
  const ns = `kuasar-apitest-${process.pid}`;
  const id = 'apitest-missing';
  // The shim runs `runc --root /run/containerd/runc/<ns> delete --force <id>`, creating those dirs; remove what we add.
  const created = ['/run/containerd', '/run/containerd/runc'].filter((d) => !existsSync(d));
  const parent = mkdtempSync(path.join(os.tmpdir(), 'kuasar-api-'));
  const bundle = path.join(parent, id);
  mkdirSync(bundle);
  // runc-v2's cleanup reads the runtime binary name from <bundle>/runtime.
  writeFileSync(path.join(bundle, 'runtime'), 'runc');
  try {
    const before = Date.now();
    const r = spawnSync(shim, ['-namespace', ns, '-address', '/nonexistent/containerd.sock', '-publish-binary', '/bin/true', '-id', id, '-bundle', bundle, 'delete'],
      { cwd: bundle, timeout: 20_000 });
    expect(r.status).toBe(0);
    const resp = task.DeleteResponse.decode(r.stdout);
    expect(resp.exitStatus).toBe(137); // 128 + SIGKILL, what runc-v2 reports for a container it could not find
    const exitedAt = dateFromTimestamp(resp.exitedAt!).getTime();
    expect(exitedAt).toBeGreaterThanOrEqual(before - 1000);
    expect(exitedAt).toBeLessThanOrEqual(Date.now() + 1000);
    // Re-encoding gives the shim's bytes back: no field lost or renumbered.
    expect(Buffer.from(task.DeleteResponse.encode(resp).finish()).equals(r.stdout)).toBe(true);
  } finally {
    rmSync(parent, { recursive: true, force: true });
    for (const d of [`/run/containerd/runc/${ns}`, ...created.reverse()]) {
      try { rmdirSync(d); } catch { /* not ours or not empty */ }
    }
  }
});
