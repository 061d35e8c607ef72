import { setFlagsFromString } from 'node:v8';

let applied = false;

/**
 * V8 settings the runner depends on; process-wide, so they must be set before the first module is compiled and
 * before the first pool worker starts (a worker's isolate takes the flags it was created with).
 *
 * --no-wasm-dynamic-tiering: measured on Node 20.20 (V8 11.3), with dynamic tiering a Worker that is blocked in a
 * WASI import called straight from wasm (fd_read on a FIFO) when terminate() is requested loses the termination for
 * good: after the call returns the module keeps running and every later terminate() is ignored. Eager tiering
 * (Liftoff, then TurboFan compiled in the background) keeps terminate() reliable. The worker also calls imports
 * through JS frames, which avoids the loss on its own; the flag stays as a second guard. Its cost is more compile
 * CPU per module, paid once per digest thanks to the module cache.
 *
 * --expose-gc: gives each pool worker (a context created after this) a `gc` it uses once, compacting, right after it
 * boots and before it takes a module: Node's worker bootstrap leaves about 2.3 MiB of garbage in its 5.6 MiB heap,
 * and a blocked module holds its worker for its whole life. The worker removes `gc` from its global at once; the
 * main thread's global, created before this, never has it.
 */
export function applyV8Flags(): void {
  if (applied) return;
  setFlagsFromString('--no-wasm-dynamic-tiering');
  setFlagsFromString('--expose-gc');
  applied = true;
}
