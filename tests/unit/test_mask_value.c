/*
 * test_mask_value: masking strategies, value by value (mask_strategy.h, mask_value.h,
 * mask_key.h).
 *
 * data/mask/strategies.txt: strategy texts the policy loader may meet, good and bad.
 * data/mask/values.txt: strategy × type × format × session → expected output. Each value
 * case runs whole, then one byte at a time into one byte of room, then in random pieces;
 * all three must agree with the expected bytes and with mask_out_len() (when it gives a
 * length) and mask_value_measure().
 *
 * Inputs are copied into heap blocks of exactly their size, so under ASan any read past a
 * value fails the run. Failures name the case file and line.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mask/mask_key.h"
#include "mask/mask_strategy.h"
#include "mask/mask_value.h"
#include "mask/mask_value_int.h"

#include "mask_test_util.h"

#define DATA_DIR "data/mask/"
#define LINE_MAX_ 8192

static unsigned failures;

static void __attribute__((format(printf, 3, 4))) fail_line(const char *file, unsigned line,
							    const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s%s:%u: ", DATA_DIR, file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

static void hexdump(const char *what, const uint8_t *p, size_t n)
{
	fprintf(stderr, "    %s (%zu):", what, n);
	for (size_t i = 0; i < n && i < 96; i++)
		fprintf(stderr, " %02x", p[i]);
	fprintf(stderr, "  \"");
	for (size_t i = 0; i < n && i < 96; i++)
		fputc(p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '.', stderr);
	fprintf(stderr, "\"\n");
}

/* ---- strategies --------------------------------------------------------------------------- */

static void test_strategy_parse_cases(void **state)
{
	FILE *f = fopen(DATA_DIR "strategies.txt", "r");
	char line[LINE_MAX_];
	unsigned lineno = 0, cases = 0;

	assert_non_null(f);
	failures = 0;
	while (fgets(line, sizeof(line), f)) {
		char *fld[2], err[256], canon[MASK_STRATEGY_STRLEN];
		uint8_t buf[LINE_MAX_];
		struct bytes in = {.p = buf};
		struct mask_strategy st = {MASK_NONE, 0}, again;
		int rc;

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (mt_fields(line, fld, 2) != 2 || !mt_bytes(fld[0], &in)) {
			fail_line("strategies.txt", lineno, "malformed case");
			continue;
		}
		cases++;
		buf[in.n] = '\0';
		rc = mask_strategy_parse(in.null ? NULL : (char *)buf, &st, err, sizeof(err));
		if (strncmp(fld[1], "ERR:", 4) == 0) {
			if (rc != -EINVAL || strncmp(err, fld[1] + 4, strlen(fld[1] + 4)) != 0)
				fail_line("strategies.txt", lineno, "want error \"%s\", got rc %d \"%s\"",
					  fld[1] + 4, rc, err);
			if (st.kind != MASK_NONE)
				fail_line("strategies.txt", lineno, "output set on error");
			continue;
		}
		mask_strategy_format(&st, canon, sizeof(canon));
		if (rc != 0 || strcmp(canon, fld[1]) != 0) {
			fail_line("strategies.txt", lineno, "want %s, got rc %d %s (%s)", fld[1], rc,
				  canon, err);
			continue;
		}
		/* The canonical text reads back as itself. */
		if (mask_strategy_parse(canon, &again, err, sizeof(err)) != 0 ||
		    !mask_strategy_equal(&st, &again))
			fail_line("strategies.txt", lineno, "%s does not read back", canon);
	}
	fclose(f);
	assert_true(cases > 20);
	assert_int_equal(failures, 0);
}

/* ---- values -------------------------------------------------------------------------------- */

/* Run a whole value through the transformer in pieces of in_step bytes (0: random) into
 * rooms of out_step bytes (0: random). Returns the output length or a negative error. */
static int64_t run_pieces(const struct mask_action *a, const struct mask_env *e, const uint8_t *in,
			  size_t n, uint8_t *out, size_t cap, size_t in_step, size_t out_step,
			  uint32_t seed)
{
	struct mask_xf *x = malloc(sizeof(*x));
	size_t i = 0, o = 0;
	unsigned idle = 0;
	bool done = false;
	int rc = 0;

	assert_non_null(x);
	mask_xf_begin(x, a, e, (int64_t)n);
	while (i < n && !rc) {
		size_t is = in_step ? in_step : 1 + mt_rand(&seed) % 17;
		size_t os = out_step ? out_step : 1 + mt_rand(&seed) % 13;
		size_t c, p;

		if (is > n - i)
			is = n - i;
		if (os > cap - o)
			os = cap - o;
		rc = mask_xf_feed(x, in + i, is, &c, out + o, os, &p);
		i += c;
		o += p;
		if (!c && !p && ++idle > 4) {
			rc = -ENOSPC; /* a call with room that takes nothing and gives nothing */
			break;
		}
		if (c || p)
			idle = 0;
	}
	while (!done && !rc) {
		size_t os = out_step ? out_step : 1 + mt_rand(&seed) % 13;
		size_t p;

		if (os > cap - o)
			os = cap - o;
		rc = mask_xf_finish(x, out + o, os, &p, &done);
		o += p;
		if (!done && !p && ++idle > 4)
			rc = -ENOSPC;
		if (p)
			idle = 0;
	}
	free(x);
	return rc < 0 ? rc : (int64_t)o;
}

static void check_value_case(const char *file, unsigned lineno, char **fld)
{
	uint8_t inbuf[LINE_MAX_], wantbuf[LINE_MAX_], out[LINE_MAX_ * 2];
	struct bytes in = {.p = inbuf}, want = {.p = wantbuf};
	struct mask_strategy st;
	struct mask_type t;
	struct mask_env e;
	struct mask_action a;
	char err[256];
	uint8_t *exact;
	int64_t got, olen;
	bool fb;

	if (mask_strategy_parse(fld[0], &st, err, sizeof(err)) < 0 || !mt_type(fld[1], &t) ||
	    !mt_bytes(fld[4], &in) || !mt_bytes(fld[5], &want)) {
		fail_line(file, lineno, "malformed case (%s)", err);
		return;
	}
	mt_env(fld[3], &e);
	mask_action_init(&a, &st, &t, fld[2][0] == 'b' ? 1 : 0, &e, &fb);
	olen = mask_out_len(&a, &e, (uint32_t)in.n);
	if (want.null) {
		if (!mask_action_is_null(&a) || olen != MASK_LEN_NULL)
			fail_line(file, lineno, "want NULL, got strategy %s, length %lld",
				  mask_kind_to_str(a.st.kind), (long long)olen);
		return;
	}
	if (mask_action_is_null(&a) || fb) {
		fail_line(file, lineno, "the strategy fell back to null");
		return;
	}
	exact = malloc(in.n ? in.n : 1);
	assert_non_null(exact);
	memcpy(exact, in.p, in.n);
	got = mask_value_apply(&a, &e, exact, in.n, out, sizeof(out));
	if (got != (int64_t)want.n || memcmp(out, want.p, want.n) != 0) {
		fail_line(file, lineno, "whole value: wrong output (rc %lld)", (long long)got);
		hexdump("want", want.p, want.n);
		if (got >= 0)
			hexdump("got ", out, (size_t)got);
		goto out;
	}
	if (olen != MASK_LEN_UNKNOWN && olen != (int64_t)want.n)
		fail_line(file, lineno, "mask_out_len says %lld, output is %zu", (long long)olen,
			  want.n);
	if (mask_value_measure(&a, &e, exact, in.n) != (int64_t)want.n)
		fail_line(file, lineno, "measure disagrees");
	got = run_pieces(&a, &e, exact, in.n, out, sizeof(out), 1, 1, 1);
	if (got != (int64_t)want.n || memcmp(out, want.p, want.n) != 0) {
		fail_line(file, lineno, "one byte at a time: wrong output (rc %lld)", (long long)got);
		if (got >= 0)
			hexdump("got ", out, (size_t)got);
	}
	for (uint32_t seed = 1; seed < 40; seed++) {
		got = run_pieces(&a, &e, exact, in.n, out, sizeof(out), 0, 0, seed * 2654435761u);
		if (got != (int64_t)want.n || memcmp(out, want.p, want.n) != 0) {
			fail_line(file, lineno, "random pieces (seed %u): wrong output", seed);
			break;
		}
	}
out:
	free(exact);
}

static void test_value_cases(void **state)
{
	FILE *f = fopen(DATA_DIR "values.txt", "r");
	char line[LINE_MAX_];
	unsigned lineno = 0, cases = 0;

	assert_non_null(f);
	failures = 0;
	while (fgets(line, sizeof(line), f)) {
		char *fld[6];

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (mt_fields(line, fld, 6) != 6) {
			fail_line("values.txt", lineno, "want 6 fields");
			continue;
		}
		cases++;
		check_value_case("values.txt", lineno, fld);
	}
	fclose(f);
	assert_true(cases > 100);
	assert_int_equal(failures, 0);
}

/* A value far larger than any buffer streams through in constant memory. */
static void test_large_values_stream(void **state)
{
	const size_t n = 8u << 20;
	uint8_t *in = malloc(n), *out = malloc(n + 64);
	static const char *const strategies[] = {"partial-last-4", "phone", "email", "hash",
						 "redact", "date"};
	struct mask_env e;

	assert_non_null(in);
	assert_non_null(out);
	for (size_t i = 0; i < n; i++)
		in[i] = (uint8_t)("0123456789 abc-@xyz."[i % 20]);
	mt_env("utf8", &e);
	for (size_t s = 0; s < sizeof(strategies) / sizeof(strategies[0]); s++) {
		struct mask_strategy st;
		struct mask_type t;
		struct mask_action a;
		char err[128];
		int64_t len, got;

		assert_int_equal(mask_strategy_parse(strategies[s], &st, err, sizeof(err)), 0);
		assert_true(mt_type("text", &t));
		mask_action_init(&a, &st, &t, 0, &e, NULL);
		len = mask_out_len(&a, &e, (uint32_t)n);
		assert_true(len >= 0);
		got = run_pieces(&a, &e, in, n, out, n + 64, 65536, 4096, 7);
		assert_int_equal(got, len);
		if (st.kind == MASK_PARTIAL)
			assert_memory_equal(out + n - 4, in + n - 4, 4);
	}
	free(in);
	free(out);
}

/* Hash is deterministic across pieces and sessions, and differs by key. */
static void test_hash_keyed(void **state)
{
	struct mask_key *k1, *k2;
	struct mask_mac *m1, *m2;
	struct mask_env e1, e2;
	struct mask_strategy st = {MASK_HASH, 0};
	struct mask_type t = {.tc = MASK_TC_TEXT, .typmod = -1};
	struct mask_action a1, a2;
	uint8_t o1[64], o2[64];
	static const char key2[] = "another-key-another-key-another-";

	assert_int_equal(mask_key_from_bytes(MASK_TEST_KEY, 32, &k1), 0);
	assert_int_equal(mask_key_from_bytes(key2, 32, &k2), 0);
	assert_int_equal(mask_mac_new(k1, &m1), 0);
	assert_int_equal(mask_mac_new(k2, &m2), 0);
	mask_key_free(k1);
	mask_key_free(k2);
	mask_env_init(&e1, "UTF8", NULL, m1);
	mask_env_init(&e2, "UTF8", NULL, m2);
	mask_action_init(&a1, &st, &t, 0, &e1, NULL);
	mask_action_init(&a2, &st, &t, 0, &e2, NULL);
	assert_int_equal(mask_value_apply(&a1, &e1, (const uint8_t *)"x", 1, o1, sizeof(o1)), 32);
	assert_int_equal(mask_value_apply(&a2, &e2, (const uint8_t *)"x", 1, o2, sizeof(o2)), 32);
	assert_memory_not_equal(o1, o2, 32);
	assert_int_equal(mask_value_apply(&a1, &e1, (const uint8_t *)"x", 1, o2, sizeof(o2)), 32);
	assert_memory_equal(o1, o2, 32);
	assert_int_equal(mask_key_from_bytes("short", 5, &k1), -EINVAL);
	mask_mac_free(m1);
	mask_mac_free(m2);
}

/* ---- the key file: hostile files first ------------------------------------------------------ */

static void write_file(const char *path, const char *content, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, n), (ssize_t)n);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void test_key_file(void **state)
{
	char dir[] = "/tmp/test_mask_key.XXXXXX", path[128], link[128], err[256];
	struct mask_key *k = NULL;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key", dir);
	snprintf(link, sizeof(link), "%s/link", dir);

	write_file(path, MASK_TEST_KEY, 32, 0644);
	assert_int_equal(mask_key_load(path, &k, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "chmod 600"));
	write_file(path, MASK_TEST_KEY, 32, 0640);
	assert_int_equal(mask_key_load(path, &k, err, sizeof(err)), -EPERM);
	write_file(path, MASK_TEST_KEY, 31, 0600);
	assert_int_equal(mask_key_load(path, &k, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "31 bytes"));
	assert_null(strstr(err, "pgwarden-test")); /* the key never appears in a message */
	write_file(path, MASK_TEST_KEY, 32, 0600);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(mask_key_load(link, &k, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "symbolic link"));
	assert_int_equal(mask_key_load(dir, &k, err, sizeof(err)), -EINVAL);
	assert_int_equal(mask_key_load("/nonexistent/key", &k, err, sizeof(err)), -ENOENT);
	assert_null(k);
	assert_int_equal(mask_key_load(path, &k, err, sizeof(err)), 0);
	assert_non_null(k);
	mask_key_free(k);
	unlink(link);
	unlink(path);
	rmdir(dir);
}

/* ---- the codecs under the strategies ---------------------------------------------------------- */

static void test_calendar_round_trip(void **state)
{
	/* Every day from 4713 BC to 9999 AD maps back to itself; weekdays advance by one. */
	for (int jd = 0; jd < 5373484; jd += 7) {
		int y, m, d;

		mask_j2date(jd, &y, &m, &d);
		assert_int_equal(mask_date2j(y, m, d), jd);
	}
	assert_int_equal(mask_date2j(2000, 1, 1), MASK_PG_EPOCH_JDATE);
	assert_int_equal(mask_date_bin_year_start(8830), 8766);
	assert_int_equal(mask_date_bin_year_start(0), 0);
	assert_int_equal(mask_date_bin_year_start(-1), -365); /* 1999-12-31 → 1999-01-01 */
	assert_int_equal(mask_ts_bin_year_start(-1), -365 * MASK_USECS_PER_DAY);
	assert_int_equal(mask_ts_bin_year_start(INT64_MAX), INT64_MAX);
	assert_int_equal(mask_date_bin_year_start(INT32_MAX - 1), MASK_UNIX_EPOCH_DAYS);
}

static void test_numeric_codec(void **state)
{
	static const char *const texts[] = {
		"0", "1", "-1", "1234.56", "0.0001", "0.00010", "10000", "99999999.99",
		"-0.5", "123456789012345678901234567890.123456789", "NaN", "Infinity", "-Infinity",
		"0.000", "100000000",
	};
	uint8_t bin[256];
	char back[256];

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		int n = mask_numeric_from_text(texts[i], strlen(texts[i]), bin, sizeof(bin));
		int m;

		assert_true(n >= 8);
		m = mask_numeric_to_text(bin, (size_t)n, back, sizeof(back));
		assert_true(m > 0);
		back[m] = '\0';
		assert_string_equal(back, strcmp(texts[i], "-0.5") ? texts[i] : "-0.5");
	}
	/* Refused: lengths that disagree, digits of 10000 or more, unknown signs. */
	assert_int_equal(mask_numeric_to_text((const uint8_t *)"\0\1\0\0\0\0\0\0", 8, back, 64),
			 -EPROTO);
	assert_int_equal(mask_numeric_to_text((const uint8_t *)"\0\1\0\0\0\0\0\0\x27\x10", 10, back,
					      64),
			 -EPROTO);
	assert_int_equal(mask_numeric_to_text((const uint8_t *)"\0\0\0\0\x12\x34\0\0", 8, back, 64),
			 -EPROTO);
	assert_int_equal(mask_numeric_from_text("1.2.3", 5, bin, sizeof(bin)), -EINVAL);
	assert_int_equal(mask_numeric_from_text("", 0, bin, sizeof(bin)), -EINVAL);
}

/* Hostile binary values: a server never sends them; the transformer refuses, never guesses. */
static void test_malformed_binary_values(void **state)
{
	struct mask_env e;
	struct mask_action a;
	struct mask_strategy st = {MASK_PARTIAL, 2};
	struct mask_type t;
	uint8_t out[256];

	mt_env("utf8", &e);
	assert_true(mt_type("int4", &t));
	mask_action_init(&a, &st, &t, 1, &e, NULL);
	assert_int_equal(mask_value_apply(&a, &e, (const uint8_t *)"\0\0\1", 3, out, sizeof(out)),
			 -EPROTO);
	assert_true(mt_type("text[]", &t));
	mask_action_init(&a, &st, &t, 1, &e, NULL);
	/* ndim 7 */
	assert_int_equal(mask_value_apply(&a, &e, (const uint8_t *)"\0\0\0\7\0\0\0\0\0\0\0\x19", 12,
					  out, sizeof(out)),
			 -EPROTO);
	/* one element promised, none there */
	assert_int_equal(mask_value_apply(&a, &e,
					  (const uint8_t *)"\0\0\0\1\0\0\0\0\0\0\0\x19\0\0\0\1\0\0\0\1",
					  20, out, sizeof(out)),
			 -EPROTO);
	mask_action_init(&a, &st, &t, 0, &e, NULL);
	assert_int_equal(mask_value_apply(&a, &e, (const uint8_t *)"{a,b", 4, out, sizeof(out)),
			 -EPROTO);
	assert_int_equal(mask_value_apply(&a, &e, (const uint8_t *)"{a}x", 4, out, sizeof(out)),
			 -EPROTO);
	assert_int_equal(mask_value_apply(&a, &e, (const uint8_t *)"a}", 2, out, sizeof(out)),
			 -EPROTO);
	assert_int_equal(mask_value_apply(&a, &e, (const uint8_t *)"{{{{{{{a}}}}}}}", 15, out,
					  sizeof(out)),
			 -EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strategy_parse_cases),
		cmocka_unit_test(test_value_cases),
		cmocka_unit_test(test_large_values_stream),
		cmocka_unit_test(test_hash_keyed),
		cmocka_unit_test(test_key_file),
		cmocka_unit_test(test_calendar_round_trip),
		cmocka_unit_test(test_numeric_codec),
		cmocka_unit_test(test_malformed_binary_values),
	};

	return cmocka_run_group_tests_name("mask_value", tests, NULL, NULL);
}
