// The network namespace containerd hands a sandbox (Controller.Create's netns_path, made by CNI): checked once, with
// one wording, by every sandboxer that joins it.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Why `netnsPath` cannot be a pod's network namespace, or undefined when it can. */
export function netnsPathProblem(netnsPath: string): string | undefined {
  if (!path.isAbsolute(netnsPath)) return `netns path must be absolute: ${netnsPath}`;
  let dev: number;
  try {
    dev = fs.statSync(netnsPath).dev;
  } catch {
    return `netns path does not exist: ${netnsPath}`;
  }
  // every namespace file (/proc/<pid>/ns/*, or one bind-mounted as CNI plugins do) lives on the one nsfs
  if (dev !== fs.statSync('/proc/self/ns/net').dev) return `netns path is not a namespace file: ${netnsPath}`;
  return undefined;
}
