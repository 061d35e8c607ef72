#!/usr/bin/env bash
# Installs Kuasar sandboxers from a build (dist/bin) onto this node, or into a staging root with DESTDIR.
#
#   scripts/install.sh [--kinds runc,wasm,quark,vmm] [--prefix /usr/local]
#                      [--merge-containerd-config PATH] [--containerd-version 1|2|auto]
#                      [--no-start] [--dry-run]
#
#   $DESTDIR$PREFIX/bin/<kind>-sandboxer, containerd-shim-kuasar-<kind>-v2 (when built), kuasarctl
#   $DESTDIR/etc/systemd/system/kuasar-<kind>-sandboxer.service   (from packaging/systemd, replaced on upgrade)
#   $DESTDIR/etc/kuasar/<kind>-sandboxer.toml                     (from packaging/config, never overwritten)
#
# It prints the containerd snippets for 1.6/1.7 and 2.x; --merge-containerd-config appends the one for the
# containerd version found (or given) to PATH, after a timestamped backup, and a second run changes nothing.
# PATH is used as given, DESTDIR does not apply to it. The snippet text comes from `kuasarctl config containerd`.
# Without DESTDIR (and unless --no-start or --dry-run) it reloads systemd, enables the units and (re)starts them:
# KillMode=process keeps running pods alive across the restart.
#
# env: DESTDIR       staging root (no systemctl calls when set)
#      KUASAR_DIST   where the built executables are (default: <repo>/dist/bin)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGING="$ROOT/packaging"
DIST="${KUASAR_DIST:-$ROOT/dist/bin}"
SCRIPT=install.sh
# shellcheck source=lib/install-common.sh
. "$ROOT/scripts/lib/install-common.sh"

KINDS="runc"
PREFIX="/usr/local"
MERGE=""
CONTAINERD_VERSION="auto"
START=1

while [ $# -gt 0 ]; do
  common_flag "$@"
  if [ "$SHIFT" -gt 0 ]; then shift "$SHIFT"; continue; fi
  case "$1" in
    --merge-containerd-config) [ $# -ge 2 ] || die "--merge-containerd-config needs a path"; MERGE="$2"; shift 2 ;;
    --merge-containerd-config=*) MERGE="${1#*=}"; shift ;;
    --containerd-version) [ $# -ge 2 ] || die "--containerd-version needs a value"; CONTAINERD_VERSION="$2"; shift 2 ;;
    --containerd-version=*) CONTAINERD_VERSION="${1#*=}"; shift ;;
    --no-start) START=0; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
check_common

# kuasarctl is installed too, and it is what generates and merges the containerd snippets.
KUASARCTL="$DIST/kuasarctl"
[ -x "$KUASARCTL" ] || die "$KUASARCTL is not built: run 'pnpm build' (or node scripts/build-bin.mjs kuasarctl)"
for k in $KINDS; do
  [ -x "$DIST/$k-sandboxer" ] || die "$DIST/$k-sandboxer is not built: run 'pnpm build' (or node scripts/build-bin.mjs $k-sandboxer)"
done
kinds_csv="$(echo $KINDS | tr ' ' ',')"

# A config the merge would refuse (bad TOML, wrong config version) stops us before anything is installed.
if [ -n "$MERGE" ]; then
  if ! out="$("$KUASARCTL" config containerd --containerd-version "$CONTAINERD_VERSION" --kinds "$kinds_csv" --merge "$MERGE" --dry-run 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "cannot merge into $MERGE (see above); nothing was installed"
  fi
fi

run() {
  if [ "$DRY_RUN" = 1 ]; then say "would run: $*"; else "$@"; fi
}

# Copies next to the target and renames over it: replacing a running executable in place fails (ETXTBSY) and a
# crash mid-copy must not leave half a file under the real name.
install_file() {
  local src="$1" dst="$2" mode="$3"
  if [ "$DRY_RUN" = 1 ]; then say "would install $dst (mode $mode)"; return; fi
  mkdir -p "$(dirname "$dst")"
  local tmp
  tmp="$(dirname "$dst")/.$(basename "$dst").install.$$"
  if ! { cp "$src" "$tmp" && chmod "$mode" "$tmp" && mv -f "$tmp" "$dst"; }; then
    rm -f "$tmp"
    die "cannot install $dst"
  fi
  say "installed $dst"
}

for k in $KINDS; do
  install_file "$DIST/$k-sandboxer" "$BIN/$k-sandboxer" 0755
  shim="containerd-shim-kuasar-$k-v2"
  if [ -x "$DIST/$shim" ]; then
    install_file "$DIST/$shim" "$BIN/$shim" 0755
  else
    say "warning: $shim is not built: containerd 1.6/1.7 cannot reach kuasar-$k, and without its task relay a sandboxer restart ends every container's task connection"
  fi

  unit_text="$(sed -e "s|@KIND@|$k|g" -e "s|@PREFIX@|$PREFIX|g" "$PACKAGING/systemd/kuasar-sandboxer.service.in")"
  if [ "$DRY_RUN" = 1 ]; then
    say "would write $UNITS/kuasar-$k-sandboxer.service"
  else
    mkdir -p "$UNITS"
    tmp="$UNITS/.kuasar-$k-sandboxer.service.$$"
    printf '%s\n' "$unit_text" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$UNITS/kuasar-$k-sandboxer.service"
    say "installed $UNITS/kuasar-$k-sandboxer.service"
  fi

  conf="$ETC/$k-sandboxer.toml"
  if [ -e "$conf" ]; then
    say "kept existing $conf"
  else
    install_file "$PACKAGING/config/$k-sandboxer.toml" "$conf" 0644
  fi
done
install_file "$KUASARCTL" "$BIN/kuasarctl" 0755

# The snippets for /etc/containerd/config.toml, for whichever containerd this node runs.
echo
"$KUASARCTL" config containerd --containerd-version 1 --kinds "$kinds_csv"
echo
"$KUASARCTL" config containerd --containerd-version 2 --kinds "$kinds_csv"
echo

if [ -n "$MERGE" ]; then
  args=(config containerd --containerd-version "$CONTAINERD_VERSION" --kinds "$kinds_csv" --merge "$MERGE")
  [ "$DRY_RUN" = 1 ] && args+=(--dry-run)
  "$KUASARCTL" "${args[@]}" || die "merging into $MERGE failed (see above)"
fi

if [ -n "$DESTDIR" ] || [ "$DRY_RUN" = 1 ] || [ "$START" = 0 ]; then
  say "not touching systemd (DESTDIR, --dry-run or --no-start); on the node run:"
  units=""
  for k in $KINDS; do units="$units kuasar-$k-sandboxer"; done
  say "  systemctl daemon-reload && systemctl enable --now$units"
elif [ ! -d /run/systemd/system ]; then
  say "systemd is not running here; start $PREFIX/bin/<kind>-sandboxer yourself"
else
  run systemctl daemon-reload
  for k in $KINDS; do
    run systemctl enable "kuasar-$k-sandboxer.service"
    # restart also starts a stopped unit; running pods survive it (KillMode=process)
    run systemctl restart "kuasar-$k-sandboxer.service"
  done
fi
if [ -n "$MERGE" ] && [ "$DRY_RUN" = 0 ]; then say "restart containerd to load $MERGE"; fi
say "check the node with: $PREFIX/bin/kuasarctl check"
