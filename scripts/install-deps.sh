#!/usr/bin/env bash
# Brings a fresh Debian 12 host (root) to what Kuasar's build and tests need; a no-op in seconds
# when everything is already there. Safe to rerun.
#
#   sudo bash scripts/install-deps.sh
#
# Steps: apt packages -> pnpm 12.4.2 -> pnpm install -> fetch-debs.sh (containerd 1.7/2.1, runsc)
# -> host workarounds (crun on hybrid cgroups).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${KUASAR_CACHE:-/var/cache/kuasar}"
PNPM_VERSION=12.4.2
# gcc + musl-tools: vmm-task's build compiles its static terminal helper (native/console.c) with musl-gcc.
APT_PACKAGES=(
  runc crun catatonit containerd protobuf-compiler qemu-system-x86 busybox-static wabt iproute2
  util-linux containernetworking-plugins lz4 cpio hyperfine gcc musl-tools
)

die() { echo "install-deps: error: $*" >&2; exit 1; }
note() { echo "install-deps: $*" >&2; }
SUMMARY=()

LOG="$(mktemp -t install-deps.XXXXXX.log)"
trap 'rm -f "$LOG"' EXIT
# Quiet on success; on failure the command's full output is what the developer needs.
run() {
  if ! "$@" >"$LOG" 2>&1; then
    echo "install-deps: error: command failed: $*" >&2
    tail -n 40 "$LOG" | sed 's/^/  | /' >&2
    exit 1
  fi
}

[ "$(id -u)" = 0 ] || die "run as root (apt-get install, mount)"
command -v apt-get >/dev/null || die "apt-get not found: this script targets Debian 12"
if [ -r /etc/os-release ] && ! grep -q '^VERSION_CODENAME=bookworm' /etc/os-release; then
  note "warning: not Debian 12 (bookworm); package names may differ"
fi
mkdir -p "$CACHE"

# --- apt packages ---------------------------------------------------------------------------------
missing_packages() {
  local p st
  for p in "${APT_PACKAGES[@]}"; do
    st="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [ "$st" = "install ok installed" ] || echo "$p"
  done
}
# apt stamps list files with the server's Last-Modified, so our own stamp tells when we last updated.
APT_STAMP="$CACHE/apt-update.stamp"
apt_update() {
  note "apt-get update..."
  run apt-get -q update
  touch "$APT_STAMP"
}

mapfile -t MISSING < <(missing_packages)
if [ "${#MISSING[@]}" -gt 0 ]; then
  if [ ! -f "$APT_STAMP" ] || [ -n "$(find "$APT_STAMP" -mmin +1440)" ] \
     || ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
    apt_update
  fi
  note "installing ${MISSING[*]} (can take a few minutes)..."
  # Recommends are left out: they would pull qemu's GTK GUI and other things nothing here uses.
  if ! apt-get install -y -q --no-install-recommends "${MISSING[@]}" >"$LOG" 2>&1; then
    # Lists may be stale even within the day (a point release removed the old version).
    apt_update
    run apt-get install -y -q --no-install-recommends "${MISSING[@]}"
  fi
  SUMMARY+=("apt: installed ${MISSING[*]}")
else
  SUMMARY+=("apt: all ${#APT_PACKAGES[@]} packages present")
fi

# --- pnpm and the workspace -----------------------------------------------------------------------
# Debian 12 packages Node 18 only; Node 20 must come from the machine image.
command -v node >/dev/null || die "node not found: install Node.js 20 (>= 20.12) first"
case "$(node --version)" in
  v20.1[2-9].*|v20.[2-9][0-9].*) ;;
  *) note "warning: node $(node --version) is outside the supported range >= 20.12 < 21" ;;
esac
command -v npm >/dev/null || die "npm not found: it ships with Node.js 20"
have_pnpm="$(pnpm --version 2>/dev/null || true)"
if [ "$have_pnpm" != "$PNPM_VERSION" ]; then
  note "installing pnpm $PNPM_VERSION (had: ${have_pnpm:-none})..."
  run npm install -g "pnpm@$PNPM_VERSION"
  hash -r
  [ "$(pnpm --version)" = "$PNPM_VERSION" ] || die "pnpm --version is not $PNPM_VERSION after npm install -g"
fi
SUMMARY+=("pnpm: $PNPM_VERSION")

# pnpm install can take ~10 s even when nothing changed; skip it when our stamp of the last
# successful install is newer than the lockfile and every package.json.
installed_lock="$ROOT/node_modules/.kuasar-installed"
need_install=1
if [ -f "$installed_lock" ] && [ -z "$(find "$ROOT/pnpm-lock.yaml" "$ROOT/package.json" "$ROOT/pnpm-workspace.yaml" \
     "$ROOT"/packages/*/package.json -newer "$installed_lock" 2>/dev/null)" ]; then
  need_install=0
fi
if [ "$need_install" = 1 ]; then
  note "pnpm install --frozen-lockfile..."
  (cd "$ROOT" && run pnpm install --frozen-lockfile)
  touch "$installed_lock"
  SUMMARY+=("workspace: pnpm install done")
else
  SUMMARY+=("workspace: node_modules up to date")
fi

# --- containerd 1.7 / 2.1 and runsc from newer Debian releases --------------------------------------
FETCH_OUT="$(KUASAR_CACHE="$CACHE" bash "$ROOT/scripts/fetch-debs.sh")" || die "scripts/fetch-debs.sh failed (see above)"
SUMMARY+=("debs: $(awk '$2=="containerd" || $2=="runsc" { printf "%s ", $1 }' <<<"$FETCH_OUT")-> $CACHE/debs/manifest.json")

# --- host workarounds -----------------------------------------------------------------------------
# crun 1.8.1 refuses hybrid cgroups while hugetlb sits in the cgroup2 mount; a v1 hugetlb hierarchy
# takes it out of cgroup2. runc works either way.
UNIFIED=/sys/fs/cgroup/unified
if [ -r "$UNIFIED/cgroup.controllers" ] && grep -qw hugetlb "$UNIFIED/cgroup.controllers"; then
  mkdir -p /sys/fs/cgroup/hugetlb || die "cannot mkdir /sys/fs/cgroup/hugetlb"
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb \
    || die "mounting the hugetlb v1 hierarchy failed; crun will refuse to run"
  SUMMARY+=("cgroups: mounted hugetlb as v1 hierarchy (crun workaround)")
elif [ -r "$UNIFIED/cgroup.controllers" ]; then
  SUMMARY+=("cgroups: hybrid, hugetlb already off cgroup2")
else
  SUMMARY+=("cgroups: no hybrid unified mount, no workaround needed")
fi

echo "install-deps: done"
printf '  %s\n' "${SUMMARY[@]}"
