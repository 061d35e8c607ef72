# Sourced by scripts/fetch-debs.sh and scripts/build-guest.sh: a private apt configuration (own
# sources.list, lists, cache and an empty dpkg status under one directory) for fetching .debs of
# other Debian suites with `apt-get download` + `dpkg-deb -x`. The system's apt sources and state
# are never touched and nothing is installed.
#
# The sourcing script defines die, note and run (quiet on success; the command's output in "$LOG"),
# and a TMP_DIRS array it removes on exit.

PRIVATE_APT_KEYRING="${KUASAR_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"

# The mirror host the system already uses for Debian (KUASAR_DEBIAN_MIRROR overrides), so other
# suites come through the same, possibly local, mirror. Both one-line .list files and deb822 .sources
# files are read. Only the main archive counts: not security (other layout), not third-party repos.
PRIVATE_APT_SUITES='^(buster|bullseye|bookworm|trixie|forky|sid|oldstable|stable|testing|unstable)(-updates|-backports)?$'
private_apt_find_mirror() {
  local f
  if [ -n "${KUASAR_DEBIAN_MIRROR:-}" ]; then echo "$KUASAR_DEBIAN_MIRROR"; return; fi
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    # deb [opts] URI SUITE COMPONENTS...
    awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while (i<=NF && $i !~ /\]$/) i++; i++ }
                     if ($(i+1) ~ re && $i ~ /^https?:\/\//) { print $i; exit } }' re="$PRIVATE_APT_SUITES" "$f"
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
           if (types ~ /deb( |$)/ && s[1] ~ re && uris ~ /^https?:\/\//) { split(uris, u, " "); print u[1]; exit } }' re="$PRIVATE_APT_SUITES" "$f"
  done | head -n1 | grep . && return
  return 1
}

# private_apt_setup DIR SOURCES: lays out DIR, writes SOURCES (sources.list lines) when they differ
# from what is there (which marks the lists stale) and sets APT_OPTS for apt-get/apt-cache.
private_apt_setup() {
  PRIVATE_APT_DIR="$1"
  [ -r "$PRIVATE_APT_KEYRING" ] || die "Debian archive keyring $PRIVATE_APT_KEYRING is missing (apt-get install debian-archive-keyring)"
  mkdir -p "$1/etc" "$1/lists/partial" "$1/cache/archives/partial" || die "cannot create $1"
  [ -f "$1/status.empty" ] || : >"$1/status.empty"
  if [ ! -f "$1/etc/sources.list" ] || [ "$(cat "$1/etc/sources.list")" != "$2" ]; then
    printf '%s\n' "$2" >"$1/etc/sources.list"
    rm -f "$1/lists/.kuasar-updated"
  fi
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$1/etc/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=/dev/null"
    -o "Dir::State::Lists=$1/lists"
    -o "Dir::State::Status=$1/status.empty"
    -o "Dir::Cache=$1/cache"
    -o "Dir::Cache::archives=$1/cache/archives"
    # Debian's container images turn the binary cache off in apt.conf.d; without it each query
    # re-parses the suites' lists (~5 s), with it ~0.1 s.
    -o "Dir::Cache::pkgcache=$1/cache/pkgcache.bin"
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Architecture=amd64"
    -o "APT::Architectures::=amd64"
    # The private dirs belong to whoever runs this; apt's unprivileged _apt sandbox could not write them.
    -o "APT::Sandbox::User=$(id -un)"
    -o "Debug::NoLocking=1"
    -o "Acquire::Languages=none"
    -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
  )
}

# The mirror the last setup of DIR wrote (finding it again costs a parse or ~2 s of apt), or nothing.
private_apt_last_mirror() {
  awk '{ print $3; exit }' "$1/etc/sources.list" 2>/dev/null || true
}

# True when the lists were updated within $1 minutes. apt stamps lists with the server's
# Last-Modified, so freshness is tracked by our own file.
private_apt_fresh() {
  local stamp="$PRIVATE_APT_DIR/lists/.kuasar-updated"
  [ -f "$stamp" ] && [ -z "$(find "$stamp" -mmin +"$1")" ]
}

# private_apt_update SUITE...: apt-get update, then checks each suite's package list arrived
# (apt-get update exits 0 even when a source failed).
private_apt_update() {
  local suite
  run apt-get "${APT_OPTS[@]}" -q update
  for suite in "$@"; do
    ls "$PRIVATE_APT_DIR/lists/"*"_dists_${suite}_"*Packages* >/dev/null 2>&1 \
      || die "apt lists for $suite did not download; apt said: $(grep -E '^(E|W|Err)' "$LOG" | tr '\n' ' ')"
  done
  touch "$PRIVATE_APT_DIR/lists/.kuasar-updated"
}

# private_apt_version PKG SUITE GLOB: the newest version of PKG in SUITE matching GLOB, or nothing.
private_apt_version() {
  local v s
  apt-cache "${APT_OPTS[@]}" madison "$1" 2>/dev/null \
    | awk -F'|' '{ gsub(/^ +| +$/, "", $2); print $2 "|" $3 }' \
    | while IFS='|' read -r v s; do
        # madison's last column reads "<mirror> <suite>/main amd64 Packages"
        case " $s" in *" $2/"*) ;; *) continue ;; esac
        # shellcheck disable=SC2254
        case "$v" in $3) echo "$v" ;; esac
      done | head -n1
}

# What madison lists for PKG, for error messages.
private_apt_available() {
  apt-cache "${APT_OPTS[@]}" madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ +/, " "); print $2 "(" $3 ")"}' | tr '\n' ' '
}

# private_apt_unpack PKG VERSION DEST: downloads the .deb and unpacks it (dpkg-deb -x) to DEST,
# renamed into place last, so a DEST that exists is always complete.
private_apt_unpack() {
  local work deb
  work="$(mktemp -d "${3%/*}/.tmp-$1.XXXXXX")"; TMP_DIRS+=("$work")
  (cd "$work" && run apt-get "${APT_OPTS[@]}" -q download "$1=$2")
  deb="$(ls "$work"/*.deb 2>/dev/null | head -n1)"
  [ -n "$deb" ] || die "apt-get download $1=$2 produced no .deb"
  run dpkg-deb -x "$deb" "$work/root"
  mv "$work/root" "$3"
  rm -rf "$work"
}
