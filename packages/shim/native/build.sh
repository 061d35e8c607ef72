#!/bin/sh
# Builds the thin shim: native/thin-shim.c + task-relay.c -> <out>/containerd-shim-kuasar-runc-v2, hardlinked as
# the -wasm-, -quark- and -vmm- names (one binary; it reads its kind from its own name; `relay` is the task relay).
#
# usage: sh native/build.sh [out-dir]     (default: <repo>/dist/bin)
# env:   CC (default cc)
#
# Static when the C library's libc.a is installed (libc6-dev ships it), so the binary skips the
# dynamic loader on every container start and runs on any Linux of the same architecture.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-"$root/dist/bin"}
cc=${CC:-cc}
kinds="runc wasm quark vmm"

if ! command -v "$cc" >/dev/null 2>&1; then
	echo "shim build: C compiler '$cc' not found; install gcc (apt-get install gcc libc6-dev) or set CC" >&2
	exit 1
fi

version=$(sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$root/package.json" | head -n 1)
sha=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || true)
[ -n "$sha" ] && version="$version+$sha"

static=
libc_a=$("$cc" -print-file-name=libc.a 2>/dev/null || true)
case "$libc_a" in
	/*) [ -f "$libc_a" ] && static=-static ;;
esac

mkdir -p "$out"
tmp="$out/.containerd-shim-kuasar.$$"
trap 'rm -f "$tmp"' EXIT
# shellcheck disable=SC2086 # $static is empty or one flag
"$cc" -std=c11 -O2 -Wall -Wextra -Werror $static -DKUASAR_VERSION="\"$version\"" -o "$tmp" "$here/thin-shim.c" "$here/task-relay.c"

# Replace, never write through: a running containerd may be executing the old file.
first=
for kind in $kinds; do
	dest="$out/containerd-shim-kuasar-$kind-v2"
	if [ -z "$first" ]; then
		mv -f "$tmp" "$dest"
		first=$dest
	else
		ln -f "$first" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest"
	fi
done
echo "shim build: $(cd "$out" && ls containerd-shim-kuasar-*-v2 | tr '\n' ' ')in $out (${static:-dynamic}, $version)"
