#!/usr/bin/env node
// Builds one standalone executable:
//   packages/<pkg>/src/main.ts --esbuild--> packages/<pkg>/dist/main.js --Node SEA--> dist/bin/<name>
//
// usage: node scripts/build-bin.mjs <package-dir-name> [--bin <name>]
// env:   KUASAR_NO_SEA=1     bundle only (fast dev loop; run `node packages/<pkg>/dist/main.js`)
//        KUASAR_SEA_STRIP=0  inject into process.execPath as is instead of a stripped copy
//
// The binary runs without node_modules: everything is bundled except koffi, whose native module
// travels as the SEA asset that @kuasar/sys loadKoffi() reads (KOFFI_ASSET_NAME = 'koffi.node').
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const KOFFI_ASSET_NAME = 'koffi.node'; // must equal KOFFI_ASSET_NAME in packages/sys/src/koffi.ts

class BuildError extends Error {}

function parseArgs(argv) {
  const usage = 'usage: node scripts/build-bin.mjs <package-dir-name> [--bin <name>]';
  let pkg;
  let bin;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--bin') {
      bin = argv[++i];
      if (!bin) throw new BuildError(`--bin needs a value\n${usage}`);
    } else if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${usage}\n`);
      process.exit(0);
    } else if (arg.startsWith('-') || pkg !== undefined) {
      throw new BuildError(`unexpected argument '${arg}'\n${usage}`);
    } else {
      pkg = arg;
    }
  }
  if (!pkg) throw new BuildError(usage);
  const name = /^[a-z0-9][a-z0-9._-]*$/;
  if (!name.test(pkg)) throw new BuildError(`bad package directory name '${pkg}'`);
  bin ??= pkg;
  if (!name.test(bin)) throw new BuildError(`bad binary name '${bin}'`);
  return { pkg, bin };
}

function kuasarVersion() {
  const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  const sha = git.status === 0 ? git.stdout.trim() : '';
  // semver build metadata: a repository without commits (or without git) gives the bare version
  return sha ? `${version}+${sha}` : version;
}

/**
 * koffi stays outside the bundle: its loader finds the .node file relative to its own
 * __dirname. The dev bundle (dist/main.js) gets a relative require into node_modules so it runs
 * from the checkout; a SEA never reaches that require because loadKoffi() takes the asset path.
 */
function koffiExternal(outdir, seen) {
  return {
    name: 'koffi-external',
    setup(build) {
      build.onResolve({ filter: /^koffi(\/|$)/ }, (args) => {
        // require.resolve() wants a path on disk, which only the checkout has: leave it alone.
        if (args.kind === 'require-resolve') return { path: args.path, external: true };
        seen.koffi = true;
        const resolved = createRequire(path.join(args.resolveDir, 'noop.js')).resolve(args.path);
        const rel = path.relative(outdir, resolved).split(path.sep).join('/');
        return { path: rel.startsWith('.') ? rel : `./${rel}`, external: true };
      });
    },
  };
}

/**
 * commander requires child_process at load time (for git-style executable subcommands, which we
 * never use), and that drags in net, dgram and streams: ~6 ms of every start. Hand commander a
 * proxy that loads the real module on first property access instead.
 */
function lazyCommanderChildProcess() {
  return {
    name: 'lazy-commander-child-process',
    setup(build) {
      build.onResolve({ filter: /^(node:)?child_process$/ }, (args) =>
        /[\\/]commander[\\/]/.test(args.importer) ? { path: 'lazy-child-process', namespace: 'kuasar-lazy' } : undefined,
      );
      build.onLoad({ filter: /.*/, namespace: 'kuasar-lazy' }, () => ({
        contents:
          "let m; const load = () => (m ??= require('node:child_process'));\n" +
          'module.exports = new Proxy({}, { get: (_, k) => load()[k], has: (_, k) => k in load() });\n',
        loader: 'js',
      }));
    },
  };
}

/** koffi's prebuilt native module for this platform, found from @kuasar/sys's own dependency. */
function koffiNativeFile() {
  const fromSys = createRequire(path.join(ROOT, 'packages/sys/package.json'));
  let dir = path.dirname(fromSys.resolve('koffi'));
  // koffi's "exports" hides package.json, so walk up from its entry point to the package root.
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new BuildError('cannot find the koffi package root');
    dir = up;
  }
  const platformPkg = `@koromix/koffi-${process.platform}-${process.arch}`;
  const pkgJson = createRequire(path.join(dir, 'package.json')).resolve(`${platformPkg}/package.json`);
  // glibc build; a musl host would need `musl_<arch>` and a musl node.
  const file = path.join(path.dirname(pkgJson), `${process.platform}_${process.arch}`, 'koffi.node');
  if (!fs.existsSync(file)) throw new BuildError(`koffi native module missing: ${file}`);
  return file;
}

function sha256(...parts) {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

const CACHE_DIR = path.join(ROOT, 'node_modules/.cache/kuasar-sea');

/**
 * Node as shipped here carries ~13 MB of DWARF; a stripped copy (dynamic symbols kept, so
 * addons still link) is cached per node build and reused for every binary.
 */
function seaBaseExecutable() {
  const node = process.execPath;
  const st = fs.statSync(node);
  const key = `node-${process.version}-${st.size}-${Math.trunc(st.mtimeMs)}`;
  if (process.env.KUASAR_SEA_STRIP === '0') return { file: node, key: `${key}-full` };
  const cached = path.join(CACHE_DIR, `${key}-stripped`);
  if (fs.existsSync(cached)) return { file: cached, key: `${key}-stripped` };
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = `${cached}.${process.pid}.tmp`;
  const strip = spawnSync('strip', ['--strip-all', '-o', tmp, node], { encoding: 'utf8' });
  if (strip.status !== 0) {
    fs.rmSync(tmp, { force: true });
    process.stderr.write(`build-bin: strip unavailable (${strip.error?.message ?? strip.stderr.trim()}), using ${node}\n`);
    return { file: node, key: `${key}-full` };
  }
  fs.renameSync(tmp, cached);
  return { file: cached, key: `${key}-stripped` };
}

// postject (LIEF in wasm) needs 5-10 s per 85 MB executable. It runs once per node build and
// size class, on a placeholder blob; each binary is then a copy of that template with its blob
// written over the placeholder and the note's descsz set, which is all node reads: it looks up
// the ELF note named NODE_SEA_BLOB and takes n_descsz bytes after its name.
const SEA_NOTE = 'NODE_SEA_BLOB';
const PLACEHOLDER_MARK = createHash('sha256').update('kuasar SEA blob placeholder').digest();
const align4 = (n) => (n + 3) & ~3;

function seaTemplate(base, capacity) {
  const template = path.join(CACHE_DIR, `${base.key}-sea${capacity}`);
  if (fs.existsSync(template)) return template;
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = `${template}.${process.pid}.tmp`;
  const placeholder = `${tmp}.blob`;
  try {
    const blob = Buffer.alloc(capacity);
    PLACEHOLDER_MARK.copy(blob);
    fs.writeFileSync(placeholder, blob);
    fs.copyFileSync(base.file, tmp);
    fs.chmodSync(tmp, 0o755);
    const postject = createRequire(import.meta.url).resolve('postject/dist/cli.js');
    // LIEF warns about section names on every ELF; only show its output on failure.
    run(process.execPath, [postject, tmp, SEA_NOTE, placeholder, '--sentinel-fuse', SEA_FUSE]);
    fs.renameSync(tmp, template);
  } finally {
    fs.rmSync(tmp, { force: true });
    fs.rmSync(placeholder, { force: true });
  }
  return template;
}

/** Writes `template` with `blob` in place of its placeholder to `out`. */
function writeSeaExecutable(template, blob, out) {
  const image = fs.readFileSync(template);
  if (image.readUInt32BE(0) !== 0x7f454c46 || image[5] !== 1) throw new BuildError(`${template}: not a little-endian ELF`);
  const desc = image.lastIndexOf(PLACEHOLDER_MARK);
  const nameSize = SEA_NOTE.length + 1;
  const note = desc - 12 - align4(nameSize); // Elf_Nhdr: namesz, descsz, type; then the name
  if (
    desc < 0 ||
    note < 0 ||
    image.readUInt32LE(note) !== nameSize ||
    image.toString('latin1', note + 12, note + 12 + nameSize) !== `${SEA_NOTE}\0`
  ) {
    throw new BuildError(`${template}: no ${SEA_NOTE} placeholder note; delete it to rebuild`);
  }
  const capacity = image.readUInt32LE(note + 4);
  if (blob.length > capacity || desc + capacity > image.length) throw new BuildError(`${template}: placeholder too small`);
  image.fill(0, desc, desc + capacity);
  blob.copy(image, desc);
  image.writeUInt32LE(blob.length, note + 4);
  fs.writeFileSync(out, image, { mode: 0o755 });
}

function run(cmd, args, opts) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (r.status !== 0) {
    throw new BuildError(`${path.basename(args[0] ?? cmd)} failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}${r.stderr}`);
  }
}

const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;

async function main() {
  const { pkg, bin } = parseArgs(process.argv.slice(2));
  const pkgDir = path.join(ROOT, 'packages', pkg);
  const entry = path.join(pkgDir, 'src/main.ts');
  if (!fs.existsSync(entry)) throw new BuildError(`no entry point ${path.relative(ROOT, entry)}`);
  const outdir = path.join(pkgDir, 'dist');
  const bundle = path.join(outdir, 'main.js');

  const t0 = performance.now();
  const seen = { koffi: false };
  const result = await esbuild
    .build({
    entryPoints: [entry],
    outfile: bundle,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minify: true,
    legalComments: 'none',
    tsconfig: path.join(ROOT, 'tsconfig.base.json'), // its paths map @kuasar/* to packages/*/src
    define: { __KUASAR_VERSION__: JSON.stringify(kuasarVersion()) },
    plugins: [koffiExternal(outdir, seen), lazyCommanderChildProcess()],
    logLevel: 'warning',
  })
    .catch(() => {
      throw new BuildError(`esbuild failed for ${pkg} (errors above)`);
    });
  if (result.errors.length) throw new BuildError(`esbuild failed for ${pkg}`);
  const bundleBytes = fs.readFileSync(bundle);
  const tBundle = performance.now() - t0;
  let summary = `${bin}: bundle ${kib(bundleBytes.length)} in ${tBundle.toFixed(0)} ms`;

  if (process.env.KUASAR_NO_SEA === '1') {
    process.stdout.write(`${summary} (KUASAR_NO_SEA=1: no executable)\n`);
    return;
  }

  const assets = seen.koffi ? { [KOFFI_ASSET_NAME]: koffiNativeFile() } : {};
  const base = seaBaseExecutable();
  const binDir = path.join(ROOT, 'dist/bin');
  const target = path.join(binDir, bin);
  const stampFile = path.join(outdir, `${bin}.sea-stamp`);
  const stamp = sha256(
    JSON.stringify({ base: base.key, assets: Object.keys(assets) }),
    bundleBytes,
    ...Object.values(assets).map((f) => fs.readFileSync(f)),
  );
  if (fs.existsSync(target) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === stamp) {
    process.stdout.write(`${summary}; ${path.relative(ROOT, target)} up to date\n`);
    return;
  }

  const t1 = performance.now();
  const blob = path.join(outdir, 'sea.blob');
  const seaConfig = path.join(outdir, 'sea-config.json');
  fs.writeFileSync(
    seaConfig,
    `${JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useCodeCache: true, assets }, null, 2)}\n`,
  );
  // The blob's code cache is only valid for the node that made it, so the same node is the base.
  run(process.execPath, ['--experimental-sea-config', seaConfig], { cwd: outdir });

  const blobBytes = fs.readFileSync(blob);
  fs.rmSync(blob, { force: true });
  // power-of-two size classes: few templates, at most 2x padding, never below 2 MiB
  const capacity = Math.max(2 << 20, 2 ** Math.ceil(Math.log2(blobBytes.length)));
  const template = seaTemplate(base, capacity);

  fs.mkdirSync(binDir, { recursive: true });
  const tmp = path.join(binDir, `.${bin}.${process.pid}.tmp`);
  try {
    writeSeaExecutable(template, blobBytes, tmp);
    fs.renameSync(tmp, target); // never leave a half-written executable under its real name
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  fs.writeFileSync(stampFile, stamp);
  const tSea = performance.now() - t1;
  summary += `; ${path.relative(ROOT, target)} ${mib(fs.statSync(target).size)} in ${(tSea / 1000).toFixed(1)} s`;
  if (seen.koffi) summary += ` (asset ${KOFFI_ASSET_NAME})`;
  summary += `, blob ${kib(blobBytes.length)}`;
  process.stdout.write(`${summary}\n`);
}

main().catch((err) => {
  process.stderr.write(`build-bin: ${err instanceof BuildError ? err.message : (err?.stack ?? err)}\n`);
  process.exit(1);
});
