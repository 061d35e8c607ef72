import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, createLogger, startSandboxer } from '@kuasar/sandbox';
import { wasmSandboxerSpec } from '../src/sandboxer-spec';
import { tempDir } from './sandboxer';

test('the [wasm] table is checked: unknown keys and out-of-range values are config errors', async () => {
  const root = tempDir('cfg');
  try {
    for (const [text, msg] of [
      ['[wasm]\npool = 3\n', /unknown key "wasm.pool"/],
      ['[wasm]\npool_size = -1\n', /"wasm.pool_size" must be at least 0/],
      ['[wasm]\ndefault_memory_limit_mib = 5000\n', /at most 4096/],
    ] as const) {
      const config = path.join(root, 'c.toml');
      fs.writeFileSync(config, text);
      const spec = wasmSandboxerSpec('test');
      const err = await startSandboxer(spec, { listen: path.join(root, 'l.sock'), dir: path.join(root, 'state'), config }, createLogger({ level: 'fatal' }))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(msg);
      expect(spec.pool).toBeUndefined(); // nothing was started
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
