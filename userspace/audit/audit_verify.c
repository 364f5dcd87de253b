/*
 * audit_verify: offline verification of an audit trail (see audit_verify.h).
 *
 * Two phases. Parsing reads every line of every file (files in order of their first
 * record) into a compact entry: its place, whether it is a record, its seq, prev and hash,
 * and what its event needs checked later; signatures and torn-byte digests are checked
 * here, where the bytes are. The walk then goes through the entries in order and applies
 * the chain rules, so that every problem is named relative to the last good record.
 */
#include "audit/audit_verify.h"
#include "audit/audit_record.h"
#include "audit/audit_sign.h"
#include "base/sanitize.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define REPLAY_RING 65536   /* how far back a replayed copy is recognised as such */
#define REORDER_LOOKAHEAD 4096
#define MAX_TRAIL_KEYS 64   /* distinct keys a trail may name (one per daemon_start key) */

enum sig_state { SIG_NONE = 0, SIG_OK, SIG_BAD, SIG_UNKNOWN_KEY };

struct entry {
	uint32_t file;  /* index into the sorted files */
	uint32_t line;  /* 1-based */
	uint64_t off, len;
	bool valid;     /* a record in canonical form */
	bool newline;   /* ended by '\n' */
	bool in_torn;   /* inside bytes a torn_record marker describes */
	int8_t event;
	uint8_t sig;    /* enum sig_state, checkpoints */
	bool stop;      /* a checkpoint with reason "stop" */
	bool torn_ok;   /* a torn_record whose offset, length and digest match the file */
	uint32_t every; /* checkpoint: records allowed before the next */
	uint64_t seq;
	uint8_t prev[AUDIT_HASH_LEN];
	uint8_t hash[AUDIT_HASH_LEN];
	uint64_t first_seq, recovered_from, recovered_to; /* checkpoint */
	uint64_t torn_off, torn_len;                      /* torn_record */
	uint64_t previous_seq;                            /* file_start */
	char *previous_file;                              /* file_start, owned */
	char *why;                                        /* not a record: why, owned */
	char key_id[AUDIT_KEY_ID_HEXLEN + 1];             /* checkpoint */
};

struct vkey {
	char id[AUDIT_KEY_ID_HEXLEN + 1];
	EVP_PKEY *key;
	bool owned;
};

struct verifier {
	const struct audit_verify_file *files; /* sorted */
	unsigned nfiles;
	const struct audit_verify_opts *o;
	struct audit_verify_result *res;
	struct entry *e;
	size_t n, cap;
	struct vkey keys[MAX_TRAIL_KEYS];
	unsigned nkeys;
	bool trusted; /* keys came from the assessor */
	bool oom;
};

static const char *const problem_names[AUDIT_PROBLEM_COUNT] = {
	[AUDIT_PROBLEM_NONE] = "none",
	[AUDIT_PROBLEM_MODIFIED] = "modified",
	[AUDIT_PROBLEM_DELETED] = "deleted",
	[AUDIT_PROBLEM_REORDERED] = "reordered",
	[AUDIT_PROBLEM_REPLAYED] = "replayed",
	[AUDIT_PROBLEM_TRUNCATED] = "truncated",
	[AUDIT_PROBLEM_MISSING_FILE] = "missing file",
	[AUDIT_PROBLEM_SIGNATURE] = "bad signature",
	[AUDIT_PROBLEM_UNTRUSTED_KEY] = "untrusted key",
};

const char *audit_problem_to_str(enum audit_problem p)
{
	return (unsigned)p < AUDIT_PROBLEM_COUNT ? problem_names[p] : "unknown";
}

/* A file name made safe for the report. */
static const char *safe_name(const char *name, char *buf, size_t n)
{
	sanitize_str(buf, n, name, SANITIZE_TERMINAL, NULL);
	return buf;
}

static void note(struct verifier *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct verifier *v, const char *fmt, ...)
{
	va_list ap;

	if (!v->o->report)
		return;
	fputs("note: ", v->o->report);
	va_start(ap, fmt);
	vfprintf(v->o->report, fmt, ap);
	va_end(ap);
	fputc('\n', v->o->report);
}

/* Record the first problem (later ones are not reported: the first is what matters). */
static void problem(struct verifier *v, enum audit_problem p, uint64_t seq, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void problem(struct verifier *v, enum audit_problem p, uint64_t seq, const char *fmt, ...)
{
	va_list ap;

	if (v->res->problem != AUDIT_PROBLEM_NONE)
		return;
	v->res->problem = p;
	v->res->problem_seq = seq;
	va_start(ap, fmt);
	vsnprintf(v->res->message, sizeof(v->res->message), fmt, ap);
	va_end(ap);
}

/* "audit.log line 12" for an entry. */
static const char *where(const struct verifier *v, const struct entry *e, char *buf, size_t n)
{
	char name[256];

	snprintf(buf, n, "%s line %u", safe_name(v->files[e->file].name, name, sizeof(name)),
		 e->line);
	return buf;
}

/* ---- keys ------------------------------------------------------------------------- */

static EVP_PKEY *key_by_id(const struct verifier *v, const char *id)
{
	for (unsigned i = 0; i < v->nkeys; i++)
		if (strcmp(v->keys[i].id, id) == 0)
			return v->keys[i].key;
	return NULL;
}

static void add_key(struct verifier *v, EVP_PKEY *key, bool owned)
{
	uint8_t pub[AUDIT_PUBKEY_LEN];
	char id[AUDIT_KEY_ID_HEXLEN + 1];

	if (audit_key_raw_public(key, pub) || v->nkeys >= MAX_TRAIL_KEYS) {
		if (owned)
			EVP_PKEY_free(key);
		return;
	}
	audit_key_id(pub, id);
	if (key_by_id(v, id)) {
		if (owned)
			EVP_PKEY_free(key);
		return;
	}
	snprintf(v->keys[v->nkeys].id, sizeof(v->keys[v->nkeys].id), "%s", id);
	v->keys[v->nkeys].key = key;
	v->keys[v->nkeys].owned = owned;
	v->nkeys++;
}

/* ---- parsing ----------------------------------------------------------------------- */

static struct entry *new_entry(struct verifier *v)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 1024;
		struct entry *ne = realloc(v->e, cap * sizeof(*ne));

		if (!ne) {
			v->oom = true;
			return NULL;
		}
		v->e = ne;
		v->cap = cap;
	}
	memset(&v->e[v->n], 0, sizeof(v->e[0]));
	return &v->e[v->n++];
}

static uint64_t json_u64(json_t *obj, const char *key)
{
	json_t *j = json_object_get(obj, key);

	return json_is_integer(j) && json_integer_value(j) > 0 ? (uint64_t)json_integer_value(j) : 0;
}

static void parse_checkpoint(struct verifier *v, struct entry *e, json_t *obj)
{
	const char *sig_hex = json_string_value(json_object_get(obj, "sig"));
	const char *id = json_string_value(json_object_get(obj, "key_id"));
	const char *reason = json_string_value(json_object_get(obj, "reason"));
	uint8_t sig[AUDIT_SIG_LEN];
	EVP_PKEY *key;
	char *unsigned_line;
	size_t len;

	e->every = (uint32_t)json_u64(obj, "every_records");
	e->first_seq = json_u64(obj, "first_seq");
	e->recovered_from = json_u64(obj, "recovered_from_seq");
	e->recovered_to = json_u64(obj, "recovered_to_seq");
	e->stop = reason && strcmp(reason, "stop") == 0;
	snprintf(e->key_id, sizeof(e->key_id), "%s", id ? id : "");
	e->sig = SIG_BAD;
	if (!sig_hex || !id || audit_unhex(sig_hex, sig, sizeof(sig)))
		return;
	key = key_by_id(v, id);
	if (!key) {
		e->sig = SIG_UNKNOWN_KEY;
		return;
	}
	/* The signature is over the canonical form without "sig". */
	json_object_del(obj, "sig");
	unsigned_line = audit_canonical(obj, &len);
	if (!unsigned_line) {
		v->oom = true;
		return;
	}
	e->sig = audit_sig_valid(key, unsigned_line, len, sig) ? SIG_OK : SIG_BAD;
	free(unsigned_line);
}

/* A torn_record: do its offset, length and digest describe bytes of this file that end
 * right where the marker's line begins (after the newline added to end them)? */
static void parse_torn(const struct audit_verify_file *f, struct entry *e, json_t *obj)
{
	const char *hex = json_string_value(json_object_get(obj, "sha256"));
	uint8_t want[AUDIT_HASH_LEN], got[AUDIT_HASH_LEN];
	uint64_t end;

	e->torn_off = json_u64(obj, "offset");
	e->torn_len = json_u64(obj, "length");
	end = e->torn_off + e->torn_len;
	if (!hex || audit_unhex(hex, want, sizeof(want)) || e->torn_len == 0 || end < e->torn_off ||
	    end > e->off)
		return;
	/* The marker's line starts right after the torn bytes, or after the one newline the
	 * writer added to end them. */
	if (!(e->off == end && f->data[end - 1] == '\n') &&
	    !(e->off == end + 1 && f->data[end] == '\n' && f->data[end - 1] != '\n'))
		return;
	SHA256((const unsigned char *)f->data + e->torn_off, (size_t)e->torn_len, got);
	e->torn_ok = memcmp(want, got, sizeof(got)) == 0;
}

static void parse_daemon_start(struct verifier *v, json_t *obj)
{
	const char *hex = json_string_value(json_object_get(obj, "public_key"));
	uint8_t pub[AUDIT_PUBKEY_LEN];
	EVP_PKEY *key;

	/* Only without trusted keys: then the trail's own key is all there is to check. */
	if (v->trusted || !hex || audit_unhex(hex, pub, sizeof(pub)))
		return;
	key = audit_key_from_raw(pub);
	if (key)
		add_key(v, key, true);
}

static void parse_line(struct verifier *v, unsigned fi, const char *line, size_t len,
		       uint64_t off, uint32_t lineno, bool newline)
{
	const struct audit_verify_file *f = &v->files[fi];
	struct entry *e = new_entry(v);
	struct audit_line l;
	char why[256];

	if (!e)
		return;
	e->file = fi;
	e->line = lineno;
	e->off = off;
	e->len = len;
	e->newline = newline;
	e->event = -1;
	if (audit_line_parse(line, len, &l, why, sizeof(why))) {
		e->why = strdup(why);
		return;
	}
	e->valid = true;
	e->seq = l.seq;
	memcpy(e->prev, l.prev, sizeof(e->prev));
	audit_hash(line, len, e->hash);
	e->event = (int8_t)l.event;
	switch (l.event) {
	case AUDIT_EV_CHECKPOINT:
		parse_checkpoint(v, e, l.obj);
		break;
	case AUDIT_EV_TORN:
		parse_torn(f, e, l.obj);
		break;
	case AUDIT_EV_DAEMON_START:
		parse_daemon_start(v, l.obj);
		break;
	case AUDIT_EV_FILE_START: {
		const char *pf = json_string_value(json_object_get(l.obj, "previous_file"));

		e->previous_seq = json_u64(l.obj, "previous_seq");
		e->previous_file = pf ? strdup(pf) : NULL;
		break;
	}
	default:
		break;
	}
	audit_line_release(&l);
}

static void parse_file(struct verifier *v, unsigned fi)
{
	const struct audit_verify_file *f = &v->files[fi];
	size_t first_entry = v->n;
	uint64_t off = 0;
	uint32_t lineno = 0;

	while (off < f->len && !v->oom) {
		const char *nl = memchr(f->data + off, '\n', f->len - off);
		size_t len = nl ? (size_t)(nl - (f->data + off)) : f->len - off;

		parse_line(v, fi, f->data + off, len, off, ++lineno, nl != NULL);
		off += len + (nl ? 1 : 0);
	}
	/* Mark the lines each torn_record describes. */
	for (size_t i = first_entry; i < v->n; i++) {
		const struct entry *m = &v->e[i];

		if (!m->valid || m->event != AUDIT_EV_TORN || !m->torn_ok)
			continue;
		for (size_t j = first_entry; j < i; j++)
			if (v->e[j].off >= m->torn_off &&
			    v->e[j].off + v->e[j].len <= m->torn_off + m->torn_len)
				v->e[j].in_torn = true;
	}
}

/* The seq of a file's first record, for ordering; UINT64_MAX when it has none. */
static uint64_t first_seq_of(const struct audit_verify_file *f)
{
	uint64_t off = 0;

	while (off < f->len) {
		const char *nl = memchr(f->data + off, '\n', f->len - off);
		size_t len = nl ? (size_t)(nl - (f->data + off)) : f->len - off;
		struct audit_line l;
		char why[64];

		if (nl && audit_line_parse(f->data + off, len, &l, why, sizeof(why)) == 0) {
			uint64_t s = l.seq;

			audit_line_release(&l);
			return s;
		}
		off += len + (nl ? 1 : 0);
	}
	return UINT64_MAX;
}

/* ---- the walk ---------------------------------------------------------------------- */

struct walk {
	bool have_prev;
	uint64_t prev_seq;
	uint8_t prev_hash[AUDIT_HASH_LEN];
	size_t prev_idx;          /* entry of the last record */
	bool have_cp;
	uint64_t cp_seq;          /* last checkpoint that verified */
	uint32_t cp_every;
	uint64_t since_cp;        /* records after it */
	struct {
		uint64_t seq;
		uint8_t hash[AUDIT_HASH_LEN];
		size_t idx;
	} *ring;
	size_t ring_size; /* a power of two, at most REPLAY_RING */
};

static const struct entry *next_record(const struct verifier *v, size_t i)
{
	for (size_t j = i + 1; j < v->n; j++)
		if (v->e[j].valid && !v->e[j].in_torn)
			return &v->e[j];
	return NULL;
}

static bool is_last_file(const struct verifier *v, const struct entry *e)
{
	return e->file + 1 == v->nfiles;
}

static bool is_zero(const uint8_t *h)
{
	for (size_t i = 0; i < AUDIT_HASH_LEN; i++)
		if (h[i])
			return false;
	return true;
}

/* Lines that are not records, and not described by a torn_record. */
static void walk_not_record(struct verifier *v, struct walk *w, size_t i)
{
	const struct entry *e = &v->e[i];
	/* Cut short: the file's last line. Anything else is a record someone changed. */
	bool at_end = i + 1 == v->n || v->e[i + 1].file != e->file;
	char at[320];

	if (at_end) {
		problem(v, AUDIT_PROBLEM_TRUNCATED, w->prev_seq + 1,
			"truncated: %s ends in the middle of a record after seq %llu (seq %llu: %s); %s",
			safe_name(v->files[e->file].name, at, sizeof(at)),
			(unsigned long long)w->prev_seq, (unsigned long long)(w->prev_seq + 1),
			e->why ? e->why : "cut short",
			is_last_file(v, e) ?
				"pgwardend crashed while writing it, or the file was cut; a "
				"restarted pgwardend marks such bytes (torn_record)" :
				"the file was cut");
		return;
	}
	problem(v, AUDIT_PROBLEM_MODIFIED, w->prev_seq + 1,
		"modified: the record after seq %llu (%s), which should be seq %llu, is not a valid "
		"record: %s",
		(unsigned long long)w->prev_seq, where(v, e, at, sizeof(at)),
		(unsigned long long)(w->prev_seq + 1), e->why ? e->why : "unreadable");
}

/* A record whose seq is not the next one. */
static void walk_out_of_sequence(struct verifier *v, struct walk *w, size_t i)
{
	const struct entry *e = &v->e[i];
	uint64_t want = w->prev_seq + 1;
	char at[320], at2[320], name[256];

	if (e->seq > want) {
		for (size_t j = i + 1; j < v->n && j < i + REORDER_LOOKAHEAD; j++) {
			if (v->e[j].valid && !v->e[j].in_torn && v->e[j].seq == want) {
				problem(v, AUDIT_PROBLEM_REORDERED, want,
					"reordered: seq %llu appears after seq %llu (%s, and %s)",
					(unsigned long long)want, (unsigned long long)e->seq,
					where(v, &v->e[j], at, sizeof(at)), where(v, e, at2, sizeof(at2)));
				return;
			}
		}
		if (memcmp(e->prev, w->prev_hash, AUDIT_HASH_LEN) == 0) {
			problem(v, AUDIT_PROBLEM_MODIFIED, want,
				"modified: the record after seq %llu (%s) chains to it but says seq %llu",
				(unsigned long long)w->prev_seq, where(v, e, at, sizeof(at)),
				(unsigned long long)e->seq);
			return;
		}
		if (e->file != v->e[w->prev_idx].file && e->event == AUDIT_EV_FILE_START &&
		    e->previous_file) {
			const char *prev_given = v->files[v->e[w->prev_idx].file].name;
			const char *slash = strrchr(prev_given, '/');

			if (strcmp(slash ? slash + 1 : prev_given, e->previous_file) == 0) {
				problem(v, AUDIT_PROBLEM_TRUNCATED, want,
					"truncated: %s ends at seq %llu, but the next file says it ended at "
					"seq %llu: records %llu..%llu were cut off",
					safe_name(prev_given, name, sizeof(name)),
					(unsigned long long)w->prev_seq,
					(unsigned long long)e->previous_seq, (unsigned long long)want,
					(unsigned long long)(e->seq - 1));
				return;
			}
			problem(v, AUDIT_PROBLEM_MISSING_FILE, want,
				"missing file: records %llu..%llu are not here; %s (named by the "
				"file_start at seq %llu) was not given or was removed",
				(unsigned long long)want, (unsigned long long)(e->seq - 1),
				safe_name(e->previous_file, name, sizeof(name)),
				(unsigned long long)e->seq);
			return;
		}
		problem(v, AUDIT_PROBLEM_DELETED, want,
			"deleted: records %llu..%llu are missing before %s (seq %llu)",
			(unsigned long long)want, (unsigned long long)(e->seq - 1),
			where(v, e, at, sizeof(at)), (unsigned long long)e->seq);
		return;
	}
	/* At or below the last seq: a copy of an earlier record, or a different one. */
	if (w->ring[e->seq & (w->ring_size - 1)].seq == e->seq &&
	    memcmp(w->ring[e->seq & (w->ring_size - 1)].hash, e->hash, AUDIT_HASH_LEN) == 0) {
		problem(v, AUDIT_PROBLEM_REPLAYED, e->seq,
			"replayed: seq %llu appears again at %s (a copy of %s)",
			(unsigned long long)e->seq, where(v, e, at, sizeof(at)),
			where(v, &v->e[w->ring[e->seq & (w->ring_size - 1)].idx], at2, sizeof(at2)));
		return;
	}
	problem(v, AUDIT_PROBLEM_REORDERED, e->seq,
		"reordered: seq %llu appears after seq %llu (%s)", (unsigned long long)e->seq,
		(unsigned long long)w->prev_seq, where(v, e, at, sizeof(at)));
}

/* The next record in sequence, whose prev does not match: which one changed? */
static void walk_bad_prev(struct verifier *v, struct walk *w, size_t i)
{
	const struct entry *e = &v->e[i], *nx = next_record(v, i);
	char at[320];

	/* If e agrees with its own successor, e is intact and the one before it changed. */
	if (nx && nx->seq == e->seq + 1 && memcmp(nx->prev, e->hash, AUDIT_HASH_LEN) == 0) {
		problem(v, AUDIT_PROBLEM_MODIFIED, w->prev_seq,
			"modified: seq %llu (%s) was changed: its hash no longer matches the prev of "
			"seq %llu",
			(unsigned long long)w->prev_seq, where(v, &v->e[w->prev_idx], at, sizeof(at)),
			(unsigned long long)e->seq);
		return;
	}
	problem(v, AUDIT_PROBLEM_MODIFIED, e->seq,
		"modified: seq %llu (%s) was changed: its prev does not match seq %llu",
		(unsigned long long)e->seq, where(v, e, at, sizeof(at)),
		(unsigned long long)w->prev_seq);
}

static void walk_checkpoint(struct verifier *v, struct walk *w, const struct entry *e)
{
	uint64_t from = w->have_cp ? w->cp_seq + 1 : v->res->first_seq;
	char at[320];

	if (e->sig == SIG_UNKNOWN_KEY) {
		problem(v, AUDIT_PROBLEM_UNTRUSTED_KEY, e->seq,
			"untrusted key: checkpoint seq %llu (%s) is signed by key %s, %s",
			(unsigned long long)e->seq, where(v, e, at, sizeof(at)), e->key_id,
			v->trusted ? "which is not among the keys given (--public-key)" :
				     "which no daemon_start record names");
		return;
	}
	if (e->sig != SIG_OK) {
		problem(v, AUDIT_PROBLEM_SIGNATURE, from,
			"bad signature: checkpoint seq %llu (%s) does not verify: records %llu..%llu "
			"were changed and the chain recomputed, or the checkpoint was; the first "
			"record that may differ is seq %llu",
			(unsigned long long)e->seq, where(v, e, at, sizeof(at)),
			(unsigned long long)from, (unsigned long long)(e->seq - 1),
			(unsigned long long)from);
		return;
	}
	if (w->have_cp && e->first_seq != w->cp_seq + 1) {
		problem(v, AUDIT_PROBLEM_DELETED, w->cp_seq + 1,
			"deleted: checkpoint seq %llu follows a checkpoint at seq %llu, but the last "
			"one here is seq %llu",
			(unsigned long long)e->seq, (unsigned long long)(e->first_seq - 1),
			(unsigned long long)w->cp_seq);
		return;
	}
	if (e->recovered_from)
		note(v, "records %llu..%llu were signed only when pgwardend restarted after a "
			"crash (recovery checkpoint seq %llu): they were unsigned while it was down",
		     (unsigned long long)e->recovered_from, (unsigned long long)e->recovered_to,
		     (unsigned long long)e->seq);
	w->have_cp = true;
	w->cp_seq = e->seq;
	w->cp_every = e->every;
	w->since_cp = 0;
	v->res->signed_through = e->seq;
	v->res->checkpoints++;
}

static void walk_record(struct verifier *v, struct walk *w, size_t i)
{
	const struct entry *e = &v->e[i];
	bool first_in_file = i == 0 || v->e[i - 1].file != e->file;
	char at[320], name[256];

	if (!w->have_prev) {
		v->res->first_seq = e->seq;
		if (e->seq != 1 && !v->o->partial) {
			problem(v, AUDIT_PROBLEM_DELETED, 1,
				"deleted: the trail starts at seq %llu (%s): records 1..%llu are missing "
				"(older files not given or removed; --partial verifies from seq %llu on)",
				(unsigned long long)e->seq, where(v, e, at, sizeof(at)),
				(unsigned long long)(e->seq - 1), (unsigned long long)e->seq);
			return;
		}
		if (e->seq == 1 && !is_zero(e->prev)) {
			problem(v, AUDIT_PROBLEM_MODIFIED, 1,
				"modified: seq 1 (%s) does not start a trail (its prev is not zero)",
				where(v, e, at, sizeof(at)));
			return;
		}
	} else if (e->seq != w->prev_seq + 1) {
		walk_out_of_sequence(v, w, i);
		return;
	} else if (memcmp(e->prev, w->prev_hash, AUDIT_HASH_LEN) != 0) {
		walk_bad_prev(v, w, i);
		return;
	}
	if (!e->newline) {
		problem(v, AUDIT_PROBLEM_TRUNCATED, e->seq,
			"truncated: seq %llu (%s) is not finished (no newline): pgwardend crashed "
			"while writing it, or the file was cut",
			(unsigned long long)e->seq, where(v, e, at, sizeof(at)));
		return;
	}
	if (first_in_file != (e->event == AUDIT_EV_FILE_START)) {
		if (first_in_file)
			problem(v, AUDIT_PROBLEM_TRUNCATED, e->seq,
				"truncated: %s does not begin with file_start (its first record is seq "
				"%llu): its beginning was cut off",
				safe_name(v->files[e->file].name, name, sizeof(name)),
				(unsigned long long)e->seq);
		else
			problem(v, AUDIT_PROBLEM_MODIFIED, e->seq,
				"modified: file_start seq %llu (%s) is not at the start of its file",
				(unsigned long long)e->seq, where(v, e, at, sizeof(at)));
		return;
	}
	if (e->event == AUDIT_EV_FILE_START && w->have_prev && e->previous_seq != w->prev_seq) {
		problem(v, AUDIT_PROBLEM_MODIFIED, e->seq,
			"modified: file_start seq %llu says the previous file ended at seq %llu",
			(unsigned long long)e->seq, (unsigned long long)e->previous_seq);
		return;
	}
	if (e->event == AUDIT_EV_FILE_START && w->have_prev && e->previous_file) {
		const char *given = v->files[v->e[w->prev_idx].file].name;
		const char *slash = strrchr(given, '/');

		if (strcmp(slash ? slash + 1 : given, e->previous_file) != 0)
			note(v, "%s was rotated as %s (the name its successor's file_start gives); "
				"the sequence and chain match",
			     safe_name(given, name, sizeof(name)),
			     safe_name(e->previous_file, at, sizeof(at)));
	}
	if (e->event == AUDIT_EV_TORN) {
		/* Reached as a record only when it describes no bytes that are here. */
		problem(v, AUDIT_PROBLEM_MODIFIED, e->seq,
			"modified: torn_record seq %llu (%s) describes bytes that are not in the file "
			"as it says",
			(unsigned long long)e->seq, where(v, e, at, sizeof(at)));
		return;
	}
	if (e->event == AUDIT_EV_CHECKPOINT) {
		walk_checkpoint(v, w, e);
	} else {
		w->since_cp++;
		if (w->have_cp && w->cp_every && w->since_cp > w->cp_every) {
			problem(v, AUDIT_PROBLEM_DELETED, e->seq,
				"deleted: %llu records follow checkpoint seq %llu, which promised one "
				"every %u: the checkpoint due by seq %llu was removed",
				(unsigned long long)w->since_cp, (unsigned long long)w->cp_seq,
				w->cp_every, (unsigned long long)e->seq);
			return;
		}
	}
	w->have_prev = true;
	w->prev_seq = e->seq;
	w->prev_idx = i;
	memcpy(w->prev_hash, e->hash, AUDIT_HASH_LEN);
	w->ring[e->seq & (w->ring_size - 1)].seq = e->seq;
	memcpy(w->ring[e->seq & (w->ring_size - 1)].hash, e->hash, AUDIT_HASH_LEN);
	w->ring[e->seq & (w->ring_size - 1)].idx = i;
	v->res->last_seq = e->seq;
	v->res->records++;
	v->res->closed = e->event == AUDIT_EV_CHECKPOINT && e->stop && e->sig == SIG_OK;
}

/* A torn_record in the right place: its bytes directly follow the last record. */
static bool torn_marker_fits(const struct verifier *v, const struct walk *w, size_t i)
{
	const struct entry *m = &v->e[i], *last;

	if (!m->valid || m->event != AUDIT_EV_TORN || !m->torn_ok || !w->have_prev)
		return false;
	last = &v->e[w->prev_idx];
	return last->file == m->file && last->off + last->len + 1 == m->torn_off;
}

static void walk(struct verifier *v)
{
	struct walk w = {0};

	/* Enough to remember every record of a small trail, the last REPLAY_RING of a big one. */
	w.ring_size = 1;
	while (w.ring_size < v->n && w.ring_size < REPLAY_RING)
		w.ring_size *= 2;
	w.ring = calloc(w.ring_size, sizeof(*w.ring));
	if (!w.ring) {
		v->oom = true;
		return;
	}
	for (size_t i = 0; i < v->n && v->res->problem == AUDIT_PROBLEM_NONE; i++) {
		const struct entry *e = &v->e[i];

		if (e->in_torn)
			continue;
		if (!e->valid) {
			walk_not_record(v, &w, i);
			continue;
		}
		if (e->event == AUDIT_EV_TORN && torn_marker_fits(v, &w, i)) {
			char at[320];

			note(v, "%llu bytes that a crash or a failed write left half-written are "
				"marked at seq %llu (%s); they were never reported written",
			     (unsigned long long)e->torn_len, (unsigned long long)e->seq,
			     where(v, e, at, sizeof(at)));
			/* The marker itself is a record of the chain. */
			if (e->seq == w.prev_seq + 1 &&
			    memcmp(e->prev, w.prev_hash, AUDIT_HASH_LEN) == 0) {
				w.since_cp++;
				w.prev_seq = e->seq;
				w.prev_idx = i;
				memcpy(w.prev_hash, e->hash, AUDIT_HASH_LEN);
				v->res->last_seq = e->seq;
				v->res->records++;
				v->res->closed = false;
				continue;
			}
		}
		walk_record(v, &w, i);
	}
	free(w.ring);
}

/* ---- the verdict ------------------------------------------------------------------- */

static int cmp_first_seq(const void *a, const void *b)
{
	const struct {
		uint64_t seq;
		unsigned idx;
	} *x = a, *y = b;

	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void decide(struct verifier *v)
{
	struct audit_verify_result *r = v->res;

	if (v->oom) {
		r->verdict = AUDIT_VERIFY_BROKEN;
		if (r->problem == AUDIT_PROBLEM_NONE)
			snprintf(r->message, sizeof(r->message), "out of memory: the trail was not "
								 "verified");
		return;
	}
	if (r->problem != AUDIT_PROBLEM_NONE) {
		r->verdict = AUDIT_VERIFY_BROKEN;
		return;
	}
	if (r->records == 0) {
		r->verdict = AUDIT_VERIFY_BROKEN;
		r->problem = AUDIT_PROBLEM_TRUNCATED;
		snprintf(r->message, sizeof(r->message), "truncated: no record at all");
		return;
	}
	if (r->signed_through < r->last_seq) {
		r->verdict = AUDIT_VERIFY_UNVOUCHED;
		snprintf(r->message, sizeof(r->message),
			 "unsigned tail: records %llu..%llu come after the last checkpoint%s%llu%s and "
			 "are not signed. An edit there, even with the chain recomputed, cannot be "
			 "detected from the file: a running pgwardend signs them within "
			 "audit.checkpoint.records records or audit.checkpoint.interval; verify again "
			 "then, or compare them with the syslog mirror",
			 (unsigned long long)(r->signed_through + 1), (unsigned long long)r->last_seq,
			 r->signed_through ? " (seq " : "", (unsigned long long)r->signed_through,
			 r->signed_through ? ")" : "");
		return;
	}
	if (!r->closed) {
		r->verdict = AUDIT_VERIFY_UNVOUCHED;
		snprintf(r->message, sizeof(r->message),
			 "open end: every record through seq %llu is chained and signed, but the trail "
			 "does not end with pgwardend's stop: it is still being written, pgwardend "
			 "crashed, or the file was cut right after a checkpoint (the file alone cannot "
			 "tell which)",
			 (unsigned long long)r->last_seq);
		return;
	}
	if (!v->trusted) {
		r->verdict = AUDIT_VERIFY_UNVOUCHED;
		snprintf(r->message, sizeof(r->message),
			 "no trusted key: records %llu..%llu are chained and signed by the key the trail "
			 "itself names, which anyone rewriting the whole trail could replace; give "
			 "--public-key to check the signatures are pgwardend's",
			 (unsigned long long)r->first_seq, (unsigned long long)r->last_seq);
		return;
	}
	r->verdict = AUDIT_VERIFY_INTACT;
	snprintf(r->message, sizeof(r->message),
		 "intact: records %llu..%llu, chained and signed (%llu checkpoints), closed by "
		 "pgwardend's stop",
		 (unsigned long long)r->first_seq, (unsigned long long)r->last_seq,
		 (unsigned long long)r->checkpoints);
}

void audit_verify(const struct audit_verify_file *files, unsigned nfiles,
		  const struct audit_verify_opts *o, struct audit_verify_result *res)
{
	struct verifier v = {.o = o, .res = res, .nfiles = nfiles};
	struct audit_verify_file *sorted = NULL;
	struct {
		uint64_t seq;
		unsigned idx;
	} *order = NULL;

	memset(res, 0, sizeof(*res));
	if (nfiles) {
		sorted = calloc(nfiles, sizeof(*sorted));
		order = calloc(nfiles, sizeof(*order));
	}
	if (nfiles && (!sorted || !order)) {
		v.oom = true;
		goto out;
	}
	for (unsigned i = 0; i < nfiles; i++) {
		order[i].seq = first_seq_of(&files[i]);
		order[i].idx = i;
	}
	if (nfiles)
		qsort(order, nfiles, sizeof(*order), cmp_first_seq);
	for (unsigned i = 0; i < nfiles; i++)
		sorted[i] = files[order[i].idx];
	v.files = sorted;
	for (unsigned i = 0; i < o->nkeys; i++)
		add_key(&v, o->keys[i], false);
	v.trusted = v.nkeys > 0;
	for (unsigned i = 0; i < nfiles && !v.oom; i++)
		parse_file(&v, i);
	if (!v.oom)
		walk(&v);
out:
	decide(&v);
	if (o->report && nfiles && !v.oom) {
		for (unsigned i = 0; i < nfiles; i++) {
			char name[256];

			fprintf(o->report, "file: %s%s\n", safe_name(sorted[i].name, name, sizeof(name)),
				order[i].seq == UINT64_MAX ? " (no record)" : "");
		}
	}
	for (size_t i = 0; i < v.n; i++) {
		free(v.e[i].previous_file);
		free(v.e[i].why);
	}
	free(v.e);
	for (unsigned i = 0; i < v.nkeys; i++)
		if (v.keys[i].owned)
			EVP_PKEY_free(v.keys[i].key);
	free(sorted);
	free(order);
}
