import { execFileSync } from 'node:child_process';
import { netnsPathProblem } from '../src';

test('a namespace file passes; anything else gets a reason naming the path', () => {
  expect(netnsPathProblem('/proc/self/ns/net')).toBeUndefined();
  const name = `kuasar-netns-test-${process.pid}`;
  execFileSync('ip', ['netns', 'add', name]);
  try {
    expect(netnsPathProblem(`/run/netns/${name}`)).toBeUndefined(); // bind-mounted, as CNI does
  } finally {
    execFileSync('ip', ['netns', 'delete', name]);
  }
  expect(netnsPathProblem('relative/ns')).toBe('netns path must be absolute: relative/ns');
  expect(netnsPathProblem('/nonexistent/netns')).toBe('netns path does not exist: /nonexistent/netns');
  expect(netnsPathProblem('/')).toBe('netns path is not a namespace file: /');
  expect(netnsPathProblem('/etc/hostname')).toBe('netns path is not a namespace file: /etc/hostname');
});
