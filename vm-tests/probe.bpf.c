// SPDX-License-Identifier: GPL-2.0
/*
 * probe.bpf.c: a minimal CO-RE steering probe that proves the vm-test harness (kernel fetch,
 * initramfs, boot, verifier, cgroup attach, result line) until bpf/steer.bpf.c exists. It
 * is replaced by the real steering object, not kept beside it.
 *
 * connect4 rewrites one dialled IPv4 address:port to the relay and remembers the dialled
 * pair in socket-local storage; getpeername4 gives it back, so the client sees the address
 * it dialled. The connecting process's tgid is read from task_struct through a CO-RE
 * relocation, which only matches user space's pid if relocation against the guest kernel's
 * own BTF worked. connect_unix exists from 6.7: user space loads it only where the kernel
 * has it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* Set by user space before load; all in network byte order. */
const volatile __u32 dialled_addr;
const volatile __u32 dialled_port;
const volatile __u32 relay_addr;
const volatile __u32 relay_port;

/* Read by user space after the client connected. */
__u32 steered_tgid;
__u32 steered_count;

struct dialled {
	__u32 addr;
	__u32 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct dialled);
} probe_dialled SEC(".maps");

SEC("cgroup/connect4")
int probe_connect4(struct bpf_sock_addr *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct dialled *d;

	if (ctx->user_ip4 != dialled_addr || ctx->user_port != dialled_port)
		return 1;
	d = bpf_sk_storage_get(&probe_dialled, ctx->sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!d)
		return 0; /* refuse rather than steer a connection we could not describe */
	d->addr = ctx->user_ip4;
	d->port = ctx->user_port;
	steered_tgid = BPF_CORE_READ(task, tgid);
	__sync_fetch_and_add(&steered_count, 1);
	ctx->user_ip4 = relay_addr;
	ctx->user_port = relay_port;
	return 1;
}

SEC("cgroup/getpeername4")
int probe_getpeername4(struct bpf_sock_addr *ctx)
{
	struct dialled *d = bpf_sk_storage_get(&probe_dialled, ctx->sk, NULL, 0);

	if (d) {
		ctx->user_ip4 = d->addr;
		ctx->user_port = d->port;
	}
	return 1;
}

/* libbpf 1.1 does not know this section name: user space sets the type and attach type. */
SEC("cgroup/connect_unix")
int probe_connect_unix(struct bpf_sock_addr *ctx)
{
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
