/*
 * test_mask_row: the streaming DataRow rewriter (mask_row.h).
 *
 * data/mask/rows.txt: plan × row → replacement DataRow or error, each run whole, one byte
 * at a time in and out, and in random pieces; the three must agree, and every output must
 * frame as exactly one DataRow whose fields walk cleanly. The one-pass mask_row_whole()
 * must write the same message or decline, in every room size. Programmatic tests cover rows far
 * larger than the lookahead (values of megabytes, masked and not) in constant memory, and
 * the bound itself.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_row.h"
#include "proto/proto.h"

#include "mask_plan_util.h"
#include "mask_test_util.h"

#define DATA_DIR "data/mask/"
#define LINE_MAX_ 16384
#define BODY_MAX (1u << 20)

static unsigned failures;

static void __attribute__((format(printf, 2, 3))) fail_line(unsigned line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%srows.txt:%u: ", DATA_DIR, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

static void put_be(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = n; i-- > 0;) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

/* The body notation of rows.txt. */
static bool build_body(const char *s, uint8_t *out, size_t *n)
{
	char tok[LINE_MAX_];
	uint8_t *tmp = malloc(BODY_MAX);

	*n = 0;
	while (*s) {
		size_t k = 0;
		bool quoted = false;

		while (*s == ' ')
			s++;
		if (!*s)
			break;
		while (*s && (quoted || *s != ' ')) {
			if (*s == '\\' && s[1]) {
				tok[k++] = *s++;
			} else if (*s == '"') {
				quoted = !quoted;
			}
			tok[k++] = *s++;
		}
		tok[k] = '\0';
		if (strncmp(tok, "n:", 2) == 0) {
			put_be(out + *n, (uint64_t)strtol(tok + 2, NULL, 10), 2);
			*n += 2;
		} else if (strncmp(tok, "i32:", 4) == 0) {
			put_be(out + *n, (uint32_t)strtol(tok + 4, NULL, 10), 4);
			*n += 4;
		} else if (strncmp(tok, "v:", 2) == 0 || strncmp(tok, "raw:", 4) == 0) {
			bool field = tok[0] == 'v';
			struct bytes b = {.p = tmp};

			if (!mt_bytes(tok + (field ? 2 : 4), &b)) {
				free(tmp);
				return false;
			}
			if (field) {
				put_be(out + *n, b.null ? UINT32_MAX : (uint32_t)b.n, 4);
				*n += 4;
			}
			if (!b.null) {
				memcpy(out + *n, b.p, b.n);
				*n += b.n;
			}
		} else {
			free(tmp);
			return false;
		}
	}
	free(tmp);
	return true;
}

static const char *errname(int rc)
{
	switch (rc) {
	case -EPROTO: return "EPROTO";
	case -E2BIG: return "E2BIG";
	case -EOVERFLOW: return "EOVERFLOW";
	case -EIO: return "EIO";
	case -ENOTRECOVERABLE: return "ENOTRECOVERABLE";
	case -ENOMEM: return "ENOMEM";
	default: return "?";
	}
}

/*
 * Rewrite body through r in pieces (0: random sizes). Returns the output length or an
 * error; `stalls` counts calls that took nothing and gave nothing while input remained (the
 * stage contract forbids them).
 */
static int64_t run_row(struct mask_row *r, const struct mask_plan *p, const struct mask_env *e,
		       const uint8_t *body, size_t n, uint8_t *out, size_t cap, size_t in_step,
		       size_t out_step, uint32_t seed, unsigned *stalls)
{
	size_t i = 0, o = 0;
	bool done = false;
	int rc = mask_row_begin(r, p, e, (uint32_t)n);

	*stalls = 0;
	if (rc < 0)
		return rc;
	while (!done) {
		size_t is = in_step ? in_step : 1 + mt_rand(&seed) % 97;
		size_t os = out_step ? out_step : 1 + mt_rand(&seed) % 89;
		size_t c, pr;

		if (is > n - i)
			is = n - i;
		if (os > cap - o)
			os = cap - o;
		rc = mask_row_step(r, body + i, is, &c, out + o, os, &pr, &done);
		if (rc < 0)
			return rc;
		i += c;
		o += pr;
		if (!c && !pr && !done) {
			if (is)
				(*stalls)++;
			if (*stalls > 2 || i == n)
				return -ETIMEDOUT; /* would spin */
		}
	}
	if (i != n)
		return -EBADMSG; /* done before consuming the whole body */
	return (int64_t)o;
}

/* The output must be exactly one DataRow that the codec reads back. */
static bool frames_as_datarow(const uint8_t *m, size_t n, uint16_t ncols)
{
	struct proto_msg msg;
	struct proto_datarow_iter it;
	const uint8_t *v;
	int32_t len;
	int rc;

	if (proto_frame(m, n, PROTO_BACKEND, PROTO_MAX_BODY, &msg) != PROTO_OK ||
	    msg.type != PqMsg_DataRow || PROTO_HEADER_LEN + msg.body_len != n)
		return false;
	if (proto_datarow_begin(&msg, &it) != PROTO_OK || it.ncols != ncols)
		return false;
	while ((rc = proto_datarow_next(&it, &v, &len)) == 1)
		;
	return rc == 0;
}

static unsigned whole_taken, in_place_taken;

/*
 * mask_row_whole() on the same case into every room from nothing to the whole message and
 * more: it declines, or writes exactly the machine's message; it must decline every row
 * the machine refuses, and every room too small for the message.
 */
static void check_whole(unsigned lineno, const struct mask_plan *plan, const struct mask_env *e,
			const uint8_t *body, size_t body_n, uint32_t la_cap, const uint8_t *want,
			size_t want_n, bool want_err, uint8_t *out)
{
	uint8_t *exact = malloc(body_n ? body_n : 1); /* ASan sees any read past the body */
	size_t rooms = want_n + 9, got = 0;

	memcpy(exact, body, body_n);
	for (size_t cap = 0; cap <= rooms; cap++) {
		size_t room = cap == rooms ? BODY_MAX : cap;

		if (room < BODY_MAX)
			out[room] = 0xA5; /* a canary just past the room */
		got = mask_row_whole(plan, e, exact, (uint32_t)body_n, la_cap, out, room);
		if (got > room || (room < BODY_MAX && out[room] != 0xA5)) {
			fail_line(lineno, "whole: wrote past a room of %zu bytes", room);
			break;
		}
		if (!got)
			continue;
		if (want_err) {
			fail_line(lineno, "whole: wrote %zu bytes for a row the machine refuses", got);
			break;
		}
		if (got != want_n || memcmp(out, want, want_n) != 0) {
			fail_line(lineno, "whole: room %zu: wrong output (%zu bytes, want %zu)", room,
				  got, want_n);
			break;
		}
	}
	if (got)
		whole_taken++;
	/* in place on a copy, where the plan allows: exactly the rows the one pass takes, with
	 * the same body */
	if (plan->in_place) {
		uint8_t *copy = malloc(body_n ? body_n : 1);
		bool took;

		memcpy(copy, body, body_n);
		took = mask_fields_in_place(plan, e, exact, copy, body_n, la_cap) == body_n && body_n;
		if (took != !!got)
			fail_line(lineno, "in place: takes other rows than the one pass");
		else if (got && memcmp(copy, want + PROTO_HEADER_LEN, body_n) != 0)
			fail_line(lineno, "in place: wrong output");
		else if (got)
			in_place_taken++;
		free(copy);
	}
	free(exact);
}

static void check_case(unsigned lineno, char **f)
{
	struct mask_env e;
	struct mask_plan plan;
	struct mask_row r;
	uint8_t *la, *body = malloc(BODY_MAX), *want = malloc(BODY_MAX), *out = malloc(BODY_MAX);
	size_t body_n, want_n = 0;
	unsigned la_cap = (unsigned)strtoul(f[2], NULL, 10), stalls;
	const char *want_err = strncmp(f[4], "ERR:", 4) == 0 ? f[4] + 4 : NULL;
	int64_t got;

	mt_env(f[1], &e);
	if (!mt_plan(f[0], &e, &plan) || !build_body(f[3], body, &body_n) ||
	    (!want_err && !build_body(f[4], want + 5, &want_n))) {
		fail_line(lineno, "malformed case");
		goto out;
	}
	if (!want_err) {
		want[0] = 'D';
		put_be(want + 1, want_n + 4, 4);
		want_n += 5;
	}
	check_whole(lineno, &plan, &e, body, body_n, la_cap, want, want_n, want_err != NULL, out);
	la = malloc(la_cap);
	mask_row_init(&r, la, la_cap);
	for (int mode = 0; mode < 12; mode++) {
		size_t is = mode == 0 ? body_n : mode == 1 ? 1 : 0;
		size_t os = mode == 0 ? BODY_MAX : mode == 1 ? 1 : 0;
		/* the exact body in its own block: ASan sees any read past it */
		uint8_t *exact = malloc(body_n ? body_n : 1);

		memcpy(exact, body, body_n);
		got = run_row(&r, &plan, &e, exact, body_n, out, BODY_MAX, is, os,
			      (uint32_t)mode * 7919u + 1, &stalls);
		free(exact);
		if (want_err) {
			if (got >= 0 || strcmp(errname((int)got), want_err) != 0) {
				fail_line(lineno, "mode %d: want %s, got %lld (%s)", mode, want_err,
					  (long long)got, got < 0 ? errname((int)got) : "output");
				break;
			}
			continue;
		}
		if (got != (int64_t)want_n || memcmp(out, want, want_n) != 0) {
			fail_line(lineno, "mode %d: wrong output (rc %lld %s, want %zu bytes)", mode,
				  (long long)got, got < 0 ? errname((int)got) : "", want_n);
			if (got > 0) {
				for (int64_t k = 0; k < got && k < 120; k++)
					fprintf(stderr, "%02x", out[k]);
				fputc('\n', stderr);
			}
			break;
		}
		if (stalls)
			fail_line(lineno, "mode %d: %u calls took nothing and gave nothing", mode,
				  stalls);
		if (!frames_as_datarow(out, (size_t)got, plan.ncols))
			fail_line(lineno, "mode %d: output is not one clean DataRow", mode);
	}
	mask_row_release(&r);
	free(la);
out:
	mask_plan_free(&plan);
	free(body);
	free(want);
	free(out);
}

static void test_row_cases(void **state)
{
	FILE *fp = fopen(DATA_DIR "rows.txt", "r");
	char line[LINE_MAX_];
	unsigned lineno = 0, cases = 0;

	assert_non_null(fp);
	failures = 0;
	while (fgets(line, sizeof(line), fp)) {
		char *f[5];

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (mt_fields(line, f, 5) != 5) {
			fail_line(lineno, "want 5 fields");
			continue;
		}
		cases++;
		check_case(lineno, f);
	}
	fclose(fp);
	assert_true(cases >= 25);
	assert_true(whole_taken >= 15); /* the one-pass path is exercised, not only declined */
	assert_true(in_place_taken >= 5); /* and the in-place pass, where a plan allows it */
	assert_int_equal(failures, 0);
}

/* ---- size: rows much larger than the lookahead, in constant memory ------------------------ */

struct big_row {
	uint8_t *body;
	size_t n;
};

/* n:K then fields of the given sizes, each filled with a repeating pattern. */
static void make_row(struct big_row *b, const size_t *sizes, unsigned k)
{
	size_t total = 2;

	for (unsigned i = 0; i < k; i++)
		total += 4 + sizes[i];
	b->body = malloc(total);
	b->n = total;
	put_be(b->body, k, 2);
	total = 2;
	for (unsigned i = 0; i < k; i++) {
		put_be(b->body + total, sizes[i], 4);
		total += 4;
		for (size_t j = 0; j < sizes[i]; j++)
			b->body[total + j] = (uint8_t)("0123456789-abc@x.org"[j % 20]);
		total += sizes[i];
	}
}

static void stream_big(const char *plan_spec, const size_t *sizes, unsigned k, int want_rc,
		       size_t want_len)
{
	struct mask_env e;
	struct mask_plan plan;
	struct mask_row r;
	struct big_row b;
	uint8_t la[1024], out[4096];
	size_t i = 0, total = 0;
	bool done = false;
	int rc = 0;

	mt_env("utf8", &e);
	assert_true(mt_plan(plan_spec, &e, &plan));
	make_row(&b, sizes, k);
	mask_row_init(&r, la, sizeof(la));
	assert_int_equal(mask_row_begin(&r, &plan, &e, (uint32_t)b.n), 0);
	while (!done) {
		size_t c, p, is = b.n - i < 65536 ? b.n - i : 65536;

		rc = mask_row_step(&r, b.body + i, is, &c, out, sizeof(out), &p, &done);
		if (rc < 0)
			break;
		i += c;
		total += p;
	}
	assert_int_equal(done ? 0 : rc, want_rc);
	if (!want_rc)
		assert_int_equal(total, want_len);
	mask_row_release(&r);
	mask_plan_free(&plan);
	free(b.body);
}

static void test_big_rows_stream(void **state)
{
	/* 4 MiB masked value first, 4 MiB clear value after: streams with a 1 KiB lookahead. */
	size_t s1[] = {4u << 20, 4u << 20};
	/* partial keeps the length: output = input */
	stream_big("partial-last-4:text:t,-", s1, 2, 0, 5 + 2 + 8 + (8u << 20));
	/* hash writes 32 bytes for a 4 MiB value */
	stream_big("hash:text:t,-", s1, 2, 0, 5 + 2 + 8 + 32 + (4u << 20));
	/* null drops it */
	stream_big("null:text:t,-", s1, 2, 0, 5 + 2 + 8 + (4u << 20));
	/* clear first, masked last: the masked column's length word is beyond 1 KiB */
	stream_big("-,partial-last-4:text:t", s1, 2, -E2BIG, 0);
	/* small clear columns first are fine */
	{
		size_t s2[] = {10, 20, 8u << 20};

		stream_big("-,-,email:text:t", s2, 3, 0, 5 + 2 + 12 + 30 + (8u << 20));
	}
	/* nothing masked: any size */
	stream_big("-,-", s1, 2, 0, 5 + 2 + 8 + (8u << 20));
}

/* The lookahead holds at most its capacity: the bound is the buffer, not the row. */
static void test_lookahead_never_grows(void **state)
{
	struct mask_env e;
	struct mask_plan plan;
	struct mask_row r;
	uint8_t *la = malloc(MASK_ROW_LOOKAHEAD_MIN + 16), out[64];
	size_t sizes[] = {MASK_ROW_LOOKAHEAD_MIN - 6 - 4, 4};
	struct big_row b;
	size_t i = 0;
	bool done = false;

	/* a canary after the buffer */
	memset(la + MASK_ROW_LOOKAHEAD_MIN, 0xa5, 16);
	mt_env("utf8", &e);
	assert_true(mt_plan("-,partial-last-1:text:t", &e, &plan));
	make_row(&b, sizes, 2);
	mask_row_init(&r, la, MASK_ROW_LOOKAHEAD_MIN);
	assert_int_equal(mask_row_begin(&r, &plan, &e, (uint32_t)b.n), 0);
	while (!done) {
		size_t c, p;

		assert_int_equal(mask_row_step(&r, b.body + i, b.n - i, &c, out, sizeof(out), &p,
					       &done),
				 0);
		i += c;
	}
	for (int k = 0; k < 16; k++)
		assert_int_equal(la[MASK_ROW_LOOKAHEAD_MIN + k], 0xa5);
	mask_row_release(&r);
	mask_plan_free(&plan);
	free(b.body);
	free(la);
}

/* A result of no columns (SELECT FROM t): its rows are two bytes, and pass as they are. */
static void test_zero_columns(void **state)
{
	static const uint8_t body[] = {0, 0}, want[] = {'D', 0, 0, 0, 6, 0, 0};
	struct mask_env e;
	struct mask_plan plan = {.ncols = 0, .last_masked = -1};
	uint8_t out[16];

	mt_env("utf8", &e);
	assert_int_equal(mask_row_whole(&plan, &e, body, 2, MASK_ROW_LOOKAHEAD_MIN, out,
					sizeof(out)),
			 sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
	assert_int_equal(mask_row_whole(&plan, &e, body, 2, MASK_ROW_LOOKAHEAD_MIN, out,
					sizeof(want) - 1),
			 0);
	/* a row of one column against it: the machine's to refuse */
	assert_int_equal(mask_row_whole(&plan, &e, (const uint8_t *)"\0\1\0\0\0\0", 6,
					MASK_ROW_LOOKAHEAD_MIN, out, sizeof(out)),
			 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_row_cases),
		cmocka_unit_test(test_big_rows_stream),
		cmocka_unit_test(test_lookahead_never_grows),
		cmocka_unit_test(test_zero_columns),
	};

	return cmocka_run_group_tests_name("mask_row", tests, NULL, NULL);
}
