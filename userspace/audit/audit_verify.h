/*
 * audit_verify: check an audit trail offline, as an assessor would, and name the first
 * thing wrong with it by sequence number.
 *
 * Input: the trail's files, in any order (they are put in order by their first record),
 * and the public keys the assessor trusts. Checked, in one pass over every line:
 *   - each line is a record in canonical form (audit_line_parse);
 *   - sequence numbers run 1, 2, 3, ... without a gap or a repeat, across files;
 *   - each record's prev is the SHA-256 of the line before it;
 *   - every checkpoint's Ed25519 signature verifies under a trusted key, and no more
 *     records lie between two checkpoints than the earlier one announced (so a deleted
 *     checkpoint shows);
 *   - each file begins with file_start, and each file_start names the file before it;
 *   - bytes that are not records are allowed only where a torn_record marker describes
 *     them exactly (offset, length, SHA-256).
 *
 * Verdicts (the exit status of pgwardenctl audit verify):
 *   AUDIT_VERIFY_INTACT     every record chained and covered by a valid signature of a
 *                           trusted key, and the trail closed by pgwardend's stop;
 *   AUDIT_VERIFY_BROKEN     something was modified, deleted, reordered, replayed or
 *                           truncated: problem names the first record concerned;
 *   AUDIT_VERIFY_UNVOUCHED  nothing wrong was found, but not everything is vouched for:
 *                           records after the last checkpoint are unsigned (a running or
 *                           crashed pgwardend, or a file cut after a checkpoint cannot be
 *                           told apart from the file alone), or no trusted key was given.
 * What a signature does not cover, no file check can: an edit after the last checkpoint,
 * with the chain recomputed, is undetectable until a checkpoint signs the tail. The report
 * says which records those are.
 */
#ifndef PGWARDEN_AUDIT_VERIFY_H
#define PGWARDEN_AUDIT_VERIFY_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum audit_verdict {
	AUDIT_VERIFY_INTACT = 0,
	AUDIT_VERIFY_BROKEN = 1,
	AUDIT_VERIFY_UNVOUCHED = 4,
};

/* What the first problem was. */
enum audit_problem {
	AUDIT_PROBLEM_NONE = 0,
	AUDIT_PROBLEM_MODIFIED,    /* a record's bytes changed (or a line that is no record) */
	AUDIT_PROBLEM_DELETED,     /* records missing from the sequence */
	AUDIT_PROBLEM_REORDERED,   /* records out of order */
	AUDIT_PROBLEM_REPLAYED,    /* a record appears again */
	AUDIT_PROBLEM_TRUNCATED,   /* a file ends in the middle of a record, or was cut short */
	AUDIT_PROBLEM_MISSING_FILE,/* a rotated file is not among those given */
	AUDIT_PROBLEM_SIGNATURE,   /* a checkpoint does not verify: the chain was rewritten */
	AUDIT_PROBLEM_UNTRUSTED_KEY, /* a checkpoint signed by a key not given */
	AUDIT_PROBLEM_COUNT,
};

const char *audit_problem_to_str(enum audit_problem p);

struct audit_verify_file {
	const char *name; /* as given (shown in the report) */
	const char *data; /* the file's bytes */
	size_t len;
};

struct audit_verify_opts {
	EVP_PKEY *const *keys; /* trusted public keys; none: the keys the trail names are used,
				* and the verdict is at best UNVOUCHED */
	unsigned nkeys;
	bool partial;          /* the trail may start after seq 1 (older files were archived) */
	FILE *report;          /* notes and the summary, one line each; NULL: none */
};

struct audit_verify_result {
	enum audit_verdict verdict;
	enum audit_problem problem;
	uint64_t problem_seq;     /* the first record concerned (0: before any record) */
	char message[512];        /* one line naming it, with the file and line */
	uint64_t first_seq, last_seq;
	uint64_t records, checkpoints;
	uint64_t signed_through;  /* last record covered by a valid checkpoint */
	bool closed;              /* ends with pgwardend's stop checkpoint */
};

/* Verify. Never fails by itself: unreadable input is a verdict (BROKEN), memory
 * exhaustion too (with a message saying so). */
void audit_verify(const struct audit_verify_file *files, unsigned nfiles,
		  const struct audit_verify_opts *o, struct audit_verify_result *res);

#endif
