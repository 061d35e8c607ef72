// Entry point of the guest agent: `qjs --std /agent/vmm-task.js`, PID 1 of the guest (exec'd by
// /init). It opens the virtio-serial port named "agent" itself, non-blocking, and serves the
// protocol on it for as long as the guest runs; the host may disconnect and reconnect any time.
import { Session, type Transport } from '@kuasar/vmm-protocol';
import { Agent, AGENT_VERSION } from './agent';
import * as platform from './platform';

// A host that went away makes the port readable with EOF until it comes back; while it is away the
// agent looks every RECONNECT_POLL_MS instead of spinning on EOF.
const RECONNECT_POLL_MS = 200;
// Guards against a host that is connected but never reads: past this, queued output is dropped and
// the session detached (events stay in the ring; the next HELLO replays them).
const MAX_QUEUED = 8 * 1024 * 1024;

class PortTransport implements Transport {
  private queue: Uint8Array[] = [];
  private queued = 0;
  private writeArmed = false;

  constructor(
    private readonly fd: number,
    private readonly onOverflow: () => void,
  ) {}

  write(bytes: Uint8Array): void {
    if (this.queue.length === 0) {
      const n = platform.write(this.fd, bytes);
      if (n === bytes.length) return;
      if (n < 0 && -n !== platform.EAGAIN && -n !== platform.EINTR) {
        platform.log('warn', 'port write failed', { errno: -n });
        return;
      }
      bytes = n > 0 ? bytes.subarray(n) : bytes;
    }
    this.queue.push(bytes);
    this.queued += bytes.length;
    if (this.queued > MAX_QUEUED) {
      platform.log('warn', 'host is not reading the port; dropping queued output', { queued: this.queued });
      this.clear();
      this.onOverflow();
      return;
    }
    this.arm();
  }

  clear(): void {
    this.queue = [];
    this.queued = 0;
    if (this.writeArmed) platform.onWritable(this.fd, null);
    this.writeArmed = false;
  }

  private arm(): void {
    if (this.writeArmed) return;
    this.writeArmed = true;
    platform.onWritable(this.fd, () => this.flush());
  }

  private flush(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0];
      const n = platform.write(this.fd, head);
      if (n < 0) {
        if (-n === platform.EAGAIN || -n === platform.EINTR) return;
        platform.log('warn', 'port write failed', { errno: -n });
        this.clear();
        return;
      }
      this.queued -= n;
      if (n === head.length) this.queue.shift();
      else {
        this.queue[0] = head.subarray(n);
        return;
      }
    }
    this.writeArmed = false;
    platform.onWritable(this.fd, null);
  }
}

function bootId(): string {
  const id = (platform.readText('/proc/sys/kernel/random/boot_id') ?? '').trim();
  return id || `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;
}

function main(): void {
  const debug = platform.getenv('KUASAR_DEBUG') === '1';
  platform.setDebug(debug);
  const portPath = platform.getenv('KUASAR_PORT');
  if (!portPath) {
    platform.log('error', 'KUASAR_PORT is not set; /init found no virtio-serial port named "agent"');
    return;
  }
  platform.startReaper();
  const boot = bootId();
  const kernelRelease = (platform.readText('/proc/sys/kernel/osrelease') ?? '').trim();
  const session = new Session({
    role: 'guest',
    timers: platform.timers,
    guestInfo: () => ({
      agent: AGENT_VERSION,
      uptimeMs: Math.round(Number((platform.readText('/proc/uptime') ?? '0').split(' ')[0]) * 1000),
      kernelRelease,
      bootId: boot,
    }),
  });
  session.onProtocolError((err) => platform.log('warn', 'protocol error on the agent port', { code: err.code, err: err.message }));
  new Agent(session);

  // Non-blocking: a blocking write would freeze the agent (and every relay) while the host is away.
  const fd = platform.openDevice(portPath, true);
  const transport = new PortTransport(fd, () => session.detach());
  const buf = new ArrayBuffer(65536);

  const disconnected = () => {
    platform.log('info', 'host disconnected');
    transport.clear();
    session.detach();
    platform.onReadable(fd, null);
    poll();
  };
  // Returns false once the host is gone.
  const drain = (): boolean => {
    for (;;) {
      const n = platform.read(fd, buf, buf.byteLength);
      if (n > 0) {
        if (!session.attached) session.attach(transport);
        session.receive(new Uint8Array(buf, 0, n));
        continue;
      }
      if (n < 0 && (-n === platform.EAGAIN || -n === platform.EINTR)) {
        // Connected and idle (EAGAIN only comes from a connected port).
        if (!session.attached) session.attach(transport);
        return true;
      }
      if (n < 0) platform.log('warn', 'port read failed', { errno: -n });
      return false;
    }
  };
  const poll = () =>
    platform.timers.setTimeout(() => {
      if (drain()) platform.onReadable(fd, onReadable);
      else poll();
    }, RECONNECT_POLL_MS);
  const onReadable = () => {
    if (!drain()) disconnected();
  };

  session.attach(transport);
  platform.onReadable(fd, onReadable);
  const uptime = (platform.readText('/proc/uptime') ?? '').split(' ')[0];
  platform.consoleLine(`KUASAR-AGENT-READY uptime=${uptime} version=${AGENT_VERSION} port=${portPath}`);
}

main();
