// @kuasar/vmm-sandboxer: microVM pods on QEMU, served by one resident sandboxer process.
export { VMM_CONFIG_SCHEMA, GUEST_DIR, resolveVmmConfig, manifestCmdline, vmSize } from './config';
export type { VmmConfig, VmmConfigTable, PodResources, VmSize } from './config';
export { Qemu, VmError, qemuArgs, probeKvm, consoleTail, isAlive, AGENT_SOCKET, CONSOLE_LOG, SHARED_DIR, SHARE_TAG } from './qemu';
export type { Hypervisor, Vm, VmSpec, VmIdentity, LaunchOptions } from './qemu';
export { guestSpec, guestProcess, GuestSpecError, GUEST_SHARE_ROOT } from './guest-spec';
export type { GuestSpec, ShareBind } from './guest-spec';
export { mountShares, unmountShares, ShareError } from './shares';
export { AgentConnection, toTtrpcError } from './agent';
export { PodVm, readVmRecord, VM_RECORD } from './pod-vm';
export type { VmRecord, PodRegistry, StreamRecord } from './pod-vm';
export { ProcessPipes } from './stdio';
export { VmmEngine, SANDBOX_ID_ANNOTATION } from './vmm-engine';
export { VmmSandboxer, CRI_SANDBOX_ID_ANNOTATION, cgroupfsPath } from './vmm-sandboxer';
export type { PodNetwork, PodNetworkAttachment, VmmSandboxerOptions } from './vmm-sandboxer';
export { vmmSandboxerSpec } from './sandboxer-spec';
export { DebugSocket, DebugFrame, DebugFrameReader, DEBUG_SOCKET, MAX_DEBUG_FRAME, encodeDebugFrame, parseDebugRequest } from './debug-socket';
export type { DebugExecRequest } from './debug-socket';
