#!/usr/bin/env bash
# Fetches the newer containerd releases and gVisor's runsc as .deb files from Debian trixie/sid and
# unpacks them into a cache outside the repo, without touching the system's apt setup: bookworm
# ships only containerd 1.6, and these binaries need nothing newer than bookworm's libc.
#
#   bash scripts/fetch-debs.sh            # fetch what is missing, print the binary paths
#   KUASAR_CACHE=/some/dir bash scripts/fetch-debs.sh
#
# Layout: ${KUASAR_CACHE:-/var/cache/kuasar}/
#   apt/                      private apt state (sources.list, lists, cache, empty dpkg status)
#   debs/<pkg>-<version>/     one unpacked .deb (dpkg -x), keyed by the exact Debian version
#   debs/manifest.json        [{key, name, suite, version, dir, bins: {name: path}}]
set -euo pipefail

CACHE="${KUASAR_CACHE:-/var/cache/kuasar}"
APT_DIR="$CACHE/apt"
DEBS_DIR="$CACHE/debs"
MANIFEST="$DEBS_DIR/manifest.json"
KEYRING="${KUASAR_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
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
trap 'rm -f "$LOG"' EXIT
# Quiet on success; on failure the command's full output is what the developer needs.
run() {
  if ! "$@" >"$LOG" 2>&1; then
    echo "fetch-debs: error: command failed: $*" >&2
    sed 's/^/  | /' "$LOG" >&2
    exit 1
  fi
}

case "$CACHE" in *'"'*|*\\*) die "KUASAR_CACHE must not contain quotes or backslashes: $CACHE" ;; esac
for tool in apt-get apt-cache dpkg dpkg-deb flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found; this script needs a Debian host"
done
[ -r "$KEYRING" ] || die "Debian archive keyring $KEYRING is missing (apt-get install debian-archive-keyring)"

# The mirror host the system already uses for Debian, so we reach trixie/sid through the same
# (possibly local) mirror. Both one-line .list files and deb822 .sources files are read.
# Only the main archive counts: not security (other layout), not third-party repos.
DEBIAN_SUITES='^(buster|bullseye|bookworm|trixie|forky|sid|oldstable|stable|testing|unstable)(-updates|-backports)?$'
find_mirror() {
  local f
  if [ -n "${KUASAR_DEBIAN_MIRROR:-}" ]; then echo "$KUASAR_DEBIAN_MIRROR"; return; fi
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    # deb [opts] URI SUITE COMPONENTS...
    awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while (i<=NF && $i !~ /\]$/) i++; i++ }
                     if ($(i+1) ~ re && $i ~ /^https?:\/\//) { print $i; exit } }' re="$DEBIAN_SUITES" "$f"
  done | head -n1 | grep . && return
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    # deb822 stanzas are separated by blank lines.
    awk 'BEGIN { RS=""; FS="\n" }
         { uris=""; suites=""; types="";
           for (i=1; i<=NF; i++) {
             if ($i ~ /^URIs:/)   { uris=$i;   sub(/^URIs:[ \t]*/, "", uris) }
             if ($i ~ /^Suites:/) { suites=$i; sub(/^Suites:[ \t]*/, "", suites) }
             if ($i ~ /^Types:/)  { types=$i }
             if ($i ~ /^Enabled:[ \t]*no/) { types="" }
           }
           split(suites, s, " ");
           if (types ~ /deb( |$)/ && s[1] ~ re && uris ~ /^https?:\/\//) { split(uris, u, " "); print u[1]; exit } }' re="$DEBIAN_SUITES" "$f"
  done | head -n1 | grep . && return
  return 1
}

MIRROR="$(find_mirror)" || die "no Debian mirror found in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set KUASAR_DEBIAN_MIRROR"
MIRROR="${MIRROR%/}"

mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/etc" "$DEBS_DIR" \
  || die "cannot create $CACHE (run as root, or set KUASAR_CACHE to a writable dir)"
exec 9>"$DEBS_DIR/.lock"
flock 9 || die "cannot lock $DEBS_DIR/.lock"
# Leftovers of a run that died mid-download; the lock says no other run is using them.
rm -rf "$DEBS_DIR"/.tmp-* "$DEBS_DIR"/.manifest.*

[ -f "$APT_DIR/status.empty" ] || : >"$APT_DIR/status.empty"
SOURCES="$APT_DIR/etc/sources.list"
want_sources="deb [signed-by=$KEYRING] $MIRROR trixie main
deb [signed-by=$KEYRING] $MIRROR sid main"
sources_changed=0
if [ ! -f "$SOURCES" ] || [ "$(cat "$SOURCES")" != "$want_sources" ]; then
  printf '%s\n' "$want_sources" >"$SOURCES"
  sources_changed=1
fi

APT_OPTS=(
  -o "Dir::Etc::SourceList=$SOURCES"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=/dev/null"
  -o "Dir::State::Lists=$APT_DIR/lists"
  -o "Dir::State::Status=$APT_DIR/status.empty"
  -o "Dir::Cache=$APT_DIR/cache"
  -o "Dir::Cache::archives=$APT_DIR/cache/archives"
  # Debian's container images turn the binary cache off in apt.conf.d; without it each query
  # re-parses both suites (~5 s), with it ~0.1 s.
  -o "Dir::Cache::pkgcache=$APT_DIR/cache/pkgcache.bin"
  -o "Dir::Cache::srcpkgcache="
  -o "APT::Architecture=amd64"
  -o "APT::Architectures::=amd64"
  # The private dirs belong to whoever runs this; apt's unprivileged _apt sandbox could not write them.
  -o "APT::Sandbox::User=$(id -un)"
  -o "Debug::NoLocking=1"
  -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
)

apt_update() {
  local suite
  note "updating private apt lists for trixie and sid from $MIRROR (under a minute)..."
  run apt-get "${APT_OPTS[@]}" -q update
  # apt-get update exits 0 even when a source failed; make sure both suites arrived.
  for suite in trixie sid; do
    ls "$APT_DIR/lists/"*"_dists_${suite}_"*Packages* >/dev/null 2>&1 \
      || die "apt lists for $suite did not download from $MIRROR; apt said: $(grep -E '^(E|W|Err)' "$LOG" | tr '\n' ' ')"
  done
  # apt stamps lists with the server's Last-Modified, so freshness is tracked by our own file.
  touch "$APT_DIR/lists/.kuasar-updated"
}

lists_fresh() {
  local stamp="$APT_DIR/lists/.kuasar-updated"
  [ -f "$stamp" ] && [ -z "$(find "$stamp" -mmin +"$LISTS_MAX_AGE_MIN")" ]
}

# Prints the newest version of $1 in $2 matching the glob $3, or nothing.
pick_version() {
  local pkg="$1" suite="$2" glob="$3" v s
  apt-cache "${APT_OPTS[@]}" madison "$pkg" 2>/dev/null \
    | awk -F'|' '{ gsub(/^ +| +$/, "", $2); print $2 "|" $3 }' \
    | while IFS='|' read -r v s; do
        # madison's last column reads "<mirror> <suite>/main amd64 Packages"
        case " $s" in *" $suite/"*) ;; *) continue ;; esac
        # shellcheck disable=SC2254
        case "$v" in $glob) echo "$v" ;; esac
      done | head -n1
}

# Lists are refreshed when missing, older than a day, or when a wanted version is gone from them.
if [ "$sources_changed" = 1 ] || ! lists_fresh; then apt_update; fi

check_runs() {
  out="$("$@" 2>&1)" || die "$* does not run here: $out"
  case "$out" in *[0-9].[0-9]*) ;; *) die "$* printed no version: $out" ;; esac
}

declare -a ENTRIES=()
updated_for_missing=0
for spec in "${WANTED[@]}"; do
  IFS='|' read -r key pkg suite glob bins <<<"$spec"
  version="$(pick_version "$pkg" "$suite" "$glob")"
  if [ -z "$version" ] && [ "$updated_for_missing" = 0 ]; then
    apt_update; updated_for_missing=1
    version="$(pick_version "$pkg" "$suite" "$glob")"
  fi
  if [ -z "$version" ]; then
    have="$(apt-cache "${APT_OPTS[@]}" madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ +/, " "); print $2 "(" $3 ")"}' | tr '\n' ' ')"
    die "$key: no $pkg version matching '$glob' in $suite at $MIRROR (available: ${have:-none})"
  fi
  dir="$DEBS_DIR/$pkg-${version//:/%3a}"
  if [ ! -d "$dir" ]; then
    note "$key: downloading $pkg $version from $suite..."
    work="$(mktemp -d "$DEBS_DIR/.tmp-$pkg.XXXXXX")"
    (cd "$work" && run apt-get "${APT_OPTS[@]}" -q download "$pkg=$version")
    deb="$(ls "$work"/*.deb 2>/dev/null | head -n1)"
    [ -n "$deb" ] || die "$key: apt-get download produced no .deb"
    run dpkg-deb -x "$deb" "$work/root"
    rm -f "$deb"
    # Rename last, so a dir that exists is always complete and reruns can trust it.
    mv "$work/root" "$dir"
    rmdir "$work"
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
