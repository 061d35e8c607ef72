#!/usr/bin/env node
// What each way of writing the thin shim adds to a container start: median of N `start` runs against a
// live socket, measured with hyperfine (-N, no shell) from the bundle dir, for
//   c-static  native/thin-shim.c as built by native/build.sh (the shipped binary)
//   c-dynamic the same source linked against libc.so
//   dash      a POSIX sh script run by dash (start only: it cannot speak ttrpc for delete, and can only
//             test that the socket file exists, not that it accepts connections)
//   node      the same start logic as a plain node script
//   node-sea  that script as a Node single-executable application (postject)
// plus `delete` of the C binary against a responder answering NOT_FOUND (the after-every-delete case).
//
// usage: node bench/start-cost.mjs [--runs N]     (needs hyperfine: apt-get install hyperfine)
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '..');
const runsArg = process.argv.indexOf('--runs');
const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 50;
if (!Number.isInteger(runs) || runs < 3) throw new Error('--runs needs an integer >= 3');
if (spawnSync('hyperfine', ['--version']).status !== 0) {
  console.error('bench: hyperfine not found (apt-get install hyperfine)');
  process.exit(1);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kshim-bench-'));
const bin = path.join(work, 'bin');
const bundle = path.join(work, 'bundle');
const sock = path.join(work, 'task.sock');
fs.mkdirSync(bundle);
const name = 'containerd-shim-kuasar-runc-v2';

// A responder that answers every ttrpc request with status NOT_FOUND: enough for start (connect only)
// and for delete's Kill + Delete.
const server = net.createServer((s) => {
  let buf = Buffer.alloc(0);
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 10 && buf.length >= 10 + buf.readUInt32BE(0)) {
      const len = buf.readUInt32BE(0);
      const stream = buf.readUInt32BE(4);
      buf = buf.subarray(10 + len);
      const payload = Buffer.from([0x0a, 0x02, 0x08, 0x05]); // Response{status{code: 5}}
      const head = Buffer.alloc(10);
      head.writeUInt32BE(payload.length, 0);
      head.writeUInt32BE(stream, 4);
      head[8] = 2;
      s.write(Buffer.concat([head, payload]));
    }
  });
  s.on('error', () => {});
});
await new Promise((r) => server.listen(sock, r));

try {
  execFileSync('sh', [path.join(pkg, 'native/build.sh'), path.join(bin, 'c-static')], { stdio: 'ignore' });
  fs.mkdirSync(path.join(bin, 'c-dynamic'));
  execFileSync('cc', ['-std=c11', '-O2', '-o', path.join(bin, 'c-dynamic', name), path.join(pkg, 'native/thin-shim.c'), path.join(pkg, 'native/task-relay.c')]);

  fs.mkdirSync(path.join(bin, 'dash'));
  fs.writeFileSync(path.join(bin, 'dash', name), `#!/bin/dash
# start only; a socket file that exists is all sh can check
sock=\${KUASAR_RUNC_TASK_SOCKET:-/run/kuasar-runc/task.sock}
[ -S "$sock" ] || { echo "kuasar runc sandboxer is not reachable at $sock"; exit 1; }
printf 'unix://%s' "$sock" > .address && mv .address address
echo "unix://$sock"
`, { mode: 0o755 });

  const js = `const net = require('net'), fs = require('fs');
const sock = process.env.KUASAR_RUNC_TASK_SOCKET || '/run/kuasar-runc/task.sock';
const c = net.connect(sock);
c.on('error', (e) => { process.stdout.write('kuasar runc sandboxer is not reachable at ' + sock + ' (' + e.code + ')\\n'); process.exit(1); });
c.on('connect', () => { c.destroy(); fs.writeFileSync('.address', 'unix://' + sock); fs.renameSync('.address', 'address'); process.stdout.write('unix://' + sock + '\\n'); });
`;
  fs.mkdirSync(path.join(bin, 'node'));
  fs.writeFileSync(path.join(bin, 'node', 'start.js'), js);
  fs.writeFileSync(path.join(bin, 'node', name), `#!${process.execPath}\n${js}`, { mode: 0o755 });

  let sea = true;
  try {
    const dir = path.join(bin, 'node-sea');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'sea.json'), JSON.stringify({ main: path.join(bin, 'node', 'start.js'), output: path.join(dir, 'blob'), disableExperimentalSEAWarning: true }));
    execFileSync(process.execPath, ['--experimental-sea-config', path.join(dir, 'sea.json')], { stdio: 'ignore' });
    fs.copyFileSync(process.execPath, path.join(dir, name));
    const postject = path.resolve(pkg, '../../node_modules/.bin/postject');
    execFileSync(postject, [path.join(dir, name), 'NODE_SEA_BLOB', path.join(dir, 'blob'), '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'], { stdio: 'ignore' });
    fs.chmodSync(path.join(dir, name), 0o755);
  } catch (err) {
    sea = false;
    console.error(`bench: node-sea skipped: ${err.message.split('\n')[0]}`);
  }

  const variants = ['c-static', 'c-dynamic', 'dash', 'node', ...(sea ? ['node-sea'] : [])];
  const args = '-namespace k8s.io -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id bench';
  // /bin/true is the floor: what any exec costs here, measured the same way.
  const commands = [['exec floor (true)', '/bin/true'], ...variants.map((v) => [v, `${path.join(bin, v, name)} ${args} start`])];
  commands.push(['c-static delete', `${path.join(bin, 'c-static', name)} ${args} -bundle ${bundle} delete`]);
  const json = path.join(work, 'hyperfine.json');
  // Not spawnSync: the responder above lives on this process's event loop.
  // containerd's bundle is fresh, so `address` never exists yet; replacing an existing file by rename
  // makes ext4 (auto_da_alloc) flush it synchronously, which no real start pays.
  const hf = spawn('hyperfine', ['-N', '--warmup', '5', '--runs', String(runs), '--prepare', `rm -f ${path.join(bundle, 'address')}`, '--export-json', json,
    ...commands.flatMap(([n, c]) => ['-n', n, c])], { cwd: bundle, env: { ...process.env, KUASAR_RUNC_TASK_SOCKET: sock }, stdio: ['ignore', 'ignore', 'inherit'] });
  const status = await new Promise((r) => hf.once('close', r));
  if (status !== 0) throw new Error(`hyperfine failed (${status})`);
  const { results } = JSON.parse(fs.readFileSync(json, 'utf8'));
  console.log(`median of ${runs} runs (hyperfine -N), ms:`);
  for (const r of results) {
    console.log(`  ${r.command.padEnd(18)} median ${(r.median * 1000).toFixed(2).padStart(7)}   mean ${(r.mean * 1000).toFixed(2).padStart(7)} ± ${(r.stddev * 1000).toFixed(2)}`);
  }
} finally {
  server.close();
  fs.rmSync(work, { recursive: true, force: true });
}
