import { CriLogFormatError, criLogStream, parseCriLog } from '../src';

describe('parseCriLog', () => {
  it('splits timestamp, stream, tag and text; keeps spaces and an empty text', () => {
    const lines = parseCriLog([
      '2026-11-28T19:30:01.123456789Z stdout F hello  world ',
      '2026-11-28T19:30:01.2Z stderr P par',
      '2026-11-28T19:30:01.3+01:00 stderr F tial',
      '2026-11-28T19:30:02Z stdout F ',
      '',
    ].join('\n'));
    expect(lines).toEqual([
      { time: '2026-11-28T19:30:01.123456789Z', stream: 'stdout', partial: false, text: 'hello  world ' },
      { time: '2026-11-28T19:30:01.2Z', stream: 'stderr', partial: true, text: 'par' },
      { time: '2026-11-28T19:30:01.3+01:00', stream: 'stderr', partial: false, text: 'tial' },
      { time: '2026-11-28T19:30:02Z', stream: 'stdout', partial: false, text: '' },
    ]);
    expect(criLogStream(lines, 'stdout')).toBe('hello  world \n\n');
    expect(criLogStream(lines, 'stderr')).toBe('partial\n');
  });

  it('is empty for an empty file', () => {
    expect(parseCriLog('')).toEqual([]);
  });

  it.each([
    'hello',
    '2026-11-28T19:30:01Z stdin F x',
    '2026-11-28T19:30:01Z stdout X x',
    '2026-11-28 19:30:01 stdout F x',
    '2026-11-28T19:30:01Z stdout F',
  ])('rejects malformed line %p with its line number', (bad) => {
    expect(() => parseCriLog(`2026-11-28T19:30:00Z stdout F ok\n${bad}\n`)).toThrow(CriLogFormatError);
    expect(() => parseCriLog(`2026-11-28T19:30:00Z stdout F ok\n${bad}\n`)).toThrow(/line 2/);
  });
});
