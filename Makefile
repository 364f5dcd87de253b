# pgwarden build. Non-recursive: sources are found by location, so adding a module, a unit
# suite (tests/unit/test_*.c) or a fuzz target (tests/fuzz/fuzz_*.c) needs no edit here.
# Areas with their own build steps (BPF skeleton, vm-tests, benchmarks, integration) keep
# them in mk/*.mk.
#
#   make            build everything into $(BUILD)
#   make test       install missing packages, build, run every suite (what CI runs)
#   make demo       install missing packages, build, show a session through pgwarden
#   make sanitize   unit and integration suites under ASan + UBSan
#   make bench      side-by-side benchmarks, writes docs/BENCHMARKS.md
#   make evidence   run the tests docs/compliance-map.json names: a signed report (mk/evidence.mk)
#   make install    PREFIX=/usr/local DESTDIR= (binaries, man pages, docs, systemd unit,
#                   /etc/pgwarden/pgwarden.yaml and /etc/default/pgwarden when absent)
#   make deb        the Debian package, built and checked with lintian (mk/deb.mk)

PREFIX ?= /usr/local
DESTDIR ?=
# /etc for a system install (PREFIX=/usr), beside the prefix otherwise.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/pgwarden
BUILD ?= build
SAN ?= 0

CC ?= cc
CLANG ?= clang
PKG_CONFIG ?= pkg-config
PKGS := libbpf openssl yaml-0.1 jansson libmicrohttpd ncursesw libnl-route-3.0 libnl-3.0 \
	libnftables libnetfilter_queue libmnl libidn libsystemd

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
	-Wno-unused-parameter -Werror
CFLAGS ?= -O2 -g
# Link-time optimisation. A relayed transaction runs through many small functions in many
# files (framing, tracker, transports, state, metrics); across files nothing is inlined
# without it, and the code a transaction touches is what this 2-CPU class of host pays for
# in cache misses after every switch to PostgreSQL or the client (bench/levers.md).
# LTO= builds without it, as sanitizer builds always do.
LTO ?= -flto=auto
ifeq ($(SAN),1)
LTO :=
CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
CFLAGS += $(LTO)
# At the link, GCC sees across files that a strnlen() bound exceeds the buffer it is given
# (admin_session.c, proto/write.c), which is correct C: not warned about there.
LDFLAGS += $(LTO) $(if $(LTO),-Wno-stringop-overread)
PG_CFLAGS := -std=gnu11 -D_GNU_SOURCE $(WARN) -Iuserspace -Ibpf -I$(BUILD)/gen \
	$(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lpthread

LIB_SRCS := $(sort $(wildcard userspace/*/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIB := $(BUILD)/libpgwarden.a

DAEMON := $(BUILD)/pgwardend
CTL := $(BUILD)/pgwardenctl
TOP := $(BUILD)/pgwarden-top
BINS := $(DAEMON) $(CTL) $(TOP)

UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
# Per target in `make test`: a smoke run from the seed corpus (every target shares CI's budget);
# longer campaigns: make check-fuzz FUZZ_SECONDS=600.
FUZZ_SECONDS ?= 6

# Generated headers (the BPF skeleton, the version) every object may include; mk/*.mk add
# to it. Each is made after build-deps, so a host without the build dependencies is told
# which packages to install instead of failing on the first missing tool.
GENERATED := $(BUILD)/gen/pgwarden_version.h

.PHONY: all deps build-deps FORCE test demo check-unit check-fuzz check-integration sanitize install clean \
	fuzz-build unit-build bench vm-test check-e2e
all: $(BINS)

include $(sort $(wildcard mk/*.mk))

deps:
	@sh scripts/install-deps.sh

# Order-only prerequisite of every generated header: runs once per make, changes nothing.
build-deps:
	@sh scripts/check-build-deps.sh "$(PKG_CONFIG)" "$(VMLINUX_BTF)"

# The one version (scripts/version.sh); rewritten only when it changes, so an unchanged
# checkout rebuilds nothing.
$(BUILD)/gen/pgwarden_version.h: FORCE | build-deps
	@mkdir -p $(dir $@)
	@sh scripts/version.sh header >$@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi
FORCE:

$(BUILD)/obj/%.o: %.c | $(GENERATED)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(PG_CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(DAEMON): $(BUILD)/obj/userspace/pgwardend.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PG_LIBS)

$(CTL): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tools/pgwardenctl/*.c)) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PG_LIBS)

$(TOP): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tools/pgwarden-top/*.c)) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PG_LIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PG_LIBS) -lcmocka

unit-build: $(UNIT_BINS)
check-unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; (cd tests/unit && ../../$$t); done

# libFuzzer targets: clang, with the library sources compiled again for coverage.
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer-no-link,address,undefined -std=gnu11 -D_GNU_SOURCE \
	-Iuserspace -Ibpf -I$(BUILD)/gen $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
# An archive, as for the unit tests: a target links only the objects it uses.
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/fuzzobj/%.o)
FUZZ_LIB := $(BUILD)/libpgwarden-fuzz.a
$(BUILD)/fuzzobj/%.o: %.c | $(GENERATED)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -c $< -o $@
$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(PG_LIBS)
fuzz-build: $(FUZZ_BINS)

# Each target runs from its seed corpus (tests/fuzz/corpus/NAME) into a scratch copy, so
# findings never dirty the tree; a crash fails the run and leaves the reproducer in $(BUILD).
# tests/fuzz/NAME.flags, when present, adds libFuzzer flags for that target.
check-fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); \
	  work=$(BUILD)/fuzz/work-$$n; rm -rf $$work; mkdir -p $$work; \
	  [ -d tests/fuzz/corpus/$$n ] && cp -r tests/fuzz/corpus/$$n/. $$work/; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  flags=$$(cat tests/fuzz/$$n.flags 2>/dev/null || true); \
	  $$f -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -artifact_prefix=$(BUILD)/fuzz/$$n- \
	      -print_final_stats=0 $$flags $$work >$(BUILD)/fuzz/$$n.log 2>&1 || \
	      { tail -n 40 $(BUILD)/fuzz/$$n.log; exit 1; }; \
	  grep -E '^Done|^#[0-9]+ *DONE' $(BUILD)/fuzz/$$n.log | tail -n 1; done

sanitize:
	$(MAKE) BUILD=build/san SAN=1 all check-unit check-integration

# Builds run in parallel (they are CPU-bound; the suites mostly wait on the network).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps
	$(MAKE) -j$(JOBS) all fuzz-build unit-build
	$(MAKE) -j$(JOBS) BUILD=build/san SAN=1 all unit-build
	$(MAKE) check-unit
	$(MAKE) check-fuzz
	$(MAKE) check-integration
	$(MAKE) sanitize
	$(MAKE) check-e2e
	$(MAKE) vm-test
	$(MAKE) check-package-maybe

demo: deps
	$(MAKE) all
	sh scripts/demo.sh $(BUILD)

# Paths the installed files name (man pages, the unit, the example config) follow PREFIX
# and SYSCONFDIR; a configuration or defaults file already there is left alone.
INSTALL_SED := -e 's|/usr/local/sbin/|$(PREFIX)/sbin/|g' \
	-e 's|/usr/share/doc/pgwarden/|$(DOCDIR)/|g' -e 's|/etc/pgwarden/|$(SYSCONFDIR)/pgwarden/|g' \
	-e 's|/etc/default/pgwarden|$(SYSCONFDIR)/default/pgwarden|g'
DOCS := README.md $(sort $(wildcard docs/*.md))

install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
		$(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/pgwarden \
		$(DESTDIR)$(SYSCONFDIR)/default
	install -m 0755 $(DAEMON) $(CTL) $(DESTDIR)$(PREFIX)/sbin/
	install -m 0755 $(TOP) $(DESTDIR)$(PREFIX)/bin/
	for m in man/pgwardend.8 man/pgwardenctl.8 man/pgwarden-top.1; do \
		sec=$${m##*.}; sed $(INSTALL_SED) $$m >$(DESTDIR)$(PREFIX)/share/man/man$$sec/$${m##*/}; \
		chmod 0644 $(DESTDIR)$(PREFIX)/share/man/man$$sec/$${m##*/}; done
	sed $(INSTALL_SED) systemd/pgwardend.service >$(DESTDIR)$(UNITDIR)/pgwardend.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/pgwardend.service
	install -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	[ -e $(DESTDIR)$(SYSCONFDIR)/pgwarden/pgwarden.yaml ] || \
		install -m 0644 etc/pgwarden.yaml $(DESTDIR)$(SYSCONFDIR)/pgwarden/pgwarden.yaml
	[ -e $(DESTDIR)$(SYSCONFDIR)/default/pgwarden ] || \
		install -m 0644 systemd/pgwarden.default $(DESTDIR)$(SYSCONFDIR)/default/pgwarden

clean:
	rm -rf build

-include $(LIB_OBJS:.o=.d) $(BUILD)/obj/userspace/pgwardend.d \
	$(patsubst %.c,$(BUILD)/obj/%.d,$(wildcard tools/*/*.c bench/*.c tests/tools/*.c) $(UNIT_SRCS))
