import { readFile } from 'node:fs/promises';
import { parse as parseToml } from 'smol-toml';
import { ConfigError } from './errors';

/**
 * A small typed schema for sandboxer config files: every key has a type and a default, so a config file only names
 * what differs, and a typo is an error that names the key instead of a setting that silently does nothing.
 */
export type FieldSpec =
  | { readonly type: 'string'; readonly default: string; readonly enum?: readonly string[]; readonly description?: string }
  | { readonly type: 'integer'; readonly default: number; readonly min?: number; readonly max?: number; readonly description?: string }
  | { readonly type: 'boolean'; readonly default: boolean; readonly description?: string }
  | { readonly type: 'string[]'; readonly default: readonly string[]; readonly description?: string }
  | { readonly type: 'table'; readonly fields: ConfigSchema; readonly description?: string };

export type ConfigSchema = { readonly [key: string]: FieldSpec };

type ValueOf<F> = F extends { type: 'string'; enum: readonly (infer E)[] }
  ? E
  : F extends { type: 'string' }
    ? string
    : F extends { type: 'integer' }
      ? number
      : F extends { type: 'boolean' }
        ? boolean
        : F extends { type: 'string[]' }
          ? string[]
          : F extends { type: 'table'; fields: infer S extends ConfigSchema }
            ? ConfigOf<S>
            : never;

export type ConfigOf<S extends ConfigSchema> = { -readonly [K in keyof S]: ValueOf<S[K]> };

/** Identity, but keeps the literal types so `ConfigOf<typeof schema>` is precise. */
export function defineConfig<const S extends ConfigSchema>(schema: S): S {
  return schema;
}

export function configDefaults<S extends ConfigSchema>(schema: S): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema)) {
    if (spec.type === 'table') out[key] = configDefaults(spec.fields);
    else if (spec.type === 'string[]') out[key] = [...spec.default];
    else out[key] = spec.default;
  }
  return out as ConfigOf<S>;
}

/** Applies `input` (a parsed TOML table) over the defaults, checking every key and type. */
export function applyConfig<S extends ConfigSchema>(schema: S, input: unknown, source = 'config', prefix = ''): ConfigOf<S> {
  const out = configDefaults(schema) as Record<string, unknown>;
  if (!isTable(input)) {
    throw new ConfigError(`${source}: ${prefix ? `"${prefix}"` : 'the top level'} must be a table, got ${describe(input)}`);
  }
  for (const [key, value] of Object.entries(input)) {
    const name = prefix ? `${prefix}.${key}` : key;
    const spec = Object.prototype.hasOwnProperty.call(schema, key) ? schema[key] : undefined;
    if (!spec) {
      const known = Object.keys(schema).join(', ') || '(none)';
      throw new ConfigError(`${source}: unknown key "${name}" (known keys${prefix ? ` in [${prefix}]` : ''}: ${known})`);
    }
    out[key] = checkValue(spec, value, name, source);
  }
  return out as ConfigOf<S>;
}

function checkValue(spec: FieldSpec, value: unknown, name: string, source: string): unknown {
  const bad = (what: string) => new ConfigError(`${source}: "${name}" must be ${what}, got ${describe(value)}`);
  switch (spec.type) {
    case 'string':
      if (typeof value !== 'string') throw bad('a string');
      if (spec.enum && !spec.enum.includes(value)) throw bad(`one of ${spec.enum.map((e) => JSON.stringify(e)).join(', ')}`);
      return value;
    case 'integer': {
      const n = typeof value === 'bigint' ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw bad('an integer');
      if (spec.min !== undefined && n < spec.min) throw bad(`at least ${spec.min}`);
      if (spec.max !== undefined && n > spec.max) throw bad(`at most ${spec.max}`);
      return n;
    }
    case 'boolean':
      if (typeof value !== 'boolean') throw bad('a boolean');
      return value;
    case 'string[]':
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw bad('an array of strings');
      return [...value];
    case 'table':
      return applyConfig(spec.fields, value, source, name);
  }
}

function isTable(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date);
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  if (isTable(v)) return 'a table';
  return `${typeof v} ${JSON.stringify(typeof v === 'bigint' ? v.toString() : v)}`;
}

export function parseConfigText<S extends ConfigSchema>(schema: S, text: string, source = 'config'): ConfigOf<S> {
  let parsed: unknown;
  try {
    parsed = parseToml(text);
  } catch (err) {
    throw new ConfigError(`${source}: invalid TOML: ${(err as Error).message}`);
  }
  return applyConfig(schema, parsed, source);
}

export async function loadConfigFile<S extends ConfigSchema>(schema: S, file: string | undefined): Promise<ConfigOf<S>> {
  if (file === undefined) return configDefaults(schema);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  return parseConfigText(schema, text, file);
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface FrameworkConfig {
  listen: string;
  dir: string;
  log_level: LogLevel;
}

/** [metrics]: the optional Prometheus endpoint (metrics.ts); `--metrics-listen` overrides `listen`. */
export interface MetricsConfig {
  /** `host:port`, `[v6]:port` or an absolute unix socket path; "" = no metrics endpoint. */
  listen: string;
}

/** [tracing]: optional OpenTelemetry traces of Controller and Task calls (tracing.ts). */
export interface TracingConfig {
  /** OTLP/HTTP traces URL; "" = OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT if set, else off. */
  endpoint: string;
}

/** Where traces go: the config key wins, then OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, then OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces. */
export function tracesEndpoint(configured: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (configured) return configured;
  if (env.OTEL_TRACES_EXPORTER === 'none') return undefined;
  if (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (env.OTEL_EXPORTER_OTLP_ENDPOINT) return `${env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces`;
  return undefined;
}

/** A sandboxer's whole config: framework settings plus the kind's own table. */
export interface SandboxerConfig<S extends ConfigSchema> {
  sandboxer: FrameworkConfig;
  metrics: MetricsConfig;
  tracing: TracingConfig;
  kind: ConfigOf<S>;
}

/**
 * The schema of the file every sandboxer reads: framework settings under [sandboxer], the kind's own settings under
 * [<kind>] (e.g. [runc]). Command-line flags override [sandboxer].
 */
export function sandboxerConfigSchema(kind: string, kindSchema: ConfigSchema): ConfigSchema {
  if (kind === 'sandboxer' || kind === 'metrics' || kind === 'tracing') throw new Error(`a sandboxer kind cannot be named "${kind}"`);
  return {
    sandboxer: {
      type: 'table',
      fields: {
        listen: { type: 'string', default: `/run/${kind}-sandboxer.sock`, description: 'Controller gRPC socket' },
        dir: { type: 'string', default: `/run/kuasar-${kind}`, description: 'state dir' },
        log_level: { type: 'string', default: 'info', enum: LOG_LEVELS },
      },
    },
    metrics: {
      type: 'table',
      fields: {
        listen: { type: 'string', default: '', description: 'Prometheus endpoint: host:port or unix socket path ("" = off)' },
      },
    },
    tracing: {
      type: 'table',
      fields: {
        endpoint: {
          type: 'string',
          default: '',
          description: 'OTLP/HTTP traces URL ("" = OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else off)',
        },
      },
    },
    [kind]: { type: 'table', fields: kindSchema },
  };
}

function split<S extends ConfigSchema>(kind: string, whole: Record<string, unknown>): SandboxerConfig<S> {
  return {
    sandboxer: whole.sandboxer as FrameworkConfig,
    metrics: whole.metrics as MetricsConfig,
    tracing: whole.tracing as TracingConfig,
    kind: whole[kind] as ConfigOf<S>,
  };
}

export function parseSandboxerConfig<S extends ConfigSchema>(
  kind: string,
  kindSchema: S,
  text: string,
  source = 'config',
): SandboxerConfig<S> {
  return split(kind, parseConfigText(sandboxerConfigSchema(kind, kindSchema), text, source));
}

export async function loadSandboxerConfig<S extends ConfigSchema>(
  kind: string,
  kindSchema: S,
  file: string | undefined,
): Promise<SandboxerConfig<S>> {
  return split(kind, await loadConfigFile(sandboxerConfigSchema(kind, kindSchema), file));
}
