// gVisor through the same OCI CLI engine. runsc is not a Debian bookworm package: scripts/fetch-debs.sh puts it
// in /var/cache/kuasar; without it these tests are skipped (and say so).
import { OCI_PROCESS_TYPE_URL, cgroupsV1, packJsonAny, unpackAny } from '@kuasar/api';
import { Code } from '@kuasar/ttrpc';
import { createBusyboxBundle, type BusyboxBundle } from './helpers/bundle';
import { clientFifos, type ClientFifos } from './helpers/fifo';
import { removeTestCgroups, runscPath, runtimeList, startHarness, type Harness } from './helpers/harness';

const runsc = runscPath();
const maybe = runsc ? describe : describe.skip;
if (!runsc) process.stderr.write('runsc tests skipped: no runsc (run scripts/fetch-debs.sh or set KUASAR_RUNSC)\n');

maybe('TaskService with runsc (gVisor)', () => {
  let h: Harness;
  const bundles: BusyboxBundle[] = [];
  const fifos: ClientFifos[] = [];
  beforeAll(async () => {
    // gVisor cannot use sandbox networking on this kernel (machine-facts); every call re-reads the flag
    h = await startHarness({ runtime: runsc!, globalArgs: ['--network=none'] });
  });
  afterAll(async () => {
    const left = runtimeList(runsc!, h.runtimeRoot);
    await h.close();
    bundles.forEach((b) => b.remove());
    fifos.forEach((f) => f.close());
    removeTestCgroups();
    expect(left).toEqual([]);
  });

  test('lifecycle with FIFO IO, exec exit code, Stats from `runsc events --stats`, SIGKILL → 137', async () => {
    const b = createBusyboxBundle({ args: ['sh', '-c', 'echo gvisor-says-hi; dmesg | head -1; exec sleep 1000'] });
    bundles.push(b);
    const f = clientFifos('g');
    fifos.push(f);
    const { pid } = await h.tasks.create({ id: 'g', bundle: b.path, stdout: f.stdout, stderr: f.stderr });
    expect(pid).toBeGreaterThan(0);
    const waited = h.tasks.wait({ id: 'g' });
    await h.tasks.start({ id: 'g' });

    const x = clientFifos('gx');
    fifos.push(x);
    await h.tasks.exec({ id: 'g', execId: 'x', stdout: x.stdout,
      spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: ['sh', '-c', 'echo in-exec; exit 6'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } }) });
    const xw = h.tasks.wait({ id: 'g', execId: 'x' });
    await h.tasks.start({ id: 'g', execId: 'x' });
    expect((await xw).exitStatus).toBe(6);
    expect(await x.stdoutText).toBe('in-exec\n');
    await h.tasks.delete({ id: 'g', execId: 'x' });

    const { stats } = await h.tasks.stats({ id: 'g' });
    expect(stats!.typeUrl).toBe('io.containerd.cgroups.v1.Metrics');
    expect(unpackAny(stats!, cgroupsV1.Metrics).memory!.usage!.usage).toBeGreaterThan(0n);

    await h.tasks.kill({ id: 'g', signal: 9 });
    expect((await waited).exitStatus).toBe(137);
    const out = await f.stdoutText;
    expect(out).toContain('gvisor-says-hi\n');
    expect(out).toContain('gVisor');
    await expect(h.tasks.kill({ id: 'g', signal: 9 })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await h.tasks.delete({ id: 'g' });
  });
});
