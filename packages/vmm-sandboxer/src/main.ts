// Entry point of the vmm-sandboxer binary: the framework's CLI with the vmm kind plugged in.
import { runSandboxer } from '@kuasar/sandbox';
import { vmmSandboxerSpec } from './sandboxer-spec';

// Injected by scripts/build-bin.mjs; absent when the source runs unbundled (jest).
declare const __KUASAR_VERSION__: string | undefined;
const version = typeof __KUASAR_VERSION__ === 'string' ? __KUASAR_VERSION__ : '0.0.0-dev';

void runSandboxer(vmmSandboxerSpec(version));
