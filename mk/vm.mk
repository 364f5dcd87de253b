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

# The guest's test program drives pgwarden's own steering module (userspace/steer, with the
# skeleton of bpf/steer.bpf.c from mk/bpf.mk embedded), linked from the project library.
# Dynamic, because libnftables exists only as a shared library: mkinitramfs.sh copies in
# every library ldd names. --as-needed keeps that to what steering really uses.
VM_TEST_BIN := $(VM_DIR)/steer_test

$(VM_TEST_BIN): vm-tests/steer_test.c $(LIB) | $(GENERATED)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PG_CFLAGS) -o $@ $< $(LDFLAGS) -Wl,--as-needed $(LIB) $(PG_LIBS)

vm-test: $(VM_TEST_BIN)
	VM_CACHE=$(VM_CACHE) VM_TIMEOUT=$(VM_TIMEOUT) VM_KERNELS="$(VM_KERNELS)" \
		sh vm-tests/run.sh $(VM_DIR) $(VM_TEST_BIN)
