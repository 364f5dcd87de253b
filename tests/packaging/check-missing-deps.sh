#!/bin/sh
# `make install` on a host without clang and bpftool must name the packages to install, not
# fail with "bpftool: not found". PATH is cut down to a directory of the few tools make and
# the check itself use; the build goes to a scratch directory. Run by scripts/make-deb.sh.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d /tmp/pgwarden-nodeps.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/bin"
for t in sh cc make pkg-config mkdir cmp mv rm git sed dirname cat uname; do
	ln -s "$(command -v "$t")" "$scratch/bin/$t"
done
out=$(cd "$top" && env PATH="$scratch/bin" make BUILD="$scratch/build" install \
	DESTDIR="$scratch/root" 2>&1) && {
	echo "check-missing-deps: make install succeeded without clang and bpftool?" >&2
	exit 1
}
case "$out" in
*"apt-get install clang bpftool"*) ;;
*)
	echo "check-missing-deps: make did not name the missing packages:" >&2
	echo "$out" | tail -n 5 >&2
	exit 1
	;;
esac
case "$out" in
*"not found"*) echo "check-missing-deps: a tool was still run: $out" >&2; exit 1 ;;
esac
