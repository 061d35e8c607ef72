import pino, { type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config';

export type { Logger } from 'pino';

/**
 * The one logger of a sandboxer process: pino JSON on stderr (stdout stays free for tools that parse it). Writes are
 * synchronous so the last lines before a crash are not lost; components take child loggers ({sandbox}, {container}).
 */
export function createLogger(options: { level?: LogLevel; kind?: string; destination?: DestinationStream } = {}): Logger {
  const destination = options.destination ?? pino.destination({ dest: 2, sync: true });
  return pino(
    {
      level: options.level ?? 'info',
      base: { pid: process.pid, ...(options.kind ? { sandboxer: options.kind } : {}) },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
