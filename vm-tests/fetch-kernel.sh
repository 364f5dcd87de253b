#!/bin/sh
# Fetches one stock Debian kernel into the vm-test cache and prints the directory that holds
# it: root/ (the unpacked .deb: boot/vmlinuz-*, lib/modules/<release>/...), kernel (what
# qemu boots: the uncompressed ELF vmlinux for qemu's PVH entry, or the compressed image
# where the host cannot decompress it) and release (the `uname -r` string).
#
#   fetch-kernel.sh SUITE METAPACKAGE      e.g. fetch-kernel.sh trixie linux-image-amd64
#
# The kernel is never installed on the host. apt runs with a private source list, index and
# package cache per suite under $VM_CACHE/apt/SUITE, so any suite on the host's Debian mirror
# (bookworm-backports, trixie, ...) works without touching the host's apt configuration. The
# mirror URI is read at run time from the host's sources: it is never written in the repo.
#
# The metapackage is resolved to the exact image package (linux-image-amd64 ->
# linux-image-6.1.0-NN-amd64) on every run whose index is fresh, so the test follows Debian's
# current ABI instead of pinning one that will vanish from the mirror. With no network, the
# kernel last resolved for that suite and metapackage is used from the cache, with a warning.
set -eu

suite=${1:?usage: fetch-kernel.sh SUITE METAPACKAGE}
meta=${2:?usage: fetch-kernel.sh SUITE METAPACKAGE}
cache=${VM_CACHE:-/tmp/pgwarden-vm-cache}
# Index age (seconds) after which apt-get update runs again. A day keeps warm runs offline.
max_age=${VM_APT_MAX_AGE:-86400}
here=$(cd "$(dirname "$0")" && pwd)

log() { echo "fetch-kernel: $suite/$meta: $*" >&2; }
die() { log "$*"; exit 1; }

aptdir=$cache/apt/$suite
mkdir -p "$aptdir/sources.list.d" "$aptdir/lists/partial" "$aptdir/cache/archives/partial" \
	"$cache/debs" "$cache/kernels" "$cache/resolved"

# One fetch at a time per cache: two runs unpacking the same kernel would corrupt it.
exec 9>"$cache/lock"
flock 9

apt_opts="-o Dir::Etc::SourceList=$aptdir/sources.list
 -o Dir::Etc::SourceParts=$aptdir/sources.list.d
 -o Dir::State::Lists=$aptdir/lists
 -o Dir::Cache=$aptdir/cache
 -o Acquire::Languages=none
 -o APT::Sandbox::User=root
 -o Debug::NoLocking=1"

mirror_uri() {
	# First URI of a deb822 or one-line source for the Debian archive itself (not security).
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f"
	done | head -n 1 | grep . && return 0
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '
		$1 == "deb" && $0 !~ /security/ {
			for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit }
		}' | head -n 1 | grep .
}

update_index() {
	uri=$(mirror_uri) || die "no Debian mirror found in /etc/apt/sources*"
	: >"$aptdir/sources.list"
	cat >"$aptdir/sources.list.d/kernel.sources" <<-EOF
		Types: deb
		URIs: $uri
		Suites: $suite
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	log "updating package index"
	# shellcheck disable=SC2086
	apt-get -q $apt_opts update >"$aptdir/update.log" 2>&1 &&
		! grep -q '^\(E\|W\): ' "$aptdir/update.log" && touch "$aptdir/updated"
}

index_fresh() {
	[ -f "$aptdir/updated" ] || return 1
	age=$(($(date +%s) - $(stat -c %Y "$aptdir/updated")))
	[ "$age" -lt "$max_age" ]
}

# Prints "PACKAGE VERSION" of the image package the metapackage currently depends on.
resolve() {
	# shellcheck disable=SC2086
	pkg=$(apt-cache $apt_opts depends "$meta" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
	[ -n "$pkg" ] || return 1
	# shellcheck disable=SC2086
	ver=$(apt-cache $apt_opts show --no-all-versions "$pkg" 2>/dev/null |
		awk '$1 == "Version:" { print $2; exit }')
	[ -n "$ver" ] || return 1
	echo "$pkg $ver"
}

# Downloads PACKAGE VERSION to $cache/debs unless it is there. Fails when the mirror no
# longer has it.
download() {
	deb=$cache/debs/${1}_$2.deb
	[ -s "$deb" ] && return 0
	log "downloading $1 $2"
	# apt-get download writes into the working directory; go through a temporary directory
	# so an interrupted download is never mistaken for a complete one.
	tmp=$(mktemp -d "$cache/debs/dl.XXXXXX")
	# shellcheck disable=SC2086
	if ! (cd "$tmp" && apt-get -q $apt_opts download "$1=$2" >"$tmp/log" 2>&1); then
		cat "$tmp/log" >&2
		rm -rf "$tmp"
		return 1
	fi
	mv "$tmp"/*.deb "$deb"
	rm -rf "$tmp"
}

# Unpacks the downloaded PACKAGE VERSION into its cache directory and prepares the image
# qemu boots: the ELF vmlinux where the host can decompress the payload, else the
# compressed image itself (it boots too, only slower).
unpack() {
	dir=$cache/kernels/${1}_$2
	log "unpacking $1 $2"
	rm -rf "$dir"
	mkdir -p "$dir/root"
	dpkg-deb -x "$cache/debs/${1}_$2.deb" "$dir/root" || die "cannot unpack ${1}_$2.deb"
	# The .deb is only needed to unpack; the tree is what the runs use.
	rm -f "$cache/debs/${1}_$2.deb"
	vmlinuz=
	for f in "$dir"/root/boot/vmlinuz-*; do
		[ -f "$f" ] && vmlinuz=$f
	done
	[ -n "$vmlinuz" ] || die "$1 has no /boot/vmlinuz-*"
	basename "$vmlinuz" | sed 's/^vmlinuz-//' >"$dir/release"
	if ! sh "$here/extract-vmlinux.sh" "$vmlinuz" "$dir/kernel"; then
		log "booting the compressed image (no ELF vmlinux: slower boot)"
		ln -s "${vmlinuz#"$dir"/}" "$dir/kernel"
	fi
	touch "$dir/complete"
}

# A kernel is ready once unpack() finished (an interrupted one is redone).
ready() { [ -f "$cache/kernels/${1}_$2/complete" ] && [ -e "$cache/kernels/${1}_$2/kernel" ]; }

index_fresh || update_index || log "index update failed (see $aptdir/update.log)"

resolved=$cache/resolved/$suite-$meta
if pv=$(resolve); then
	echo "$pv" >"$resolved"
elif [ -s "$resolved" ]; then
	pv=$(cat "$resolved")
	log "cannot resolve $meta from the index; using the last resolved kernel: $pv"
else
	die "cannot resolve $meta in $suite (see $aptdir/update.log)"
fi

# shellcheck disable=SC2086
set -- $pv
if ! ready "$1" "$2"; then
	if ! download "$1" "$2"; then
		# The index may name an ABI the mirror has dropped since: refresh once and retry.
		update_index || die "index update failed (see $aptdir/update.log)"
		pv=$(resolve) || die "cannot resolve $meta in $suite"
		echo "$pv" >"$resolved"
		# shellcheck disable=SC2086
		set -- $pv
		download "$1" "$2" || die "cannot download $1 $2"
	fi
	ready "$1" "$2" || unpack "$1" "$2"
fi
echo "$cache/kernels/${1}_$2"
