# BPF: vmlinux.h from the running kernel's BTF, the CO-RE object, and its bpftool skeleton.
# The skeleton embeds the object, so pgwardend and pgwardenctl carry their BPF code inside
# and load it on any kernel with BTF (CO-RE relocates against the target kernel's own BTF).

BPFTOOL ?= bpftool
VMLINUX_BTF ?= /sys/kernel/btf/vmlinux
BPF_ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/' -e 's/ppc64le/powerpc/')
BPF_CFLAGS := -target bpf -g -O2 -Wall -Werror -D__TARGET_ARCH_$(BPF_ARCH) \
	-I$(BUILD)/gen -Ibpf

$(BUILD)/gen/vmlinux.h: | build-deps
	@mkdir -p $(dir $@)
	$(BPFTOOL) btf dump file $(VMLINUX_BTF) format c > $@.tmp
	@mv $@.tmp $@

$(BUILD)/bpf/steer.bpf.o: bpf/steer.bpf.c bpf/steer.h $(BUILD)/gen/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/gen/steer.skel.h: $(BUILD)/bpf/steer.bpf.o
	@mkdir -p $(dir $@)
	$(BPFTOOL) gen skeleton $< name steer > $@.tmp
	@mv $@.tmp $@

GENERATED += $(BUILD)/gen/steer.skel.h

.PHONY: bpf
bpf: $(BUILD)/gen/steer.skel.h
