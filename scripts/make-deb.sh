#!/bin/sh
# Builds the Debian package from this tree and checks it with lintian (errors fail).
#
#   make-deb.sh OUT_DIR
#
# dpkg-buildpackage writes its results next to the source directory, so the build runs on a
# copy under OUT_DIR, never beside the checkout. The copy is not a git checkout: it gets the
# commit the tree is at in debian/source-commit, and its version is debian/changelog's
# (scripts/version.sh), the same version dpkg reports. Prints the path of the .deb.
set -eu
out=${1:?usage: make-deb.sh OUT_DIR}
top=$(cd "$(dirname "$0")/.." && pwd)

for tool in dpkg-buildpackage dh lintian; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "make-deb: $tool not found: apt-get install dpkg-dev debhelper lintian" >&2
		exit 1
	fi
done
sh "$top/tests/packaging/check-control.sh"
sh "$top/tests/packaging/check-missing-deps.sh"
version=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' "$top/debian/changelog")
commit=$(sh "$top/scripts/version.sh" commit)
mkdir -p "$out"
out=$(cd "$out" && pwd)
src=$out/pgwarden-${version%-*}
rm -rf "$src" "$out"/pgwarden_*
mkdir -p "$src"

# The sources: what git tracks plus new files it does not ignore, or, outside a checkout,
# everything but build output.
if git -C "$top" rev-parse --show-toplevel >/dev/null 2>&1 &&
	[ "$(git -C "$top" rev-parse --show-toplevel)" = "$top" ]; then
	(cd "$top" && git ls-files -z -co --exclude-standard | xargs -0 cp --parents -t "$src")
else
	(cd "$top" && find . -path ./build -prune -o -type f -print | cpio -pdm --quiet "$src")
fi
echo "$commit" >"$src/debian/source-commit"

(cd "$src" && dpkg-buildpackage -us -uc -b >"$out/build.log" 2>&1) || {
	tail -n 40 "$out/build.log" >&2
	echo "make-deb: dpkg-buildpackage failed; the whole log is $out/build.log" >&2
	exit 1
}
changes=$(ls "$out"/pgwarden_*.changes)
if ! lintian --fail-on error --no-tag-display-limit "$changes" >"$out/lintian.log" 2>&1; then
	cat "$out/lintian.log" >&2
	echo "make-deb: lintian found errors" >&2
	exit 1
fi
grep -E '^[EW]:' "$out/lintian.log" >&2 || true
ls "$out"/pgwarden_*.deb
