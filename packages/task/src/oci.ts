// The parts of the OCI runtime spec the task core reads; everything else passes through untouched.

export interface OciProcess {
  terminal?: boolean;
  consoleSize?: { height: number; width: number };
  user?: { uid: number; gid: number; additionalGids?: number[]; umask?: number };
  args?: string[];
  env?: string[];
  cwd?: string;
  [key: string]: unknown;
}

export interface OciNamespace {
  type: string;
  path?: string;
}

/** LinuxResources as containerd sends it in UpdateTaskRequest (JSON); passed to the runtime verbatim. */
export type OciLinuxResources = Record<string, unknown>;

export interface OciSpec {
  ociVersion?: string;
  process?: OciProcess;
  root?: { path: string; readonly?: boolean };
  annotations?: Record<string, string>;
  linux?: {
    namespaces?: OciNamespace[];
    cgroupsPath?: string;
    resources?: OciLinuxResources;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/**
 * True when the container's processes share a pid namespace with something else (no pid namespace of its own,
 * or one joined by path). Then the kernel does not kill the container's other processes when its init exits.
 */
export function sharesPidNamespace(spec: OciSpec): boolean {
  const pid = spec.linux?.namespaces?.find((n) => n.type === 'pid');
  return pid === undefined || (pid.path !== undefined && pid.path !== '');
}
