// The pure half of Controller.Update: the sandbox spec's resources, checked, and the host cgroup writes they make.
import { StatusCode } from '@kuasar/sandbox';
import { OCI_SPEC_TYPE_URL, asPodResources, hostCpuWrites, specResources } from '../src/pod-update';

const any = (doc: unknown, typeUrl = OCI_SPEC_TYPE_URL) => ({ typeUrl, value: Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc)) });
const spec = (resources: unknown) => any({ ociVersion: '1.1.0', linux: { resources } });

describe('specResources', () => {
  test('reads cpu and memory of linux.resources', () => {
    const r = specResources(spec({ cpu: { quota: 50_000, period: 100_000, shares: 512 }, memory: { limit: 1 << 26 } }));
    expect(r?.limits).toEqual({ cpuQuota: 50_000, cpuPeriod: 100_000, cpuShares: 512, memoryLimit: 1 << 26 });
    expect(asPodResources(r!.limits)).toEqual({ cpuQuota: 50_000n, cpuPeriod: 100_000n, memoryLimitInBytes: BigInt(1 << 26) });
  });

  test('no spec or no resources: nothing to do', () => {
    expect(specResources(undefined)).toBeUndefined();
    expect(specResources({ typeUrl: '', value: Buffer.alloc(0) })).toBeUndefined();
    expect(specResources(any({ ociVersion: '1.1.0' }))).toBeUndefined();
  });

  test('anything else is INVALID_ARGUMENT with the field named', () => {
    const bad: [ReturnType<typeof any>, RegExp][] = [
      [any({}, 'example.com/Other'), /OCI runtime spec/],
      [any('{not json'), /not JSON/],
      [any('[1]'), /not a JSON object/],
      [spec('x'), /linux\.resources must be an object/],
      [spec({ cpu: { quota: 'x' } }), /cpu\.quota must be an integer/],
      [spec({ cpu: { quota: 10 } }), /quota must be -1, 0 or at least 1000/],
      [spec({ cpu: { period: 5 } }), /period must be 1000\.\.1000000/],
      [spec({ cpu: { shares: -1 } }), /shares must not be negative/],
      [spec({ memory: { limit: -5 } }), /memory\.limit/],
      [spec({ memory: { limit: 1.5 } }), /memory\.limit must be an integer/],
    ];
    for (const [a, msg] of bad) {
      let err: unknown;
      try {
        specResources(a);
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: StatusCode.INVALID_ARGUMENT, message: expect.stringMatching(msg) });
    }
  });
});

describe('hostCpuWrites', () => {
  const v1 = { mode: 'v1' as const, v1: { cpu: '/cg/cpu/kuasar/p', memory: '/cg/memory/kuasar/p' }, unified: '/cg/unified/kuasar/p' };
  const v2 = { mode: 'v2' as const, v1: {}, unified: '/cg/kuasar/p' };

  test('v1: period before quota, shares; memory is never written', () => {
    expect(hostCpuWrites(v1, { cpuQuota: 50_000, cpuShares: 512, memoryLimit: 1 << 26 })).toEqual([
      ['/cg/cpu/kuasar/p/cpu.cfs_period_us', '100000'],
      ['/cg/cpu/kuasar/p/cpu.cfs_quota_us', '50000'],
      ['/cg/cpu/kuasar/p/cpu.shares', '512'],
    ]);
    expect(hostCpuWrites(v1, { cpuQuota: -1, cpuPeriod: 50_000 })).toEqual([
      ['/cg/cpu/kuasar/p/cpu.cfs_period_us', '50000'],
      ['/cg/cpu/kuasar/p/cpu.cfs_quota_us', '-1'],
    ]);
    expect(hostCpuWrites(v1, { cpuQuota: 0, cpuShares: 0, memoryLimit: 1 << 26 })).toEqual([]);
  });

  test('v2: cpu.max and cpu.weight', () => {
    expect(hostCpuWrites(v2, { cpuQuota: 200_000, cpuPeriod: 100_000, cpuShares: 1024 })).toEqual([
      ['/cg/kuasar/p/cpu.max', '200000 100000'],
      ['/cg/kuasar/p/cpu.weight', '39'],
    ]);
    expect(hostCpuWrites(v2, { cpuQuota: -1 })).toEqual([['/cg/kuasar/p/cpu.max', 'max 100000']]);
  });
});
