// OpenTelemetry traces of Controller and Task calls, exported over OTLP/HTTP. cli.ts loads this module only when a
// traces endpoint is configured ([tracing] endpoint, or the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables),
// so a sandboxer without tracing never loads the SDK.
//
// containerd's ttrpc client (otelttrpc) sends the W3C `traceparent` in the request metadata: Task spans continue
// containerd's trace. Controller spans start new traces, since containerd sends no trace context there: it dials
// proxy plugins (our Controller) with a plain gRPC client, without otelgrpc's stats handler (containerd 2.0/2.1
// cmd/containerd/server/server.go, proxyClients.getClient), so only `containerd-namespace` arrives.
import { type Context, ROOT_CONTEXT, SpanKind, SpanStatusCode, type TextMapGetter, type Tracer, context, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import type { Logger } from 'pino';
import type { CallApi, CallMetadata, CallObserver } from './call-observer';
import { ConfigError, StatusCode, messageOf, statusCodeOf } from './errors';

export interface TracingOptions {
  /** sandboxer kind; the service is `kuasar-<kind>-sandboxer` */
  kind: string;
  /** OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces */
  endpoint: string;
  version: string;
  logger: Logger;
  /** Longest a span waits in memory before it is exported; tests shorten it. */
  exportDelayMs?: number;
}

const metadataGetter: TextMapGetter<CallMetadata | undefined> = {
  keys: (carrier) => (carrier ? [...carrier.keys()] : []),
  get: (carrier, key) => {
    const values = carrier?.get(key);
    return values && values.length > 0 ? [...values] : undefined;
  },
};

const CODE_NAMES = new Map<number, string>(Object.entries(StatusCode).map(([name, code]) => [code, name]));

export class SandboxerTracing implements CallObserver {
  private readonly propagator = new W3CTraceContextPropagator();
  private readonly tracer: Tracer;

  private constructor(private readonly provider: TracerProvider) {
    this.tracer = provider.getTracer('kuasar-sandboxer');
  }

  static start(o: TracingOptions): SandboxerTracing {
    let url: URL;
    try {
      url = new URL(o.endpoint);
    } catch {
      throw new ConfigError(`tracing endpoint must be an http(s) URL such as http://127.0.0.1:4318/v1/traces, got ${JSON.stringify(o.endpoint)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ConfigError(`tracing endpoint must use http or https (OTLP/HTTP), got ${JSON.stringify(o.endpoint)}`);
    }
    const exporter = new OTLPTraceExporter({ url: url.toString() });
    const provider = new TracerProvider({
      resource: resourceFromAttributes({ 'service.name': `kuasar-${o.kind}-sandboxer`, 'service.version': o.version }),
      spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: o.exportDelayMs ?? 5000 })],
    });
    o.logger.info({ endpoint: url.toString() }, 'tracing Controller and Task calls over OTLP/HTTP');
    return new SandboxerTracing(provider);
  }

  around<T>(api: CallApi, method: string, call: () => T, metadata?: CallMetadata): T {
    const parent: Context = metadata ? this.propagator.extract(ROOT_CONTEXT, metadata, metadataGetter) : ROOT_CONTEXT;
    const service = api === 'controller' ? 'containerd.services.sandbox.v1.Controller' : 'containerd.task.v3.Task';
    const span = this.tracer.startSpan(
      `${service}/${method}`,
      { kind: SpanKind.SERVER, attributes: { 'rpc.system': api === 'controller' ? 'grpc' : 'ttrpc', 'rpc.service': service, 'rpc.method': method } },
      parent,
    );
    const fail = (err: unknown): void => {
      span.setAttribute('rpc.grpc.status_code', statusCodeOf(err));
      span.setStatus({ code: SpanStatusCode.ERROR, message: `${CODE_NAMES.get(statusCodeOf(err)) ?? 'UNKNOWN'}: ${messageOf(err)}` });
      span.end();
    };
    let result: T;
    try {
      result = context.with(trace.setSpan(parent, span), call);
    } catch (err) {
      fail(err);
      throw err;
    }
    if (result instanceof Promise) {
      return result.then(
        (value) => {
          span.end();
          return value;
        },
        (err: unknown) => {
          fail(err);
          throw err;
        },
      ) as T;
    }
    span.end();
    return result;
  }

  /** Exports what is still buffered; call before exit. */
  async shutdown(): Promise<void> {
    await this.provider.shutdown();
  }
}
