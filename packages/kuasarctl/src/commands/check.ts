// `kuasarctl check`.
import { checkHost } from '../check/host';
import { exitCodeOf, type Finding } from '../check/finding';
import { UsageError, parseKinds } from '../kinds';
import { parseOverrides } from '../locations';
import { renderTable } from '../table';
import { parseMajor } from './config';

export interface CheckFlags {
  kinds?: string;
  containerdConfig: string;
  containerdVersion?: string;
  dir?: string[];
  socket?: string[];
  output: string;
}

export function renderFindings(findings: readonly Finding[]): string {
  let out = renderTable(['CHECK', 'STATUS', 'MESSAGE'], findings.map((f) => [f.check, f.severity, f.message]));
  const fixes = findings.filter((f) => f.severity !== 'ok' && f.fix);
  if (fixes.length > 0) out += `\nFIXES\n${fixes.map((f) => `  ${f.check}: ${f.fix}`).join('\n')}\n`;
  const count = (s: Finding['severity']) => findings.filter((f) => f.severity === s).length;
  const n = (k: number, word: string) => `${k} ${word}${k === 1 ? '' : 's'}`;
  out += `\n${count('ok')} ok, ${n(count('warn'), 'warning')}, ${n(count('fail'), 'failure')}\n`;
  return out;
}

export async function checkCommand(flags: CheckFlags): Promise<number> {
  if (flags.output !== 'table' && flags.output !== 'json') throw new UsageError(`-o must be table or json, got ${JSON.stringify(flags.output)}`);
  const findings = await checkHost({
    kinds: flags.kinds ? parseKinds(flags.kinds) : undefined,
    containerdConfig: flags.containerdConfig,
    containerdVersion: flags.containerdVersion && flags.containerdVersion !== 'auto' ? parseMajor(flags.containerdVersion) : undefined,
    sockets: parseOverrides(flags.socket ?? [], '--socket'),
    dirs: parseOverrides(flags.dir ?? [], '--dir'),
    cacheDir: process.env.KUASAR_CACHE || '/var/cache/kuasar',
  });
  const code = exitCodeOf(findings);
  if (flags.output === 'json') process.stdout.write(`${JSON.stringify({ findings, exitCode: code }, null, 2)}\n`);
  else process.stdout.write(renderFindings(findings));
  return code;
}
