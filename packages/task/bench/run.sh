#!/usr/bin/env bash
# Bundle the benchmark with esbuild (tsconfig paths resolve @kuasar/*) and run it; koffi stays external.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="$(mktemp -d)/bench.js"
"$root/node_modules/.bin/esbuild" "$here/create-start-delete.ts" --bundle --platform=node --target=node20 \
  --tsconfig="$root/tsconfig.json" --external:koffi --log-level=warning --outfile="$out"
NODE_PATH="$root/packages/sys/node_modules" node "$out"
