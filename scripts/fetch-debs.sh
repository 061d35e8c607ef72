#!/usr/bin/env bash
# Fetches the newer containerd releases and gVisor's runsc as .deb files from Debian trixie/sid and
# unpacks them into a cache outside the repo, without touching the system's apt setup: bookworm
# ships only containerd 1.6, and these binaries need nothing newer than bookworm's libc.
#
#   bash scripts/fetch-debs.sh            # fetch what is missing, print the binary paths
#   KUASAR_CACHE=/some/dir bash scripts/fetch-debs.sh
#
# Layout: ${KUASAR_CACHE:-/var/cache/kuasar}/
#   apt/                      private apt state (sources.list, lists, cache, empty dpkg status;
#                             scripts/lib/private-apt.sh, shared with build-guest.sh)
#   debs/<pkg>-<version>/     one unpacked .deb (dpkg -x), keyed by the exact Debian version
#   debs/manifest.json        [{key, name, suite, version, dir, bins: {name: path}}]
set -euo pipefail

CACHE="${KUASAR_CACHE:-/var/cache/kuasar}"
APT_DIR="$CACHE/apt"
DEBS_DIR="$CACHE/debs"
MANIFEST="$DEBS_DIR/manifest.json"
# sid's build of this gVisor snapshot is made with a Go newer than the snapshot supports and panics;
# trixie's is the one known to work here (see DEVELOPERS.md).
RUNSC_VERSION="${KUASAR_RUNSC_VERSION:-0.0~20240729.0-4+b7}"
LISTS_MAX_AGE_MIN=1440

# key|package|suite|version glob|binaries to expose
WANTED=(
  "containerd-1.7|containerd|trixie|1.7.*|containerd containerd-shim-runc-v2 ctr"
  "containerd-2.1|containerd|sid|2.1.*|containerd containerd-shim-runc-v2 ctr"
  "runsc|runsc|trixie|$RUNSC_VERSION|runsc"
)

die() { echo "fetch-debs: error: $*" >&2; exit 1; }
note() { echo "fetch-debs: $*" >&2; }

LOG="$(mktemp -t fetch-debs.XXXXXX.log)"
TMP_DIRS=()
cleanup() { rm -f "$LOG"; for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT
# Quiet on success; on failure the command's full output is what the developer needs.
run() {
  if ! "$@" >"$LOG" 2>&1; then
    echo "fetch-debs: error: command failed: $*" >&2
    sed 's/^/  | /' "$LOG" >&2
    exit 1
  fi
}
# shellcheck source=scripts/lib/private-apt.sh
. "$(dirname "$0")/lib/private-apt.sh"

case "$CACHE" in *'"'*|*\\*) die "KUASAR_CACHE must not contain quotes or backslashes: $CACHE" ;; esac
for tool in apt-get apt-cache dpkg dpkg-deb flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found; this script needs a Debian host"
done

MIRROR="$(private_apt_find_mirror)" || die "no Debian mirror found in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set KUASAR_DEBIAN_MIRROR"
MIRROR="${MIRROR%/}"

mkdir -p "$APT_DIR" "$DEBS_DIR" \
  || die "cannot create $CACHE (run as root, or set KUASAR_CACHE to a writable dir)"
exec 9>"$DEBS_DIR/.lock"
flock 9 || die "cannot lock $DEBS_DIR/.lock"
# Leftovers of a run that died mid-download; the lock says no other run is using them.
rm -rf "$DEBS_DIR"/.tmp-* "$DEBS_DIR"/.manifest.*

K="$PRIVATE_APT_KEYRING"
private_apt_setup "$APT_DIR" "deb [signed-by=$K] $MIRROR trixie main
deb [signed-by=$K] $MIRROR sid main"

apt_update() {
  note "updating private apt lists for trixie and sid from $MIRROR (under a minute)..."
  private_apt_update trixie sid
}

# Lists are refreshed when missing, older than a day, or when a wanted version is gone from them.
if ! private_apt_fresh "$LISTS_MAX_AGE_MIN"; then apt_update; fi

check_runs() {
  out="$("$@" 2>&1)" || die "$* does not run here: $out"
  case "$out" in *[0-9].[0-9]*) ;; *) die "$* printed no version: $out" ;; esac
}

declare -a ENTRIES=()
updated_for_missing=0
for spec in "${WANTED[@]}"; do
  IFS='|' read -r key pkg suite glob bins <<<"$spec"
  version="$(private_apt_version "$pkg" "$suite" "$glob")"
  if [ -z "$version" ] && [ "$updated_for_missing" = 0 ]; then
    apt_update; updated_for_missing=1
    version="$(private_apt_version "$pkg" "$suite" "$glob")"
  fi
  if [ -z "$version" ]; then
    have="$(private_apt_available "$pkg")"
    die "$key: no $pkg version matching '$glob' in $suite at $MIRROR (available: ${have:-none})"
  fi
  dir="$DEBS_DIR/$pkg-${version//:/%3a}"
  if [ ! -d "$dir" ]; then
    note "$key: downloading $pkg $version from $suite..."
    private_apt_unpack "$pkg" "$version" "$dir"
  fi
  binjson=""
  for b in $bins; do
    path="$dir/usr/bin/$b"
    [ -x "$path" ] || die "$key: $b not found in $dir/usr/bin"
    binjson="$binjson${binjson:+, }\"$b\": \"$path\""
    echo "$key $b $path"
  done
  # Prove the unpacked binaries run on this host (they are built for newer Debian releases). Go
  # binaries take about a second each to answer, so a marker keeps reruns fast.
  if [ ! -f "$dir/.kuasar-verified" ]; then
    for b in $bins; do
      case "$b" in
        containerd-shim-runc-v2) check_runs "$dir/usr/bin/$b" -v ;;
        *) check_runs "$dir/usr/bin/$b" --version ;;
      esac
    done
    # Fail loudly if trixie's runsc was rebuilt: other builds are known to panic here.
    if [ "$pkg" = runsc ]; then
      case "$out" in *"${RUNSC_VERSION%%-*}"*) ;; *) die "runsc reports an unexpected build: $out" ;; esac
    fi
    touch "$dir/.kuasar-verified"
  fi
  ENTRIES+=("    {\"key\": \"$key\", \"name\": \"$pkg\", \"suite\": \"$suite\", \"version\": \"$version\", \"dir\": \"$dir\", \"bins\": {$binjson}}")
done

tmp_manifest="$(mktemp "$DEBS_DIR/.manifest.XXXXXX")"
{
  echo "["
  for i in "${!ENTRIES[@]}"; do
    sep=","; [ "$i" = $((${#ENTRIES[@]} - 1)) ] && sep=""
    echo "${ENTRIES[$i]}$sep"
  done
  echo "]"
} >"$tmp_manifest"
chmod 644 "$tmp_manifest"
mv "$tmp_manifest" "$MANIFEST"
echo "manifest $MANIFEST"
