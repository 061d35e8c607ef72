import { Writable } from 'node:stream';
import pino from 'pino';
import { ExitListeners } from '../src';

test('every exit listener gets the exit; one that throws is logged and stops nobody', () => {
  const lines: string[] = [];
  const logger = pino(new Writable({ write: (chunk: Buffer, _enc, done) => { lines.push(chunk.toString()); done(); } }));
  const exits = new ExitListeners(logger);
  const seen: string[] = [];
  exits.add((e) => seen.push(`a:${e.id}:${e.status}`));
  exits.add(() => {
    throw new Error('listener broke');
  });
  exits.add((e) => seen.push(`c:${e.id}:${e.execId}`));
  exits.emit({ id: 'c1', execId: 'x', status: 137 });
  expect(seen).toEqual(['a:c1:137', 'c:c1:x']);
  expect(lines.map((l) => JSON.parse(l) as { msg: string; err: string; id: string }))
    .toEqual([expect.objectContaining({ msg: 'exit listener failed', err: 'listener broke', id: 'c1' })]);
});
