# vm-tests: boot stock Debian kernels under qemu and prove there that the steering BPF
# object loads, passes the verifier, attaches and steers, and that the nft TPROXY rule
# steers. See vm-tests/README.md.
#
#   make vm-test                       every kernel in vm-tests/kernels
#   make vm-test VM_KERNELS=debian12-6.1
#
# Kernels are cached under VM_CACHE (outside the tree) across runs; logs and initramfs
# images go to $(BUILD)/vm.

VM_DIR := $(BUILD)/vm
VM_CACHE ?= /tmp/pgwarden-vm-cache
VM_TIMEOUT ?= 120
VM_KERNELS ?=
BPFTOOL ?= bpftool

# The guest's test program is static: the initramfs has no libbpf, libelf or zlib, and the
# same binary runs on every guest kernel.
VM_TEST_BIN := $(VM_DIR)/steer_test
VM_TEST_CFLAGS := -std=gnu11 -D_GNU_SOURCE $(WARN) -O2 -g -I$(VM_DIR)/gen

# CO-RE: vmlinux.h from the build host's BTF; relocations resolve against each guest
# kernel's own BTF at load time.
$(VM_DIR)/gen/vmlinux.h:
	@mkdir -p $(dir $@)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c >$@.tmp && mv $@.tmp $@

$(VM_DIR)/probe.bpf.o: vm-tests/probe.bpf.c $(VM_DIR)/gen/vmlinux.h
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_x86 -I$(VM_DIR)/gen -c $< -o $@

$(VM_DIR)/gen/probe.skel.h: $(VM_DIR)/probe.bpf.o
	$(BPFTOOL) gen skeleton $< name probe_bpf >$@.tmp && mv $@.tmp $@

$(VM_TEST_BIN): vm-tests/steer_test.c $(VM_DIR)/gen/probe.skel.h
	$(CC) $(VM_TEST_CFLAGS) -static -o $@ $< -lbpf -lelf -lz

vm-test: $(VM_TEST_BIN)
	VM_CACHE=$(VM_CACHE) VM_TIMEOUT=$(VM_TIMEOUT) VM_KERNELS="$(VM_KERNELS)" \
		sh vm-tests/run.sh $(VM_DIR) $(VM_TEST_BIN)
