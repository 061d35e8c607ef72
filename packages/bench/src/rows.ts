// Per-sandboxer rows, each against the anchor a user would otherwise pick. A row measures only when its sandboxer
// is servable through containerd here; otherwise it reports why it was skipped. A sandboxer joins by giving its
// row a `run` once its own issue lands.
import type { RatioRow } from './report';
import { quarkRowSkipReason, runQuarkRow } from './quark-row';
import { runWasmRow, wasmRowSkipReason } from './wasm-row';
import { runVmmRow, vmmRowSkipReason } from './vmm-row';

export interface SandboxerRow {
  /** e.g. "wasm tasks/s vs runc". */
  name: string;
  /** Why the row cannot run here now, or undefined when it can. */
  skipReason(): string | undefined;
  run?(mode: 'quick' | 'full', progress: (msg: string) => void): Promise<RatioRow[]>;
}

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
    name: 'vmm-sandboxer microVM pod start vs bare QEMU boot + crun (pod + container start to first output vs the floor; host and agent memory)',
    skipReason: vmmRowSkipReason,
    run: runVmmRow,
  },
];
