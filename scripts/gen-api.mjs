#!/usr/bin/env node
// Regenerates packages/api/src/gen/ from protos/ with Debian's protoc + ts-proto.
// Usage: node scripts/gen-api.mjs [outDir]   (default packages/api/src/gen; the output dir is wiped first)
// Output must be byte-identical for identical input: the api freshness test depends on it.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const protoDir = path.join(root, 'protos');
const outDir = path.resolve(process.argv[2] ?? path.join(root, 'packages/api/src/gen'));
const plugin = path.join(root, 'node_modules/.bin/protoc-gen-ts_proto');

// ttrpc services get transport-neutral descriptors (@kuasar/ttrpc serves them); gRPC services get grpc-js stubs.
const TTRPC_SERVICE_FILES = [
  'containerd/task/v2/shim.proto',
  'containerd/task/v3/shim.proto',
  'containerd/services/events/ttrpc/v1/events.proto',
];
const COMMON_OPTS = ['forceLong=bigint', 'esModuleInterop=true', 'useDate=false', 'env=node'];

function listProtos(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) out.push(...listProtos(full));
    else if (name.endsWith('.proto')) out.push(path.relative(protoDir, full).split(path.sep).join('/'));
  }
  return out;
}

function protoc(files, services) {
  const opts = [...COMMON_OPTS, `outputServices=${services}`].join(',');
  execFileSync(
    'protoc',
    [`--plugin=protoc-gen-ts_proto=${plugin}`, `--proto_path=${protoDir}`, `--ts_proto_out=${outDir}`, `--ts_proto_opt=${opts}`, ...files],
    { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] },
  );
}

// ts-proto stamps the protoc and plugin versions into each header; drop them so output depends on input only.
function stripVersions(dir) {
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) { stripVersions(full); continue; }
    if (!name.endsWith('.ts')) continue;
    const text = readFileSync(full, 'utf8');
    const cleaned = text.replace(/^\/\/ versions:\n(\/\/ {3}\S+ +v?\S+\n)+/m, '');
    if (cleaned !== text) writeFileSync(full, cleaned);
  }
}

const all = listProtos(protoDir);
const missing = TTRPC_SERVICE_FILES.filter((f) => !all.includes(f));
if (missing.length) throw new Error(`gen-api: expected proto files not found: ${missing.join(', ')}`);
if (!existsSync(plugin)) throw new Error(`gen-api: ${plugin} not found; run pnpm install at the repo root`);

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
protoc(all.filter((f) => !TTRPC_SERVICE_FILES.includes(f)), 'grpc-js');
protoc(TTRPC_SERVICE_FILES, 'generic-definitions');
stripVersions(outDir);
