#!/usr/bin/env bash
# Builds the microVM guest for vmm-sandboxer from Debian packages only: a small kernel (uncompressed
# vmlinux, booted by QEMU through PVH) and an lz4 initramfs holding busybox, crun and QuickJS.
#
#   bash scripts/build-guest.sh                  # build what is missing, print the paths
#   bash scripts/build-guest.sh --kernel PATH    # use this kernel, build no kernel
#   bash scripts/build-guest.sh --agent DIR      # put DIR's files into the initramfs at /agent
#   KUASAR_CACHE=/some/dir bash scripts/build-guest.sh
#
# Everything is cached outside the repo under ${KUASAR_CACHE:-/var/cache/kuasar}/guest/, keyed by a
# sha256 of its inputs, so a rerun with unchanged inputs does no work:
#   kernel-<sha256>/vmlinux           key: linux-source-6.1 version + scripts/guest/kernel.config
#                                          + this script's kernel section
#   initramfs-<sha256>.img            key: every file in the image (path, mode, content) + this
#                                          script's initramfs section
#   current -> sets/<k>-<i>/{vmlinux,initramfs.img,manifest.json}   the last build, swapped atomically
#   src/, build/                      kernel source and out-of-tree build dir, reused for incremental builds
#   apt/, debs/                       private apt state for trixie (scripts/lib/private-apt.sh) and its
#                                     unpacked .debs
#
# Inputs: bookworm's linux-source-6.1, busybox-static and crun (installed with apt-get when missing),
# and trixie's quickjs + libc6 fetched as .deb files with a private apt configuration. Trixie never
# enters the system's apt sources and nothing from it is installed (`apt-get download` + `dpkg-deb -x`).
#
# Environment: KUASAR_CACHE, KUASAR_GUEST_KERNEL (= --kernel), KUASAR_GUEST_AGENT (= --agent),
# KUASAR_BUILD_JOBS (make -j, default nproc), KUASAR_DEBIAN_MIRROR (default: the system's Debian mirror).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SELF="$ROOT/scripts/build-guest.sh"
GUEST_FILES="$ROOT/scripts/guest"
CACHE="${KUASAR_CACHE:-/var/cache/kuasar}"
GUEST="$CACHE/guest"
USER_KERNEL="${KUASAR_GUEST_KERNEL:-}"
AGENT_DIR="${KUASAR_GUEST_AGENT:-}"
JOBS="${KUASAR_BUILD_JOBS:-$(nproc)}"

die() { echo "build-guest: error: $*" >&2; exit 1; }
note() { echo "build-guest: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) [ $# -ge 2 ] || die "--kernel needs a path"; USER_KERNEL="$2"; shift 2 ;;
    --kernel=*) USER_KERNEL="${1#*=}"; shift ;;
    --agent) [ $# -ge 2 ] || die "--agent needs a directory"; AGENT_DIR="$2"; shift 2 ;;
    --agent=*) AGENT_DIR="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
if [ -n "$USER_KERNEL" ]; then
  [ -f "$USER_KERNEL" ] && [ -r "$USER_KERNEL" ] || die "kernel '$USER_KERNEL' is not a readable file"
  USER_KERNEL="$(realpath "$USER_KERNEL")"
fi
if [ -n "$AGENT_DIR" ]; then
  [ -d "$AGENT_DIR" ] || die "agent '$AGENT_DIR' is not a directory"
  AGENT_DIR="$(realpath "$AGENT_DIR")"
  # /init runs /agent/vmm-task.js; a directory without it would boot into the fallback shell.
  [ -f "$AGENT_DIR/vmm-task.js" ] || die "agent '$AGENT_DIR' has no vmm-task.js (build it: pnpm --filter @kuasar/vmm-task build)"
fi
case "$JOBS" in ''|*[!0-9]*) die "KUASAR_BUILD_JOBS must be a number, got '$JOBS'" ;; esac
[ "$(id -u)" = 0 ] || die "run as root (apt-get install, mknod of /dev/console in the image)"
for f in kernel.config init; do [ -r "$GUEST_FILES/$f" ] || die "missing $GUEST_FILES/$f"; done

LOG="$(mktemp -t build-guest.XXXXXX.log)"
TMP_DIRS=()
cleanup() { rm -f "$LOG"; for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT
# Quiet on success; on failure the command's output is what the developer needs.
run() {
  if ! "$@" >"$LOG" 2>&1; then
    echo "build-guest: error: command failed: $*" >&2
    tail -n 60 "$LOG" | sed 's/^/  | /' >&2
    exit 1
  fi
}
# shellcheck source=scripts/lib/private-apt.sh
. "$ROOT/scripts/lib/private-apt.sh"
sha256() { sha256sum | cut -d' ' -f1; }
# This script's text between "# >>> NAME" and "# <<< NAME": part of a cache key, so editing how a
# thing is built rebuilds it.
section() { sed -n "/^# >>> $1\$/,/^# <<< $1\$/p" "$SELF"; }
json_str() { local s="${1//\\/\\\\}"; s="${s//\"/\\\"}"; printf '"%s"' "$s"; }
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }

mkdir -p "$GUEST" || die "cannot create $GUEST (set KUASAR_CACHE to a writable dir)"
exec 9>"$GUEST/.lock"
flock 9 || die "cannot lock $GUEST/.lock"

# --- bookworm packages ----------------------------------------------------------------------------
need=(busybox-static crun lz4 cpio debian-archive-keyring binutils)
[ -n "$USER_KERNEL" ] || need+=(linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev)
# One dpkg-query for all: each call costs ~50 ms.
mapfile -t missing < <(
  dpkg-query -W -f='${Package} ${Status}\n' "${need[@]}" 2>/dev/null \
    | awk -v want="${need[*]}" '$NF == "installed" { ok[$1] = 1 }
        END { n = split(want, w, " "); for (i = 1; i <= n; i++) if (!ok[w[i]]) print w[i] }' || true)
if [ "${#missing[@]}" -gt 0 ]; then
  note "apt-get install ${missing[*]}..."
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$LOG" 2>&1; then
    run apt-get -q update
    run apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

# >>> kernel
# The kernel is `make tinyconfig` + scripts/guest/kernel.config, built out of tree in a build dir
# reused across config changes (make's dependency tracking makes a fragment edit ~35 s, not ~8 min).
build_kernel() {
  local ver src bld frag="$GUEST_FILES/kernel.config" out tmp line bad=() date started
  ver="$(pkg_version linux-source-6.1)"
  KERNEL_KEY="$( { echo "linux-source-6.1 $ver"; cat "$frag"; section kernel; } | sha256)"
  KERNEL_SOURCE="linux-source-6.1 $ver"
  out="$GUEST/kernel-$KERNEL_KEY"
  KERNEL_PATH="$out/vmlinux"
  [ -f "$KERNEL_PATH" ] && return

  src="$GUEST/src/linux-source-$ver"
  if [ ! -f "$src/Makefile" ]; then
    note "unpacking /usr/src/linux-source-6.1.tar.xz (about a minute)..."
    mkdir -p "$GUEST/src"
    tmp="$(mktemp -d "$GUEST/src/.tmp.XXXXXX")"; TMP_DIRS+=("$tmp")
    run tar -C "$tmp" -xJf /usr/src/linux-source-6.1.tar.xz
    mv "$tmp/linux-source-6.1" "$src"
  fi
  bld="$GUEST/build/linux-$ver"
  mkdir -p "$bld"
  # Fixed build metadata (the date is the package's) so a rebuild does not differ in `uname -v`.
  date="$(zcat /usr/share/doc/linux-source-6.1/changelog.Debian.gz | sed -n 's/^ -- .*>  //p')" || true
  date="${date%%$'\n'*}"
  export KBUILD_BUILD_TIMESTAMP="${date:-1970-01-01}" KBUILD_BUILD_USER=kuasar KBUILD_BUILD_HOST=kuasar KBUILD_BUILD_VERSION=1
  local mk=(make -C "$src" O="$bld" ARCH=x86_64)
  run "${mk[@]}" tinyconfig
  run "$src/scripts/kconfig/merge_config.sh" -m -O "$bld" "$bld/.config" "$frag"
  run "${mk[@]}" olddefconfig
  # Kconfig silently drops options whose dependencies are unmet; a dropped option is a bug here.
  while IFS= read -r line; do
    case "$line" in
      CONFIG_*=*) grep -qxF -- "$line" "$bld/.config" || bad+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$bld/.config" || echo unset))") ;;
      "# CONFIG_"*" is not set") line="${line#\# }"; line="${line%% *}"
        ! grep -q "^$line=" "$bld/.config" || bad+=("$line must be off") ;;
    esac
  done <"$frag"
  [ "${#bad[@]}" = 0 ] || die "kernel config does not hold the fragment:$(printf '\n  %s' "${bad[@]}")"

  note "building kernel $ver with make -j$JOBS (about 8 min on 2 idle cores, ~35 s incremental; log: $bld/build.log)..."
  started=$SECONDS
  if ! "${mk[@]}" -j"$JOBS" vmlinux >"$bld/build.log" 2>&1; then
    tail -n 40 "$bld/build.log" | sed 's/^/  | /' >&2
    die "kernel build failed (full log: $bld/build.log)"
  fi
  note "kernel built in $((SECONDS - started)) s"
  tmp="$(mktemp -d "$GUEST/.tmp-kernel.XXXXXX")"; TMP_DIRS+=("$tmp")
  cp "$bld/vmlinux" "$tmp/vmlinux"
  cp "$bld/.config" "$tmp/config"
  sha256 <"$tmp/vmlinux" >"$tmp/sha256"
  "${mk[@]}" -s kernelrelease | tail -n1 >"$tmp/release"
  # Rename last, so a kernel-<key> dir that exists is always complete.
  mv "$tmp" "$out"
}
# <<< kernel

use_user_kernel() {
  local sha out tmp
  sha="$(sha256 <"$USER_KERNEL")"
  KERNEL_KEY="user-$sha"
  KERNEL_SOURCE="user:$USER_KERNEL"
  out="$GUEST/kernel-$KERNEL_KEY"
  KERNEL_PATH="$out/vmlinux"
  [ -f "$KERNEL_PATH" ] && return
  # A copy, so the cache never changes under a running VM when the user rebuilds their kernel.
  tmp="$(mktemp -d "$GUEST/.tmp-kernel.XXXXXX")"; TMP_DIRS+=("$tmp")
  cp "$USER_KERNEL" "$tmp/vmlinux"
  echo "$sha" >"$tmp/sha256"
  # Linux images carry their release string; "unknown" if this one does not.
  (strings "$USER_KERNEL" | grep -m1 -oE '^Linux version [^ ]+' | cut -d' ' -f3 || true) >"$tmp/release"
  [ -s "$tmp/release" ] || echo unknown >"$tmp/release"
  mv "$tmp" "$out"
}

# >>> trixie
# QuickJS and the glibc it needs come from trixie, through a private apt configuration
# (scripts/lib/private-apt.sh) that keeps trixie out of the system's apt state.
TRIXIE_WANTED=("quickjs|2025.04.26-*" "libc6|2.41-*")
APT_DIR="$GUEST/apt"
LISTS_MAX_AGE_MIN=$((7 * 1440))

trixie_update() {
  note "updating private apt lists for trixie (under a minute)..."
  private_apt_update trixie
}

# Sets TRIXIE_DIR[pkg] (the unpacked .deb) and TRIXIE_VER[pkg].
declare -A TRIXIE_DIR=() TRIXIE_VER=()
fetch_trixie() {
  local mirror spec pkg glob ver dir updated=0
  mkdir -p "$GUEST/debs"
  # A mirror chosen before is kept unless KUASAR_DEBIAN_MIRROR names another.
  mirror="${KUASAR_DEBIAN_MIRROR:-$(private_apt_last_mirror "$APT_DIR")}"
  [ -n "$mirror" ] || mirror="$(private_apt_find_mirror)" || die "no Debian mirror in the system's apt sources; set KUASAR_DEBIAN_MIRROR"
  mirror="${mirror%/}"
  private_apt_setup "$APT_DIR" "deb [signed-by=$PRIVATE_APT_KEYRING] $mirror trixie main"
  if ! private_apt_fresh "$LISTS_MAX_AGE_MIN"; then trixie_update; updated=1; fi
  for spec in "${TRIXIE_WANTED[@]}"; do
    IFS='|' read -r pkg glob <<<"$spec"
    ver="$(private_apt_version "$pkg" trixie "$glob")"
    if [ -z "$ver" ] && [ "$updated" = 0 ]; then trixie_update; updated=1; ver="$(private_apt_version "$pkg" trixie "$glob")"; fi
    [ -n "$ver" ] || die "no trixie $pkg matching '$glob' at $mirror"
    dir="$GUEST/debs/$pkg-${ver//:/%3a}"
    if [ ! -d "$dir" ]; then
      note "downloading trixie $pkg $ver..."
      private_apt_unpack "$pkg" "$ver" "$dir"
    fi
    TRIXIE_DIR[$pkg]="$dir"; TRIXIE_VER[$pkg]="$ver"
  done
}
# <<< trixie

# >>> initramfs
# One glibc for the whole image: trixie's (2.41). qjs needs >= 2.38; crun and its bookworm libraries
# were built against 2.36, and glibc stays backward compatible, so they run on 2.41 unchanged. That
# keeps the standard loader path, no wrapper around qjs and a single copy of libc in the image.
# Every other library crun needs is bookworm's, resolved by ldd on the host.
LIBDIR=lib/x86_64-linux-gnu
EPOCH=0

stage_initramfs() {
  local st="$1" glibc="${TRIXIE_DIR[libc6]}/usr/$LIBDIR" qjs="${TRIXIE_DIR[quickjs]}/usr/bin/qjs" lib name p
  [ -x "$qjs" ] || die "trixie's quickjs has no usr/bin/qjs"
  [ -e "$glibc/libc.so.6" ] || die "trixie's libc6 has no $LIBDIR/libc.so.6"
  mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,"$LIBDIR",lib64,etc,proc,sys,dev,run,tmp,mnt,root,newroot}
  chmod 1777 "$st/tmp"
  # The kernel opens /dev/console for /init before anything can mount devtmpfs.
  mknod -m 600 "$st/dev/console" c 5 1

  cp /bin/busybox "$st/bin/busybox"
  "$st/bin/busybox" --list-full | while read -r p; do
    [ -e "$st/$p" ] || [ -L "$st/$p" ] || ln -s /bin/busybox "$st/$p"
  done
  install -m 755 "$GUEST_FILES/init" "$st/init"
  cp "$qjs" "$st/usr/bin/qjs"
  cp /usr/bin/crun "$st/usr/bin/crun"

  # glibc: the loader plus whatever qjs and crun link against.
  cp -a "$glibc"/ld-linux-x86-64.so.2 "$st/$LIBDIR/"
  ln -s "/$LIBDIR/ld-linux-x86-64.so.2" "$st/lib64/ld-linux-x86-64.so.2"
  for name in $(objdump -p "$qjs" | awk '$1 == "NEEDED" { print $2 }'); do
    [ -e "$glibc/$name" ] || die "qjs needs $name, which trixie's libc6 does not ship"
    cp -L "$glibc/$name" "$st/$LIBDIR/$name"
  done
  ldd /usr/bin/crun >"$LOG" 2>&1 || die "ldd /usr/bin/crun failed: $(cat "$LOG")"
  while read -r name lib; do
    case "$name" in linux-vdso.so.*|*ld-linux*) continue ;; esac
    [ -e "$st/$LIBDIR/$name" ] && continue
    if [ -e "$glibc/$name" ]; then cp -L "$glibc/$name" "$st/$LIBDIR/$name"
    elif [ -f "$lib" ]; then cp -L "$lib" "$st/$LIBDIR/$name"
    else die "crun needs $name, which ldd did not resolve: $(cat "$LOG")"; fi
  done < <(awk '$2 == "=>" { print $1, $3 }' "$LOG")

  if [ -n "$AGENT_DIR" ]; then
    mkdir -p "$st/agent"
    cp -a "$AGENT_DIR/." "$st/agent/"
  fi
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$st/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$st/etc/group"
  echo kuasar-guest >"$st/etc/hostname"
  {
    echo "busybox-static=$(pkg_version busybox-static)"
    echo "crun=$(pkg_version crun)"
    echo "quickjs=${TRIXIE_VER[quickjs]}"
    echo "libc6=${TRIXIE_VER[libc6]}"
  } >"$st/etc/kuasar-guest-release"

  # Prove the image's userland resolves before any guest boots: run qjs and crun with the staged
  # loader and libraries only.
  local ld=("$st/$LIBDIR/ld-linux-x86-64.so.2" --library-path "$st/$LIBDIR")
  [ "$("${ld[@]}" "$st/usr/bin/qjs" -e 'print(6 * 7)' 2>&1)" = 42 ] || die "staged qjs does not run: $("${ld[@]}" "$st/usr/bin/qjs" -e 'print(6*7)' 2>&1)"
  "${ld[@]}" "$st/usr/bin/crun" --version >"$LOG" 2>&1 || die "staged crun does not run: $(cat "$LOG")"
  # The agent must at least load under the image's qjs: without KUASAR_PORT it parses, runs its
  # top level and returns, so a syntax error or a Node-only API at load time fails the build here.
  if [ -f "$st/agent/vmm-task.js" ]; then
    env -u KUASAR_PORT "${ld[@]}" "$st/usr/bin/qjs" --std --no-unhandled-rejection "$st/agent/vmm-task.js" >"$LOG" 2>&1 \
      || die "agent does not load under the staged qjs: $(tail -n 5 "$LOG")"
  fi
}

# Content hash of the staged tree: a rebuilt image differs only if some file in it differs.
tree_key() {
  (cd "$1" && find . -mindepth 1 -printf '%P %y %m %l\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum) \
    | { cat; section initramfs; } | sha256
}

# Staging and hashing the tree takes a few hundred forks; this cheaper key over where the files come
# from (versions, sizes, mtimes, inodes) remembers which image those sources gave last time.
sources_key() {
  local libs
  libs="$(ldd /usr/bin/crun | awk '$2 == "=>" { print $3 }')"
  {
    section trixie; section initramfs
    cat "$GUEST_FILES/init"
    echo "${TRIXIE_DIR[quickjs]} ${TRIXIE_DIR[libc6]}"
    # shellcheck disable=SC2086
    stat -L -c '%n %s %Y %i' /bin/busybox /usr/bin/crun $libs
    dpkg-query -W -f='${Package} ${Version}\n' busybox-static crun
    [ -z "$AGENT_DIR" ] || (cd "$AGENT_DIR" && find . -printf '%P %y %m %s %T@ %l\n' | sort)
  } | sha256
}

build_initramfs() {
  local st tmp memo
  memo="$GUEST/initramfs-sources/$(sources_key)"
  if [ -f "$memo" ]; then
    INITRAMFS_KEY="$(cat "$memo")"
    INITRAMFS_PATH="$GUEST/initramfs-$INITRAMFS_KEY.img"
    [ -f "$INITRAMFS_PATH" ] && return
  fi
  st="$(mktemp -d "$GUEST/.tmp-stage.XXXXXX")"; TMP_DIRS+=("$st")
  stage_initramfs "$st"
  INITRAMFS_KEY="$(tree_key "$st")"
  INITRAMFS_PATH="$GUEST/initramfs-$INITRAMFS_KEY.img"
  mkdir -p "${memo%/*}"
  if [ -f "$INITRAMFS_PATH" ]; then echo "$INITRAMFS_KEY" >"$memo"; return; fi
  # Sorted names, fixed owner and mtimes: the same tree always gives the same bytes.
  find "$st" -exec touch -h -d "@$EPOCH" {} +
  tmp="$GUEST/.tmp-initramfs.$$"; TMP_DIRS+=("$tmp")
  # The kernel's lz4 decompressor reads only the legacy frame format (-l).
  (cd "$st" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible | lz4 -q -l -9 -c) >"$tmp" \
    || die "packing the initramfs failed"
  mv "$tmp" "$INITRAMFS_PATH"
  echo "$INITRAMFS_KEY" >"$memo"
}
# <<< initramfs

# Kernel command line every launcher needs (the VMM appends its own kuasar.* options).
# tsc_early_khz: under TCG the TSC calibration sometimes hangs. tsc=reliable: without it the
# clocksource watchdog, confused by TCG's jittery timing, drops the TSC for 4 ms jiffies.
# reboot=t + QEMU -no-reboot turn `reboot -f` and a panic into a QEMU exit.
CMDLINE="console=ttyS0 tsc_early_khz=2500000 tsc=reliable reboot=t panic=-1"

publish() {
  local set="$GUEST/sets/${KERNEL_KEY: -16}-${INITRAMFS_KEY:0:16}" tmp release ksha isha
  release="$(cat "$(dirname "$KERNEL_PATH")/release")"
  ksha="$(cat "${KERNEL_PATH%/*}/sha256" 2>/dev/null || sha256 <"$KERNEL_PATH")"; isha="$(sha256 <"$INITRAMFS_PATH")"
  tmp="$(mktemp -d "$GUEST/.tmp-set.XXXXXX")"; TMP_DIRS+=("$tmp")
  ln -s "../../${KERNEL_PATH#"$GUEST/"}" "$tmp/vmlinux"
  ln -s "../../${INITRAMFS_PATH#"$GUEST/"}" "$tmp/initramfs.img"
  cat >"$tmp/manifest.json" <<EOF
{
  "schema": 1,
  "cmdline": $(json_str "$CMDLINE"),
  "kernel": {
    "path": $(json_str "$KERNEL_PATH"),
    "key": $(json_str "$KERNEL_KEY"),
    "source": $(json_str "$KERNEL_SOURCE"),
    "release": $(json_str "$release"),
    "size": $(stat -c %s "$KERNEL_PATH"),
    "sha256": $(json_str "$ksha")
  },
  "initramfs": {
    "path": $(json_str "$INITRAMFS_PATH"),
    "key": $(json_str "$INITRAMFS_KEY"),
    "format": "cpio newc, lz4 legacy",
    "size": $(stat -c %s "$INITRAMFS_PATH"),
    "sha256": $(json_str "$isha"),
    "agent": $(if [ -n "$AGENT_DIR" ]; then json_str "$AGENT_DIR"; else echo null; fi),
    "components": {
      "busybox-static": $(json_str "$(pkg_version busybox-static) (bookworm)"),
      "crun": $(json_str "$(pkg_version crun) (bookworm)"),
      "quickjs": $(json_str "${TRIXIE_VER[quickjs]} (trixie)"),
      "libc6": $(json_str "${TRIXIE_VER[libc6]} (trixie)")
    }
  }
}
EOF
  chmod 755 "$tmp"; chmod 644 "$tmp/manifest.json"
  mkdir -p "$GUEST/sets"
  rm -rf "$set"; mv "$tmp" "$set"
  # Swap `current` in one rename so readers never see a half-updated set.
  ln -sfn "sets/${set##*/}" "$GUEST/.current.tmp"
  mv -T "$GUEST/.current.tmp" "$GUEST/current"
}

if [ -n "$USER_KERNEL" ]; then use_user_kernel; else build_kernel; fi
fetch_trixie
build_initramfs
publish

echo "vmlinux $GUEST/current/vmlinux"
echo "initramfs $GUEST/current/initramfs.img"
echo "manifest $GUEST/current/manifest.json"
