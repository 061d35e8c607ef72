#!/usr/bin/env bash
# Measures the cached guest's boot under QEMU TCG: wall time from QEMU launch to the
# KUASAR-GUEST-READY line on the serial console, the guest's own uptime in that line, and the CPU
# time QEMU used until then (the least load-sensitive of the three on a busy machine).
#
#   bash packages/vmm-sandboxer/guest-test/bench-boot.sh [RUNS] [extra kernel cmdline...]
#
# Prints one line per run and the medians. Uses the same QEMU settings as the guest tests' launcher (packages/vmm-task/test/guest.ts).
set -euo pipefail

RUNS="${1:-5}"; shift || true
case "$RUNS" in ''|*[!0-9]*|0) echo "bench-boot: RUNS must be a positive number" >&2; exit 2 ;; esac
GUEST="${KUASAR_CACHE:-/var/cache/kuasar}/guest/current"
[ -f "$GUEST/manifest.json" ] || { echo "bench-boot: no cached guest at $GUEST (run scripts/build-guest.sh)" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "bench-boot: qemu-system-x86_64 not found" >&2; exit 1; }
CMDLINE="$(sed -n 's/^  "cmdline": "\(.*\)",$/\1/p' "$GUEST/manifest.json")"
[ -n "$CMDLINE" ] || { echo "bench-boot: no cmdline in $GUEST/manifest.json" >&2; exit 1; }

WORK="$(mktemp -d -t kuasar-bench.XXXXXX)"
QEMU_PID=
cleanup() { [ -z "$QEMU_PID" ] || kill -9 "$QEMU_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/share"

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

walls=(); uptimes=(); cpus=()
for i in $(seq 1 "$RUNS"); do
  log="$WORK/console.$i"; : >"$log"
  start=$(date +%s.%N)
  qemu-system-x86_64 -M microvm,acpi=off -accel tcg -m 256 -smp 1 -nodefaults -no-user-config \
    -display none -serial stdio -no-reboot \
    -kernel "$GUEST/vmlinux" -initrd "$GUEST/initramfs.img" -append "$CMDLINE kuasar.9p=share $*" \
    -chardev "socket,path=$WORK/agent.sock,server=on,wait=off,id=c0" \
    -device virtio-serial-device -device virtserialport,chardev=c0,name=agent \
    -fsdev "local,id=fs0,path=$WORK/share,security_model=none" -device virtio-9p-device,fsdev=fs0,mount_tag=share \
    >"$log" 2>&1 </dev/null &
  QEMU_PID=$!
  deadline=$((SECONDS + 60))
  until grep -q 'KUASAR-GUEST-READY' "$log"; do
    if [ $SECONDS -gt $deadline ] || ! kill -0 "$QEMU_PID" 2>/dev/null; then
      echo "bench-boot: run $i: no ready marker; console:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.005
  done
  end=$(date +%s.%N)
  # utime + stime of all QEMU threads, in clock ticks.
  ticks=$(awk '{ print $14 + $15 }' "/proc/$QEMU_PID/stat")
  kill -9 "$QEMU_PID"; wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=
  wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
  up=$(sed -n 's/.*KUASAR-GUEST-READY uptime=\([0-9.]*\).*/\1/p' "$log")
  cpu=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }')
  echo "run $i: launch->ready ${wall}s, guest uptime at ready ${up}s, QEMU CPU ${cpu}s"
  walls+=("$wall"); uptimes+=("$up"); cpus+=("$cpu")
done
echo "median launch->ready: $(printf '%s\n' "${walls[@]}" | median)s; median guest uptime at ready: $(printf '%s\n' "${uptimes[@]}" | median)s; median QEMU CPU: $(printf '%s\n' "${cpus[@]}" | median)s; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
