#!/bin/sh
# Says which Debian packages a build still needs, before the compiler or bpftool fail with
# "not found". Run by make ahead of the first generated header; silent and exit 0 when
# everything is there, else one message naming the packages and exit 1.
#
#   check-build-deps.sh [PKG_CONFIG [VMLINUX_BTF]]
#
# The lists below are the build dependencies; debian/control's Build-Depends names the
# same packages (tests/packaging/check-control.sh fails when they disagree).
set -u
pkg_config=${1:-pkg-config}
btf=${2:-/sys/kernel/btf/vmlinux}

# command:package
TOOLS="cc:build-essential make:make clang:clang bpftool:bpftool pkg-config:pkg-config"

# pkg-config module:package
MODULES="libbpf:libbpf-dev libelf:libelf-dev zlib:zlib1g-dev openssl:libssl-dev
yaml-0.1:libyaml-dev jansson:libjansson-dev libmicrohttpd:libmicrohttpd-dev
ncursesw:libncurses-dev libnl-3.0:libnl-3-dev libnl-route-3.0:libnl-route-3-dev
libnftables:libnftables-dev libnetfilter_queue:libnetfilter-queue-dev libmnl:libmnl-dev
libsystemd:libsystemd-dev"

case "${CHECK_BUILD_DEPS_LIST:-}" in
1) for e in $TOOLS $MODULES; do echo "${e#*:}"; done; exit 0 ;;
esac

missing=""
add() { case " $missing " in *" $1 "*) ;; *) missing="$missing $1" ;; esac; }

for e in $TOOLS; do
	command -v "${e%%:*}" >/dev/null 2>&1 || add "${e#*:}"
done
have_pkg_config=0
command -v "$pkg_config" >/dev/null 2>&1 && have_pkg_config=1
for e in $MODULES; do
	if [ $have_pkg_config = 0 ] || ! "$pkg_config" --exists "${e%%:*}" 2>/dev/null; then
		add "${e#*:}"
	fi
done

if [ -n "$missing" ]; then
	echo "pgwarden: missing build dependencies. Install them with:" >&2
	echo "    apt-get install$missing" >&2
	echo "(or, as root, 'make deps', which also installs what the tests need)" >&2
	exit 1
fi
if [ ! -r "$btf" ]; then
	echo "pgwarden: no kernel BTF at $btf, which the BPF build reads: build on a kernel with" >&2
	echo "CONFIG_DEBUG_INFO_BTF=y (Debian's kernels have it), or give make VMLINUX_BTF=FILE" >&2
	exit 1
fi
exit 0
