// Entry point of the runc-sandboxer binary: the framework's CLI with the runc kind plugged in.
import { runSandboxer } from '@kuasar/sandbox';
import { runcSandboxerSpec } from './sandboxer-spec';

// Injected by scripts/build-bin.mjs; absent when the source runs unbundled (jest).
declare const __KUASAR_VERSION__: string | undefined;
const version = typeof __KUASAR_VERSION__ === 'string' ? __KUASAR_VERSION__ : '0.0.0-dev';

void runSandboxer(runcSandboxerSpec(version));
