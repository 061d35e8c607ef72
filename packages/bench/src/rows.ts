// Per-sandboxer rows, each against the anchor a user would otherwise pick. A row measures only when its sandboxer
// is servable through containerd here; otherwise it reports why it was skipped. A sandboxer joins by giving its
// row a `run` once its own issue lands.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '@kuasar/e2e';
import type { RatioRow } from './report';
import { quarkRowSkipReason, runQuarkRow } from './quark-row';
import { runWasmRow, wasmRowSkipReason } from './wasm-row';

export interface SandboxerRow {
  /** e.g. "wasm tasks/s vs runc". */
  name: string;
  /** Why the row cannot run here now, or undefined when it can. */
  skipReason(): string | undefined;
  run?(mode: 'quick' | 'full', progress: (msg: string) => void): Promise<RatioRow[]>;
}

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && existsSync(path.join(d, bin)));
}

const notWired = (what: string): string => `${what}; the row's hook (packages/bench/src/rows.ts) has no run() yet`;

export const SANDBOXER_ROWS: SandboxerRow[] = [
  {
    name: 'wasm-sandboxer tasks/s vs runc (`ctr run --rm`: kuasar-wasm vs kuasar-runc and the runc-v2 shim)',
    skipReason: wasmRowSkipReason,
    run: runWasmRow,
  },
  {
    name: 'quark-sandboxer app-kernel start vs bare runsc (pod + container start to exit vs `runsc run`)',
    skipReason: quarkRowSkipReason,
    run: runQuarkRow,
  },
  {
    name: 'vmm-sandboxer pod start vs bare QEMU boot',
    skipReason: () => {
      if (!onPath('qemu-system-x86_64')) return 'qemu-system-x86_64 is not on PATH';
      if (!existsSync(path.join(REPO_ROOT, 'dist/bin/vmm-sandboxer'))) return 'dist/bin/vmm-sandboxer is not built';
      return notWired('vmm-sandboxer is not servable through containerd yet');
    },
  },
];
