// crictl-style output: upper-case headers, columns padded with spaces (crictl uses tabwriter with 3 spaces of
// padding), no borders, so `awk '{print $1}'` works on it.
const PADDING = 3;

export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] + PADDING)))
      .join('')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** "5 minutes ago", like crictl's CREATED column. */
export function ago(date: Date | undefined, now: Date = new Date()): string {
  if (!date || Number.isNaN(date.getTime())) return '-';
  const s = Math.round((now.getTime() - date.getTime()) / 1000);
  if (s < 0) return 'in the future';
  if (s < 1) return 'now';
  const units: [number, string][] = [
    [86400 * 365, 'year'],
    [86400 * 30, 'month'],
    [86400 * 7, 'week'],
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  for (const [secs, name] of units) {
    if (s >= secs) {
      const n = Math.floor(s / secs);
      return `${n} ${name}${n === 1 ? '' : 's'} ago`;
    }
  }
  return 'now';
}

/** Sandbox ids are 64 hex characters under CRI; tables show the first 13 like crictl, unless --no-trunc. */
export function truncateId(id: string, noTrunc: boolean): string {
  return noTrunc ? id : id.slice(0, 13);
}
