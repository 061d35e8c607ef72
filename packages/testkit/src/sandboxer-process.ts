// A sandboxer binary bundled from its src/main.ts, started as a real process the way systemd starts it: ready once it
// logs "sandboxer ready" (log level info or lower). koffi resolves from @kuasar/sys's node_modules.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

export interface SandboxerProcess {
  child: ChildProcess;
  pid: number;
  logs: string[];
  exited: Promise<number | null>;
}

/** Starts the bundled sandboxer; resolves once it logged "sandboxer ready" (needs log level info or lower). */
export function startSandboxerProcess(script: string, args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<SandboxerProcess> {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, NODE_PATH: path.join(__dirname, '..', '..', 'sys', 'node_modules'), NOTIFY_SOCKET: '', KUASAR_TASK_RELAY: '0', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs: string[] = [];
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sandboxer not ready after ${timeoutMs} ms: ${logs.slice(-5).join('\n')}`));
    }, timeoutMs);
    let buf = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) {
        logs.push(l);
        if (process.env['KUASAR_TEST_LOG']) process.stderr.write(`${l}\n`);
        if (l.includes('"sandboxer ready"')) {
          clearTimeout(timer);
          resolve({ child, pid: child.pid!, logs, exited });
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`sandboxer exited ${code}: ${logs.slice(-5).join('\n')}${buf}`));
    });
  });
}
