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
export type { BuiltImage, ImageRunConfig, ImportOptions, LayerEntry, OciImageSpec } from './oci-image';
export { BUSYBOX_IMAGE, PAUSE_IMAGE, ImageBuildError, buildOciArchive, buildOciImage, busyboxImage, busyboxImageSpec, importImage, importTestImages, pauseImage, pauseImageSpec, writeTar } from './oci-image';
export type { CniOptions, CniSetup, CriConfigOptions, TomlTable, TomlValue } from './cni';
export { CNI_BIN_DIR, CniSetupError, createCniSetup, criConfig, criRuntimeTable, tomlTable } from './cni';
export type { CriClientOptions, CriLogLine, ExecResult, PodWithContainer, RunPodOptions } from './cri-client';
export { CriClient, CriError, CriLogFormatError, criLogStream, parseCriLog, readCriLog } from './cri-client';
export { WASM_IMAGE, WASM_IMAGE_MODULES, WASM_IMAGE_OUTPUT, wasmImage, wasmImageSpec, wat2wasm } from './wasm-image';
export { ClientIO, connectSandboxer, controllerCall, podSandboxOptions, runTask, type ControllerMethod, type PodConfigInput } from './sandboxer-clients';
