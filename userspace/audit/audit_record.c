/* audit_record: building, encoding and parsing audit records (see audit_record.h). */
#include "audit/audit_record.h"
#include "base/sanitize.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const event_names[AUDIT_EV_COUNT] = {
	[AUDIT_EV_FILE_START] = "file_start",
	[AUDIT_EV_DAEMON_START] = "daemon_start",
	[AUDIT_EV_DAEMON_STOP] = "daemon_stop",
	[AUDIT_EV_CHECKPOINT] = "checkpoint",
	[AUDIT_EV_RELOAD] = "reload",
	[AUDIT_EV_STEER] = "steer",
	[AUDIT_EV_SESSION_START] = "session_start",
	[AUDIT_EV_AUTH] = "auth",
	[AUDIT_EV_STATEMENT] = "statement",
	[AUDIT_EV_STATEMENT_DONE] = "statement_done",
	[AUDIT_EV_STATEMENT_REFUSED] = "statement_refused",
	[AUDIT_EV_DECISION] = "decision",
	[AUDIT_EV_ERROR] = "error",
	[AUDIT_EV_MASKED] = "masked",
	[AUDIT_EV_SESSION_END] = "session_end",
	[AUDIT_EV_CANCEL] = "cancel",
	[AUDIT_EV_LOCKOUT] = "lockout",
	[AUDIT_EV_KILL] = "kill",
	[AUDIT_EV_GAP] = "gap",
	[AUDIT_EV_CAPACITY] = "capacity",
	[AUDIT_EV_TORN] = "torn_record",
};

const char *audit_event_name(enum audit_event ev)
{
	return (unsigned)ev < AUDIT_EV_COUNT ? event_names[ev] : "unknown";
}

int audit_event_parse(const char *name)
{
	for (int i = 0; i < AUDIT_EV_COUNT; i++)
		if (strcmp(name, event_names[i]) == 0)
			return i;
	return -1;
}

/* ---- the flat field list ------------------------------------------------------------ */

enum field_kind {
	AF_STR = 1,
	AF_U64,
	AF_I64,
	AF_BOOL,
	AF_NULL,
	AF_HEX,
	AF_OBJ,
	AF_ARR,
	AF_END,
};

/* One field: kind byte, key pointer, payload length, payload (unaligned: memcpy'd). */
#define FIELD_HEADER (1 + sizeof(const char *) + sizeof(uint32_t))
#define REC_MAX_DEPTH 8
#define REC_FIRST_CAP 512

struct audit_rec {
	struct audit_rec_link link;
	enum audit_event ev;
	uint64_t wall_ns;
	bool failed;
	unsigned depth;
	size_t len, cap;
	uint8_t *buf;
};

struct audit_rec *audit_rec_new(enum audit_event ev, uint64_t wall_ns)
{
	struct audit_rec *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->ev = ev;
	r->wall_ns = wall_ns;
	r->buf = malloc(REC_FIRST_CAP);
	if (!r->buf) {
		free(r);
		return NULL;
	}
	r->cap = REC_FIRST_CAP;
	return r;
}

void audit_rec_free(struct audit_rec *r)
{
	if (!r)
		return;
	OPENSSL_cleanse(r->buf, r->len);
	free(r->buf);
	free(r);
}

bool audit_rec_failed(const struct audit_rec *r)
{
	return r->failed || r->depth != 0;
}

enum audit_event audit_rec_event(const struct audit_rec *r)
{
	return r->ev;
}

uint64_t audit_rec_wall_ns(const struct audit_rec *r)
{
	return r->wall_ns;
}

size_t audit_rec_size(const struct audit_rec *r)
{
	return sizeof(*r) + r->cap;
}

struct audit_rec_link *audit_rec_link(struct audit_rec *r)
{
	return &r->link;
}

/* Room for n more bytes; false (and the record marked failed) when it cannot grow. */
static bool rec_reserve(struct audit_rec *r, size_t n)
{
	size_t cap = r->cap;
	uint8_t *nb;

	if (r->failed)
		return false;
	if (n > UINT32_MAX || r->len + n < r->len) {
		r->failed = true;
		return false;
	}
	if (r->len + n <= r->cap)
		return true;
	while (cap < r->len + n)
		cap *= 2;
	/* Not realloc: the old bytes may be SQL, and are wiped before they are let go. */
	nb = malloc(cap);
	if (!nb) {
		r->failed = true;
		return false;
	}
	memcpy(nb, r->buf, r->len);
	OPENSSL_cleanse(r->buf, r->len);
	free(r->buf);
	r->buf = nb;
	r->cap = cap;
	return true;
}

static void rec_put(struct audit_rec *r, enum field_kind kind, const char *key, const void *payload,
		    size_t n)
{
	uint32_t len = (uint32_t)n;
	uint8_t k = (uint8_t)kind;

	if (!rec_reserve(r, FIELD_HEADER + n))
		return;
	memcpy(r->buf + r->len, &k, 1);
	memcpy(r->buf + r->len + 1, &key, sizeof(key));
	memcpy(r->buf + r->len + 1 + sizeof(key), &len, sizeof(len));
	if (n)
		memcpy(r->buf + r->len + FIELD_HEADER, payload, n);
	r->len += FIELD_HEADER + n;
}

void audit_rec_strn(struct audit_rec *r, const char *key, const char *s, size_t n)
{
	if (!s)
		rec_put(r, AF_NULL, key, NULL, 0);
	else
		rec_put(r, AF_STR, key, s, n);
}

void audit_rec_str(struct audit_rec *r, const char *key, const char *s)
{
	audit_rec_strn(r, key, s, s ? strlen(s) : 0);
}

void audit_rec_u64(struct audit_rec *r, const char *key, uint64_t v)
{
	rec_put(r, AF_U64, key, &v, sizeof(v));
}

void audit_rec_i64(struct audit_rec *r, const char *key, int64_t v)
{
	rec_put(r, AF_I64, key, &v, sizeof(v));
}

void audit_rec_bool(struct audit_rec *r, const char *key, bool v)
{
	uint8_t b = v;

	rec_put(r, AF_BOOL, key, &b, 1);
}

void audit_rec_null(struct audit_rec *r, const char *key)
{
	rec_put(r, AF_NULL, key, NULL, 0);
}

void audit_rec_hex(struct audit_rec *r, const char *key, const uint8_t *bytes, size_t n)
{
	rec_put(r, AF_HEX, key, bytes, n);
}

void audit_rec_object(struct audit_rec *r, const char *key)
{
	if (r->depth >= REC_MAX_DEPTH) {
		r->failed = true;
		return;
	}
	r->depth++;
	rec_put(r, AF_OBJ, key, NULL, 0);
}

void audit_rec_array(struct audit_rec *r, const char *key)
{
	if (r->depth >= REC_MAX_DEPTH) {
		r->failed = true;
		return;
	}
	r->depth++;
	rec_put(r, AF_ARR, key, NULL, 0);
}

void audit_rec_end(struct audit_rec *r)
{
	if (r->depth == 0) {
		r->failed = true;
		return;
	}
	r->depth--;
	rec_put(r, AF_END, NULL, NULL, 0);
}

/* ---- to JSON (the writer) ----------------------------------------------------------- */

void audit_hex(const uint8_t *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int audit_unhex(const char *hex, uint8_t *bytes, size_t n)
{
	if (strlen(hex) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		bytes[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* A peer's bytes as a JSON string: sanitised first, always (the invariant above). */
static json_t *sanitized_string(const char *s, size_t n)
{
	char small[512], *tmp = small;
	size_t need = sanitize_len(s, n, SANITIZE_JSON);
	json_t *j;

	if (need + 1 > sizeof(small)) {
		tmp = malloc(need + 1);
		if (!tmp)
			return NULL;
	}
	sanitize(tmp, need + 1, s, n, SANITIZE_JSON, NULL);
	j = json_stringn(tmp, need);
	if (tmp != small) {
		OPENSSL_cleanse(tmp, need);
		free(tmp);
	}
	return j;
}

static json_t *hex_string(const uint8_t *bytes, size_t n)
{
	char small[258], *tmp = small;
	json_t *j;

	if (2 * n + 1 > sizeof(small)) {
		tmp = malloc(2 * n + 1);
		if (!tmp)
			return NULL;
	}
	audit_hex(bytes, n, tmp);
	j = json_stringn(tmp, 2 * n);
	if (tmp != small)
		free(tmp);
	return j;
}

struct field {
	enum field_kind kind;
	const char *key;
	const uint8_t *payload;
	uint32_t len;
};

static void field_at(const struct audit_rec *r, size_t *off, struct field *f)
{
	uint8_t k;

	memcpy(&k, r->buf + *off, 1);
	memcpy(&f->key, r->buf + *off + 1, sizeof(f->key));
	memcpy(&f->len, r->buf + *off + 1 + sizeof(f->key), sizeof(f->len));
	f->kind = k;
	f->payload = r->buf + *off + FIELD_HEADER;
	*off += FIELD_HEADER + f->len;
}

/* Fill container (an object or an array) from the fields at *off up to the matching END
 * (or the end of the record at the top). 0 or -ENOMEM. */
static int fill_json(const struct audit_rec *r, size_t *off, json_t *container)
{
	while (*off < r->len) {
		struct field f;
		json_t *v = NULL;
		uint64_t u;
		int64_t i;

		field_at(r, off, &f);
		switch (f.kind) {
		case AF_END:
			return 0;
		case AF_STR:
			v = sanitized_string((const char *)f.payload, f.len);
			break;
		case AF_U64:
			memcpy(&u, f.payload, sizeof(u));
			/* JSON integers here are signed 64-bit; nothing we count gets near. */
			v = json_integer(u > INT64_MAX ? INT64_MAX : (json_int_t)u);
			break;
		case AF_I64:
			memcpy(&i, f.payload, sizeof(i));
			v = json_integer(i);
			break;
		case AF_BOOL:
			v = json_boolean(f.payload[0]);
			break;
		case AF_NULL:
			v = json_null();
			break;
		case AF_HEX:
			v = hex_string(f.payload, f.len);
			break;
		case AF_OBJ:
		case AF_ARR:
			v = f.kind == AF_OBJ ? json_object() : json_array();
			if (v && fill_json(r, off, v)) {
				json_decref(v);
				return -ENOMEM;
			}
			break;
		}
		if (!v)
			return -ENOMEM;
		if (json_is_array(container) ? json_array_append_new(container, v) :
					       json_object_set_new(container, f.key, v))
			return -ENOMEM;
	}
	return 0;
}

const char *audit_format_ts(uint64_t wall_ns, char *buf, size_t n)
{
	time_t secs = (time_t)(wall_ns / 1000000000ULL);
	unsigned usec = (unsigned)(wall_ns % 1000000000ULL / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, usec);
	return buf;
}

json_t *audit_rec_to_json(const struct audit_rec *r, uint64_t seq,
			  const uint8_t prev[AUDIT_HASH_LEN])
{
	char ts[AUDIT_TS_LEN], prev_hex[AUDIT_HASH_HEXLEN + 1];
	json_t *obj;
	size_t off = 0;

	if (audit_rec_failed(r))
		return NULL;
	obj = json_object();
	if (!obj)
		return NULL;
	audit_hex(prev, AUDIT_HASH_LEN, prev_hex);
	if (fill_json(r, &off, obj) ||
	    json_object_set_new(obj, "seq", json_integer((json_int_t)seq)) ||
	    json_object_set_new(obj, "prev", json_string(prev_hex)) ||
	    json_object_set_new(obj, "ts", json_string(audit_format_ts(r->wall_ns, ts, sizeof(ts)))) ||
	    json_object_set_new(obj, "event", json_string(audit_event_name(r->ev)))) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

/* ---- the canonical line, encoded directly (the writer) ------------------------------ */

/*
 * The writer's encoder writes the line audit_canonical(audit_rec_to_json(...)) would, byte
 * for byte, without building jansson's tree (an allocation per field, a hash table per
 * object, a sort and a copy per line): members sorted bytewise by key at every level with
 * the last of equal keys kept (json_object_set_new replaces), and jansson's compact string
 * escaping. tests/unit/test_audit_record.c holds the two to the same bytes.
 */

bool audit_out_room(struct audit_out *o, size_t n)
{
	size_t cap = o->cap ? o->cap : 4096;
	char *nb;

	if (o->len + n < o->len)
		return false;
	if (o->len + n <= o->cap)
		return true;
	while (cap < o->len + n) {
		if (cap > SIZE_MAX / 2)
			return false;
		cap *= 2;
	}
	nb = realloc(o->buf, cap);
	if (!nb)
		return false;
	o->buf = nb;
	o->cap = cap;
	return true;
}

static bool out_put(struct audit_out *o, const char *s, size_t n)
{
	if (!audit_out_room(o, n))
		return false;
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	return true;
}

/* s as a JSON string, escaped as jansson's dump does without JSON_ENSURE_ASCII or
 * JSON_ESCAPE_SLASH: '"' and '\' get a backslash, controls their short or \u00XX form. */
static bool out_json_escaped(struct audit_out *o, const char *s, size_t n)
{
	static const char upper_hex[] = "0123456789ABCDEF";
	size_t need = n + 2;
	char *w;

	/* Exactly what it takes (a \u00XX is six bytes), so a long text reserves no more. */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' ||
		    c == '\t')
			need++;
		else if (c < 0x20)
			need += 5;
	}
	if (need < n || !audit_out_room(o, need))
		return false;
	w = o->buf + o->len;
	*w++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c != '"' && c != '\\') {
			*w++ = (char)c;
			continue;
		}
		*w++ = '\\';
		switch (c) {
		case '"':
		case '\\':
			*w++ = (char)c;
			break;
		case '\b':
			*w++ = 'b';
			break;
		case '\f':
			*w++ = 'f';
			break;
		case '\n':
			*w++ = 'n';
			break;
		case '\r':
			*w++ = 'r';
			break;
		case '\t':
			*w++ = 't';
			break;
		default:
			memcpy(w, "u00", 3);
			w[3] = upper_hex[c >> 4];
			w[4] = upper_hex[c & 15];
			w += 5;
		}
	}
	*w++ = '"';
	o->len = (size_t)(w - o->buf);
	return true;
}

/* A peer's bytes as a JSON string: through sanitize(SANITIZE_JSON) first, always. */
static bool out_peer_string(struct audit_out *o, const char *s, size_t n)
{
	char small[512], *tmp = small;
	size_t need;
	bool ok;

	if (sanitize_is_clean(s, n, SANITIZE_JSON))
		return out_json_escaped(o, s, n);
	need = sanitize_len(s, n, SANITIZE_JSON);
	if (need + 1 > sizeof(small)) {
		tmp = malloc(need + 1);
		if (!tmp)
			return false;
	}
	sanitize(tmp, need + 1, s, n, SANITIZE_JSON, NULL);
	ok = out_json_escaped(o, tmp, need);
	OPENSSL_cleanse(tmp, need);
	if (tmp != small)
		free(tmp);
	return ok;
}

static bool out_i64(struct audit_out *o, int64_t v)
{
	char digits[24], *p = digits + sizeof(digits);
	uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

	do {
		*--p = (char)('0' + mag % 10);
		mag /= 10;
	} while (mag);
	if (v < 0)
		*--p = '-';
	return out_put(o, p, (size_t)(digits + sizeof(digits) - p));
}

static bool out_hex(struct audit_out *o, const uint8_t *bytes, size_t n)
{
	char *w;

	if (n > (SIZE_MAX - 3) / 2 || !audit_out_room(o, 2 * n + 3))
		return false;
	w = o->buf + o->len;
	*w = '"';
	audit_hex(bytes, n, w + 1); /* writes a NUL the quote replaces */
	w[2 * n + 1] = '"';
	o->len += 2 * n + 2;
	return true;
}

/* The chain fields the writer adds to the top level. */
struct chain_fields {
	uint64_t seq;
	const char *prev_hex, *ts, *event;
};

enum chain_member { CHAIN_NONE = 0, CHAIN_SEQ, CHAIN_PREV, CHAIN_TS, CHAIN_EVENT };

struct member {
	const char *key;
	size_t off;         /* of its field in the record */
	unsigned order;     /* insertion order: the later of equal keys wins */
	enum chain_member chain;
};

static int member_cmp(const void *a, const void *b)
{
	const struct member *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Past the container whose header ended at *off: up to and over its END. */
static void skip_container(const struct audit_rec *r, size_t *off)
{
	unsigned depth = 1;

	while (*off < r->len && depth) {
		struct field f;

		field_at(r, off, &f);
		if (f.kind == AF_OBJ || f.kind == AF_ARR)
			depth++;
		else if (f.kind == AF_END)
			depth--;
	}
}

static int encode_container(const struct audit_rec *r, size_t *off, bool object,
			    const struct chain_fields *chain, struct audit_out *o);

/* The value of the field at *off; *off moves past it (and past its contents). */
static int encode_value(const struct audit_rec *r, size_t *off, struct audit_out *o)
{
	struct field f;
	uint64_t u;
	int64_t i;
	bool ok;

	field_at(r, off, &f);
	switch (f.kind) {
	case AF_STR:
		ok = out_peer_string(o, (const char *)f.payload, f.len);
		break;
	case AF_U64:
		memcpy(&u, f.payload, sizeof(u));
		ok = out_i64(o, u > INT64_MAX ? INT64_MAX : (int64_t)u); /* as audit_rec_to_json */
		break;
	case AF_I64:
		memcpy(&i, f.payload, sizeof(i));
		ok = out_i64(o, i);
		break;
	case AF_BOOL:
		ok = f.payload[0] ? out_put(o, "true", 4) : out_put(o, "false", 5);
		break;
	case AF_NULL:
		ok = out_put(o, "null", 4);
		break;
	case AF_HEX:
		ok = out_hex(o, f.payload, f.len);
		break;
	case AF_OBJ:
	case AF_ARR:
		return encode_container(r, off, f.kind == AF_OBJ, NULL, o);
	default:
		return -EINVAL; /* an END where a value belongs: audit_rec_failed() prevents it */
	}
	return ok ? 0 : -ENOMEM;
}

static int encode_chain_value(const struct chain_fields *c, enum chain_member m,
			      struct audit_out *o)
{
	bool ok;

	switch (m) {
	case CHAIN_SEQ:
		ok = out_i64(o, c->seq > INT64_MAX ? INT64_MAX : (int64_t)c->seq);
		break;
	case CHAIN_PREV:
		ok = out_json_escaped(o, c->prev_hex, strlen(c->prev_hex));
		break;
	case CHAIN_TS:
		ok = out_json_escaped(o, c->ts, strlen(c->ts));
		break;
	default:
		ok = out_json_escaped(o, c->event, strlen(c->event));
		break;
	}
	return ok ? 0 : -ENOMEM;
}

#define MEMBERS_ON_STACK 48

/* The members of an object starting at *off, sorted, each key once. */
static int encode_object(const struct audit_rec *r, size_t *off, const struct chain_fields *chain,
			 struct audit_out *o)
{
	static const char *const chain_keys[] = {
		[CHAIN_SEQ] = "seq", [CHAIN_PREV] = "prev", [CHAIN_TS] = "ts",
		[CHAIN_EVENT] = "event",
	};
	struct member stack[MEMBERS_ON_STACK], *m = stack;
	size_t n = 0, cap = MEMBERS_ON_STACK, scan = *off;
	int rc = 0;

	/* Collect the members (skipping nested contents); *off ends past the END. */
	while (scan < r->len) {
		size_t at = scan;
		struct field f;

		field_at(r, &scan, &f);
		if (f.kind == AF_END)
			break;
		if (f.kind == AF_OBJ || f.kind == AF_ARR)
			skip_container(r, &scan);
		if (!f.key) {
			rc = -EINVAL; /* jansson refuses a member without a key */
			goto out;
		}
		if (n + CHAIN_EVENT == cap) {
			struct member *nm = malloc(2 * cap * sizeof(*nm));

			if (!nm) {
				rc = -ENOMEM;
				goto out;
			}
			memcpy(nm, m, n * sizeof(*m));
			if (m != stack)
				free(m);
			m = nm;
			cap *= 2;
		}
		m[n] = (struct member){.key = f.key, .off = at, .order = (unsigned)n};
		n++;
	}
	*off = scan;
	/* Set after the record's own fields, as audit_rec_to_json does: they win. */
	for (int c = CHAIN_SEQ; chain && c <= CHAIN_EVENT; c++, n++)
		m[n] = (struct member){.key = chain_keys[c], .order = (unsigned)n, .chain = c};
	qsort(m, n, sizeof(*m), member_cmp);
	if (!out_put(o, "{", 1)) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t k = 0, first = 1; k < n && !rc; k++) {
		size_t at = m[k].off;

		if (k + 1 < n && strcmp(m[k].key, m[k + 1].key) == 0)
			continue; /* replaced by a later member of the same key */
		if ((!first && !out_put(o, ",", 1)) ||
		    !out_json_escaped(o, m[k].key, strlen(m[k].key)) || !out_put(o, ":", 1)) {
			rc = -ENOMEM;
			break;
		}
		first = 0;
		rc = m[k].chain ? encode_chain_value(chain, m[k].chain, o) : encode_value(r, &at, o);
	}
	if (!rc && !out_put(o, "}", 1))
		rc = -ENOMEM;
out:
	if (m != stack)
		free(m);
	return rc;
}

static int encode_array(const struct audit_rec *r, size_t *off, struct audit_out *o)
{
	bool first = true;

	if (!out_put(o, "[", 1))
		return -ENOMEM;
	while (*off < r->len) {
		size_t at = *off;
		struct field f;
		int rc;

		field_at(r, &at, &f);
		if (f.kind == AF_END) {
			*off = at;
			break;
		}
		if (!first && !out_put(o, ",", 1))
			return -ENOMEM;
		first = false;
		rc = encode_value(r, off, o);
		if (rc)
			return rc;
	}
	return out_put(o, "]", 1) ? 0 : -ENOMEM;
}

static int encode_container(const struct audit_rec *r, size_t *off, bool object,
			    const struct chain_fields *chain, struct audit_out *o)
{
	return object ? encode_object(r, off, chain, o) : encode_array(r, off, o);
}

int audit_rec_encode(const struct audit_rec *r, uint64_t seq, const uint8_t prev[AUDIT_HASH_LEN],
		     struct audit_out *out)
{
	char ts[AUDIT_TS_LEN], prev_hex[AUDIT_HASH_HEXLEN + 1];
	struct chain_fields chain = {.seq = seq, .prev_hex = prev_hex, .ts = ts,
				     .event = audit_event_name(r->ev)};
	size_t start = out->len, off = 0;
	int rc;

	if (audit_rec_failed(r))
		return -EINVAL;
	audit_hex(prev, AUDIT_HASH_LEN, prev_hex);
	audit_format_ts(r->wall_ns, ts, sizeof(ts));
	rc = encode_container(r, &off, true, &chain, out);
	if (rc)
		out->len = start;
	return rc;
}

#define CANONICAL_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)

char *audit_canonical(const json_t *obj, size_t *len)
{
	char *s = json_dumps(obj, CANONICAL_FLAGS);

	if (s && len)
		*len = strlen(s);
	return s;
}

void audit_hash(const char *line, size_t len, uint8_t out[AUDIT_HASH_LEN])
{
	SHA256((const unsigned char *)line, len, out);
}

/* ---- parsing (the verifier) --------------------------------------------------------- */

/* why = what, and ": " detail when there is one (escaped: it may quote the line). */
static int line_fail(char *why, size_t n, const char *what, const char *detail)
{
	char safe[160];

	if (!detail) {
		snprintf(why, n, "%s", what);
		return -EINVAL;
	}
	sanitize_str(safe, sizeof(safe), detail, SANITIZE_TERMINAL, NULL);
	snprintf(why, n, "%s: %s", what, safe);
	return -EINVAL;
}

int audit_line_parse(const char *line, size_t len, struct audit_line *out, char *why,
		     size_t whylen)
{
	json_error_t jerr;
	json_t *obj, *seq, *prev, *ts, *ev;
	char *canon;
	size_t clen;
	bool same;

	memset(out, 0, sizeof(*out));
	if (len > AUDIT_LINE_MAX)
		return line_fail(why, whylen, "longer than any record (over 10 MiB)", NULL);
	if (len == 0)
		return line_fail(why, whylen, "empty line", NULL);
	obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj)
		return line_fail(why, whylen, "not a JSON record", jerr.text);
	if (!json_is_object(obj)) {
		json_decref(obj);
		return line_fail(why, whylen, "not a JSON object", NULL);
	}
	seq = json_object_get(obj, "seq");
	prev = json_object_get(obj, "prev");
	ts = json_object_get(obj, "ts");
	ev = json_object_get(obj, "event");
	if (!json_is_integer(seq) || json_integer_value(seq) < 1 || !json_is_string(prev) ||
	    !json_is_string(ts) || !json_is_string(ev)) {
		json_decref(obj);
		return line_fail(why, whylen, "missing or malformed seq, prev, ts or event", NULL);
	}
	if (json_string_length(prev) != AUDIT_HASH_HEXLEN ||
	    audit_unhex(json_string_value(prev), out->prev, AUDIT_HASH_LEN)) {
		json_decref(obj);
		return line_fail(why, whylen, "prev is not 64 lower-case hex digits", NULL);
	}
	canon = audit_canonical(obj, &clen);
	if (!canon) {
		json_decref(obj);
		return line_fail(why, whylen, "out of memory", NULL);
	}
	same = clen == len && memcmp(canon, line, len) == 0;
	free(canon);
	if (!same) {
		json_decref(obj);
		return line_fail(why, whylen, "not in canonical form (re-encoded or edited)", NULL);
	}
	out->obj = obj;
	out->seq = (uint64_t)json_integer_value(seq);
	out->event_name = json_string_value(ev);
	out->event = audit_event_parse(out->event_name);
	out->ts = json_string_value(ts);
	return 0;
}

void audit_line_release(struct audit_line *l)
{
	json_decref(l->obj);
	l->obj = NULL;
}
