# Sourced by scripts/install.sh and scripts/uninstall.sh: the flags both take, their checks and where files go.
# The sourcing script sets SCRIPT (its name, for messages) and its own defaults before calling these.

ALL_KINDS="runc wasm quark vmm"
DRY_RUN=0
DESTDIR="${DESTDIR:-}"

die() { echo "$SCRIPT: error: $*" >&2; exit 1; }
say() { echo "$SCRIPT: $*" >&2; }
# The header comment of the sourcing script, up to `set -euo`, is its --help.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# Takes one shared flag at "$1"; sets SHIFT to the number of arguments used, 0 when "$1" is not a shared flag.
common_flag() {
  SHIFT=1
  case "$1" in
    --kinds) [ $# -ge 2 ] || die "--kinds needs a value"; KINDS="$2"; SHIFT=2 ;;
    --kinds=*) KINDS="${1#*=}" ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX="$2"; SHIFT=2 ;;
    --prefix=*) PREFIX="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) SHIFT=0 ;;
  esac
}

# Checks and normalises KINDS, PREFIX and DESTDIR, then sets BIN, UNITS and ETC under DESTDIR.
check_common() {
  KINDS="${KINDS//,/ }"
  [ "$KINDS" = all ] && KINDS="$ALL_KINDS"
  [ -n "${KINDS// /}" ] || die "--kinds is empty"
  local k
  for k in $KINDS; do
    case " $ALL_KINDS " in *" $k "*) ;; *) die "unknown kind '$k' (known: ${ALL_KINDS// /, })" ;; esac
  done
  case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got '$PREFIX'" ;; esac
  # PREFIX is substituted into the systemd unit with sed.
  case "$PREFIX" in *[!A-Za-z0-9/._+-]*) die "--prefix may only hold letters, digits and / . _ + -: '$PREFIX'" ;; esac
  PREFIX="${PREFIX%/}"
  case "$DESTDIR" in ''|/*) ;; *) die "DESTDIR must be an absolute path, got '$DESTDIR'" ;; esac
  DESTDIR="${DESTDIR%/}"
  BIN="$DESTDIR$PREFIX/bin"
  UNITS="$DESTDIR/etc/systemd/system"
  ETC="$DESTDIR/etc/kuasar"
}
