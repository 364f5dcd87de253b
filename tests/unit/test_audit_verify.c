/*
 * Tamper tests for userspace/audit/audit_verify: a real trail is written by the audit
 * writer (several rotated files, a checkpoint every 10 records), then edited the way an
 * attacker or an accident would, and the verifier must name the first record concerned,
 * with the right kind: a flipped byte, a deleted record, two swapped, one replayed, a file
 * cut short (mid-record and at a record boundary), a rotated file removed, and the chain
 * recomputed after an edit by someone without the signing key. Also what it cannot know:
 * an edit in the unsigned tail, with the chain recomputed, is reported as unvouched with
 * the exact records concerned.
 */
#include "audit/audit_record.h"
#include "audit/audit_sign.h"
#include "audit/audit_trail.h"
#include "audit/audit_verify.h"
#include "base/clock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECKPOINT_EVERY 10
#define MAX_FILES 16
#define MAX_LINES 4096

static char dir[64];
static char key_path[128];
static EVP_PKEY *pubkey;

/* One file of a trail, as lines we can edit. */
struct tfile {
	char name[256];
	char *lines[MAX_LINES];
	size_t nlines;
	bool cut_last_newline; /* the last line has no newline (cut mid-record) */
};

struct trail {
	struct tfile f[MAX_FILES];
	unsigned n;
};

/* ---- making a trail ------------------------------------------------------------------ */

/* Until the writer has taken everything queued (bounded: 10 s). */
static void wait_written(struct audit_trail *t)
{
	struct audit_trail_stats st;

	for (int waited_ms = 0; waited_ms < 10000; waited_ms++) {
		audit_trail_stats(t, &st);
		if (!st.queued_bytes)
			return;
		usleep(1000);
	}
	fail_msg("the audit writer took nothing for 10 s");
}

static void write_trail(unsigned statements, uint64_t rotate_size)
{
	struct audit_trail_config c = {
		.fsync = CONFIG_AUDIT_FSYNC_NONE, /* the verifier does not care; the test is quicker */
		.checkpoint_records = CHECKPOINT_EVERY,
		.checkpoint_interval_ns = 3600 * NSEC_PER_SEC,
		.rotate_size = rotate_size,
		.version = "test",
	};
	char path[128], err[512];
	struct audit_trail *t;

	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	c.path = path;
	c.signing_key = key_path;
	if (audit_trail_open(&c, &t, err, sizeof(err)))
		fail_msg("open: %s", err);
	for (unsigned i = 0; i < statements; i++) {
		struct audit_rec *r = audit_rec_new(AUDIT_EV_STATEMENT, clock_wall_ns());

		audit_rec_str(r, "session", "0123456789abcdef0123456789abcdef");
		audit_rec_u64(r, "request", i);
		audit_rec_str(r, "text", "SELECT * FROM cards WHERE number = $1");
		audit_trail_submit(t, r);
		/* Rotation is checked between batches: let batches be small, and whatever the
		 * machine's load, let the writer take each five before the next (a writer starved
		 * of the CPU once took all of them in one batch, never rotated, and the tests of
		 * rotated files then edited the current one). */
		if (rotate_size && i % 5 == 4)
			wait_written(t);
	}
	audit_trail_close(t, "test");
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read every file of the trail in dir (rotated ones, then the current one). */
static void read_trail(struct trail *tr)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char *names[MAX_FILES];
	unsigned n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strncmp(e->d_name, "audit.jsonl", 11) == 0 && n < MAX_FILES)
			names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, n, sizeof(names[0]), name_cmp);
	/* "audit.jsonl" sorts first but is the newest: move it to the end. */
	if (n > 1 && strcmp(names[0], "audit.jsonl") == 0) {
		char *cur = names[0];

		memmove(names, names + 1, (n - 1) * sizeof(names[0]));
		names[n - 1] = cur;
	}
	memset(tr, 0, sizeof(*tr));
	for (unsigned i = 0; i < n; i++) {
		char path[512], *data = NULL, *p;
		size_t cap = 0;
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		snprintf(tr->f[i].name, sizeof(tr->f[i].name), "%s", names[i]);
		f = fopen(path, "r");
		assert_non_null(f);
		while (getline(&data, &cap, f) > 0) {
			p = strchr(data, '\n');
			if (p)
				*p = '\0';
			assert_true(tr->f[i].nlines < MAX_LINES);
			tr->f[i].lines[tr->f[i].nlines++] = strdup(data);
		}
		free(data);
		fclose(f);
		free(names[i]);
	}
	tr->n = n;
}

static void free_trail(struct trail *tr)
{
	for (unsigned i = 0; i < tr->n; i++)
		for (size_t j = 0; j < tr->f[i].nlines; j++)
			free(tr->f[i].lines[j]);
	tr->n = 0;
}

/* ---- verifying ----------------------------------------------------------------------- */

static void verify_with(const struct trail *tr, EVP_PKEY *key, bool partial,
			struct audit_verify_result *res)
{
	struct audit_verify_file files[MAX_FILES];
	char *bufs[MAX_FILES];
	EVP_PKEY *keys[1] = {key};
	struct audit_verify_opts o = {.keys = keys, .nkeys = key ? 1 : 0, .partial = partial};

	for (unsigned i = 0; i < tr->n; i++) {
		size_t len = 0;

		for (size_t j = 0; j < tr->f[i].nlines; j++)
			len += strlen(tr->f[i].lines[j]) + 1;
		bufs[i] = malloc(len + 1);
		len = 0;
		for (size_t j = 0; j < tr->f[i].nlines; j++) {
			size_t l = strlen(tr->f[i].lines[j]);

			memcpy(bufs[i] + len, tr->f[i].lines[j], l);
			len += l;
			if (j + 1 < tr->f[i].nlines || !tr->f[i].cut_last_newline)
				bufs[i][len++] = '\n';
		}
		files[i] = (struct audit_verify_file){.name = tr->f[i].name, .data = bufs[i],
						      .len = len};
	}
	audit_verify(files, tr->n, &o, res);
	for (unsigned i = 0; i < tr->n; i++)
		free(bufs[i]);
}

static void verify(const struct trail *tr, struct audit_verify_result *res)
{
	verify_with(tr, pubkey, false, res);
}

static void expect(const struct audit_verify_result *res, enum audit_verdict v,
		   enum audit_problem p, uint64_t seq)
{
	if (res->verdict != v || res->problem != p || (p && res->problem_seq != seq))
		fail_msg("got verdict %d, %s at seq %llu (%s); want verdict %d, %s at seq %llu",
			 res->verdict, audit_problem_to_str(res->problem),
			 (unsigned long long)res->problem_seq, res->message, v,
			 audit_problem_to_str(p), (unsigned long long)seq);
}

/* ---- editing helpers ------------------------------------------------------------------ */

static uint64_t seq_of(const char *line)
{
	const char *s = strstr(line, "\"seq\":");

	return s ? strtoull(s + 6, NULL, 10) : 0;
}

/* Where the record with this seq is. */
static void find_seq(struct trail *tr, uint64_t seq, unsigned *fi, size_t *li)
{
	for (unsigned i = 0; i < tr->n; i++)
		for (size_t j = 0; j < tr->f[i].nlines; j++)
			if (seq_of(tr->f[i].lines[j]) == seq) {
				*fi = i;
				*li = j;
				return;
			}
	fail_msg("no record with seq %llu", (unsigned long long)seq);
}

static bool is_event(const char *line, const char *ev)
{
	char want[64];

	snprintf(want, sizeof(want), "\"event\":\"%s\"", ev);
	return strstr(line, want) != NULL;
}

/* The seq of the first statement record after seq `after` (so edits hit data, not a
 * checkpoint). */
static uint64_t statement_after(struct trail *tr, uint64_t after)
{
	for (uint64_t s = after + 1;; s++) {
		unsigned fi;
		size_t li;

		find_seq(tr, s, &fi, &li);
		if (is_event(tr->f[fi].lines[li], "statement"))
			return s;
	}
}

static void delete_line(struct tfile *f, size_t li)
{
	free(f->lines[li]);
	memmove(f->lines + li, f->lines + li + 1, (f->nlines - li - 1) * sizeof(f->lines[0]));
	f->nlines--;
}

static void insert_line(struct tfile *f, size_t at, const char *line)
{
	assert_true(f->nlines < MAX_LINES);
	memmove(f->lines + at + 1, f->lines + at, (f->nlines - at) * sizeof(f->lines[0]));
	f->lines[at] = strdup(line);
	f->nlines++;
}

/* Re-link every record from (fi, li) on to the one before it, as someone without the key
 * would after an edit: parse, set prev, encode canonically. Checkpoints keep their old
 * signature (nothing else can be done without the key). */
static void recompute_chain_from(struct trail *tr, unsigned fi, size_t li)
{
	uint8_t prev[AUDIT_HASH_LEN];
	char hex[AUDIT_HASH_HEXLEN + 1];
	bool first = true;

	for (unsigned i = fi; i < tr->n; i++) {
		for (size_t j = i == fi ? li : 0; j < tr->f[i].nlines; j++) {
			json_t *obj;
			char *line;
			size_t len;

			if (first) {
				/* The record before the edit is intact: start from its hash. */
				const char *before = j ? tr->f[i].lines[j - 1] :
						       tr->f[i - 1].lines[tr->f[i - 1].nlines - 1];

				audit_hash(before, strlen(before), prev);
				first = false;
			}
			obj = json_loads(tr->f[i].lines[j], 0, NULL);
			assert_non_null(obj);
			audit_hex(prev, sizeof(prev), hex);
			json_object_set_new(obj, "prev", json_string(hex));
			line = audit_canonical(obj, &len);
			json_decref(obj);
			audit_hash(line, len, prev);
			free(tr->f[i].lines[j]);
			tr->f[i].lines[j] = line;
		}
	}
}

/* ---- fixtures ------------------------------------------------------------------------ */

static int setup(void **state)
{
	char err[512], pub[160];

	snprintf(dir, sizeof(dir), "/tmp/pgw-audit-verify-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(key_path, sizeof(key_path), "%s/sign.key", dir);
	if (audit_keygen(key_path, err, sizeof(err)))
		return -1;
	snprintf(pub, sizeof(pub), "%s.pub", key_path);
	return audit_key_load_public(pub, &pubkey, err, sizeof(err));
}

static int teardown(void **state)
{
	char cmd[128];

	EVP_PKEY_free(pubkey);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Each test starts from a fresh trail of 60 statements in 3 or more files. */
static int fresh(void **state)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -f %s/audit.jsonl*", dir);
	if (system(cmd))
		return -1;
	write_trail(60, 4096);
	return 0;
}

/* ---- the tests ---------------------------------------------------------------------- */

static void test_intact_trail_verifies(void **state)
{
	struct trail tr;
	struct audit_verify_result res;

	read_trail(&tr);
	assert_true(tr.n >= 3); /* rotated: the chain runs across files */
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_INTACT, AUDIT_PROBLEM_NONE, 0);
	assert_true(res.closed);
	assert_int_equal(res.first_seq, 1);
	assert_int_equal(res.signed_through, res.last_seq);
	assert_true(res.checkpoints >= 60 / CHECKPOINT_EVERY);
	/* Files given in another order: the same answer. */
	struct tfile tmp = tr.f[0];

	tr.f[0] = tr.f[tr.n - 1];
	tr.f[tr.n - 1] = tmp;
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_INTACT, AUDIT_PROBLEM_NONE, 0);
	free_trail(&tr);
}

static void test_flipped_byte(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	unsigned fi;
	size_t li;
	uint64_t s;
	char *p;

	read_trail(&tr);
	s = statement_after(&tr, 20);
	find_seq(&tr, s, &fi, &li);
	/* A byte inside the statement text: still valid JSON, different record. */
	p = strstr(tr.f[fi].lines[li], "cards");
	assert_non_null(p);
	p[0] ^= 0x01;
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_MODIFIED, s);
	/* A byte that breaks the JSON: the same record is named. */
	p[0] ^= 0x01;
	p = strchr(tr.f[fi].lines[li], ':');
	p[0] = ';';
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_MODIFIED, s);
	free_trail(&tr);
}

static void test_flipped_byte_in_prev_names_that_record(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	unsigned fi;
	size_t li;
	uint64_t s;
	char *p;

	read_trail(&tr);
	s = statement_after(&tr, 30);
	find_seq(&tr, s, &fi, &li);
	p = strstr(tr.f[fi].lines[li], "\"prev\":\"");
	p[8] = p[8] == 'a' ? 'b' : 'a';
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_MODIFIED, s);
	free_trail(&tr);
}

static void test_deleted_record(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	unsigned fi;
	size_t li;
	uint64_t s;

	read_trail(&tr);
	s = statement_after(&tr, 25);
	find_seq(&tr, s, &fi, &li);
	delete_line(&tr.f[fi], li);
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_DELETED, s);
	assert_non_null(strstr(res.message, "missing"));
	free_trail(&tr);
}

static void test_two_records_swapped(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	unsigned fi, fi2;
	size_t li, li2;
	uint64_t s;
	char *tmp;

	read_trail(&tr);
	s = statement_after(&tr, 40);
	find_seq(&tr, s, &fi, &li);
	find_seq(&tr, s + 1, &fi2, &li2);
	if (fi2 != fi) { /* keep both in one file */
		s = statement_after(&tr, s + 1);
		find_seq(&tr, s, &fi, &li);
		find_seq(&tr, s + 1, &fi2, &li2);
	}
	assert_int_equal(fi, fi2);
	tmp = tr.f[fi].lines[li];
	tr.f[fi].lines[li] = tr.f[fi].lines[li2];
	tr.f[fi].lines[li2] = tmp;
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_REORDERED, s);
	free_trail(&tr);
}

static void test_replayed_record(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	unsigned fi;
	size_t li;
	uint64_t s;

	/* Right after itself. */
	read_trail(&tr);
	s = statement_after(&tr, 12);
	find_seq(&tr, s, &fi, &li);
	insert_line(&tr.f[fi], li + 1, tr.f[fi].lines[li]);
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_REPLAYED, s);
	free_trail(&tr);
	/* Later on, in another place. */
	read_trail(&tr);
	find_seq(&tr, s, &fi, &li);
	insert_line(&tr.f[fi], li + 4, tr.f[fi].lines[li]);
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_REPLAYED, s);
	free_trail(&tr);
	/* A whole file given twice. */
	read_trail(&tr);
	tr.f[tr.n] = tr.f[1];
	for (size_t j = 0; j < tr.f[1].nlines; j++)
		tr.f[tr.n].lines[j] = strdup(tr.f[1].lines[j]);
	tr.n++;
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_REPLAYED, seq_of(tr.f[1].lines[0]));
	free_trail(&tr);
}

static void test_truncated_mid_record(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	struct tfile *last;
	uint64_t s;

	/* The current file, cut in the middle of its last line. */
	read_trail(&tr);
	last = &tr.f[tr.n - 1];
	s = seq_of(last->lines[last->nlines - 1]);
	last->lines[last->nlines - 1][40] = '\0';
	last->cut_last_newline = true;
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_TRUNCATED, s);
	free_trail(&tr);
	/* A rotated file, cut in the middle of a record. */
	read_trail(&tr);
	s = seq_of(tr.f[0].lines[tr.f[0].nlines - 3]);
	while (tr.f[0].nlines > 0 && seq_of(tr.f[0].lines[tr.f[0].nlines - 1]) != s)
		delete_line(&tr.f[0], tr.f[0].nlines - 1);
	tr.f[0].lines[tr.f[0].nlines - 1][50] = '\0';
	tr.f[0].cut_last_newline = true;
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_TRUNCATED, s);
	free_trail(&tr);
}

static void test_truncated_at_record_boundary(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	uint64_t s;

	/* A rotated file loses its last three records: the next file's file_start says where
	 * it should have ended. */
	read_trail(&tr);
	s = seq_of(tr.f[1].lines[tr.f[1].nlines - 3]);
	for (int i = 0; i < 3; i++)
		delete_line(&tr.f[1], tr.f[1].nlines - 1);
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_TRUNCATED, s);
	assert_non_null(strstr(res.message, "were cut off"));
	free_trail(&tr);
	/* The current file loses its stop: nothing proves the cut, and the verdict says so. */
	read_trail(&tr);
	delete_line(&tr.f[tr.n - 1], tr.f[tr.n - 1].nlines - 1); /* the stop checkpoint */
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_UNVOUCHED, AUDIT_PROBLEM_NONE, 0);
	assert_non_null(strstr(res.message, "unsigned tail"));
	free_trail(&tr);
}

static void test_removed_rotated_file(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	uint64_t s;

	read_trail(&tr);
	assert_true(tr.n >= 3);
	s = seq_of(tr.f[1].lines[0]);
	for (size_t j = 0; j < tr.f[1].nlines; j++)
		free(tr.f[1].lines[j]);
	memmove(&tr.f[1], &tr.f[2], (tr.n - 2) * sizeof(tr.f[0]));
	tr.n--;
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_MISSING_FILE, s);
	assert_non_null(strstr(res.message, "was not given or was removed"));
	free_trail(&tr);
	/* The oldest file removed: the trail does not start at 1. */
	read_trail(&tr);
	s = seq_of(tr.f[1].lines[0]);
	for (size_t j = 0; j < tr.f[0].nlines; j++)
		free(tr.f[0].lines[j]);
	memmove(&tr.f[0], &tr.f[1], (tr.n - 1) * sizeof(tr.f[0]));
	tr.n--;
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_DELETED, 1);
	/* ...which --partial accepts, checking everything from there on. */
	verify_with(&tr, pubkey, true, &res);
	expect(&res, AUDIT_VERIFY_INTACT, AUDIT_PROBLEM_NONE, 0);
	assert_int_equal(res.first_seq, s);
	free_trail(&tr);
}

static void test_chain_recomputed_without_the_key(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	unsigned fi;
	size_t li;
	uint64_t s, last_cp = 0;
	char *p;

	read_trail(&tr);
	s = statement_after(&tr, 33);
	/* The last checkpoint before the edit: everything after it is what the failed
	 * signature leaves unvouched. */
	for (uint64_t k = s - 1; k > 0; k--) {
		find_seq(&tr, k, &fi, &li);
		if (is_event(tr.f[fi].lines[li], "checkpoint")) {
			last_cp = k;
			break;
		}
	}
	assert_true(last_cp > 0);
	find_seq(&tr, s, &fi, &li);
	p = strstr(tr.f[fi].lines[li], "cards");
	memcpy(p, "users", 5);
	recompute_chain_from(&tr, fi, li);
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_SIGNATURE, last_cp + 1);
	assert_non_null(strstr(res.message, "does not verify"));
	free_trail(&tr);
	/* Deleting a checkpoint and re-linking around it: the same. */
	read_trail(&tr);
	find_seq(&tr, last_cp, &fi, &li);
	delete_line(&tr.f[fi], li);
	/* Renumber so that the sequence still runs: a careful forger. */
	for (unsigned i = fi; i < tr.n; i++)
		for (size_t j = i == fi ? li : 0; j < tr.f[i].nlines; j++) {
			json_t *obj = json_loads(tr.f[i].lines[j], 0, NULL);
			size_t len;

			json_object_set_new(obj, "seq", json_integer((json_int_t)seq_of(tr.f[i].lines[j]) - 1));
			free(tr.f[i].lines[j]);
			tr.f[i].lines[j] = audit_canonical(obj, &len);
			json_decref(obj);
		}
	recompute_chain_from(&tr, fi, li);
	verify(&tr, &res);
	assert_int_equal(res.verdict, AUDIT_VERIFY_BROKEN);
	assert_true(res.problem == AUDIT_PROBLEM_SIGNATURE || res.problem == AUDIT_PROBLEM_DELETED ||
		    res.problem == AUDIT_PROBLEM_MODIFIED);
	assert_true(res.problem_seq <= last_cp + 1);
	free_trail(&tr);
}

/* What no file check can catch, stated exactly: an edit after the last checkpoint with
 * the chain recomputed, in a trail that is still being written. */
static void test_edit_in_unsigned_tail_is_reported_as_unvouched(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	struct tfile *last;
	uint64_t last_cp = 0, tail_first;
	unsigned fi;
	size_t li, cut;
	char cmd[256];

	/* One file, and a tail of five records after the last checkpoint once the stop is
	 * gone. */
	snprintf(cmd, sizeof(cmd), "rm -f %s/audit.jsonl*", dir);
	assert_int_equal(system(cmd), 0);
	write_trail(63, 0);
	read_trail(&tr);
	assert_int_equal(tr.n, 1);
	last = &tr.f[tr.n - 1];
	/* Make it look live: drop daemon_stop and the stop checkpoint, and a checkpoint's
	 * worth of records stays after the last remaining checkpoint. */
	delete_line(last, last->nlines - 1);
	delete_line(last, last->nlines - 1);
	for (cut = last->nlines; cut > 0; cut--)
		if (is_event(last->lines[cut - 1], "checkpoint"))
			break;
	assert_true(cut > 0 && cut < last->nlines);
	last_cp = seq_of(last->lines[cut - 1]);
	tail_first = last_cp + 1;
	find_seq(&tr, tail_first, &fi, &li);
	memcpy(strstr(tr.f[fi].lines[li], "cards"), "users", 5);
	recompute_chain_from(&tr, fi, li);
	verify(&tr, &res);
	expect(&res, AUDIT_VERIFY_UNVOUCHED, AUDIT_PROBLEM_NONE, 0);
	assert_int_equal(res.signed_through, last_cp);
	char want[128];

	snprintf(want, sizeof(want), "records %llu..%llu come after the last checkpoint (seq %llu)",
		 (unsigned long long)tail_first, (unsigned long long)res.last_seq,
		 (unsigned long long)last_cp);
	assert_non_null(strstr(res.message, want));
	free_trail(&tr);
}

static void test_keys(void **state)
{
	struct trail tr;
	struct audit_verify_result res;
	EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

	read_trail(&tr);
	/* Somebody else's key: the first checkpoint is named. */
	verify_with(&tr, other, false, &res);
	expect(&res, AUDIT_VERIFY_BROKEN, AUDIT_PROBLEM_UNTRUSTED_KEY, 3);
	/* No key: checked against the trail's own, and never better than unvouched. */
	verify_with(&tr, NULL, false, &res);
	expect(&res, AUDIT_VERIFY_UNVOUCHED, AUDIT_PROBLEM_NONE, 0);
	assert_non_null(strstr(res.message, "no trusted key"));
	/* A forger who rewrites everything with their own key, daemon_start included: fine
	 * without a trusted key (hence unvouched), caught with one. */
	EVP_PKEY_free(other);
	free_trail(&tr);
}

static void test_garbage_and_empty_input(void **state)
{
	struct audit_verify_file f[2] = {
		{.name = "empty", .data = "", .len = 0},
		{.name = "junk\x1b[2J", .data = "\x00\xff\n{}\n", .len = 6},
	};
	EVP_PKEY *keys[1] = {pubkey};
	struct audit_verify_opts o = {.keys = keys, .nkeys = 1};
	struct audit_verify_result res;

	audit_verify(f, 1, &o, &res);
	assert_int_equal(res.verdict, AUDIT_VERIFY_BROKEN);
	audit_verify(f + 1, 1, &o, &res);
	assert_int_equal(res.verdict, AUDIT_VERIFY_BROKEN);
	assert_int_equal(res.problem, AUDIT_PROBLEM_MODIFIED);
	/* The file name is escaped in the message. */
	assert_null(strchr(res.message, '\x1b'));
	audit_verify(f, 0, &o, &res);
	assert_int_equal(res.verdict, AUDIT_VERIFY_BROKEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_intact_trail_verifies, fresh),
		cmocka_unit_test_setup(test_flipped_byte, fresh),
		cmocka_unit_test_setup(test_flipped_byte_in_prev_names_that_record, fresh),
		cmocka_unit_test_setup(test_deleted_record, fresh),
		cmocka_unit_test_setup(test_two_records_swapped, fresh),
		cmocka_unit_test_setup(test_replayed_record, fresh),
		cmocka_unit_test_setup(test_truncated_mid_record, fresh),
		cmocka_unit_test_setup(test_truncated_at_record_boundary, fresh),
		cmocka_unit_test_setup(test_removed_rotated_file, fresh),
		cmocka_unit_test_setup(test_chain_recomputed_without_the_key, fresh),
		cmocka_unit_test_setup(test_edit_in_unsigned_tail_is_reported_as_unvouched, fresh),
		cmocka_unit_test_setup(test_keys, fresh),
		cmocka_unit_test(test_garbage_and_empty_input),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
