// README command 1: a demo pod through a real, private containerd 2.1 and the packaged runc-sandboxer.
// containerd reaches the sandboxer as a `sandbox` proxy plugin (gRPC Controller) and calls its task API directly:
// no shim process and no pause container. Everything runs in a temp dir and is removed at the end, also on Ctrl-C.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { BUSYBOX_IMAGE, CriClient, PrivateContainerd, criLogStream, importTestImages, readCriLog } from '@kuasar/testkit';
import { REPO_ROOT, handlerName, kuasarContainerdConfig } from './matrix';
import { SandboxerProcess } from './sandboxer-process';

const step = (what: string): void => void process.stdout.write(`==> ${what}\n`);

async function main(): Promise<void> {
  const binary = path.join(REPO_ROOT, 'dist/bin/runc-sandboxer');
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run \`pnpm build\` first`);
  const base = mkdtempSync('/tmp/kuasar-demo-');
  let containerd: PrivateContainerd | undefined;
  let sandboxer: SandboxerProcess | undefined;
  let client: CriClient | undefined;
  let cleanup: (() => Promise<void>) | undefined;
  let cleaning = false;

  const tearDown = async (): Promise<void> => {
    if (cleaning) return;
    cleaning = true;
    step('cleaning up: removing the pod, stopping containerd and the sandboxer');
    await cleanup?.().catch((err: Error) => process.stderr.write(`pod cleanup: ${err.message}\n`));
    client?.close();
    await containerd?.stop().catch((err: Error) => process.stderr.write(`containerd stop: ${err.message}\n`));
    await sandboxer?.stopAll().catch((err: Error) => process.stderr.write(`sandboxer stop: ${err.message}\n`));
    rmSync(base, { recursive: true, force: true });
  };
  const onSignal = (): void => void tearDown().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const listen = path.join(base, 'runc-sandboxer.sock');
    step('starting a private containerd 2.1 with the kuasar-runc sandbox proxy plugin');
    containerd = await PrivateContainerd.start({ version: '2.1', extraConfig: kuasarContainerdConfig('2.1', 'runc', listen) });
    step(`starting ${binary}`);
    sandboxer = await SandboxerProcess.start({
      kind: 'runc',
      command: [binary],
      listen,
      dir: path.join(base, 'state'),
      ttrpcAddress: containerd.ttrpcAddress,
      logPath: path.join(base, 'runc-sandboxer.log'),
      logLevel: 'info',
    });
    client = new CriClient(containerd.grpcAddress);
    await client.waitReady();
    step('importing a busybox image built locally from Debian busybox-static (no registry)');
    await importTestImages(containerd);
    await client.waitImage(BUSYBOX_IMAGE);

    step('running a pod through CRI (RunPodSandbox, CreateContainer, StartContainer) with runtime handler kuasar-runc');
    const started = Date.now();
    const pod = await client.runPodWithContainer({
      handler: handlerName('runc'),
      hostNetwork: true,
      logDirectory: path.join(base, 'logs'),
      command: ['sh', '-c', 'echo "Hello from a Kuasar pod: $(hostname), kernel $(uname -r)"; cat /proc/self/cgroup | head -n 3'],
    });
    cleanup = pod.cleanup;
    const exited = await client.waitContainerExit(pod.containerId, 30_000);
    step(`the container exited with code ${exited.exitCode} after ${Date.now() - started} ms; it printed:`);
    process.stdout.write(criLogStream(readCriLog(pod.logPath), 'stdout'));
    step(`one sandboxer process (pid ${sandboxer.pid}) served the pod; no shim, no pause container`);
  } finally {
    await tearDown();
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`demo failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
