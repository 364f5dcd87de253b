#!/bin/sh
# Boots every kernel in vm-tests/kernels under qemu, one after another, with the steering
# test as the guest's job, and reports one line per kernel and a final "N passed, N failed".
# Exits non-zero if any kernel failed, timed out, or printed no result line.
#
#   run.sh WORK_DIR TEST_BINARY
#
# Environment: VM_CACHE (kernel cache, default /tmp/pgwarden-vm-cache), VM_TIMEOUT (seconds
# per boot, default 120), VM_KERNELS (space-separated NAMEs to run, default all), QEMU.
set -u

work=${1:?usage: run.sh WORK_DIR TEST_BINARY}
test_bin=${2:?usage: run.sh WORK_DIR TEST_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
timeout_s=${VM_TIMEOUT:-120}
qemu=${QEMU:-qemu-system-x86_64}
mkdir -p "$work"

passed=0
failed=0

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Shows the end of a guest's console, where the reason for a failure is.
show_log() {
	echo "---- last lines of $1"
	tail -n 30 "$1" | sed 's/^/    /'
	echo "----"
}

# TCG, not KVM: /dev/kvm on these machines cannot run stock kernels (see README.md). One TCG
# thread: with thread=multi about one boot in fifteen on a busy host died in the guest kernel
# before init (double fault in SLUB's cmpxchg16b with corrupt EFLAGS, an emulation race), and
# a single thread is no slower when the host's cores are shared. An ELF vmlinux boots through
# the PVH entry, skipping the emulated decompressor. q35, not microvm, which hangs on 6.12.
boot() {
	timeout --kill-after=5 "$timeout_s" "$qemu" -nodefaults -no-user-config -display none \
		-no-reboot -machine q35 -accel tcg,thread=single -cpu max -smp 2 -m 512M \
		-serial stdio -kernel "$1" -initrd "$2" \
		-append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3" </dev/null
}

run_kernel() {
	name=$1 suite=$2 meta=$3
	log=$work/$name.log
	initrd=$work/$name.initrd
	rm -f "$log"

	if ! kdir=$(sh "$here/fetch-kernel.sh" "$suite" "$meta"); then
		echo "vm-test: $name: FAIL: cannot fetch $meta from $suite"
		return 1
	fi
	release=$(cat "$kdir/release")
	if ! sh "$here/mkinitramfs.sh" "$kdir" "$test_bin" "$initrd"; then
		echo "vm-test: $name ($release): FAIL: cannot build the initramfs"
		return 1
	fi

	attempt=1
	while :; do
		start=$(now)
		boot "$kdir/kernel" "$initrd" >"$log" 2>&1
		rc=$?
		secs=$(elapsed "$start" "$(now)")
		# init's first line marks the end of the kernel's own boot. A guest kernel that died
		# (qemu exited: panic=-1, -no-reboot) before it never ran any pgwarden code: that is
		# the emulator or the stock kernel, not what is under test, so it gets one more boot
		# and says so. Anything later counts, and so does a hang (one timeout is enough).
		grep -q '^vm-test: init started' "$log" && break
		[ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] || [ "$attempt" -ge 2 ] && break
		echo "vm-test: $name ($release): guest died before init in ${secs}s; booting again:"
		tr -d '\r' <"$log" | grep -m 3 -E 'panic|Oops|fault' | sed 's/^/    /'
		attempt=$((attempt + 1))
	done
	result=$(tr -d '\r' <"$log" | grep -m 1 '^PGW-VMTEST-RESULT: ' | sed 's/^PGW-VMTEST-RESULT: //')

	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "vm-test: $name ($release): FAIL: no poweroff within ${timeout_s}s${result:+ ($result)}"
	elif [ -z "$result" ]; then
		echo "vm-test: $name ($release): FAIL: no result line in ${secs}s (qemu exit $rc)"
	elif [ "${result#PASS kernel="$release" }" = "$result" ]; then
		# Not PASS, or PASS from a kernel other than the one we booted.
		echo "vm-test: $name ($release): FAIL in ${secs}s: ${result#FAIL }"
	else
		echo "vm-test: $name ($release): PASS in ${secs}s: ${result#PASS kernel="$release" }"
		return 0
	fi
	show_log "$log"
	return 1
}

selected() {
	[ -z "${VM_KERNELS:-}" ] && return 0
	case " $VM_KERNELS " in *" $1 "*) return 0 ;; esac
	return 1
}

# The list is read on its own descriptor: qemu and apt must not consume it as stdin.
while read -r name suite meta rest <&3; do
	case "$name" in '' | '#'*) continue ;; esac
	selected "$name" || continue
	if run_kernel "$name" "$suite" "$meta"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
done 3<"$here/kernels"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
