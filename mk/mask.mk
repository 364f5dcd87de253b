# Masking test support: a small CLI the capture script and the integration tests run against
# a real PostgreSQL (tests/tools/mask_tool.c), and the DataRow rewriter's micro-benchmark
# (bench/mask_row_bench.c, `make bench-mask`: numbers for docs/MASKING.md).

MASK_TOOL := $(BUILD)/tests/mask_tool
MASK_BENCH := $(BUILD)/bench/mask_row_bench

$(MASK_TOOL): tests/tools/mask_tool.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PG_CFLAGS) -o $@ $< $(LDFLAGS) $(LIB) $(PG_LIBS)

$(MASK_BENCH): bench/mask_row_bench.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PG_CFLAGS) -o $@ $< $(LDFLAGS) $(LIB) $(PG_LIBS)

.PHONY: bench-mask
bench-mask: $(MASK_BENCH)
	$(MASK_BENCH)
