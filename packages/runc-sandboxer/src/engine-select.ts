import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, OciCliEngine, TtrpcError, type ContainerCreate, type ContainerRef, type Engine, type EngineAny, type EngineStatus, type OciLinuxResources, type OciProcess, type ProcessStdio } from '@kuasar/task';
import type { Logger } from '@kuasar/sandbox';
import { DEFAULT_ENGINE_OPTIONS, type EngineOptions } from './engine-options';

/**
 * One Engine for the task core that runs each container with the OCI runtime chosen for it (runc by default, crun
 * per config or CRI handler). The choice travels in the container's own config.json as an annotation written by
 * prepareContainer, so later calls, even after a sandboxer restart, find it without any state here.
 */

export const ENGINE_ANNOTATION = 'io.kuasar.runc.engine';

export function withEngineAnnotation<T extends { annotations?: Record<string, string> }>(spec: T, engine: EngineOptions): T {
  return { ...spec, annotations: { ...(spec.annotations ?? {}), [ENGINE_ANNOTATION]: JSON.stringify(engine) } };
}

/** The engine options recorded in a spec's annotations, or undefined when there are none (or they are unreadable). */
export function engineOptionsOfSpec(spec: { annotations?: Record<string, string> } | undefined): EngineOptions | undefined {
  const raw = spec?.annotations?.[ENGINE_ANNOTATION];
  if (raw === undefined) return undefined;
  try {
    const o = JSON.parse(raw) as Partial<EngineOptions>;
    if (typeof o.binary !== 'string' || o.binary === '') return undefined;
    return { ...DEFAULT_ENGINE_OPTIONS, ...o };
  } catch {
    return undefined;
  }
}

export interface EngineSelectOptions {
  defaults: EngineOptions;
  logger?: Logger;
  /** Builds the engine for one option set; default an OciCliEngine. */
  make?: (o: EngineOptions) => Engine;
}

export class EngineSelector implements Engine {
  readonly name: string;
  private readonly defaults: EngineOptions;
  private readonly make: (o: EngineOptions) => Engine;
  private readonly engines = new Map<string, Engine>();
  /** container key → engine options key; filled on create or on the first call after a restart */
  private readonly chosen = new Map<string, EngineOptions>();

  constructor(o: EngineSelectOptions) {
    this.defaults = o.defaults;
    this.name = path.basename(o.defaults.binary);
    this.make =
      o.make ??
      ((e) => new OciCliEngine({ binary: e.binary, ...(e.root ? { root: e.root } : {}), systemdCgroup: e.systemdCgroup, ...(o.logger ? { logger: o.logger } : {}) }));
  }

  private engineFor(opts: EngineOptions): Engine {
    const key = JSON.stringify([opts.binary, opts.root ?? '', opts.systemdCgroup]);
    let e = this.engines.get(key);
    if (!e) {
      e = this.make(opts);
      this.engines.set(key, e);
    }
    return e;
  }

  private optionsOf(c: ContainerRef): EngineOptions {
    const key = `${c.namespace}/${c.id}`;
    let o = this.chosen.get(key);
    if (!o) {
      let spec: { annotations?: Record<string, string> } | undefined;
      try {
        spec = JSON.parse(fs.readFileSync(path.join(c.bundle, 'config.json'), 'utf8')) as { annotations?: Record<string, string> };
      } catch {
        spec = undefined; // bundle gone: the default engine answers (delete of a vanished container is not an error)
      }
      o = engineOptionsOfSpec(spec) ?? this.defaults;
      this.chosen.set(key, o);
    }
    return o;
  }

  private pick(c: ContainerRef): Engine {
    return this.engineFor(this.optionsOf(c));
  }

  async create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number }> {
    const o = engineOptionsOfSpec(init.spec) ?? this.defaults;
    this.chosen.set(`${c.namespace}/${c.id}`, o);
    const options = { ...init.options };
    if (o.noPivotRoot) options.noPivotRoot = true;
    if (o.noNewKeyring) options.noNewKeyring = true;
    return this.engineFor(o).create(c, { ...init, options });
  }

  start(c: ContainerRef): Promise<{ pid: number }> {
    return this.pick(c).start(c);
  }

  exec(c: ContainerRef, execId: string, process: OciProcess, stdio: ProcessStdio): Promise<{ pid: number }> {
    return this.pick(c).exec(c, execId, process, stdio);
  }

  kill(c: ContainerRef, execId: string | undefined, signal: number, all: boolean): Promise<void> {
    return this.pick(c).kill(c, execId, signal, all);
  }

  async delete(c: ContainerRef, opts: { force: boolean }): Promise<void> {
    await this.pick(c).delete(c, opts);
    this.chosen.delete(`${c.namespace}/${c.id}`);
  }

  state(c: ContainerRef): Promise<{ status: EngineStatus; pid: number }> {
    return this.pick(c).state(c);
  }

  pids(c: ContainerRef): Promise<number[]> {
    return this.pick(c).pids(c);
  }

  pause(c: ContainerRef): Promise<void> {
    return this.pick(c).pause(c);
  }

  resume(c: ContainerRef): Promise<void> {
    return this.pick(c).resume(c);
  }

  update(c: ContainerRef, resources: OciLinuxResources): Promise<void> {
    return this.pick(c).update(c, resources);
  }

  stats(c: ContainerRef): Promise<EngineAny> {
    return this.pick(c).stats(c);
  }

  async oomKills(c: ContainerRef): Promise<bigint | undefined> {
    const e = this.pick(c);
    if (!e.oomKills) throw new TtrpcError(Code.UNIMPLEMENTED, `${e.name} reports no OOM kills`);
    return e.oomKills(c);
  }
}
