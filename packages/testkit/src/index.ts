export type { ContainerdBinaries, ContainerdVersion, DebManifestEntry } from './binaries';
export {
  BinariesNotFoundError,
  CONTAINERD_VERSIONS,
  containerdAvailability,
  debManifestPath,
  findContainerd,
  kuasarCacheDir,
  readDebManifest,
} from './binaries';
export type { CtrOptions, CtrResult, StartOptions } from './private-containerd';
export { ContainerdStartError, CtrError, PrivateContainerd, mountsUnder, processesMentioning } from './private-containerd';
