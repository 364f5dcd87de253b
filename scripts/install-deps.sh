#!/bin/sh
# Installs every Debian package pgwarden needs to build, test, demo and benchmark.
# Idempotent and quiet: packages already present cost one dpkg query, and apt-get runs only
# when something is missing. `make demo`, `make test` and .ci/run all come through here.
set -eu

PACKAGES="
build-essential pkg-config make clang llvm libclang-rt-14-dev
libbpf-dev bpftool libelf-dev zlib1g-dev
libssl-dev openssl libyaml-dev libjansson-dev libmicrohttpd-dev libncurses-dev libcmocka-dev libidn-dev
libnl-3-dev libnl-route-3-dev libnftables-dev libmnl-dev libnetfilter-queue-dev
libnfnetlink-dev libxtables-dev libip4tc-dev libip6tc-dev
libsystemd-dev dpkg-dev debhelper lintian debootstrap e2fsprogs util-linux
nftables iptables iproute2
postgresql postgresql-contrib pgbouncer haproxy
python3 python3-pytest python3-pytest-xdist python3-psycopg python3-prometheus-client
tmux procps psmisc
qemu-system-x86 busybox-static xz-utils zstd
"

missing=""
for p in $PACKAGES; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	"install ok installed") ;;
	*) missing="$missing $p" ;;
	esac
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages:$missing; run as root to install them" >&2
	exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null

# Debian starts a default cluster and pgbouncer/haproxy services on install. pgwarden's tests
# and demo run their own throwaway instances, so stop the packaged ones only if this script
# is what just installed them (never touch services a user already had).
for svc in pgbouncer haproxy; do
	case " $missing " in
	*" $svc "*) systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true ;;
	esac
done
exit 0
