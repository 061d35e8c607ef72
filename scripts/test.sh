#!/usr/bin/env bash
# README command 2: install what the tests need (idempotent), build every package and binary, run every test.
# Runs as root on Debian 12. CI calls exactly this script (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing dependencies (scripts/install-deps.sh)"
bash scripts/install-deps.sh

step "building (pnpm build)"
pnpm build

# After the build: the initramfs carries the guest agent bundle (packages/vmm-task/dist). A changed agent rebuilds
# only the initramfs; the kernel is keyed by its own inputs.
step "building the microVM guest kernel and initramfs (scripts/build-guest.sh; cached by inputs)"
bash scripts/build-guest.sh --agent packages/vmm-task/dist

step "running tests (pnpm test)"
rm -rf .test-results
status=0
pnpm test || status=$?

# One closing line for the whole monorepo, summed from every package's jest run.
node -e '
  const fs = require("node:fs");
  const dir = ".test-results";
  let p = 0, f = 0, s = 0;
  for (const file of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    const r = JSON.parse(fs.readFileSync(`${dir}/${file}`, "utf8"));
    p += r.passed; f += r.failed; s += r.skipped;
  }
  console.log(`\n${p} passed, ${f} failed, ${s} skipped`);
'
exit "$status"
