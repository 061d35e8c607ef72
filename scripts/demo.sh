#!/usr/bin/env bash
# README command 1: install what is needed (idempotent), build, then run a demo pod through a private containerd 2.1
# and the packaged runc-sandboxer via CRI, print what the container printed, and clean everything up.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing dependencies (scripts/install-deps.sh)"
bash scripts/install-deps.sh

step "building (pnpm build)"
pnpm build --output-logs=errors-only

step "bundling the demo driver"
node_modules/.bin/esbuild packages/e2e/src/demo.ts --bundle --platform=node --target=node20 --log-level=warning --external:koffi \
  --outfile=packages/e2e/dist/demo.js

node packages/e2e/dist/demo.js
