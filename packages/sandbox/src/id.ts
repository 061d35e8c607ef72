import { InvalidArgumentError } from './errors';

// containerd's pkg/identifiers rules: alphanumerics joined by single '.', '_' or '-', at most 76 characters.
// Being a strict whitelist it also keeps ids safe as path components (no '/', no '..', no NUL).
const MAX_LENGTH = 76;
const IDENTIFIER = /^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$/;

// Entries kept in the state dir beside the per-sandbox dirs: the framework's (task records, task socket, relay) and
// the vmm sandboxer's debug socket.
export const RESERVED_NAMES: ReadonlySet<string> = new Set(['tasks', 'task.sock', 'relay.sock', 'relay.pid', 'debug.sock']);

/** Throws InvalidArgumentError unless `id` is a valid containerd identifier that is not a reserved state-dir name. */
export function validateSandboxId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || id.length === 0) throw new InvalidArgumentError('sandbox id must not be empty');
  if (id.length > MAX_LENGTH) {
    throw new InvalidArgumentError(`sandbox id "${id.slice(0, 16)}…" is ${id.length} characters, more than ${MAX_LENGTH}`);
  }
  if (!IDENTIFIER.test(id)) {
    throw new InvalidArgumentError(`sandbox id ${JSON.stringify(id)} must match ${IDENTIFIER.source}`);
  }
  if (RESERVED_NAMES.has(id)) throw new InvalidArgumentError(`sandbox id ${JSON.stringify(id)} is reserved`);
}

export function isValidSandboxId(id: string): boolean {
  try {
    validateSandboxId(id);
    return true;
  } catch {
    return false;
  }
}
