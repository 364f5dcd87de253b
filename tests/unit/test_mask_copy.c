/*
 * test_mask_copy: COPY TO data rewriting in text, CSV and binary (mask_copy.h).
 *
 * data/mask/copy.txt: options × plan × COPY data → rewritten data or error, each run
 * whole, one byte at a time in and out, in random pieces (a row spans CopyData
 * messages; a message holds many rows: the rewriter must not care), and as messages of
 * whole rows offered to the one pass first (mask_copy_whole()) as the stage offers them. A programmatic test
 * streams a large COPY through in constant memory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_copy.h"

#include "mask_copy_util.h"
#include "mask_plan_util.h"
#include "mask_test_util.h"

#define DATA_DIR "data/mask/"
#define LINE_MAX_ 16384
#define STREAM_MAX (1u << 16)

static unsigned failures;

static void __attribute__((format(printf, 2, 3))) fail_line(unsigned line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%scopy.txt:%u: ", DATA_DIR, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

/* "csv,quote=',escape=\\,null=N/A,header" */
static bool parse_opts(const char *s, struct mask_copy_opts *o)
{
	char buf[256], *save = NULL, *tok;

	if (strlen(s) >= sizeof(buf))
		return false;
	strcpy(buf, s);
	tok = strtok_r(buf, ",", &save);
	if (!tok)
		return false;
	if (!strcmp(tok, "text"))
		mask_copy_opts_default(o, MASK_COPY_TEXT);
	else if (!strcmp(tok, "csv"))
		mask_copy_opts_default(o, MASK_COPY_CSV);
	else if (!strcmp(tok, "binary"))
		mask_copy_opts_default(o, MASK_COPY_BINARY);
	else
		return false;
	while ((tok = strtok_r(NULL, ",", &save))) {
		const char *v = strchr(tok, '=');
		uint8_t ch;

		if (!strcmp(tok, "header")) {
			o->header = true;
			continue;
		}
		if (!v)
			return false;
		v++;
		ch = (uint8_t)(!strcmp(v, "pipe") ? '|' : v[0] == '\\' ? v[1] : v[0]);
		if (!strncmp(tok, "delim=", 6))
			o->delim = ch;
		else if (!strncmp(tok, "quote=", 6))
			o->quote = o->escape = ch;
		else if (!strncmp(tok, "escape=", 7))
			o->escape = ch;
		else if (!strncmp(tok, "null=", 5)) {
			o->null_len = (uint8_t)strlen(v);
			memcpy(o->null_str, v, o->null_len);
		} else
			return false;
	}
	return true;
}

static const char *errname(int rc)
{
	switch (rc) {
	case -EPROTO: return "EPROTO";
	case -E2BIG: return "E2BIG";
	case -EIO: return "EIO";
	case -EINVAL: return "EINVAL";
	case -EOPNOTSUPP: return "EOPNOTSUPP";
	case -ENOTRECOVERABLE: return "ENOTRECOVERABLE";
	default: return "?";
	}
}

/* After the last input, op bytes written: calls with no input let the machine finish a
 * field that ended with the data, then the stream ends. The output length or an error. */
static int64_t feed_finish(struct mask_copy *c, uint8_t *out, size_t cap, size_t op)
{
	int rc;

	for (int k = 0; k < 8; k++) {
		size_t used, made;

		rc = mask_copy_feed(c, NULL, 0, &used, out + op, cap - op, &made);
		if (rc < 0)
			return rc;
		op += made;
	}
	rc = mask_copy_end(c);
	return rc < 0 ? rc : (int64_t)op;
}

/* Feed the whole stream in pieces, then end. Returns the output length or an error. */
static int64_t run_copy(struct mask_copy *c, const struct mask_copy_opts *o,
			const struct mask_plan *p, const struct mask_env *e, const uint8_t *in,
			size_t n, uint8_t *out, size_t cap, size_t in_step, size_t out_step,
			uint32_t seed)
{
	size_t i = 0, op = 0;
	unsigned idle = 0;
	int rc = mask_copy_begin(c, o, p, e);

	if (rc < 0)
		return rc;
	while (i < n || mask_copy_pending(c)) {
		size_t is = in_step ? in_step : 1 + mt_rand(&seed) % 61;
		size_t os = out_step ? out_step : 1 + mt_rand(&seed) % 53;
		size_t used, made;

		if (is > n - i)
			is = n - i;
		if (os > cap - op)
			os = cap - op;
		rc = mask_copy_feed(c, in + i, is, &used, out + op, os, &made);
		if (rc < 0)
			return rc;
		i += used;
		op += made;
		if (!used && !made) {
			if (++idle > 3)
				return -ETIMEDOUT;
		} else {
			idle = 0;
		}
	}
	return feed_finish(c, out, cap, op);
}

/* Where rows end in in[0..n): the byte after each, as the machine counts rows fed one
 * byte at a time (up to max; a stream that fails stops the count there). */
static size_t row_ends(const struct mask_copy_opts *o, const struct mask_plan *p,
		       const struct mask_env *e, const uint8_t *in, size_t n, size_t *ends,
		       size_t max)
{
	struct mask_copy *c = malloc(sizeof(*c));
	uint8_t buf[1024], *out = malloc(STREAM_MAX);
	size_t op = 0, k = 0;

	assert_non_null(c);
	assert_non_null(out);
	mask_copy_init(c, buf, sizeof(buf));
	if (mask_copy_begin(c, o, p, e) == 0) {
		for (size_t i = 0; i < n && k < max;) {
			uint64_t rows = c->rows;
			size_t used, made;

			if (mask_copy_feed(c, in + i, 1, &used, out + op, STREAM_MAX - op, &made) < 0 ||
			    !used)
				break;
			i += used;
			op += made;
			if (c->rows != rows)
				ends[k++] = i;
		}
	}
	free(out);
	free(c);
	return k;
}

static unsigned whole_messages;    /* messages mask_copy_whole() took, over all cases */
static unsigned in_place_messages; /* messages the in-place pass took */

/*
 * The stream as CopyData messages the way the stage takes them: each message first offered
 * to the in-place pass (copy_message_in_place()) on a copy where the plan is in place and
 * the room holds it, then whole to mask_copy_whole() (into a room from a byte to all that
 * is left), then, when those decline, fed to the machine until it has taken it all and owes
 * nothing. Messages are one to three whole rows (ends[]), or a cut anywhere (a row split
 * across messages).
 */
static int64_t run_copy_messages(struct mask_copy *c, const struct mask_copy_opts *o,
				 const struct mask_plan *p, const struct mask_env *e,
				 const uint8_t *in, size_t n, uint8_t *out, size_t cap,
				 const size_t *ends, size_t nends, uint32_t seed)
{
	static const size_t rooms[] = {1, 2, 5, 9, 17, 40, 100, 300};
	size_t i = 0, op = 0, next = 0;
	int rc = mask_copy_begin(c, o, p, e);

	if (rc < 0)
		return rc;
	while (i < n) {
		size_t end, room, made;

		while (next < nends && ends[next] <= i)
			next++;
		if (next < nends && mt_rand(&seed) % 5) {
			size_t rows = mt_rand(&seed) % 3;

			end = ends[next + rows < nends ? next + rows : nends - 1];
		} else {
			end = i + 1 + mt_rand(&seed) % 40;
			if (end > n)
				end = n;
		}
		room = mt_rand(&seed) % 9;
		room = room < 8 ? rooms[room] : cap - op;
		if (room > cap - op)
			room = cap - op;
		if (p->in_place && room >= end - i) {
			memcpy(out + op, in + i, end - i);
			if (copy_message_in_place(c, in + i, out + op, end - i)) {
				op += end - i;
				i = end;
				in_place_messages++;
				continue;
			}
		}
		made = mask_copy_whole(c, in + i, end - i, out + op, room);
		if (made) {
			op += made;
			i = end;
			whole_messages++;
			continue;
		}
		while (i < end || mask_copy_pending(c)) {
			size_t os = 1 + mt_rand(&seed) % 53, used;

			if (os > cap - op)
				os = cap - op;
			rc = mask_copy_feed(c, in + i, end - i, &used, out + op, os, &made);
			if (rc < 0)
				return rc;
			if (!used && !made)
				return -ETIMEDOUT;
			i += used;
			op += made;
		}
	}
	return feed_finish(c, out, cap, op);
}

static void check_case(unsigned lineno, char **f)
{
	struct mask_copy_opts o;
	struct mask_env e;
	struct mask_plan plan;
	uint8_t *inb = malloc(STREAM_MAX), *wantb = malloc(STREAM_MAX), *out = malloc(STREAM_MAX);
	uint8_t buf[1024];
	struct bytes in = {.p = inb}, want = {.p = wantb};
	const char *want_err = strncmp(f[4], "ERR:", 4) == 0 ? f[4] + 4 : NULL;
	struct mask_copy *c = malloc(sizeof(*c));
	size_t ends[4096], nends;

	mt_env(f[2], &e);
	if (!parse_opts(f[0], &o) || !mt_plan(f[1], &e, &plan) || !mt_bytes(f[3], &in) ||
	    (!want_err && !mt_bytes(f[4], &want))) {
		fail_line(lineno, "malformed case");
		goto out;
	}
	nends = row_ends(&o, &plan, &e, in.p, in.n, ends, sizeof(ends) / sizeof(ends[0]));
	for (int mode = 0; mode < 24; mode++) {
		uint8_t *exact = malloc(in.n ? in.n : 1);
		uint32_t seed = (uint32_t)mode * 104729u + 3;
		int64_t got;

		memcpy(exact, in.p, in.n);
		mask_copy_init(c, buf, sizeof(buf));
		if (mode < 12)
			got = run_copy(c, &o, &plan, &e, exact, in.n, out, STREAM_MAX,
				       mode == 0 ? in.n : mode == 1 ? 1 : 0,
				       mode == 0 ? STREAM_MAX : mode == 1 ? 1 : 0, seed);
		else /* as CopyData messages, whole ones through mask_copy_whole() */
			got = run_copy_messages(c, &o, &plan, &e, exact, in.n, out, STREAM_MAX, ends,
						nends, seed);
		free(exact);
		if (want_err) {
			if (got >= 0 || strcmp(errname((int)got), want_err) != 0) {
				fail_line(lineno, "mode %d: want %s, got %lld (%s)", mode, want_err,
					  (long long)got, got < 0 ? errname((int)got) : "output");
				break;
			}
			continue;
		}
		if (got != (int64_t)want.n || memcmp(out, want.p, want.n) != 0) {
			fail_line(lineno, "mode %d: wrong output (rc %lld %s, want %zu bytes)", mode,
				  (long long)got, got < 0 ? errname((int)got) : "", want.n);
			if (got > 0) {
				fprintf(stderr, "    got: ");
				for (int64_t k = 0; k < got && k < 200; k++)
					fputc(out[k] >= 0x20 && out[k] < 0x7f ? out[k] : '.', stderr);
				fputc('\n', stderr);
			}
			break;
		}
	}
	mask_plan_free(&plan);
out:
	free(c);
	free(inb);
	free(wantb);
	free(out);
}

static void test_copy_cases(void **state)
{
	FILE *fp = fopen(DATA_DIR "copy.txt", "r");
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
	assert_true(cases >= 30);
	assert_true(whole_messages >= 20); /* the one pass took messages, not only the machine */
	assert_true(in_place_messages >= 20); /* and the in-place pass */
	assert_int_equal(failures, 0);
}

/* Feed all of in[0..n) to the machine and take all it owes, into out at *op. */
static int feed_all(struct mask_copy *c, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
		    size_t *op)
{
	size_t i = 0;

	while (i < n || mask_copy_pending(c)) {
		size_t used, made;
		int rc = mask_copy_feed(c, in + i, n - i, &used, out + *op, cap - *op, &made);

		if (rc < 0)
			return rc;
		if (!used && !made)
			return -ETIMEDOUT;
		i += used;
		*op += made;
	}
	return 0;
}

/*
 * One CopyData message of whole rows offered to mask_copy_whole(), between a head and a
 * tail the machine takes (binary: the signature and header, the trailer): whether the one
 * pass takes it, and the bytes of the whole stream, which must be what the machine writes
 * fed one byte at a time. Text rows with the NULL string (\N, in clear and masked columns,
 * last in a row), escapes in clear fields and empty fields are taken; a masked value with
 * an escape, and CSV, are the machine's; binary NULLs (-1) and empty values are taken.
 */
static void test_copy_whole_nulls_escapes_empty(void **state)
{
	static const struct {
		const char *opts, *plan, *head, *rows, *tail;
		size_t head_len, rows_len, tail_len;
		bool whole;
	} cases[] = {
#define TXT(o, p, r, w) {o, p, "", r, "", 0, sizeof(r) - 1, 0, w}
		TXT("text", "-,partial-last-4:text:t,-",
		    "\\N\tabcdefgh\t\\N\n1\t\\N\ttab\\there\n2\t\tback\\\\slash\n3\tab\t\n\t\t\n", true),
		TXT("text", "-,null:text:t,hash:text:t", "1\tx\\ty\t\\N\n2\t\\N\tabc\n", true),
		TXT("text,null=NULL", "-,partial-last-2:text:t", "\\N\tNULL\nNULL\tabcd\n", true),
		/* a NULL string with a backslash inside, and a value that only starts like it */
		TXT("text,null=a\\b", "partial-last-1:text:t,-", "a\\b\ta\\b\nxyz\ta\\bc\n", true),
		/* a masked value's escapes are decoded by the machine */
		TXT("text", "-,partial-last-4:text:t", "1\ttab\\there\n", false),
		TXT("text", "-,partial-last-4:text:t", "1\t\\NN\n", false),
		/* a message cut inside an escape */
		TXT("text", "-,partial-last-4:text:t,-", "1\t\\N\t\\", false),
		/* CSV: quotes, an empty quoted value, an unquoted NULL */
		TXT("csv", "-,partial-last-4:text:t", "1,\"a,\"\"b\"\"c\"\n2,\"\"\n3,\n", false),
#undef TXT
		{"binary", "-,partial-last-4:text:t,-",
		 "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", /* signature, flags, no extension */
		 "\0\3\0\0\0\1a\377\377\377\377\0\0\0\0"  /* a, NULL, '' */
		 "\0\3\377\377\377\377\0\0\0\6abcdef\0\0\0\0", /* NULL, abcdef, '' */
		 "\377\377", 19, 35, 2, true},
	};

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct mask_copy_opts o;
		struct mask_env e;
		struct mask_plan plan;
		struct mask_copy *c = malloc(sizeof(*c));
		uint8_t buf[1024], in[512], want[1024], got[1024];
		size_t n = 0, op = 0, took;
		int64_t want_n;

		assert_non_null(c);
		mt_env("utf8", &e);
		assert_true(parse_opts(cases[k].opts, &o));
		assert_true(mt_plan(cases[k].plan, &e, &plan));
		memcpy(in + n, cases[k].head, cases[k].head_len);
		n += cases[k].head_len;
		memcpy(in + n, cases[k].rows, cases[k].rows_len);
		n += cases[k].rows_len;
		memcpy(in + n, cases[k].tail, cases[k].tail_len);
		n += cases[k].tail_len;
		mask_copy_init(c, buf, sizeof(buf));
		want_n = run_copy(c, &o, &plan, &e, in, n, want, sizeof(want), 1, 1, 7);
		if (!strcmp(cases[k].rows + cases[k].rows_len - 1, "\\")) {
			assert_int_equal(want_n, -EPROTO); /* the stream ends inside the escape */
			mask_copy_init(c, buf, sizeof(buf));
			assert_int_equal(mask_copy_begin(c, &o, &plan, &e), 0);
			assert_int_equal(mask_copy_whole(c, in, n, got, sizeof(got)), 0);
			assert_int_equal(c->rows, 0);
			goto next;
		}
		assert_true(want_n > 0);

		mask_copy_init(c, buf, sizeof(buf));
		assert_int_equal(mask_copy_begin(c, &o, &plan, &e), 0);
		assert_int_equal(feed_all(c, in, cases[k].head_len, got, sizeof(got), &op), 0);
		took = mask_copy_whole(c, in + cases[k].head_len, cases[k].rows_len, got + op,
				       sizeof(got) - op);
		if (cases[k].whole)
			assert_true(took > 0);
		else
			assert_int_equal(took, 0);
		op += took;
		assert_int_equal(feed_all(c, in + cases[k].head_len + (took ? cases[k].rows_len : 0),
					  n - cases[k].head_len - (took ? cases[k].rows_len : 0), got,
					  sizeof(got), &op),
				 0);
		assert_int_equal(mask_copy_end(c), 0);
		assert_int_equal(op, (size_t)want_n);
		assert_memory_equal(got, want, op);
	next:
		mask_plan_free(&plan);
		free(c);
	}
}

/* Options PostgreSQL itself refuses are refused. */
/*
 * Text COPY messages the in-place pass takes by classifying their bytes sixty-four at a time:
 * random rows of five columns (three masked, in place, one of them partial on text), values of
 * 0 to 90 bytes so that fields and rows cross the sixteen- and sixty-four-byte steps, one to
 * three rows per message, and now and then a backslash escape or a control byte (the pass
 * then falls back to the field scan) or a message cut inside a row. Whatever the in-place pass
 * takes, the one-pass rewriter (mask_copy_whole()) must take too, with the same bytes.
 */
static void test_copy_in_place_text_by_class(void **state)
{
	static const char alphabet[] = "abcdefghij0123456789@. -XYZ";
	struct mask_copy_opts o;
	struct mask_env e;
	struct mask_plan plan;
	struct mask_copy *inplace = malloc(sizeof(*inplace)), *whole = malloc(sizeof(*whole));
	uint8_t in[2048], copy[2048], want[4096];
	uint32_t seed = 12345;
	unsigned took = 0, messages = 0;

	(void)state;
	assert_non_null(inplace);
	assert_non_null(whole);
	mt_env("utf8", &e);
	assert_true(parse_opts("text", &o));
	assert_true(mt_plan("-,partial-last-4:text:t,email:text:t,-,phone:text:t", &e, &plan));
	assert_true(plan.in_place);
	for (int k = 0; k < 3000; k++) {
		unsigned rows = 1 + mt_rand(&seed) % 3, odd = mt_rand(&seed) % 8;
		size_t n = 0, made;
		bool in_place;

		for (unsigned r = 0; r < rows; r++)
			for (unsigned f = 0; f < 5; f++) {
				size_t len = mt_rand(&seed) % 4 ? mt_rand(&seed) % 20 : mt_rand(&seed) % 91;

				for (size_t i = 0; i < len; i++)
					in[n++] = (uint8_t)alphabet[mt_rand(&seed) % (sizeof(alphabet) - 1)];
				in[n++] = f == 4 ? '\n' : '\t';
			}
		if (odd == 0) /* an escape somewhere */
			in[mt_rand(&seed) % n] = '\\';
		else if (odd == 1) /* a control byte somewhere */
			in[mt_rand(&seed) % n] = 0x01;
		else if (odd == 2 && n > 1) /* cut inside the last row */
			n -= 1 + mt_rand(&seed) % (n - 1);
		mask_copy_init(inplace, NULL, 0);
		mask_copy_init(whole, NULL, 0);
		assert_int_equal(mask_copy_begin(inplace, &o, &plan, &e), 0);
		assert_int_equal(mask_copy_begin(whole, &o, &plan, &e), 0);
		memcpy(copy, in, n);
		in_place = copy_message_in_place(inplace, in, copy, n);
		made = mask_copy_whole(whole, in, n, want, sizeof(want));
		messages++;
		if (!in_place) {
			assert_int_equal(inplace->rows, 0);
			continue;
		}
		took++;
		assert_int_equal(made, n);
		assert_memory_equal(copy, want, n);
		assert_int_equal(inplace->rows, whole->rows);
	}
	assert_true(took > messages / 2);
	mask_plan_free(&plan);
	free(inplace);
	free(whole);
}

static void test_copy_bad_options(void **state)
{
	struct mask_copy_opts o;
	struct mask_env e;
	struct mask_plan plan;
	struct mask_copy c;

	mt_env("utf8", &e);
	assert_true(mt_plan("-", &e, &plan));
	mask_copy_init(&c, NULL, 0);
	mask_copy_opts_default(&o, MASK_COPY_TEXT);
	o.delim = '\\';
	assert_int_equal(mask_copy_begin(&c, &o, &plan, &e), -EINVAL);
	o.delim = '\n';
	assert_int_equal(mask_copy_begin(&c, &o, &plan, &e), -EINVAL);
	mask_copy_opts_default(&o, MASK_COPY_CSV);
	o.quote = ',';
	assert_int_equal(mask_copy_begin(&c, &o, &plan, &e), -EINVAL);
	mask_copy_opts_default(&o, MASK_COPY_CSV);
	o.null_len = 2;
	memcpy(o.null_str, "\r\n", 2);
	assert_int_equal(mask_copy_begin(&c, &o, &plan, &e), -EINVAL);
	mask_plan_free(&plan);
}

/* 200,000 rows with a masked column stream through fixed state. */
static void test_copy_large(void **state)
{
	struct mask_copy_opts o;
	struct mask_env e;
	struct mask_plan plan;
	struct mask_copy *c = malloc(sizeof(*c));
	static const char row[] = "12345\t123-45-6789\tsome ordinary text that is not masked\n";
	uint8_t out[300];
	size_t total_in = 0, total_out = 0;

	mt_env("utf8", &e);
	assert_true(mt_plan("-,partial-last-4:text:t,-", &e, &plan));
	mask_copy_opts_default(&o, MASK_COPY_TEXT);
	mask_copy_init(c, NULL, 0);
	assert_int_equal(mask_copy_begin(c, &o, &plan, &e), 0);
	for (int r = 0; r < 200000; r++) {
		size_t i = 0, n = sizeof(row) - 1;

		while (i < n || mask_copy_pending(c)) {
			size_t used, made;

			assert_int_equal(mask_copy_feed(c, (const uint8_t *)row + i, n - i, &used, out,
							sizeof(out), &made),
					 0);
			i += used;
			total_out += made;
			if (!used && !made)
				break;
		}
		total_in += n;
	}
	assert_int_equal(mask_copy_end(c), 0);
	assert_int_equal(total_out, total_in); /* partial keeps lengths */
	assert_int_equal(c->rows, 200000);
	mask_plan_free(&plan);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copy_cases),
		cmocka_unit_test(test_copy_whole_nulls_escapes_empty),
		cmocka_unit_test(test_copy_in_place_text_by_class),
		cmocka_unit_test(test_copy_bad_options),
		cmocka_unit_test(test_copy_large),
	};

	return cmocka_run_group_tests_name("mask_copy", tests, NULL, NULL);
}
