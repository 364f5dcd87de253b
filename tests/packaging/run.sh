#!/bin/sh
# The Debian package on a clean Debian 12 system: install, start under systemd, reload,
# upgrade in place under a live session, steer, stop, purge, and nothing left behind.
#
#   run.sh DEB WORK_DIR
#
# A Debian 12 root is made with debootstrap (minbase, systemd, a kernel, PostgreSQL) from
# the mirror this host's apt uses, read at run time from
# /etc/apt/sources.list.d/debian.sources, and cached as a tarball under PKG_CACHE (default
# /tmp/pgwarden-pkg-cache) with apt's downloads, so later runs need no network. Each run
# unpacks a fresh copy, installs the package's dependencies (not the package), writes it
# to an ext4 image, and boots it under qemu (TCG; KVM does not work on these machines, see
# /work/shared/notes): tests/packaging/vm-test.sh runs inside as a systemd unit and reports
# on the serial console. Exit 0 when every check passed.
#
# Environment: PKG_CACHE, PKG_TIMEOUT (seconds for the boot and the tests, default 600),
# QEMU. Needs root (debootstrap, chroot, mounts in a private namespace).
set -eu

deb=${1:?usage: run.sh DEB WORK_DIR}
work=${2:?usage: run.sh DEB WORK_DIR}
here=$(cd "$(dirname "$0")" && pwd)
cache=${PKG_CACHE:-/tmp/pgwarden-pkg-cache}
timeout_s=${PKG_TIMEOUT:-600}
qemu=${QEMU:-qemu-system-x86_64}
suite=bookworm

now() { date +%s; }
t0=$(now)
say() { echo "check-package: $*"; }
phase() { say "$1 ($(($(now) - t0))s)"; }

[ "$(id -u)" -eq 0 ] || { say "FAIL: needs root (debootstrap, chroot)"; exit 1; }
for tool in debootstrap mke2fs "$qemu" unshare; do
	command -v "$tool" >/dev/null 2>&1 || { say "FAIL: $tool not found (make deps)"; exit 1; }
done
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
mkdir -p "$cache/apt-archives/partial" "$work"
work=$(cd "$work" && pwd)

# The first Debian stanza's URI; never written anywhere but this process's arguments.
mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
[ -n "$mirror" ] || { say "FAIL: no URIs: in /etc/apt/sources.list.d/debian.sources"; exit 1; }

# ---- the cached root: debootstrap once --------------------------------------------------

tarball=$cache/$suite-root.tar
build_root() {
	dir=$cache/root.tmp
	rm -rf "$dir"
	phase "debootstrap $suite (first run only; cached in $tarball)"
	debootstrap --variant=minbase --cache-dir="$cache/apt-archives" \
		--include=systemd,systemd-sysv,dbus,udev,kmod,initramfs-tools,adduser,procps,iproute2,nftables \
		"$suite" "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
		tail -n 20 "$cache/debootstrap.log"
		say "FAIL: debootstrap"
		return 1
	}
	# A kernel, and PostgreSQL to steer to, installed with apt inside the root.
	chroot_apt "$dir" linux-image-cloud-amd64 postgresql postgresql-client || return 1
	echo pgw-pkgtest >"$dir/etc/hostname"
	printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$dir/etc/fstab"
	# No login prompt on the console the test reports on.
	ln -sf /dev/null "$dir/etc/systemd/system/serial-getty@ttyS0.service"
	ln -sf /dev/null "$dir/etc/systemd/system/getty@tty1.service"
	tar -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
	rm -rf "$dir"
}

# apt-get install PACKAGES in root, with /proc and the download cache mounted in a private
# mount namespace (gone with it, also on failure), and services kept from starting.
chroot_apt() {
	root=$1
	shift
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 0755 "$root/usr/sbin/policy-rc.d"
	unshare -m --propagation private sh -c '
		root=$1; archives=$2; shift 2
		mount -t proc proc "$root/proc"
		mount --bind "$archives" "$root/var/cache/apt/archives"
		chroot "$root" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends \"\$@\"" sh "$@"
	' sh "$root" "$cache/apt-archives" "$@" >"$work/apt.log" 2>&1 || {
		tail -n 20 "$work/apt.log"
		say "FAIL: apt-get install $* in the Debian root"
		rm -f "$root/usr/sbin/policy-rc.d"
		return 1
	}
	rm -f "$root/usr/sbin/policy-rc.d"
}

# One builder at a time (another run may be making the cache right now).
exec 9>"$cache/lock"
flock 9
if [ ! -s "$tarball" ]; then
	build_root || exit 1
fi
flock -u 9

# ---- this run's system ------------------------------------------------------------------

root=$work/root
rm -rf "$root" "$work/disk.img"
mkdir -p "$root"
phase "unpacking a fresh $suite root"
tar -C "$root" -xf "$tarball"
# The root's own sources: the same mirror, for apt inside the chroot only; removed again
# before the image is made.
printf 'deb %s %s main\n' "$mirror" "$suite" >"$root/etc/apt/sources.list"

# What the package needs, without the package: dpkg -i inside the VM then installs it
# offline, with systemd running, as an operator would.
depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -e 's/(.*)//' -e 's/|.*//' -e 's/ //g' | grep -v '^$' | tr '\n' ' ')
phase "installing the package's dependencies: $depends"
# shellcheck disable=SC2086
chroot_apt "$root" $depends || exit 1
rm -f "$root/etc/apt/sources.list"
rm -rf "$root/var/lib/apt/lists/"*

cp "$deb" "$root/root/pgwarden.deb"
install -m 0755 "$here/vm-test.sh" "$root/root/vm-test.sh"
cat >"$root/etc/systemd/system/pgw-pkgtest.service" <<'EOF'
[Unit]
Description=pgwarden package test
After=multi-user.target postgresql.service
[Service]
Type=oneshot
ExecStart=/root/vm-test.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/pgw-pkgtest.service \
	"$root/etc/systemd/system/multi-user.target.wants/pgw-pkgtest.service"

kernel=$(ls "$root"/boot/vmlinuz-* | head -n 1)
initrd=$(ls "$root"/boot/initrd.img-* | head -n 1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
phase "writing the ext4 image"
size_mb=$(($(du -sm "$root" | cut -f1) + 768))
mke2fs -q -t ext4 -d "$root" -L pgwroot "$work/disk.img" "${size_mb}M"
rm -rf "$root"

# ---- boot -------------------------------------------------------------------------------

phase "booting it under qemu (TCG), up to ${timeout_s}s"
log=$work/console.log
rc=0
timeout --kill-after=10 "$timeout_s" "$qemu" -nodefaults -no-user-config -display none \
	-no-reboot -machine q35 -accel tcg,thread=single -cpu max -smp 2 -m 1536M \
	-serial "file:$log" \
	-drive "file=$work/disk.img,format=raw,if=virtio" \
	-kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
	-append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0 quiet" \
	</dev/null >"$work/qemu.log" 2>&1 || rc=$?
rm -f "$work/disk.img"
tr -d '\r' <"$log" | grep '^PGW-PKGTEST' | sed 's/^PGW-PKGTEST[A-Z-]*: //' | sed 's/^/  /'
result=$(tr -d '\r' <"$log" | grep -m 1 '^PGW-PKGTEST-RESULT: ' | sed 's/^PGW-PKGTEST-RESULT: //')
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	say "FAIL: the VM did not power off within ${timeout_s}s (console: $log)"
	tail -n 30 "$log" | sed 's/^/    /'
	exit 1
fi
if [ "$result" != "pass" ]; then
	say "FAIL: ${result:-no result line} (console: $log)"
	exit 1
fi
phase "PASS"
