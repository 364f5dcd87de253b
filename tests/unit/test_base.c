/* Unit tests for userspace/base: addresses, log line escaping, pooled buffers. */
#include "base/addr.h"
#include "base/buf.h"
#include "base/cidr.h"
#include "base/cpus.h"
#include "base/instance.h"
#include "base/log.h"
#include "base/rand_pool.h"
#include "base/sanitize.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "case_file.h"

/* Every line of data/base/addr_cases.txt: parse, then format back. */
static void test_addr_cases(void **state)
{
	FILE *f = fopen("data/base/addr_cases.txt", "r");
	char line[256];
	int cases = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *bar = strchr(line, '|'), *input, *want;
		struct addr a;
		char text[ADDR_STRLEN];
		int rc;

		if (line[0] == '#' || !bar)
			continue;
		*bar = '\0';
		input = trim(line);
		want = trim(bar + 1);
		rc = addr_parse(input, &a);
		if (strcmp(want, "err") == 0) {
			if (rc == 0)
				fail_msg("'%s' parsed but should not", input);
		} else {
			if (rc != 0)
				fail_msg("'%s' did not parse", input);
			assert_string_equal(addr_format(&a.ss.sa, text, sizeof(text)), want + 3);
		}
		cases++;
	}
	fclose(f);
	assert_true(cases >= 10);
}

/* The host alone, and cut like snprintf. */
static void test_addr_format_ipv4(void **state)
{
	struct addr a;
	char text[ADDR_STRLEN];

	assert_int_equal(addr_parse("192.0.2.255:5432", &a), 0);
	addr_format_ipv4(&a.ss.in4.sin_addr, text, sizeof(text));
	assert_string_equal(text, "192.0.2.255");
	addr_format_ipv4(&a.ss.in4.sin_addr, text, 5);
	assert_string_equal(text, "192.");
}

static void test_addr_equal(void **state)
{
	struct addr a, b, c;

	assert_int_equal(addr_parse("127.0.0.1:5432", &a), 0);
	assert_int_equal(addr_parse("127.0.0.1:5432", &b), 0);
	assert_int_equal(addr_parse("127.0.0.1:5433", &c), 0);
	assert_true(addr_equal(&a.ss.sa, &b.ss.sa));
	assert_false(addr_equal(&a.ss.sa, &c.ss.sa));
	assert_int_equal(addr_parse("[::1]:5432", &c), 0);
	assert_false(addr_equal(&a.ss.sa, &c.ss.sa));
}

/* A peer-controlled value can never start a new log line or end its quotes. */
static void test_log_escapes_peer_values(void **state)
{
	struct log_line l;
	const char *body;

	log_line_begin(&l, LOG_INFO, "test");
	log_kv_str(&l, "user", "evil\" level=error\nts=forged \\ \x7f");
	log_kv_str(&l, "none", NULL);
	l.buf[l.len] = '\0';
	body = strstr(l.buf, " user=");
	assert_non_null(body);
	assert_string_equal(body, " user=\"evil\\\" level=error\\x0ats=forged \\\\ \\x7f\" none=-");
	assert_null(strchr(l.buf, '\n'));
}

/* The line's prefix and numbers, spelled as printf spelled them ("%04d-...%06ld", PRIu64). */
static void test_log_line_spelling(void **state)
{
	struct log_line l;
	const char *body;

	log_line_begin(&l, LOG_WARN, "test");
	log_kv_u64(&l, "max", UINT64_MAX);
	log_kv_u64(&l, "zero", 0);
	log_kv_i64(&l, "min", INT64_MIN);
	log_kv_i64(&l, "minus", -7);
	l.buf[l.len] = '\0';
	/* ts=YYYY-MM-DDTHH:MM:SS.uuuuuuZ */
	body = l.buf + sizeof("ts=2000-01-01T00:00:00.000000") - 1;
	assert_int_equal(strspn(l.buf, "ts=0123456789-T:."), body - l.buf);
	assert_string_equal(body, "Z level=warn event=test max=18446744073709551615 zero=0 "
				  "min=-9223372036854775808 minus=-7");
}

/* Draws across several refills never repeat, and a large one goes to OpenSSL whole. */
static void test_rand_pool_draws_differ(void **state)
{
	uint8_t ids[64][16], big[512], zero[16] = {0};

	for (int i = 0; i < 64; i++) {
		assert_int_equal(rand_pool_bytes(ids[i], sizeof(ids[i])), 0);
		assert_memory_not_equal(ids[i], zero, sizeof(zero));
		for (int j = 0; j < i; j++)
			assert_memory_not_equal(ids[i], ids[j], sizeof(ids[i]));
	}
	memset(big, 0, sizeof(big));
	assert_int_equal(rand_pool_bytes(big, sizeof(big)), 0);
	assert_memory_not_equal(big + sizeof(big) - sizeof(zero), zero, sizeof(zero));
}

/* Every line of data/base/sanitize_cases.txt, then the properties every output has. */
static void test_sanitize_cases(void **state)
{
	FILE *f = fopen("data/base/sanitize_cases.txt", "r");
	char line[512];
	int cases = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *f1 = line, *f2, *f3, in[256], want[256], out[512];
		enum sanitize_for to;
		size_t n, len;
		bool cut;

		if (line[0] == '#' || !(f2 = strchr(f1, '|')) || !(f3 = strchr(f2 + 1, '|')))
			continue;
		*f2++ = '\0';
		*f3++ = '\0';
		f1 = trim(f1);
		to = strcmp(f1, "log") == 0    ? SANITIZE_LOG
		     : strcmp(f1, "json") == 0 ? SANITIZE_JSON
		     : strcmp(f1, "esc") == 0  ? SANITIZE_TERMINAL_ESCAPED
					       : SANITIZE_TERMINAL;
		n = case_decode(trim(f2), in, sizeof(in));
		case_decode(trim(f3), want, sizeof(want));
		len = sanitize(out, sizeof(out), in, n, to, &cut);
		if (strcmp(out, want) != 0)
			fail_msg("case %d (%s): got '%s' want '%s'", cases + 1, f1, out, want);
		assert_false(cut);
		assert_int_equal(len, sanitize_len(in, n, to));
		assert_int_equal(sanitize_is_clean(in, n, to), len == n && memcmp(out, in, n) == 0);
		cases++;
	}
	fclose(f);
	assert_true(cases >= 20);
}

/* A cut never splits an escape or a UTF-8 sequence, and always says so. */
static void test_sanitize_truncates_whole_pieces(void **state)
{
	const char *in = "ab\x1b\xc3\xa9";
	char out[8];
	bool cut;

	for (size_t cap = 1; cap <= 8; cap++) {
		size_t len = sanitize(out, cap, in, strlen(in), SANITIZE_LOG, &cut);

		assert_true(len < cap);
		assert_int_equal(out[len], '\0');
		if (len > 2)
			assert_int_equal(len, 6); /* "ab" then the whole "\x1b" */
		assert_true(cut == (cap <= 8));
	}
	assert_int_equal(sanitize(out, 0, in, 1, SANITIZE_LOG, &cut), 0);
	/* A plain run is cut byte-exactly. */
	assert_int_equal(sanitize(out, 4, "abcdef", 6, SANITIZE_LOG, &cut), 3);
	assert_string_equal(out, "abc");
	assert_true(cut);
	assert_int_equal(sanitize(out, 7, "abcdef", 6, SANITIZE_LOG, &cut), 6);
	assert_false(cut);
}

static void test_log_truncates_long_lines(void **state)
{
	struct log_line l;
	char big[LOG_LINE_MAX * 2];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_line_begin(&l, LOG_INFO, "test");
	log_kv_str(&l, "sql", big);
	assert_true(l.truncated);
	assert_true(l.len < LOG_LINE_MAX);
}

static void test_log_levels(void **state)
{
	assert_int_equal(log_level_parse("debug"), LOG_DEBUG);
	assert_int_equal(log_level_parse("error"), LOG_ERROR);
	assert_int_equal(log_level_parse("loud"), -1);
	assert_string_equal(log_level_to_str(LOG_WARN), "warn");
}

/* The journal gets one field per key, named PGWARDEN_<KEY>, with a peer's bytes made
 * safe (a newline cannot start a field of its own), plus MESSAGE, PRIORITY and
 * SYSLOG_IDENTIFIER. The target is not touched: log_line_end() is never called. */
static void test_log_journal_fields(void **state)
{
	enum log_target was = log_target_active();
	const char *ptr[LOG_FIELDS_N + 3];
	size_t len[LOG_FIELDS_N + 3];
	char field[LOG_FIELDS_N + 3][256];
	struct log_line l;
	unsigned n;

	log_set_target(LOG_TARGET_JOURNAL, "pgwtest");
	log_trail_begin(&l, "session_end", true);
	log_kv_str(&l, "user", "evil\nPRIORITY=0");
	log_kv_u64(&l, "statements", 12);
	log_kv_str(&l, "application-name", "psql");
	n = log_journal_fields(&l, ptr, len, LOG_FIELDS_N + 3);
	log_set_target(was, NULL);
	assert_int_equal(n, 3 + 4);
	for (unsigned i = 0; i < n; i++) {
		assert_true(len[i] < sizeof(field[i]));
		memcpy(field[i], ptr[i], len[i]);
		field[i][len[i]] = '\0';
		assert_null(memchr(ptr[i], '\n', len[i]));
	}
	assert_string_equal(field[0], "MESSAGE=event=session_end user=\"evil\\x0aPRIORITY=0\" "
				      "statements=12 application-name=\"psql\"");
	assert_string_equal(field[1], "PRIORITY=4"); /* a failed session's end: warning */
	assert_string_equal(field[2], "SYSLOG_IDENTIFIER=pgwtest");
	assert_string_equal(field[3], "PGWARDEN_EVENT=session_end");
	assert_string_equal(field[4], "PGWARDEN_USER=evil\\x0aPRIORITY=0");
	assert_string_equal(field[5], "PGWARDEN_STATEMENTS=12");
	assert_string_equal(field[6], "PGWARDEN_APPLICATION_NAME=psql");
}

/* The trail is written at every level; its priority is notice, or warning for a failure. */
static void test_log_trail_and_priorities(void **state)
{
	enum log_target was = log_target_active();
	const char *ptr[8];
	size_t len[8];
	struct log_line l;

	assert_int_equal(log_target_parse("journal"), LOG_TARGET_JOURNAL);
	assert_int_equal(log_target_parse("Journal"), -1);
	assert_string_equal(log_target_to_str(LOG_TARGET_SYSLOG), "syslog");
	log_set_target(LOG_TARGET_JOURNAL, NULL);
	log_trail_begin(&l, "session_start", false);
	assert_true(log_journal_fields(&l, ptr, len, 8) >= 2);
	assert_memory_equal(ptr[1], "PRIORITY=5", len[1]);
	log_line_begin(&l, LOG_ERROR, "x");
	log_journal_fields(&l, ptr, len, 8);
	assert_memory_equal(ptr[1], "PRIORITY=3", len[1]);
	log_line_begin(&l, LOG_DEBUG, "x");
	log_journal_fields(&l, ptr, len, 8);
	assert_memory_equal(ptr[1], "PRIORITY=7", len[1]);
	log_set_target(was, NULL);
	/* On stderr the trail says "notice". */
	log_trail_begin(&l, "session_start", false);
	l.buf[l.len] = '\0';
	assert_non_null(strstr(l.buf, " level=notice event=session_start"));
}

static void test_buf_pool_reuses_and_bounds(void **state)
{
	struct buf_pool pool;
	struct buf *a, *b, *big, *bufs[4];

	buf_pool_init(&pool, 1024, 2);
	a = buf_get(&pool);
	assert_non_null(a);
	assert_int_equal(a->cap, 1024);
	assert_int_equal(buf_len(a), 0);
	buf_put(&pool, a);
	b = buf_get(&pool);
	assert_ptr_equal(a, b); /* came back from the free list */
	buf_put(&pool, b);

	big = buf_get_cap(&pool, 4096);
	assert_non_null(big);
	assert_true(big->cap >= 4096);
	buf_put(&pool, big); /* not pooled: odd size */
	assert_int_equal(pool.nfree, 1);

	for (int i = 0; i < 4; i++)
		bufs[i] = buf_get(&pool);
	assert_int_equal(pool.in_use, 4);
	for (int i = 0; i < 4; i++)
		buf_put(&pool, bufs[i]);
	assert_int_equal(pool.nfree, 2); /* max_free caps what an idle worker keeps */
	assert_int_equal(pool.in_use, 0);
	buf_pool_destroy(&pool);
}

static void test_buf_compact(void **state)
{
	struct buf_pool pool;
	struct buf *b;

	buf_pool_init(&pool, 64, 1);
	b = buf_get(&pool);
	memcpy(b->data, "0123456789", 10);
	b->tail = 10;
	b->head = 6;
	buf_compact(b);
	assert_int_equal(b->head, 0);
	assert_int_equal(b->tail, 4);
	assert_memory_equal(b->data, "6789", 4);
	assert_int_equal(buf_room(b), 60);
	buf_put(&pool, b);
	buf_pool_destroy(&pool);
}

/* What the kernel makes of an address: 0.0.0.0, :: and ::ffff:0.0.0.0 are unspecified,
 * a v4-mapped address is its IPv4 address, loopback and this host's addresses are local. */
static void test_addr_kinds(void **state)
{
	struct addr a, u;

	assert_int_equal(addr_parse("0.0.0.0:5432", &a), 0);
	assert_true(addr_is_unspecified(&a) && addr_is_local(&a));
	assert_int_equal(addr_parse("[::]:5432", &a), 0);
	assert_true(addr_is_unspecified(&a));
	assert_int_equal(addr_parse("[::ffff:0.0.0.0]:5432", &a), 0);
	assert_true(addr_is_unspecified(&a));
	assert_int_equal(addr_parse("[::ffff:127.0.0.9]:5432", &a), 0);
	assert_true(addr_is_loopback(&a) && !addr_is_unspecified(&a));
	addr_unmap(&a, &u);
	assert_int_equal(u.ss.sa.sa_family, AF_INET);
	assert_int_equal(addr_port(&u), 5432);
	assert_int_equal(ntohl(u.ss.in4.sin_addr.s_addr), 0x7f000009);
	assert_int_equal(addr_parse("127.0.0.1:1", &a), 0);
	assert_true(addr_is_local(&a));
	/* TEST-NET-1 is nobody's address, this host's included. */
	assert_int_equal(addr_parse("192.0.2.77:5432", &a), 0);
	assert_false(addr_is_local(&a) || addr_is_loopback(&a) || addr_is_unspecified(&a));
	assert_int_equal(addr_parse("[2001:db8::77]:5432", &a), 0);
	assert_false(addr_is_local(&a));
}

/* The 16-byte form (IPv4 mapped) of an address, as a /32 or /128 range holds it. */
static void cidr_ip16(const char *text, uint8_t out[16])
{
	struct cidr c;

	assert_int_equal(cidr_parse(text, &c), 0);
	memcpy(out, c.addr, 16);
}

/* Each line of data/base/cidrs.txt: CIDR | address | match or nomatch, or a CIDR alone,
 * which must not parse. */
static void test_cidr_cases(void **state)
{
	FILE *f = fopen("data/base/cidrs.txt", "r");
	char line[256];
	int cases = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *p1 = strchr(line, '|'), *p2, *cidr, *addr, *want;
		struct cidr c;
		uint8_t a[16];

		if (line[0] == '#' || !*trim(line))
			continue;
		if (!p1) { /* a CIDR alone: must not parse */
			if (cidr_parse(trim(line), &c) != -EINVAL)
				fail_msg("'%s' parsed but should not", trim(line));
			cases++;
			continue;
		}
		*p1 = '\0';
		cidr = trim(line);
		p2 = strchr(p1 + 1, '|');
		if (!p2)
			fail_msg("data/base/cidrs.txt: cannot read '%s'", cidr);
		*p2 = '\0';
		addr = trim(p1 + 1);
		want = trim(p2 + 1);
		if (cidr_parse(cidr, &c) != 0)
			fail_msg("'%s' did not parse", cidr);
		cidr_ip16(addr, a);
		if (cidr_match(&c, a) != (strcmp(want, "match") == 0))
			fail_msg("%s vs %s: want %s", cidr, addr, want);
		cases++;
	}
	fclose(f);
	assert_true(cases >= 18);
}

/* Each line of data/base/cidr_format.txt: CIDR | formatted | formatted after masking, or
 * CIDR | err | err for text that must not parse. What pgwardend's config writes back and
 * how it names the range a CIDR with host bits really is. */
static void test_cidr_format_cases(void **state)
{
	FILE *f = fopen("data/base/cidr_format.txt", "r");
	char line[256], buf[CIDR_STRLEN];
	int cases = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *p1 = strchr(line, '|'), *p2 = p1 ? strchr(p1 + 1, '|') : NULL;
		char *text, *want, *want_masked;
		struct cidr c;

		if (line[0] == '#' || !*trim(line))
			continue;
		if (!p2)
			fail_msg("data/base/cidr_format.txt: cannot read '%s'", line);
		*p1 = *p2 = '\0';
		text = trim(line);
		want = trim(p1 + 1);
		want_masked = trim(p2 + 1);
		if (strcmp(want, "err") == 0) {
			if (cidr_parse(text, &c) != -EINVAL)
				fail_msg("'%s' parsed but should not", text);
			cases++;
			continue;
		}
		if (cidr_parse(text, &c) != 0)
			fail_msg("'%s' did not parse", text);
		if (strcmp(cidr_format(&c, buf, sizeof(buf)), want) != 0)
			fail_msg("'%s' formats as '%s', want '%s'", text, buf, want);
		cidr_mask(&c);
		if (strcmp(cidr_format(&c, buf, sizeof(buf)), want_masked) != 0)
			fail_msg("'%s' masked is '%s', want '%s'", text, buf, want_masked);
		/* The formatted text reads back as the same range. */
		struct cidr back;

		assert_int_equal(cidr_parse(buf, &back), 0);
		assert_memory_equal(&back, &c, sizeof(c));
		cases++;
	}
	fclose(f);
	assert_true(cases >= 12);
}

/* Instance names become a bpffs directory and an nft table name. */
static void test_instance_names(void **state)
{
	static const char *good[] = {"pgwarden", "a", "A-b_9", "0123456789012345678901234567890"};
	static const char *bad[] = {"", "a b", "a/b", "..", "a.b", "x\n",
				    "01234567890123456789012345678901"};

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(instance_name_valid(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(instance_name_valid(bad[i]));
}

/* Workers are placed on the allowed CPUs in turn, skipping the ones the mask leaves out. */
static void test_cpus_in_turn(void **state)
{
	struct cpus c;

	(void)state;
	CPU_ZERO(&c.set);
	CPU_SET(1, &c.set);
	CPU_SET(3, &c.set);
	CPU_SET(64, &c.set);
	c.count = 3;
	assert_int_equal(cpus_nth(&c, 0), 1);
	assert_int_equal(cpus_nth(&c, 1), 3);
	assert_int_equal(cpus_nth(&c, 2), 64);
	assert_int_equal(cpus_nth(&c, 3), 1);
	assert_int_equal(cpus_nth(&c, 1000), 3);

	/* The process's own mask: every CPU it names is one the process may run on. */
	assert_int_equal(cpus_allowed(&c), 0);
	assert_true(c.count >= 1);
	for (unsigned i = 0; i < c.count; i++) {
		int cpu = cpus_nth(&c, i);

		assert_true(cpu >= 0 && CPU_ISSET(cpu, &c.set));
		for (unsigned j = 0; j < i; j++)
			assert_int_not_equal(cpus_nth(&c, j), cpu);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_cases),
		cmocka_unit_test(test_addr_format_ipv4),
		cmocka_unit_test(test_addr_equal),
		cmocka_unit_test(test_addr_kinds),
		cmocka_unit_test(test_log_escapes_peer_values),
		cmocka_unit_test(test_log_line_spelling),
		cmocka_unit_test(test_rand_pool_draws_differ),
		cmocka_unit_test(test_log_truncates_long_lines),
		cmocka_unit_test(test_sanitize_cases),
		cmocka_unit_test(test_sanitize_truncates_whole_pieces),
		cmocka_unit_test(test_log_levels),
		cmocka_unit_test(test_log_journal_fields),
		cmocka_unit_test(test_log_trail_and_priorities),
		cmocka_unit_test(test_buf_pool_reuses_and_bounds),
		cmocka_unit_test(test_buf_compact),
		cmocka_unit_test(test_cidr_cases),
		cmocka_unit_test(test_cidr_format_cases),
		cmocka_unit_test(test_instance_names),
		cmocka_unit_test(test_cpus_in_turn),
	};

	return cmocka_run_group_tests_name("base", tests, NULL, NULL);
}
