#!/usr/bin/env bash
# Reverses scripts/install.sh.
#
#   scripts/uninstall.sh [--kinds runc,wasm,quark,vmm|all] [--prefix /usr/local]
#                        [--unmerge-containerd-config PATH] [--purge] [--dry-run]
#
# Stops and disables the units (not with DESTDIR), removes the sandboxers, their shims and units, and kuasarctl
# once no sandboxer is left in $PREFIX/bin. /etc/kuasar/<kind>-sandboxer.toml stays unless --purge.
# --unmerge-containerd-config removes the blocks install.sh merged into PATH (after a backup).
# Pods keep running when their sandboxer stops (KillMode=process): remove them first (crictl rmp) if they should go.
# State dirs under /run/kuasar-<kind> are left alone: they describe those pods.
#
# env: DESTDIR   staging root (no systemctl calls when set)
set -euo pipefail

SCRIPT=uninstall.sh
# shellcheck source=lib/install-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/install-common.sh"

KINDS="$ALL_KINDS"
PREFIX="/usr/local"
UNMERGE=""
PURGE=0

while [ $# -gt 0 ]; do
  common_flag "$@"
  if [ "$SHIFT" -gt 0 ]; then shift "$SHIFT"; continue; fi
  case "$1" in
    --unmerge-containerd-config) [ $# -ge 2 ] || die "--unmerge-containerd-config needs a path"; UNMERGE="$2"; shift 2 ;;
    --unmerge-containerd-config=*) UNMERGE="${1#*=}"; shift ;;
    --purge) PURGE=1; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
check_common

remove() {
  local f="$1"
  [ -e "$f" ] || [ -L "$f" ] || return 0
  if [ "$DRY_RUN" = 1 ]; then say "would remove $f"; else rm -f "$f"; say "removed $f"; fi
}

# The merged containerd blocks go first, while kuasarctl is still installed.
if [ -n "$UNMERGE" ]; then
  ctl="$BIN/kuasarctl"
  [ -x "$ctl" ] || ctl="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/dist/bin/kuasarctl"
  [ -x "$ctl" ] || die "no kuasarctl to unmerge with (neither $BIN/kuasarctl nor dist/bin/kuasarctl)"
  args=(config containerd --kinds "$(echo $KINDS | tr ' ' ',')" --unmerge "$UNMERGE")
  [ "$DRY_RUN" = 1 ] && args+=(--dry-run)
  "$ctl" "${args[@]}" || die "could not remove the Kuasar blocks from $UNMERGE (see above); nothing was uninstalled"
fi

systemd=0
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then systemd=1; fi

for k in $KINDS; do
  unit="kuasar-$k-sandboxer.service"
  if [ "$systemd" = 1 ] && [ -e "$UNITS/$unit" ]; then
    if [ "$DRY_RUN" = 1 ]; then
      say "would run: systemctl disable --now $unit"
    else
      systemctl disable --now "$unit" || say "warning: could not stop $unit"
    fi
  fi
  remove "$UNITS/$unit"
  remove "$BIN/$k-sandboxer"
  remove "$BIN/containerd-shim-kuasar-$k-v2"
  if [ "$PURGE" = 1 ]; then
    remove "$ETC/$k-sandboxer.toml"
  elif [ -e "$ETC/$k-sandboxer.toml" ]; then
    say "kept $ETC/$k-sandboxer.toml (--purge removes it)"
  fi
done

# kuasarctl serves every kind: it goes with the last sandboxer.
left=""
for k in $ALL_KINDS; do
  [ -e "$BIN/$k-sandboxer" ] && left="$left $k"
done
if [ "$DRY_RUN" = 1 ]; then
  # nothing was removed: count what would be left
  left=""
  for k in $ALL_KINDS; do
    case " $KINDS " in *" $k "*) continue ;; esac
    [ -e "$BIN/$k-sandboxer" ] && left="$left $k"
  done
fi
if [ -z "$left" ]; then
  remove "$BIN/kuasarctl"
  if [ "$PURGE" = 1 ] && [ -d "$ETC" ] && [ -z "$(ls -A "$ETC")" ]; then
    if [ "$DRY_RUN" = 1 ]; then say "would remove $ETC"; else rmdir "$ETC"; fi
  fi
else
  say "kept $BIN/kuasarctl (still installed:$left)"
fi

if [ "$systemd" = 1 ] && [ "$DRY_RUN" = 0 ]; then systemctl daemon-reload; fi
[ -n "$UNMERGE" ] && [ "$DRY_RUN" = 0 ] && say "restart containerd to unload the Kuasar handlers from $UNMERGE"
exit 0
