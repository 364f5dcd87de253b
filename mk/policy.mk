# Policy and SQL tools: the split dumper the differential lexer test drives
# (tests/integration/test_sql_differential.py) and the classification throughput benchmark
# (bench/classify_bench.c; `make bench-classify`, not part of `make bench`), and the policy
# stage's cost per statement (bench/policy_bench.c; `make bench-policy`).
SQL_SPLIT_DUMP := $(BUILD)/tests/sql_split_dump
CLASSIFY_BENCH := $(BUILD)/bench/classify_bench
POLICY_BENCH := $(BUILD)/bench/policy_bench

$(SQL_SPLIT_DUMP): $(BUILD)/obj/tests/tools/sql_split_dump.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PG_LIBS)

$(CLASSIFY_BENCH): $(BUILD)/obj/bench/classify_bench.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PG_LIBS)

$(POLICY_BENCH): $(BUILD)/obj/bench/policy_bench.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PG_LIBS)

# The differential test finds the dumper beside the daemon's build.
check-integration: $(SQL_SPLIT_DUMP)
all: $(SQL_SPLIT_DUMP) $(CLASSIFY_BENCH) $(POLICY_BENCH)

.PHONY: bench-classify bench-policy
bench-policy: $(POLICY_BENCH)
	$(POLICY_BENCH) 1

bench-classify: $(CLASSIFY_BENCH)
	@PYTHONPATH=tests/integration /usr/bin/python3 -c 'import regress_corpus; print(regress_corpus.fetch())' >/dev/null
	$(CLASSIFY_BENCH) $${PGWARDEN_REGRESS_CACHE:-/tmp/pgwarden-regress-sql-15}/sql/*.sql
