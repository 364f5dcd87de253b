#!/bin/sh
# Builds the initramfs a vm-test guest boots: busybox, vm-tests/init as /init, the guest's
# kernel modules in dependency order, and the test program, nft and ip (iproute2) with the
# shared libraries they link.
#
#   mkinitramfs.sh KERNEL_DIR TEST_BINARY OUTPUT
#
# KERNEL_DIR is what fetch-kernel.sh prints. The archive is an uncompressed newc cpio:
# decompressing it would cost the emulated guest more than reading 20 MB costs qemu.
set -eu

kdir=${1:?usage: mkinitramfs.sh KERNEL_DIR TEST_BINARY OUTPUT}
test_bin=${2:?usage: mkinitramfs.sh KERNEL_DIR TEST_BINARY OUTPUT}
out=${3:?usage: mkinitramfs.sh KERNEL_DIR TEST_BINARY OUTPUT}
here=$(cd "$(dirname "$0")" && pwd)

# What the guest loads. Dependencies are added automatically; softdeps are not declared in
# modinfo's depends=, so they are listed here: crc32c_generic must precede nf_tables, or
# libcrc32c fails to load and nft reports "cache initialization failed".
# The rest is what pgwarden's nft table uses (tproxy, socket, ct, reject, and queue with its
# netlink handler for the admission gate) and the test's veth pair.
GUEST_MODULES="crc32c_generic veth nft_tproxy nft_socket nft_ct nft_reject_inet nft_queue
nfnetlink_queue"

release=$(cat "$kdir/release")
moddir=
for d in "$kdir/root/lib/modules/$release" "$kdir/root/usr/lib/modules/$release"; do
	[ -d "$d" ] && moddir=$d
done
[ -n "$moddir" ] || { echo "mkinitramfs: no modules for $release in $kdir" >&2; exit 1; }

stage=$out.d
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/usr/sbin" "$stage/lib/modules" "$stage/proc" "$stage/sys" \
	"$stage/dev" "$stage/run" "$stage/tmp" "$stage/var"
ln -s ../run "$stage/var/run"

cp /bin/busybox "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
cp "$here/init" "$stage/init"
chmod 0755 "$stage/init"
# Dynamically linked programs go in with every library ldd names, at the same paths, so
# the guest's loader finds them in its default multiarch directories. (The test program
# cannot be static: Debian ships libnftables as a shared library only.)
add_program() {
	cp -L "$1" "$stage$2"
	ldd "$1" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
		mkdir -p "$stage$(dirname "$lib")"
		cp -L "$lib" "$stage$lib"
	done
}

add_program "$test_bin" /bin/steer_test
# nft and ip go in /usr/sbin; init calls them by path, since busybox's sh prefers its own
# applets of the same name.
for tool in nft ip; do
	path=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$tool") ||
		{ echo "mkinitramfs: $tool not installed on the host" >&2; exit 1; }
	add_program "$path" "/usr/sbin/$tool"
done

# Module index: name (with '-' folded to '_', as modinfo and depends= spell it) -> file.
index=$stage/.modindex
find "$moddir/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' |
	awk '{ n = $0; sub(/.*\//, "", n); sub(/\.ko(\.xz|\.zst)?$/, "", n); gsub(/-/, "_", n);
	       print n, $0 }' >"$index"
builtin=$(sed 's/.*\///; s/\.ko$//; s/-/_/g' "$moddir/modules.builtin")

is_builtin() { echo "$builtin" | grep -qx "$1"; }

# Puts module $1 (decompressed) into the stage, after its dependencies. Depth-first, so
# load-order lists every module after everything it depends on. The body is a subshell so
# each level of the recursion keeps its own variables (POSIX sh has no `local`).
add_module() (
	name=$1
	grep -qx "$name.ko" "$stage/lib/modules/load-order" 2>/dev/null && return 0
	is_builtin "$name" && return 0
	file=$(awk -v n="$name" '$1 == n { print $2; exit }' "$index")
	[ -n "$file" ] || { echo "mkinitramfs: module $name not in $release" >&2; return 1; }
	ko=$stage/lib/modules/$name.ko
	case "$file" in
	*.xz) xz -dc "$file" >"$ko" ;;
	*.zst) zstd -dcq "$file" >"$ko" ;;
	*) cp "$file" "$ko" ;;
	esac
	for dep in $(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
		add_module "$(echo "$dep" | tr '-' '_')" || return 1
	done
	echo "$name.ko" >>"$stage/lib/modules/load-order"
)

: >"$stage/lib/modules/load-order"
for m in $GUEST_MODULES; do
	add_module "$m"
done
rm -f "$index"

(cd "$stage" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null) >"$out.tmp"
mv "$out.tmp" "$out"
rm -rf "$stage"
