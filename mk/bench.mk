# Side-by-side benchmarks: direct PostgreSQL, pgwardend (explicit and steered), PgBouncer,
# HAProxy (bench/README.md).
#
#   make bench                    full run (~20 min), writes docs/BENCHMARKS.md
#   make bench BENCH_QUICK=1      1 round of 2 s cells, writes $(BUILD)/bench/BENCHMARKS-quick.md
#   make bench-report             rewrite the report from the last run's results.json
#
# Knobs are environment variables read by bench/run.py (BENCH_ROUNDS, BENCH_SECONDS,
# BENCH_TARGETS, BENCH_SECTIONS, ...); make passes command-line variables through to it.
# Debian's python3 on purpose: psycopg comes from python3-psycopg, and a pyenv or venv
# python first on PATH would not see it.

BENCH_PYTHON ?= /usr/bin/python3
BENCH_WORK ?= $(BUILD)/bench

.PHONY: bench bench-report
# pgwardenctl too: the connect section's `steered` target attaches the BPF steering hooks
# with it (BENCH_STEERED=0 leaves that target out).
# BENCH_BASELINE=REV also builds pgwardend from that git revision (an export of it under
# $(BENCH_WORK), never the work tree) and measures it beside this build as `baseline`.
BENCH_BASELINE ?=
BASELINE_DIR := $(BENCH_WORK)/baseline
BASELINE_ARGS := $(if $(BENCH_BASELINE),--baseline-daemon $(abspath $(BASELINE_DIR))/build/pgwardend \
	--baseline-rev $(BENCH_BASELINE))

bench: $(DAEMON) $(CTL)
	@sh scripts/install-deps.sh
	@mkdir -p $(BENCH_WORK)
	@if [ -n "$(BENCH_BASELINE)" ]; then \
	  rm -rf $(BASELINE_DIR) && mkdir -p $(BASELINE_DIR) && \
	  git archive --format=tar $(BENCH_BASELINE) | tar -x -C $(BASELINE_DIR) && \
	  $(MAKE) -C $(BASELINE_DIR) BUILD=build build/pgwardend >$(BENCH_WORK)/baseline-build.log 2>&1 || \
	  { tail -n 20 $(BENCH_WORK)/baseline-build.log; exit 1; }; fi
	$(BENCH_PYTHON) bench/run.py --daemon $(DAEMON) --ctl $(CTL) --work $(BENCH_WORK) \
		$(BASELINE_ARGS)

bench-report:
	$(BENCH_PYTHON) bench/run.py --daemon $(DAEMON) --ctl $(CTL) --work $(BENCH_WORK) --report-only

# The audit writer alone (bench/audit_writer.c): records/s per fsync mode, and the wait a
# statement sees. No PostgreSQL needed; the trail goes to /var/tmp (a real disk) unless
# AUDIT_BENCH_ARGS says --dir.
AUDIT_BENCH_ARGS ?=
.PHONY: bench-audit-writer
$(BUILD)/bench/audit_writer: bench/audit_writer.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PG_CFLAGS) -o $@ $< $(LIB) $(PG_LIBS)
bench-audit-writer: $(BUILD)/bench/audit_writer
	$(BUILD)/bench/audit_writer $(AUDIT_BENCH_ARGS)
