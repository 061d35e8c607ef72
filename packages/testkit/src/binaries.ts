import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export type ContainerdVersion = '1.6' | '1.7' | '2.1';
export const CONTAINERD_VERSIONS: readonly ContainerdVersion[] = ['1.6', '1.7', '2.1'];

/** The binaries of one containerd release, all from the same package so shim and ctr match. */
export interface ContainerdBinaries {
  version: ContainerdVersion;
  containerd: string;
  ctr: string;
  shimRuncV2: string;
  /** Where it came from, for messages: "apt (bookworm)" or the manifest's deb version. */
  source: string;
}

/** One entry of scripts/fetch-debs.sh's manifest. */
export interface DebManifestEntry {
  key: string;
  name: string;
  suite: string;
  version: string;
  dir: string;
  bins: Record<string, string>;
}

export class BinariesNotFoundError extends Error {
  override readonly name = 'BinariesNotFoundError';
}

export function kuasarCacheDir(): string {
  return process.env.KUASAR_CACHE || '/var/cache/kuasar';
}

export function debManifestPath(): string {
  return path.join(kuasarCacheDir(), 'debs', 'manifest.json');
}

/** Reads fetch-debs.sh's manifest; an absent manifest is an empty one (debs not fetched yet). */
export function readDebManifest(file = debManifestPath()): DebManifestEntry[] {
  if (!existsSync(file)) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new BinariesNotFoundError(`${file} is not valid JSON (rerun scripts/fetch-debs.sh): ${(err as Error).message}`);
  }
  if (!Array.isArray(parsed)) throw new BinariesNotFoundError(`${file}: expected a JSON array`);
  return parsed as DebManifestEntry[];
}

/**
 * Finds the containerd, ctr and runc shim of a release. 1.6 is bookworm's apt package; 1.7 and
 * 2.1 are the trixie/sid debs unpacked by scripts/fetch-debs.sh. Throws BinariesNotFoundError
 * with the reason (and the fix) when they are not there.
 */
export function findContainerd(version: ContainerdVersion): ContainerdBinaries {
  if (!CONTAINERD_VERSIONS.includes(version)) {
    throw new BinariesNotFoundError(`unknown containerd version '${String(version)}'; expected one of ${CONTAINERD_VERSIONS.join(', ')}`);
  }
  let bins: ContainerdBinaries;
  if (version === '1.6') {
    bins = {
      version,
      containerd: '/usr/bin/containerd',
      ctr: '/usr/bin/ctr',
      shimRuncV2: '/usr/bin/containerd-shim-runc-v2',
      source: 'apt containerd (bookworm)',
    };
  } else {
    const manifest = debManifestPath();
    const entry = readDebManifest(manifest).find((e) => e.key === `containerd-${version}`);
    if (!entry) {
      throw new BinariesNotFoundError(`containerd ${version} is not in ${manifest}; run scripts/fetch-debs.sh`);
    }
    bins = {
      version,
      containerd: entry.bins.containerd ?? '',
      ctr: entry.bins.ctr ?? '',
      shimRuncV2: entry.bins['containerd-shim-runc-v2'] ?? '',
      source: `deb containerd ${entry.version} (${entry.suite})`,
    };
  }
  for (const [what, file] of [['containerd', bins.containerd], ['ctr', bins.ctr], ['containerd-shim-runc-v2', bins.shimRuncV2]]) {
    if (!file || !existsSync(file)) {
      throw new BinariesNotFoundError(`containerd ${version}: ${what} not found at '${file}' (${bins.source}); run scripts/install-deps.sh`);
    }
  }
  return bins;
}

/** Like findContainerd, but returns the reason instead of throwing: for skipping tests. */
export function containerdAvailability(version: ContainerdVersion): { bins: ContainerdBinaries } | { reason: string } {
  try {
    return { bins: findContainerd(version) };
  } catch (err) {
    if (err instanceof BinariesNotFoundError) return { reason: err.message };
    throw err;
  }
}
