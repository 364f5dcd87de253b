#!/bin/sh
# debian/control's Build-Depends must name the packages scripts/check-build-deps.sh asks
# for (what `make` needs), apart from what Debian implies (build-essential, make) and what
# only the package build adds (debhelper-compat, libcmocka-dev for the unit tests it runs).
# Exit 1, naming the difference, when they disagree. Run by scripts/make-deb.sh.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
want=$(CHECK_BUILD_DEPS_LIST=1 sh "$top/scripts/check-build-deps.sh" |
	grep -v -x -e build-essential -e make | sort -u)
have=$(sed -n '/^Build-Depends:/,/^[A-Z]/p' "$top/debian/control" | sed -e 's/^Build-Depends://' |
	tr ',' '\n' | sed -e 's/(.*)//' -e 's/[[:space:]]//g' | grep -v -e '^$' -e '^[A-Z]' |
	grep -v -x -e debhelper-compat -e libcmocka-dev | sort -u)
if [ "$want" != "$have" ]; then
	echo "debian/control Build-Depends and scripts/check-build-deps.sh disagree:" >&2
	printf '%s\n' "$want" >/tmp/.pgw-want.$$
	printf '%s\n' "$have" >/tmp/.pgw-have.$$
	diff /tmp/.pgw-want.$$ /tmp/.pgw-have.$$ | grep '^[<>]' | sed -e 's/^</  only in check-build-deps.sh:/' -e 's/^>/  only in debian\/control:/' >&2
	rm -f /tmp/.pgw-want.$$ /tmp/.pgw-have.$$
	exit 1
fi
