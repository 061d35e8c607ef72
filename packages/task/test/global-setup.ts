// crun 1.8.1 refuses hybrid hosts while hugetlb sits in the cgroup2 mount ("drop all controllers from cgroupv2");
// mounting hugetlb as a v1 hierarchy (machine-facts) moves it out. Only done when hugetlb is in cgroup2.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';

export default function globalSetup(): void {
  const controllers = '/sys/fs/cgroup/unified/cgroup.controllers';
  if (!existsSync(controllers)) return;
  if (!readFileSync(controllers, 'utf8').split(/\s+/).includes('hugetlb')) return;
  try {
    mkdirSync('/sys/fs/cgroup/hugetlb', { recursive: true });
    execFileSync('mount', ['-t', 'cgroup', '-o', 'hugetlb', 'cgroup', '/sys/fs/cgroup/hugetlb']);
  } catch (err) {
    process.stderr.write(`global-setup: could not mount hugetlb as cgroup v1 (${(err as Error).message}); crun tests may fail\n`);
  }
}
