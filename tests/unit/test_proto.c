/*
 * test_proto: the wire codec against table-driven cases in tests/unit/data/proto/.
 *
 * Case files are plain text, one case per line, so a reader can check each against the
 * PostgreSQL protocol documentation without reading C. Each line is
 *
 *     <fields...> | <message tokens...>
 *
 * Message tokens (concatenated into the message bytes):
 *     "text"     the bytes of text; escapes \0 \n \t \\ \" \xHH
 *     0a1b2c     hex bytes (an even number of digits)
 *     L          Int32 length of everything from here to the end (a message's length
 *                field counts itself, not the type byte; a startup packet's counts all)
 *     i8:N i16:N i32:N u32:N    big-endian integers (N decimal, or 0x hex)
 *     *N:0a1b    the hex bytes repeated N times
 * Lines starting with '#' and blank lines are ignored.
 *
 * Files:
 *   frame.txt    <dir F|B> <max_body|-> <proto_frame status> <proto_validate status|->
 *   startup.txt  <proto_startup_frame status> <proto_startup_parse status|-> key=value...
 *   readers.txt  <reader> <status> key=value...
 *   captures.txt <file> <F|B> key=value...   (no message part: the bytes are real
 *                PostgreSQL traffic in capture/<file>, see the file's header)
 *
 * Every case is also fed one byte at a time: the answer must be PROTO_NEED_MORE until it
 * is the same as for the whole input, and must stay that. Inputs are copied into heap
 * blocks of exactly their size, so under ASan any read past the end fails the run.
 * Failures are reported as file:line with what differed, then the test fails.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

#define DATA_DIR "data/proto/"
#define MAX_MSG (1u << 20)
#define MAX_LINE (1u << 16)

/* ---- case file reading -------------------------------------------------------------- */

struct case_line {
	const char *file;
	unsigned lineno;
	char *fields[32]; /* fields before '|', quotes removed */
	unsigned nfields;
	uint8_t *msg; /* message bytes after '|' */
	size_t len;
};

static unsigned failures;

static void __attribute__((format(printf, 2, 3))) fail_case(const struct case_line *cl,
							    const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s%s:%u: ", DATA_DIR, cl->file, cl->lineno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

struct builder {
	uint8_t *b;
	size_t n;
	bool overflow;
	size_t len_at[8]; /* positions of L tokens */
	unsigned nlen;
};

static void put(struct builder *bd, uint8_t v)
{
	if (bd->n >= MAX_MSG) {
		bd->overflow = true;
		return;
	}
	bd->b[bd->n++] = v;
}

static void put_be(struct builder *bd, uint64_t v, unsigned bytes)
{
	for (unsigned i = bytes; i-- > 0;)
		put(bd, (uint8_t)(v >> (8 * i)));
}

/* Parse hex digits s[0..n) into bd; false if not valid hex. */
static bool put_hex(struct builder *bd, const char *s, size_t n)
{
	if (n == 0 || n % 2)
		return false;
	for (size_t i = 0; i < n; i += 2) {
		int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		put(bd, (uint8_t)(hi << 4 | lo));
	}
	return true;
}

/* A quoted string starting at *sp (on the opening quote) into out (raw bytes, with
 * escapes applied). Returns the length, or -1 on a syntax error. */
static long take_quoted(const char **sp, struct builder *bd)
{
	const char *s = *sp + 1;
	long n = 0;

	while (*s && *s != '"') {
		int ch = (unsigned char)*s++;

		if (ch == '\\') {
			switch (*s++) {
			case '0': ch = 0; break;
			case 'n': ch = '\n'; break;
			case 't': ch = '\t'; break;
			case '\\': ch = '\\'; break;
			case '"': ch = '"'; break;
			case 'x': {
				int hi = hexval((unsigned char)s[0]);
				int lo = hi < 0 ? -1 : hexval((unsigned char)s[1]);

				if (lo < 0)
					return -1;
				ch = hi << 4 | lo;
				s += 2;
				break;
			}
			default:
				return -1;
			}
		}
		put(bd, (uint8_t)ch);
		n++;
	}
	if (*s != '"')
		return -1;
	*sp = s + 1;
	return n;
}

static bool parse_message(const char *s, struct builder *bd)
{
	while (*s) {
		const char *tok;
		size_t tl;

		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			break;
		if (*s == '"') {
			if (take_quoted(&s, bd) < 0)
				return false;
			continue;
		}
		tok = s;
		while (*s && !isspace((unsigned char)*s))
			s++;
		tl = (size_t)(s - tok);
		if (tl == 1 && tok[0] == 'L') {
			if (bd->nlen == 8)
				return false;
			bd->len_at[bd->nlen++] = bd->n;
			put_be(bd, 0, 4);
		} else if (tok[0] == 'i' || tok[0] == 'u') {
			char buf[64];
			char *end;
			long long v;
			unsigned bits;

			if (tl >= sizeof(buf))
				return false;
			memcpy(buf, tok, tl);
			buf[tl] = 0;
			if (sscanf(buf + 1, "%u:", &bits) != 1 || !strchr(buf, ':'))
				return false;
			errno = 0;
			v = strtoll(strchr(buf, ':') + 1, &end, 0);
			if (errno || *end || (bits != 8 && bits != 16 && bits != 32))
				return false;
			put_be(bd, (uint64_t)v, bits / 8);
		} else if (tok[0] == '*') {
			char buf[32];
			const char *colon = memchr(tok, ':', tl);
			unsigned long count;

			if (!colon || (size_t)(colon - tok) >= sizeof(buf))
				return false;
			memcpy(buf, tok + 1, (size_t)(colon - tok - 1));
			buf[colon - tok - 1] = 0;
			count = strtoul(buf, NULL, 10);
			for (unsigned long i = 0; i < count; i++)
				if (!put_hex(bd, colon + 1, (size_t)(s - colon - 1)))
					return false;
		} else if (!put_hex(bd, tok, tl)) {
			return false;
		}
	}
	for (unsigned i = 0; i < bd->nlen; i++)
		proto_write_u32(bd->b + bd->len_at[i], (uint32_t)(bd->n - bd->len_at[i]));
	return !bd->overflow;
}

/* Split the fields part: whitespace separated, "quoted" parts may hold spaces and \"
 * for a quote. Quotes are removed in place; "key=a b" becomes key=a b. */
static bool split_fields(char *s, struct case_line *cl)
{
	while (*s) {
		char *out, *start;

		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			break;
		if (cl->nfields == 32)
			return false;
		start = out = s;
		while (*s && !isspace((unsigned char)*s)) {
			if (*s == '"') {
				s++;
				while (*s && *s != '"') {
					if (s[0] == '\\' && s[1] == '"') /* \" inside quotes */
						s++;
					*out++ = *s++;
				}
				if (*s != '"')
					return false;
				s++;
			} else {
				*out++ = *s++;
			}
		}
		if (*s)
			s++;
		*out = 0;
		cl->fields[cl->nfields++] = start;
	}
	return true;
}

/* Next case from f, or false at the end. A line that cannot be parsed fails the test. */
static bool next_case(FILE *f, const char *file, unsigned *lineno, char *line,
		      struct case_line *cl, uint8_t *msgbuf)
{
	while (fgets(line, MAX_LINE, f)) {
		struct builder bd = { .b = msgbuf };
		char *bar, *p = line;

		(*lineno)++;
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '#' || *p == 0)
			continue;
		memset(cl, 0, sizeof(*cl));
		cl->file = file;
		cl->lineno = *lineno;
		bar = strchr(p, '|');
		if (!bar || !parse_message(bar + 1, &bd)) {
			fail_case(cl, "cannot parse case line");
			continue;
		}
		*bar = 0;
		if (!split_fields(p, cl) || cl->nfields == 0) {
			fail_case(cl, "cannot parse case fields");
			continue;
		}
		cl->msg = msgbuf;
		cl->len = bd.n;
		return true;
	}
	return false;
}

static FILE *open_case_file(const char *file)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), DATA_DIR "%s", file);
	f = fopen(path, "r");
	if (!f)
		fail_msg("cannot open %s (tests run from tests/unit): %s", path, strerror(errno));
	return f;
}

/* ---- field helpers ---------------------------------------------------------------- */

static const struct {
	const char *name;
	int status;
} statuses[] = {
	{ "OK", PROTO_OK },
	{ "NEED_MORE", PROTO_NEED_MORE },
	{ "ERR_LENGTH", PROTO_ERR_LENGTH },
	{ "ERR_TOO_LONG", PROTO_ERR_TOO_LONG },
	{ "ERR_TYPE", PROTO_ERR_TYPE },
	{ "ERR_FORMAT", PROTO_ERR_FORMAT },
	{ "ERR_VERSION", PROTO_ERR_VERSION },
	{ "ERR_STARTUP", PROTO_ERR_STARTUP },
	{ "ERR_BUFFER", PROTO_ERR_BUFFER },
};

/* Status by name; 1000 for "-" (not checked); -1000 for an unknown name. */
#define SKIP 1000
static int status_of(const char *s)
{
	if (strcmp(s, "-") == 0)
		return SKIP;
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
		if (strcmp(statuses[i].name, s) == 0)
			return statuses[i].status;
	return -1000;
}

static const char *status_name(int st)
{
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
		if (statuses[i].status == st)
			return statuses[i].name;
	return "?";
}

/* The value of key=... among fields[from..], or NULL. */
static const char *field(const struct case_line *cl, unsigned from, const char *key)
{
	size_t kl = strlen(key);

	for (unsigned i = from; i < cl->nfields; i++)
		if (strncmp(cl->fields[i], key, kl) == 0 && cl->fields[i][kl] == '=')
			return cl->fields[i] + kl + 1;
	return NULL;
}

/* Compare an expected string field (absent: not checked; "NULL": must be NULL). */
static void expect_str(const struct case_line *cl, unsigned from, const char *key,
		       const char *got)
{
	const char *want = field(cl, from, key);

	if (!want)
		return;
	if (strcmp(want, "NULL") == 0) {
		if (got)
			fail_case(cl, "%s: want NULL, got \"%s\"", key, got);
	} else if (!got || strcmp(want, got) != 0) {
		fail_case(cl, "%s: want \"%s\", got %s%s%s", key, want, got ? "\"" : "",
			  got ? got : "NULL", got ? "\"" : "");
	}
}

static void expect_num(const struct case_line *cl, unsigned from, const char *key,
		       long long got)
{
	const char *want = field(cl, from, key);

	if (want && strtoll(want, NULL, 0) != got)
		fail_case(cl, "%s: want %s, got %lld", key, want, got);
}

/* Compare bytes with an expected hex field ("NULL": must be NULL). */
static void expect_hex(const struct case_line *cl, unsigned from, const char *key,
		       const uint8_t *got, size_t got_len)
{
	const char *want = field(cl, from, key);
	uint8_t buf[512];
	struct builder bd = { .b = buf };

	if (!want)
		return;
	if (strcmp(want, "NULL") == 0) {
		if (got)
			fail_case(cl, "%s: want NULL", key);
		return;
	}
	if (strlen(want) > 2 * sizeof(buf) ||
	    (*want && !put_hex(&bd, want, strlen(want)))) {
		fail_case(cl, "%s: bad hex in case", key);
		return;
	}
	if (!got || bd.n != got_len || memcmp(buf, got, got_len) != 0)
		fail_case(cl, "%s: bytes differ (want %zu bytes, got %zu)", key, bd.n, got_len);
}

/* A heap copy of exactly n bytes (at least one allocated byte, never read). */
static uint8_t *exact_copy(const uint8_t *p, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);

	assert_non_null(c);
	if (n)
		memcpy(c, p, n);
	return c;
}

/*
 * The first k bytes of all, for feeding a message byte by byte. Short prefixes (where
 * every decision is taken) get their own exact-size block so ASan sees any read past k;
 * longer ones reuse the whole copy, which keeps multi-kilobyte cases linear in time.
 */
#define EXACT_PREFIX_MAX 64
static uint8_t *prefix(uint8_t *all, size_t k)
{
	return k <= EXACT_PREFIX_MAX ? exact_copy(all, k) : all;
}

/* ---- framing ---------------------------------------------------------------------- */

/* Types with at least one well-formed case and one malformed case, per direction. */
static bool seen_good[2][256], seen_bad[2][256];

/* Same framing of the same bytes held at a_base and b_base. */
static bool msg_equal(const struct proto_msg *a, const uint8_t *a_base,
		      const struct proto_msg *b, const uint8_t *b_base)
{
	return a->type == b->type && a->body_len == b->body_len &&
	       a->body - a_base == b->body - b_base;
}

/*
 * Feed the message one byte at a time (fresh exact-size buffers): NEED_MORE until the
 * answer for the whole message, then that answer with the same framing. The answer must
 * come as early as the contract says: a bad type byte on the first byte, anything else
 * once the 5-byte header is in (never waiting for the body).
 */
static void frame_bytewise(const struct case_line *cl, enum proto_dir dir, uint32_t max_body,
			   int want, const struct proto_msg *whole, const uint8_t *whole_p)
{
	uint8_t *all = exact_copy(cl->msg, cl->len);
	bool decided = false;

	for (size_t k = 0; k <= cl->len; k++) {
		uint8_t *p = prefix(all, k);
		struct proto_msg m = { 0 };
		int st = proto_frame(p, k, dir, max_body, &m);
		const char *why = NULL;

		if (st != PROTO_NEED_MORE || decided) {
			if (!decided && k != (want == PROTO_ERR_TYPE ? 1 : PROTO_HEADER_LEN))
				why = "decided later than it could";
			else if (st != want)
				why = "answer differs from the one for the whole message";
			else if (st == PROTO_OK && !msg_equal(&m, p, whole, whole_p))
				why = "framing differs from the whole message";
			decided = true;
		}
		if (p != all)
			free(p);
		if (why) {
			fail_case(cl, "after %zu of %zu bytes: %s (%s, whole: %s)", k, cl->len, why,
				  status_name(st), status_name(want));
			break;
		}
	}
	free(all);
	if (!decided && want != PROTO_NEED_MORE)
		fail_case(cl, "never decided byte by byte");
}

/* A run: whole messages of one type, while they fit the limit, each at most msg_max, each
 * one proto_frame() accepts; it stops at another type, a cut message, a bad length. */
static void test_frame_run(void **state)
{
	static const uint8_t rows[] = {
		'D', 0, 0, 0, 6, 0, 0,             /* 7 bytes: no columns */
		'D', 0, 0, 0, 10, 0, 1, 0xff, 0xff, 0xff, 0xff, /* 11: one NULL */
		'D', 0, 0, 0, 6, 0, 0,             /* 7 */
		'C', 0, 0, 0, 4,                   /* another type */
	};
	static const uint8_t bad[] = {
		'd', 0, 0, 0, 5, 'x',              /* 6 bytes of CopyData */
		'd', 0, 0, 0, 3,                   /* a length below 4 */
	};
	static const uint8_t short_row[] = {
		'D', 0, 0, 0, 6, 0, 0,
		'D', 0, 0, 0, 5, 0,                /* a DataRow body shorter than its field count */
	};

	(void)state;
	assert_int_equal(proto_frame_run(rows, sizeof(rows), PROTO_BACKEND, PROTO_MAX_BODY, 'D',
					 8192, UINT32_MAX), 25);
	assert_int_equal(proto_frame_run(rows, sizeof(rows), PROTO_BACKEND, PROTO_MAX_BODY, 'D',
					 8192, 24), 18); /* the third does not fit the limit */
	assert_int_equal(proto_frame_run(rows, sizeof(rows), PROTO_BACKEND, PROTO_MAX_BODY, 'D',
					 8192, 6), 0);
	assert_int_equal(proto_frame_run(rows, sizeof(rows), PROTO_BACKEND, PROTO_MAX_BODY, 'D',
					 10, UINT32_MAX), 7); /* the second is over msg_max */
	assert_int_equal(proto_frame_run(rows, sizeof(rows), PROTO_BACKEND, 5, 'D', 8192,
					 UINT32_MAX), 7); /* its body is over max_body */
	assert_int_equal(proto_frame_run(rows, 16, PROTO_BACKEND, PROTO_MAX_BODY, 'D', 8192,
					 UINT32_MAX), 7); /* the second is cut */
	assert_int_equal(proto_frame_run(rows, sizeof(rows), PROTO_BACKEND, PROTO_MAX_BODY, 'd',
					 8192, UINT32_MAX), 0);
	assert_int_equal(proto_frame_run(bad, sizeof(bad), PROTO_BACKEND, PROTO_MAX_BODY, 'd', 8192,
					 UINT32_MAX), 6);
	assert_int_equal(proto_frame_run(short_row, sizeof(short_row), PROTO_BACKEND, PROTO_MAX_BODY,
					 'D', 8192, UINT32_MAX), 7);
}

static void test_frame_cases(void **state)
{
	static uint8_t msgbuf[MAX_MSG];
	static char line[MAX_LINE];
	unsigned lineno = 0, ncases = 0;
	struct case_line cl;
	FILE *f = open_case_file("frame.txt");

	(void)state;
	failures = 0;
	while (next_case(f, "frame.txt", &lineno, line, &cl, msgbuf)) {
		enum proto_dir dir;
		uint32_t max_body;
		int want_frame, want_valid, st;
		struct proto_msg m = { 0 };
		uint8_t *p;

		ncases++;
		if (cl.nfields < 4 || (strcmp(cl.fields[0], "F") && strcmp(cl.fields[0], "B"))) {
			fail_case(&cl, "want: F|B max_body frame_status validate_status | message");
			continue;
		}
		dir = cl.fields[0][0] == 'F' ? PROTO_FRONTEND : PROTO_BACKEND;
		max_body = strcmp(cl.fields[1], "-") ? (uint32_t)strtoul(cl.fields[1], NULL, 0)
						     : PROTO_MAX_BODY;
		want_frame = status_of(cl.fields[2]);
		want_valid = status_of(cl.fields[3]);
		if (want_frame == -1000 || want_frame == SKIP || want_valid == -1000) {
			fail_case(&cl, "unknown status name");
			continue;
		}

		p = exact_copy(cl.msg, cl.len);
		st = proto_frame(p, cl.len, dir, max_body, &m);
		if (st != want_frame) {
			fail_case(&cl, "proto_frame: want %s, got %s", status_name(want_frame),
				  status_name(st));
			free(p);
			continue;
		}
		if (st == PROTO_OK && (m.type != p[0] || m.body != p + PROTO_HEADER_LEN ||
				       m.body_len != proto_read_u32(p + 1) - 4))
			fail_case(&cl, "proto_frame: wrong type/body/body_len");
		frame_bytewise(&cl, dir, max_body, want_frame, &m, p);
		{
			/* A run from here takes this message when proto_frame() does and it is whole,
			 * and nothing when not (a message of the same type may follow it). */
			uint32_t r = cl.len ? proto_frame_run(p, (uint32_t)cl.len, dir, max_body, p[0],
							      UINT32_MAX, UINT32_MAX)
					    : 0;
			size_t total = PROTO_HEADER_LEN + (size_t)m.body_len;
			bool whole = st == PROTO_OK && total <= cl.len;

			if (whole ? r < total || (r > total && p[total] != p[0]) : r != 0)
				fail_case(&cl, "proto_frame_run: %u bytes", r);
		}

		if (want_valid != SKIP) {
			if (st != PROTO_OK || cl.len != PROTO_HEADER_LEN + (size_t)m.body_len) {
				fail_case(&cl, "validation case must be one whole, framed message");
			} else {
				/* The body alone in an exact-size block: overreads are caught. */
				uint8_t *body = exact_copy(m.body, m.body_len);
				struct proto_msg vm = { .type = m.type, .body_len = m.body_len,
							.body = m.body_len ? body : NULL };
				int vs = proto_validate(dir, &vm);

				if (vs != want_valid)
					fail_case(&cl, "proto_validate: want %s, got %s",
						  status_name(want_valid), status_name(vs));
				if (want_valid == PROTO_OK)
					seen_good[dir][m.type] = true;
				else
					seen_bad[dir][m.type] = true;
				free(body);
			}
		} else if (st != PROTO_OK && cl.len >= 1) {
			seen_bad[dir][cl.msg[0]] = true;
		}
		free(p);
	}
	fclose(f);
	if (ncases < 50)
		fail_msg("frame.txt: only %u cases", ncases);

	/* Completeness: every type of each direction has good and malformed cases. */
	for (int d = 0; d < 2; d++)
		for (int t = 0; t < 256; t++) {
			if (!proto_type_valid((enum proto_dir)d, (uint8_t)t))
				continue;
			if (!seen_good[d][t] || !seen_bad[d][t]) {
				fprintf(stderr, "frame.txt: %s '%c' (%s) lacks a %s case\n",
					d == PROTO_FRONTEND ? "frontend" : "backend", t,
					proto_type_name((enum proto_dir)d, (uint8_t)t),
					seen_good[d][t] ? "malformed" : "well-formed");
				failures++;
			}
		}
	assert_int_equal(failures, 0);
}

/* ---- startup family --------------------------------------------------------------- */

static const char *kind_name(enum proto_startup_kind k)
{
	switch (k) {
	case PROTO_STARTUP_MESSAGE:
		return "startup";
	case PROTO_SSL_REQUEST:
		return "ssl";
	case PROTO_GSSENC_REQUEST:
		return "gssenc";
	case PROTO_CANCEL_REQUEST:
		return "cancel";
	}
	return "?";
}

static void startup_bytewise(const struct case_line *cl, int want, uint32_t want_len)
{
	bool decided = false;

	uint8_t *all = exact_copy(cl->msg, cl->len);

	for (size_t k = 0; k <= cl->len; k++) {
		uint8_t *p = prefix(all, k);
		uint32_t len = 0;
		int st = proto_startup_frame(p, k, &len);

		if (p != all)
			free(p);
		if (st == PROTO_NEED_MORE && !decided)
			continue;
		/* A length is judged on its 4 bytes; OK needs the 8-byte header. */
		if (!decided && k != (want == PROTO_OK ? PROTO_STARTUP_HEADER_LEN : 4)) {
			fail_case(cl, "decided after %zu bytes, not as soon as it could", k);
			break;
		}
		decided = true;
		if (st != want || (st == PROTO_OK && len != want_len)) {
			fail_case(cl, "after %zu of %zu bytes: %s (len %u), whole: %s (len %u)", k,
				  cl->len, status_name(st), len, status_name(want), want_len);
			break;
		}
	}
	free(all);
}

static void check_startup_fields(const struct case_line *cl, const struct proto_startup *st)
{
	const char *want_kind = field(cl, 2, "kind");

	if (want_kind && strcmp(want_kind, kind_name(st->kind)) != 0)
		fail_case(cl, "kind: want %s, got %s", want_kind, kind_name(st->kind));
	expect_num(cl, 2, "code", st->code);
	expect_str(cl, 2, "user", st->user);
	expect_str(cl, 2, "database", st->database);
	expect_str(cl, 2, "app", st->application_name);
	expect_num(cl, 2, "repl", st->replication);
	expect_num(cl, 2, "nparams", st->nparams);
	expect_num(cl, 2, "pid", st->cancel_pid);
	expect_hex(cl, 2, "key", st->cancel_key, st->cancel_key_len);
	/* param=name:value checks that the list holds that pair at some position. */
	for (unsigned i = 2; i < cl->nfields; i++) {
		const char *f = cl->fields[i], *colon;
		bool found = false;

		if (strncmp(f, "param=", 6) != 0 || !(colon = strchr(f + 6, ':')))
			continue;
		for (unsigned j = 0; j < st->nparams; j++)
			if (strlen(st->params[j].name) == (size_t)(colon - f - 6) &&
			    memcmp(st->params[j].name, f + 6, (size_t)(colon - f - 6)) == 0 &&
			    strcmp(st->params[j].value, colon + 1) == 0)
				found = true;
		if (!found)
			fail_case(cl, "parameter %s not in the list", f + 6);
	}
}

static void test_startup_cases(void **state)
{
	static uint8_t msgbuf[MAX_MSG];
	static char line[MAX_LINE];
	unsigned lineno = 0, ncases = 0;
	struct case_line cl;
	FILE *f = open_case_file("startup.txt");

	(void)state;
	failures = 0;
	while (next_case(f, "startup.txt", &lineno, line, &cl, msgbuf)) {
		int want_frame, want_parse, st;
		const char *want_tls;
		uint32_t len = 0;
		uint8_t *p;

		ncases++;
		if (cl.nfields < 2) {
			fail_case(&cl, "want: frame_status parse_status key=value... | packet");
			continue;
		}
		want_frame = status_of(cl.fields[0]);
		want_parse = status_of(cl.fields[1]);
		if (want_frame == -1000 || want_frame == SKIP || want_parse == -1000) {
			fail_case(&cl, "unknown status name");
			continue;
		}
		p = exact_copy(cl.msg, cl.len);
		st = proto_startup_frame(p, cl.len, &len);
		if (st != want_frame)
			fail_case(&cl, "proto_startup_frame: want %s, got %s",
				  status_name(want_frame), status_name(st));
		startup_bytewise(&cl, want_frame, len);
		want_tls = field(&cl, 2, "tls");
		if (proto_startup_is_tls(p, cl.len) != (want_tls && strcmp(want_tls, "1") == 0))
			fail_case(&cl, "proto_startup_is_tls: want %s", want_tls ? want_tls : "0");

		if (want_parse != SKIP) {
			struct proto_startup ps;
			const char *sqlstate = NULL;
			char text[256];
			int ex;

			if (cl.len > UINT32_MAX) {
				fail_case(&cl, "packet too large for a case");
				free(p);
				continue;
			}
			st = proto_startup_parse(p, (uint32_t)cl.len, &ps);
			if (st != want_parse)
				fail_case(&cl, "proto_startup_parse: want %s, got %s",
					  status_name(want_parse), status_name(st));
			if (st == PROTO_OK || st == PROTO_ERR_VERSION)
				check_startup_fields(&cl, &ps);
			if (st == PROTO_ERR_STARTUP && (ps.user || ps.database))
				fail_case(&cl, "refused packet still names a user/database");
			ex = proto_startup_explain(p, (uint32_t)cl.len, text, sizeof(text),
						   &sqlstate);
			if (ex != st)
				fail_case(&cl, "proto_startup_explain: status %s, parse said %s",
					  status_name(ex), status_name(st));
			expect_str(&cl, 2, "sqlstate", sqlstate);
			expect_str(&cl, 2, "msg", text);
		}
		free(p);
	}
	fclose(f);
	if (ncases < 30)
		fail_msg("startup.txt: only %u cases", ncases);
	assert_int_equal(failures, 0);
}

/* ---- typed readers ---------------------------------------------------------------- */

/* "a,b,c" from the walk results, compared with a field. */
struct joined {
	char s[4096];
	size_t n;
};

static void join(struct joined *j, const char *piece)
{
	int w = snprintf(j->s + j->n, sizeof(j->s) - j->n, "%s%s", j->n ? "," : "", piece);

	if (w > 0 && (size_t)w < sizeof(j->s) - j->n)
		j->n += (size_t)w;
}

static void hex_piece(char *out, size_t cap, const uint8_t *p, int32_t len)
{
	size_t o = 0;

	if (len < 0) {
		snprintf(out, cap, "NULL");
		return;
	}
	out[0] = 0;
	if (len == 0) {
		snprintf(out, cap, "''");
		return;
	}
	for (int32_t i = 0; i < len && o + 3 < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%02x", p[i]);
}

/* Run the named reader on m; check outputs against the case. Returns the status. */
static int run_reader(const struct case_line *cl, const char *r, const struct proto_msg *m)
{
	int st = PROTO_ERR_TYPE - 1000;

	if (strcmp(r, "auth") == 0) {
		uint32_t code;

		if ((st = proto_read_auth(m, &code)) == PROTO_OK)
			expect_num(cl, 2, "code", code);
	} else if (strcmp(r, "auth_data") == 0) {
		uint32_t code, len;
		const uint8_t *d;

		if ((st = proto_read_auth_data(m, &code, &d, &len)) == PROTO_OK) {
			expect_num(cl, 2, "code", code);
			expect_hex(cl, 2, "data", d, len);
		}
	} else if (strcmp(r, "sasl") == 0) {
		struct proto_sasl_iter it;
		struct joined j = { .n = 0 };
		const char *mech;

		if ((st = proto_auth_sasl_begin(m, &it)) == PROTO_OK) {
			int rc;

			while ((rc = proto_auth_sasl_next(&it, &mech)) == 1)
				join(&j, mech);
			if (rc != 0)
				fail_case(cl, "proto_auth_sasl_next ended with %s", status_name(rc));
			expect_str(cl, 2, "mechs", j.s);
		}
	} else if (strcmp(r, "backend_key") == 0) {
		uint32_t pid, len;
		const uint8_t *key;

		if ((st = proto_read_backend_key(m, &pid, &key, &len)) == PROTO_OK) {
			expect_num(cl, 2, "pid", pid);
			expect_hex(cl, 2, "key", key, len);
		}
	} else if (strcmp(r, "ready") == 0) {
		uint8_t s;

		if ((st = proto_read_ready(m, &s)) == PROTO_OK) {
			char str[2] = { (char)s, 0 };

			expect_str(cl, 2, "status", str);
		}
	} else if (strcmp(r, "parameter_status") == 0) {
		const char *n, *v;

		if ((st = proto_read_parameter_status(m, &n, &v)) == PROTO_OK) {
			expect_str(cl, 2, "name", n);
			expect_str(cl, 2, "value", v);
		}
	} else if (strcmp(r, "negotiate") == 0) {
		uint32_t minor, nopt;

		if ((st = proto_read_negotiate(m, &minor, &nopt)) == PROTO_OK) {
			expect_num(cl, 2, "minor", minor);
			expect_num(cl, 2, "noptions", nopt);
		}
	} else if (strcmp(r, "error") == 0) {
		struct proto_error_fields ef;

		if ((st = proto_read_error(m, &ef)) == PROTO_OK) {
			expect_str(cl, 2, "severity", ef.severity);
			expect_str(cl, 2, "sqlstate", ef.sqlstate);
			expect_str(cl, 2, "message", ef.message);
			expect_str(cl, 2, "detail", ef.detail);
		}
	} else if (strcmp(r, "query") == 0) {
		const char *sql;

		if ((st = proto_read_query(m, &sql)) == PROTO_OK)
			expect_str(cl, 2, "sql", sql);
	} else if (strcmp(r, "parse") == 0) {
		const char *stmt, *sql;
		uint16_t n;

		if ((st = proto_read_parse(m, &stmt, &sql, &n)) == PROTO_OK) {
			expect_str(cl, 2, "stmt", stmt);
			expect_str(cl, 2, "sql", sql);
			expect_num(cl, 2, "nparams", n);
		}
	} else if (strcmp(r, "bind") == 0) {
		const char *portal, *stmt;
		uint16_t n;

		if ((st = proto_read_bind(m, &portal, &stmt, &n)) == PROTO_OK) {
			expect_str(cl, 2, "portal", portal);
			expect_str(cl, 2, "stmt", stmt);
			expect_num(cl, 2, "nparams", n);
		}
	} else if (strcmp(r, "copy_response") == 0) {
		uint8_t fmt;
		uint16_t n;

		if ((st = proto_read_copy_response(m, &fmt, &n)) == PROTO_OK) {
			expect_num(cl, 2, "format", fmt);
			expect_num(cl, 2, "ncols", n);
		}
	} else if (strcmp(r, "command_complete") == 0) {
		const char *tag;

		if ((st = proto_read_command_complete(m, &tag)) == PROTO_OK)
			expect_str(cl, 2, "tag", tag);
	} else if (strcmp(r, "password") == 0) {
		const char *pw;

		if ((st = proto_read_password(m, &pw)) == PROTO_OK)
			expect_str(cl, 2, "password", pw);
	} else if (strcmp(r, "sasl_initial") == 0) {
		const char *mech;
		const uint8_t *d;
		int32_t len;

		if ((st = proto_read_sasl_initial(m, &mech, &d, &len)) == PROTO_OK) {
			expect_str(cl, 2, "mech", mech);
			expect_num(cl, 2, "len", len);
			expect_hex(cl, 2, "data", d, len < 0 ? 0 : (size_t)len);
		}
	} else if (strcmp(r, "rowdesc") == 0) {
		struct proto_rowdesc_iter it;
		struct proto_column col;
		struct joined j = { .n = 0 };

		if ((st = proto_rowdesc_begin(m, &it)) == PROTO_OK) {
			int rc;

			while ((rc = proto_rowdesc_next(&it, &col)) == 1) {
				char piece[256];

				snprintf(piece, sizeof(piece), "%s:%u:%d:%u:%d:%d:%d", col.name,
					 col.table_oid, col.attnum, col.type_oid, col.type_len,
					 col.type_mod, col.format);
				join(&j, piece);
			}
			if (rc != 0)
				fail_case(cl, "proto_rowdesc_next ended with %s", status_name(rc));
			expect_num(cl, 2, "ncols", it.ncols);
			expect_str(cl, 2, "cols", j.s);
		}
	} else if (strcmp(r, "datarow") == 0) {
		struct proto_datarow_iter it;
		struct joined j = { .n = 0 };

		if ((st = proto_datarow_begin(m, &it)) == PROTO_OK) {
			const uint8_t *v;
			int32_t len;
			int rc;

			while ((rc = proto_datarow_next(&it, &v, &len)) == 1) {
				char piece[512];

				if ((len < 0) != (v == NULL))
					fail_case(cl, "NULL value and length -1 must go together");
				hex_piece(piece, sizeof(piece), v, len);
				join(&j, piece);
			}
			if (rc != 0)
				fail_case(cl, "proto_datarow_next ended with %s", status_name(rc));
			expect_num(cl, 2, "ncols", it.ncols);
			expect_str(cl, 2, "values", j.s);
		}
	} else if (strcmp(r, "execute") == 0) {
		const char *portal;
		uint32_t rows;

		if ((st = proto_read_execute(m, &portal, &rows)) == PROTO_OK) {
			expect_str(cl, 2, "portal", portal);
			expect_num(cl, 2, "rows", rows);
		}
	} else if (strcmp(r, "close") == 0 || strcmp(r, "describe") == 0) {
		const char *name;
		uint8_t kind;

		if ((st = proto_read_target(m, r[0] == 'c' ? PqMsg_Close : PqMsg_Describe, &kind,
					    &name)) == PROTO_OK) {
			char k[2] = {(char)kind, 0};

			expect_str(cl, 2, "kind", k);
			expect_str(cl, 2, "name", name);
		}
	} else if (strcmp(r, "bind_params") == 0 || strcmp(r, "fcall_args") == 0) {
		struct proto_param_iter it;
		struct joined j = { .n = 0 };
		uint32_t oid = 0;

		st = r[0] == 'b' ? proto_bind_params_begin(m, &it) : proto_fcall_args_begin(m, &oid, &it);
		if (st == PROTO_OK) {
			const uint8_t *v;
			int32_t len;
			int16_t fmt;
			int rc;

			while ((rc = proto_param_next(&it, &v, &len, &fmt)) == 1) {
				char piece[600], hex[512];

				if ((len < 0) != (v == NULL))
					fail_case(cl, "NULL value and length -1 must go together");
				hex_piece(hex, sizeof(hex), v, len);
				snprintf(piece, sizeof(piece), "%d:%s", fmt, hex);
				join(&j, piece);
			}
			if (rc != 0)
				fail_case(cl, "proto_param_next ended with %s", status_name(rc));
			if (r[0] == 'f')
				expect_num(cl, 2, "oid", oid);
			expect_str(cl, 2, "values", j.s);
		}
	} else {
		fail_case(cl, "unknown reader %s", r);
	}
	return st;
}

static enum proto_dir reader_dir(const char *r)
{
	static const char *const frontend[] = { "query", "parse", "bind", "password",
						"sasl_initial", "execute", "close", "describe",
						"bind_params", "fcall_args" };

	for (size_t i = 0; i < sizeof(frontend) / sizeof(frontend[0]); i++)
		if (strcmp(r, frontend[i]) == 0)
			return PROTO_FRONTEND;
	return PROTO_BACKEND;
}

static void test_reader_cases(void **state)
{
	static uint8_t msgbuf[MAX_MSG];
	static char line[MAX_LINE];
	unsigned lineno = 0, ncases = 0;
	struct case_line cl;
	FILE *f = open_case_file("readers.txt");

	(void)state;
	failures = 0;
	while (next_case(f, "readers.txt", &lineno, line, &cl, msgbuf)) {
		enum proto_dir dir;
		struct proto_msg m;
		int want, st, vs;
		uint8_t *body;

		ncases++;
		want = cl.nfields >= 2 ? status_of(cl.fields[1]) : -1000;
		if (want == -1000 || want == SKIP) {
			fail_case(&cl, "want: reader status key=value... | message");
			continue;
		}
		dir = reader_dir(cl.fields[0]);
		/* Readers take framed messages; readers.txt only holds whole ones. */
		if (proto_frame(cl.msg, cl.len, dir, PROTO_MAX_BODY, &m) != PROTO_OK ||
		    cl.len != PROTO_HEADER_LEN + (size_t)m.body_len) {
			fail_case(&cl, "case message does not frame as one whole %s message",
				  dir == PROTO_FRONTEND ? "frontend" : "backend");
			continue;
		}
		body = exact_copy(m.body, m.body_len);
		m.body = m.body_len ? body : NULL;
		st = run_reader(&cl, cl.fields[0], &m);
		if (st != want)
			fail_case(&cl, "%s: want %s, got %s", cl.fields[0], status_name(want),
				  status_name(st));
		/* A reader and proto_validate agree on every message of the reader's type
		 * ('p' has no single layout, so validation accepts every body). */
		vs = proto_validate(dir, &m);
		if (st != PROTO_ERR_TYPE && m.type != 'p' && vs != st)
			fail_case(&cl, "proto_validate says %s, reader says %s", status_name(vs),
				  status_name(st));
		free(body);
	}
	fclose(f);
	if (ncases < 40)
		fail_msg("readers.txt: only %u cases", ncases);
	assert_int_equal(failures, 0);
}

/* ---- real traffic --------------------------------------------------------------- */

static uint8_t *read_file(const char *name, size_t *n)
{
	char path[256];
	uint8_t *b = NULL;
	FILE *f;
	long len;

	snprintf(path, sizeof(path), DATA_DIR "capture/%s", name);
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		b = malloc(len ? (size_t)len : 1);
		if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
			free(b);
			b = NULL;
		}
		*n = (size_t)len;
	}
	fclose(f);
	return b;
}

/* One recorded stream: startup packet (frontend), then messages up to the exact end. */
static void check_capture(const struct case_line *cl, const uint8_t *b, size_t n,
			  enum proto_dir dir)
{
	char types[8192];
	size_t off = 0, nt = 0;

	if (dir == PROTO_FRONTEND) {
		struct proto_startup st;
		uint32_t len;

		if (proto_startup_frame(b, n, &len) != PROTO_OK || len > n ||
		    proto_startup_parse(b, len, &st) != PROTO_OK) {
			fail_case(cl, "startup packet refused");
			return;
		}
		expect_str(cl, 2, "user", st.user);
		expect_str(cl, 2, "database", st.database);
		expect_str(cl, 2, "app", st.application_name);
		expect_num(cl, 2, "repl", st.replication);
		off = len;
	}
	while (off < n) {
		struct proto_msg m;
		int st = proto_frame(b + off, n - off, dir, PROTO_MAX_BODY, &m);

		if (st != PROTO_OK || m.body_len > n - off - PROTO_HEADER_LEN) {
			fail_case(cl, "offset %zu: %s", off,
				  st != PROTO_OK ? proto_err_str(st) : "stream ends inside a message");
			return;
		}
		if ((st = proto_validate(dir, &m)) != PROTO_OK) {
			fail_case(cl, "offset %zu: %s %s", off, proto_type_name(dir, m.type),
				  proto_err_str(st));
			return;
		}
		if (nt + 1 < sizeof(types))
			types[nt++] = (char)m.type;
		off += PROTO_HEADER_LEN + m.body_len;
	}
	types[nt] = 0;
	expect_str(cl, 2, "types", types);
}

static void test_capture_cases(void **state)
{
	static uint8_t msgbuf[MAX_MSG];
	static char line[MAX_LINE];
	unsigned lineno = 0, ncases = 0;
	struct case_line cl;
	FILE *f = open_case_file("captures.txt");

	(void)state;
	failures = 0;
	/* captures.txt lines have no '|': give each one an empty message part. */
	while (fgets(line, MAX_LINE, f)) {
		char *p = line;
		uint8_t *b;
		size_t n = 0;

		lineno++;
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '#' || *p == 0)
			continue;
		memset(&cl, 0, sizeof(cl));
		cl.file = "captures.txt";
		cl.lineno = lineno;
		cl.msg = msgbuf;
		if (!split_fields(p, &cl) || cl.nfields < 3 ||
		    (strcmp(cl.fields[1], "F") && strcmp(cl.fields[1], "B"))) {
			fail_case(&cl, "want: file F|B key=value...");
			continue;
		}
		ncases++;
		b = read_file(cl.fields[0], &n);
		if (!b) {
			fail_case(&cl, "cannot read capture/%s", cl.fields[0]);
			continue;
		}
		check_capture(&cl, b, n, cl.fields[1][0] == 'F' ? PROTO_FRONTEND : PROTO_BACKEND);
		free(b);
	}
	fclose(f);
	if (ncases < 20)
		fail_msg("captures.txt: only %u captures", ncases);
	assert_int_equal(failures, 0);
}

/* ---- cursor ----------------------------------------------------------------------- */

static void test_cursor_bounds(void **state)
{
	static const uint8_t b[] = { 0x01, 0x02, 0x03, 0x04, 0x05, 'a', 0, 'b' };
	struct proto_cursor c;

	(void)state;
	proto_cursor_init(&c, b, sizeof(b));
	assert_int_equal(proto_get_u8(&c), 0x01);
	assert_int_equal(proto_get_u16(&c), 0x0203);
	assert_int_equal(proto_get_u16(&c), 0x0405);
	assert_string_equal(proto_get_cstr(&c), "a");
	assert_false(c.err);
	/* "b" has no terminator: NULL, err, position unchanged, and later reads fail too. */
	assert_null(proto_get_cstr(&c));
	assert_true(c.err);
	assert_int_equal(proto_get_u8(&c), 0);
	assert_false(proto_cursor_done(&c));

	proto_cursor_init(&c, b, 3);
	assert_int_equal(proto_get_u32(&c), 0); /* 4 bytes from 3 */
	assert_true(c.err);

	proto_cursor_init(&c, b, 4);
	assert_int_equal(proto_get_i32(&c), 0x01020304);
	assert_true(proto_cursor_done(&c));
	assert_null(proto_get_bytes(&c, 1));
	assert_false(proto_cursor_done(&c));

	proto_cursor_init(&c, b, 2);
	assert_int_equal(proto_get_i16(&c), 0x0102);
	assert_non_null(proto_get_bytes(&c, 0)); /* zero bytes at the end is fine */
	assert_true(proto_cursor_done(&c));
	assert_null(proto_get_bytes(&c, SIZE_MAX)); /* no wrap-around */
	assert_true(c.err);
}

/* ---- names and texts -------------------------------------------------------------- */

static void test_type_tables(void **state)
{
	(void)state;
	/* The letters protocol 3 reuses mean different messages per direction. */
	assert_string_equal(proto_type_name(PROTO_FRONTEND, 'S'), "Sync");
	assert_string_equal(proto_type_name(PROTO_BACKEND, 'S'), "ParameterStatus");
	assert_string_equal(proto_type_name(PROTO_FRONTEND, 'C'), "Close");
	assert_string_equal(proto_type_name(PROTO_BACKEND, 'C'), "CommandComplete");
	assert_string_equal(proto_type_name(PROTO_FRONTEND, 'D'), "Describe");
	assert_string_equal(proto_type_name(PROTO_BACKEND, 'D'), "DataRow");
	assert_string_equal(proto_type_name(PROTO_FRONTEND, 'E'), "Execute");
	assert_string_equal(proto_type_name(PROTO_BACKEND, 'E'), "ErrorResponse");
	assert_string_equal(proto_type_name(PROTO_FRONTEND, 'H'), "Flush");
	assert_string_equal(proto_type_name(PROTO_BACKEND, 'H'), "CopyOutResponse");
	assert_string_equal(proto_type_name(PROTO_FRONTEND, 'T'), "unknown");
	assert_string_equal(proto_type_name((enum proto_dir)7, 'Q'), "unknown");
	assert_false(proto_type_valid((enum proto_dir)7, 'Q'));
	/* 'p' is the one frontend authentication message and no backend message. */
	assert_true(proto_type_valid(PROTO_FRONTEND, 'p'));
	assert_false(proto_type_valid(PROTO_BACKEND, 'p'));

	/* Exactly the documented sets: 14 frontend, 24 backend type bytes. */
	{
		unsigned nf = 0, nb = 0;

		for (int t = 0; t < 256; t++) {
			nf += proto_type_valid(PROTO_FRONTEND, (uint8_t)t);
			nb += proto_type_valid(PROTO_BACKEND, (uint8_t)t);
		}
		assert_int_equal(nf, 14);
		assert_int_equal(nb, 24);
	}
}

static void test_err_str(void **state)
{
	(void)state;
	assert_string_equal(proto_err_str(PROTO_ERR_LENGTH), "invalid message length");
	assert_string_equal(proto_err_str(PROTO_ERR_FORMAT), "invalid message format");
	assert_string_equal(proto_err_str(PROTO_ERR_TYPE), "invalid message type");
	assert_string_equal(proto_err_str(PROTO_ERR_VERSION),
			    "unsupported frontend protocol: server supports 3.0 to 3.2");
	/* Every status, and anything else, has some fixed non-empty text. */
	for (int s = -100; s <= 100; s++) {
		const char *t = proto_err_str(s);

		assert_non_null(t);
		assert_true(t[0] != 0);
	}
}

/* ---- writers ---------------------------------------------------------------------- */

/* Frame out[0..n) in dir and check it is exactly one valid message. */
static struct proto_msg frame_written(const uint8_t *out, int n, enum proto_dir dir)
{
	struct proto_msg m;

	assert_true(n > 0);
	assert_int_equal(proto_frame(out, (size_t)n, dir, PROTO_MAX_BODY, &m), PROTO_OK);
	assert_int_equal((size_t)n, PROTO_HEADER_LEN + (size_t)m.body_len);
	assert_int_equal(proto_validate(dir, &m), PROTO_OK);
	return m;
}

/* The writer must fail with PROTO_ERR_BUFFER, writing nothing, for every cap below n. */
#define CHECK_SHORT_CAPS(n, call_with_cap)                                               \
	do {                                                                             \
		for (size_t cap_ = 0; cap_ < (size_t)(n); cap_++) {                      \
			uint8_t small_[512];                                             \
			size_t cap = cap_;                                               \
			memset(small_, 0xAA, sizeof(small_));                            \
			assert_int_equal(call_with_cap, PROTO_ERR_BUFFER);               \
			for (size_t i_ = 0; i_ < sizeof(small_); i_++)                   \
				assert_int_equal(small_[i_], 0xAA);                      \
		}                                                                        \
	} while (0)

static void test_write_error(void **state)
{
	static const uint8_t want[] = "E\0\0\0\x39"
				      "SFATAL\0VFATAL\0C42501\0Mpermission denied for table t\0";
	uint8_t out[256];
	struct proto_error_fields ef;
	struct proto_msg m;
	int n;

	(void)state;
	n = proto_write_error(out, sizeof(out), "FATAL", "42501",
			      "permission denied for table t");
	/* want holds the bytes and its own NUL is the message's final terminator. */
	assert_int_equal(n, (int)sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
	m = frame_written(out, n, PROTO_BACKEND);
	assert_int_equal(proto_read_error(&m, &ef), PROTO_OK);
	assert_string_equal(ef.severity, "FATAL");
	assert_string_equal(ef.sqlstate, "42501");
	assert_string_equal(ef.message, "permission denied for table t");
	assert_null(ef.detail);

	CHECK_SHORT_CAPS(n, proto_write_error(small_, cap, "FATAL", "42501",
					      "permission denied for table t"));
	assert_int_equal(proto_write_error(out, sizeof(out), "ERROR", "4250", "x"),
			 PROTO_ERR_FORMAT);
	assert_int_equal(proto_write_error(out, sizeof(out), "ERROR", "425011", "x"),
			 PROTO_ERR_FORMAT);
	assert_int_equal(proto_write_error(out, sizeof(out), NULL, "42501", "x"),
			 PROTO_ERR_FORMAT);
	assert_int_equal(proto_write_error(out, sizeof(out), "ERROR", "42501", NULL),
			 PROTO_ERR_FORMAT);
	assert_int_equal(proto_write_error(NULL, 0, "ERROR", "42501", "x"), PROTO_ERR_BUFFER);
}

static void test_write_backend_key_and_cancel(void **state)
{
	uint8_t key[PROTO_CANCEL_KEY_MAX + 1], out[512];
	const uint8_t *rkey;
	uint32_t pid, klen;
	struct proto_startup st;
	struct proto_msg m;
	int n;

	(void)state;
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7 + 1);

	/* 3.0 (4 bytes), 3.2 as PostgreSQL 18 sends it (32), the maximum (256). */
	for (uint32_t kl = 4; kl <= PROTO_CANCEL_KEY_MAX; kl = kl == 4 ? 32 : kl == 32 ? 256 : 999) {
		n = proto_write_backend_key(out, sizeof(out), 0x01020304, key, kl);
		assert_int_equal(n, 5 + 4 + (int)kl);
		assert_int_equal(out[0], 'K');
		assert_int_equal(proto_read_u32(out + 1), 8 + kl);
		m = frame_written(out, n, PROTO_BACKEND);
		assert_int_equal(proto_read_backend_key(&m, &pid, &rkey, &klen), PROTO_OK);
		assert_int_equal(pid, 0x01020304);
		assert_int_equal(klen, kl);
		assert_memory_equal(rkey, key, kl);

		n = proto_write_cancel(out, sizeof(out), 4242, key, kl);
		assert_int_equal(n, 12 + (int)kl); /* CancelRequest length is 12 + key */
		assert_int_equal(proto_read_u32(out), 12 + kl);
		assert_int_equal(proto_read_u32(out + 4), PROTO_CANCEL_REQUEST_CODE);
		assert_int_equal(proto_startup_parse(out, (uint32_t)n, &st), PROTO_OK);
		assert_int_equal(st.kind, PROTO_CANCEL_REQUEST);
		assert_int_equal(st.cancel_pid, 4242);
		assert_int_equal(st.cancel_key_len, kl);
		assert_memory_equal(st.cancel_key, key, kl);
	}
	CHECK_SHORT_CAPS(5 + 4 + 32, proto_write_backend_key(small_, cap, 1, key, 32));
	CHECK_SHORT_CAPS(12 + 32, proto_write_cancel(small_, cap, 1, key, 32));
	assert_int_equal(proto_write_backend_key(out, sizeof(out), 1, key, 3), PROTO_ERR_FORMAT);
	assert_int_equal(proto_write_backend_key(out, sizeof(out), 1, key, 257),
			 PROTO_ERR_FORMAT);
	assert_int_equal(proto_write_cancel(out, sizeof(out), 1, key, 3), PROTO_ERR_FORMAT);
	assert_int_equal(proto_write_cancel(out, sizeof(out), 1, NULL, 4), PROTO_ERR_FORMAT);
}

static void test_write_small_messages(void **state)
{
	uint8_t out[64];
	uint8_t status;
	struct proto_msg m;
	int n;

	(void)state;
	n = proto_write_terminate(out, sizeof(out));
	assert_int_equal(n, 5);
	assert_memory_equal(out, "X\0\0\0\x04", 5);
	frame_written(out, n, PROTO_FRONTEND);
	CHECK_SHORT_CAPS(5, proto_write_terminate(small_, cap));

	for (const char *s = "ITE"; *s; s++) {
		n = proto_write_ready(out, sizeof(out), (uint8_t)*s);
		assert_int_equal(n, 6);
		assert_memory_equal(out, "Z\0\0\0\x05", 5);
		m = frame_written(out, n, PROTO_BACKEND);
		assert_int_equal(proto_read_ready(&m, &status), PROTO_OK);
		assert_int_equal(status, *s);
	}
	CHECK_SHORT_CAPS(6, proto_write_ready(small_, cap, 'I'));
	assert_int_equal(proto_write_ready(out, sizeof(out), 'X'), PROTO_ERR_FORMAT);

	n = proto_write_ssl_request(out, sizeof(out));
	assert_int_equal(n, 8);
	assert_memory_equal(out, "\0\0\0\x08\x04\xd2\x16\x2f", 8);
	n = proto_write_gssenc_request(out, sizeof(out));
	assert_int_equal(n, 8);
	assert_memory_equal(out, "\0\0\0\x08\x04\xd2\x16\x30", 8);
	CHECK_SHORT_CAPS(8, proto_write_ssl_request(small_, cap));
}

static void test_write_startup(void **state)
{
	static const struct proto_param params[] = {
		{ "user", "alice" },
		{ "database", "shop" },
		{ "application_name", "psql" },
	};
	static const uint8_t want[] = "\0\0\0\x38\0\x03\0\x02"
				      "user\0alice\0database\0shop\0application_name\0psql\0";
	struct proto_param many[PROTO_STARTUP_MAX_PARAMS + 1];
	struct proto_startup st;
	uint8_t out[256];
	uint32_t len;
	int n;

	(void)state;
	n = proto_write_startup(out, sizeof(out), PROTO_VERSION_3_2, params, 3);
	assert_int_equal(n, (int)sizeof(want)); /* want's own NUL is the final terminator */
	assert_memory_equal(out, want, sizeof(want));
	assert_int_equal(proto_startup_frame(out, (size_t)n, &len), PROTO_OK);
	assert_int_equal(len, (uint32_t)n);
	assert_int_equal(proto_startup_parse(out, len, &st), PROTO_OK);
	assert_int_equal(st.code, PROTO_VERSION_3_2);
	assert_string_equal(st.user, "alice");
	assert_string_equal(st.database, "shop");
	assert_string_equal(st.application_name, "psql");
	assert_int_equal(st.nparams, 3);
	CHECK_SHORT_CAPS(n, proto_write_startup(small_, cap, PROTO_VERSION_3_2, params, 3));

	for (unsigned i = 0; i <= PROTO_STARTUP_MAX_PARAMS; i++)
		many[i] = params[0];
	assert_int_equal(proto_write_startup(out, sizeof(out), PROTO_VERSION(2, 0), params, 3),
			 PROTO_ERR_FORMAT);
	assert_int_equal(proto_write_startup(out, sizeof(out), PROTO_VERSION_3_0, many,
					     PROTO_STARTUP_MAX_PARAMS + 1),
			 PROTO_ERR_FORMAT);
}

static void test_write_auth_exchange(void **state)
{
	static const uint8_t salt[4] = { 1, 2, 3, 4 };
	static const uint8_t mechs[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
	static const uint8_t first[] = "n,,n=,r=rOprNGfwEbeRWgbNEkqO";
	uint8_t out[256];
	const uint8_t *data;
	const char *s;
	uint32_t code, len;
	int32_t ilen;
	struct proto_sasl_iter it;
	struct proto_msg m;
	int n;

	(void)state;
	n = proto_write_auth(out, sizeof(out), AUTH_REQ_OK, NULL, 0);
	assert_int_equal(n, 9);
	assert_memory_equal(out, "R\0\0\0\x08\0\0\0\0", 9);

	n = proto_write_auth(out, sizeof(out), AUTH_REQ_MD5, salt, 4);
	m = frame_written(out, n, PROTO_BACKEND);
	assert_int_equal(proto_read_auth_data(&m, &code, &data, &len), PROTO_OK);
	assert_int_equal(code, AUTH_REQ_MD5);
	assert_int_equal(len, 4);
	assert_memory_equal(data, salt, 4);
	/* The code decides the layout: MD5 without its salt is refused, nothing left. */
	assert_int_equal(proto_write_auth(out, sizeof(out), AUTH_REQ_MD5, salt, 3),
			 PROTO_ERR_FORMAT);
	assert_int_equal(out[0], 0);

	n = proto_write_auth(out, sizeof(out), AUTH_REQ_SASL, mechs, sizeof(mechs));
	m = frame_written(out, n, PROTO_BACKEND);
	assert_int_equal(proto_auth_sasl_begin(&m, &it), PROTO_OK);
	assert_int_equal(proto_auth_sasl_next(&it, &s), 1);
	assert_string_equal(s, "SCRAM-SHA-256-PLUS");
	assert_int_equal(proto_auth_sasl_next(&it, &s), 1);
	assert_string_equal(s, "SCRAM-SHA-256");
	assert_int_equal(proto_auth_sasl_next(&it, &s), 0);

	n = proto_write_sasl_initial(out, sizeof(out), "SCRAM-SHA-256", first,
				     sizeof(first) - 1);
	m = frame_written(out, n, PROTO_FRONTEND);
	assert_int_equal(proto_read_sasl_initial(&m, &s, &data, &ilen), PROTO_OK);
	assert_string_equal(s, "SCRAM-SHA-256");
	assert_int_equal(ilen, (int32_t)sizeof(first) - 1);
	assert_memory_equal(data, first, sizeof(first) - 1);
	n = proto_write_sasl_initial(out, sizeof(out), "SCRAM-SHA-256", NULL, 0);
	m = frame_written(out, n, PROTO_FRONTEND);
	assert_int_equal(proto_read_sasl_initial(&m, &s, &data, &ilen), PROTO_OK);
	assert_int_equal(ilen, -1);
	assert_null(data);

	n = proto_write_sasl_response(out, sizeof(out), first, sizeof(first) - 1);
	assert_int_equal(n, 5 + (int)sizeof(first) - 1);
	assert_memory_equal(out + 5, first, sizeof(first) - 1);

	n = proto_write_password(out, sizeof(out), "md5abc");
	m = frame_written(out, n, PROTO_FRONTEND);
	assert_int_equal(proto_read_password(&m, &s), PROTO_OK);
	assert_string_equal(s, "md5abc");
	CHECK_SHORT_CAPS(n, proto_write_password(small_, cap, "md5abc"));
}

static void test_write_parameter_status_and_query(void **state)
{
	uint8_t out[128];
	const char *a, *b;
	struct proto_msg m;
	int n;

	(void)state;
	n = proto_write_parameter_status(out, sizeof(out), "client_encoding", "UTF8");
	m = frame_written(out, n, PROTO_BACKEND);
	assert_int_equal(proto_read_parameter_status(&m, &a, &b), PROTO_OK);
	assert_string_equal(a, "client_encoding");
	assert_string_equal(b, "UTF8");

	n = proto_write_query(out, sizeof(out), "select 1");
	assert_int_equal(n, 14);
	assert_memory_equal(out, "Q\0\0\0\x0dselect 1\0", 14);
	m = frame_written(out, n, PROTO_FRONTEND);
	assert_int_equal(proto_read_query(&m, &a), PROTO_OK);
	assert_string_equal(a, "select 1");
	CHECK_SHORT_CAPS(n, proto_write_query(small_, cap, "select 1"));
}

/* A NULL body with a non-zero length is a caller bug the readers refuse, not follow. */
static void test_readers_null_body(void **state)
{
	struct proto_msg m = { .type = 'Q', .body_len = 5, .body = NULL };
	struct proto_msg empty = { .type = 'S', .body_len = 0, .body = NULL };
	const char *sql;

	(void)state;
	assert_int_equal(proto_read_query(&m, &sql), PROTO_ERR_FORMAT);
	assert_int_equal(proto_validate(PROTO_FRONTEND, &m), PROTO_ERR_FORMAT);
	assert_int_equal(proto_validate(PROTO_FRONTEND, &empty), PROTO_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_cases),
		cmocka_unit_test(test_frame_run),
		cmocka_unit_test(test_startup_cases),
		cmocka_unit_test(test_reader_cases),
		cmocka_unit_test(test_capture_cases),
		cmocka_unit_test(test_cursor_bounds),
		cmocka_unit_test(test_type_tables),
		cmocka_unit_test(test_err_str),
		cmocka_unit_test(test_write_error),
		cmocka_unit_test(test_write_backend_key_and_cancel),
		cmocka_unit_test(test_write_small_messages),
		cmocka_unit_test(test_write_startup),
		cmocka_unit_test(test_write_auth_exchange),
		cmocka_unit_test(test_write_parameter_status_and_query),
		cmocka_unit_test(test_readers_null_body),
	};

	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
