// Runs the codec and a Session pair under the real QuickJS the guest uses (trixie's qjs, started
// through trixie's glibc loader exactly as scripts/build-guest.sh checks it), and compares the
// bytes with what Node produces. Skipped, with the reason printed, when build-guest.sh has not
// fetched trixie's packages into the cache yet. Flags as in the guest's /init.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { encodeFrame, FrameType, utf8Encode } from '../src';

const DEBS = path.join(process.env.KUASAR_CACHE || '/var/cache/kuasar', 'guest', 'debs');

function findQjs(): { loader: string; libdir: string; qjs: string } | string {
  if (!existsSync(DEBS)) return `no ${DEBS} (run: bash scripts/build-guest.sh)`;
  const entries = readdirSync(DEBS);
  const q = entries.find((e) => e.startsWith('quickjs-'));
  const l = entries.find((e) => e.startsWith('libc6-'));
  if (!q || !l) return `trixie quickjs/libc6 not unpacked under ${DEBS}`;
  const libdir = path.join(DEBS, l, 'usr/lib/x86_64-linux-gnu');
  const found = { loader: path.join(libdir, 'ld-linux-x86-64.so.2'), libdir, qjs: path.join(DEBS, q, 'usr/bin/qjs') };
  return existsSync(found.loader) && existsSync(found.qjs) ? found : `qjs or its loader missing under ${DEBS}`;
}

const found = findQjs();
if (typeof found === 'string') console.warn(`QuickJS protocol test skipped: ${found}`);
const describeQjs = typeof found === 'string' ? describe.skip : describe;

const SCRIPT = `
import * as p from '${path.join(__dirname, '../src/index.ts').replace(/\\\\/g, '/')}';
const out = {};
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
out.frame = hex(p.encodeFrame(p.FrameType.Request, 7, p.utf8Encode('{"id":1,"method":"é😀"}')));
out.utf8 = p.utf8Decode(Uint8Array.from([0x68, 0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80, 0xff, 0xed, 0xa0, 0x80]));
const dec = new p.FrameDecoder((e) => (out.errors = (out.errors || []).concat(e.code)));
const wire = new Uint8Array([1, 2, 3, ...p.encodeFrame(p.FrameType.Close, 9), 0x4b, 0x56, 9, ...p.encodeFrame(p.FrameType.Data, 4, Uint8Array.of(42))]);
out.frames = [];
for (let i = 0; i < wire.length; i++) for (const f of dec.push(wire.subarray(i, i + 1))) out.frames.push([f.type, f.stream, Array.from(f.payload)]);
const timers = { setTimeout: (fn, ms) => os.setTimeout(fn, ms), clearTimeout: (h) => os.clearTimeout(h), now: () => Date.now() };
const toHost = [], toGuest = [];
const host = new p.Session({ role: 'host', timers, newSessionId: () => 's1' });
const guest = new p.Session({ role: 'guest', timers, guestInfo: () => ({ agent: 'qjs', uptimeMs: 1, kernelRelease: 'k', bootId: 'b' }) });
guest.handle('sum', (q) => ({ sum: q.a + q.b }));
guest.attach({ write: (b) => toHost.push(b) });
host.attach({ write: (b) => toGuest.push(b) });
const pump = () => { while (toHost.length || toGuest.length) { toGuest.splice(0).forEach((b) => guest.receive(b)); toHost.splice(0).forEach((b) => host.receive(b)); } };
pump();
const s = host.openStream(3, { direction: 'in' });
const got = [];
s.onData((b) => got.push(p.utf8Decode(b)));
const g = guest.openStream(3, { direction: 'out' });
g.write(p.utf8Encode('über ')); g.write(p.utf8Encode('stream')); g.end();
guest.emit('exit', { containerId: 'c', status: 7 });
host.onEvent((e) => (out.event = e));
pump();
out.stream = got.join('');
host.request('sum', { a: 40, b: 2 }).then((r) => { out.sum = r.sum; }, (e) => { out.sum = String(e); });
pump();
os.setTimeout(() => { pump(); os.setTimeout(() => { host.dispose(); guest.dispose(); print(JSON.stringify(out)); }, 0); }, 0);
`;

describeQjs('vmm-protocol under QuickJS (trixie qjs)', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(path.join(tmpdir(), 'vmm-protocol-qjs-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('frames, UTF-8 and a Session pair behave exactly as on Node', () => {
    const q = found as Exclude<typeof found, string>;
    const entry = path.join(dir, 'entry.mjs');
    writeFileSync(entry, SCRIPT);
    const bundle = path.join(dir, 'bundle.js');
    buildSync({ entryPoints: [entry], bundle: true, format: 'iife', target: 'es2020', outfile: bundle, logLevel: 'silent' });
    const stdout = execFileSync(q.loader, ['--library-path', q.libdir, q.qjs, '--std', '--no-unhandled-rejection', bundle], { encoding: 'utf8', timeout: 30_000 });
    const out = JSON.parse(stdout.trim().split('\n').pop() as string);

    const hex = Buffer.from(encodeFrame(FrameType.Request, 7, utf8Encode('{"id":1,"method":"é😀"}'))).toString('hex');
    expect(out.frame).toBe(hex);
    expect(out.utf8).toBe(new TextDecoder().decode(Uint8Array.from([0x68, 0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80, 0xff, 0xed, 0xa0, 0x80])));
    expect(out.frames).toEqual([
      [FrameType.Close, 9, []],
      [FrameType.Data, 4, [42]],
    ]);
    expect(out.errors).toEqual(['BAD_MAGIC', 'BAD_VERSION']);
    expect(out.stream).toBe('über stream');
    expect(out.event).toMatchObject({ seq: 1, type: 'exit', containerId: 'c', status: 7 });
    expect(out.sum).toBe(42);
  }, 60_000);
});
