/*
 * audit_trail: the write-ahead audit log. One writer thread owns the files; every other
 * thread only hands it records through a bounded queue.
 *
 * What the writer guarantees (docs/AUDIT.md "Guarantees"):
 *   - Records are written in the order they were queued, one canonical JSON line each,
 *     numbered without gaps (seq) and chained (prev = SHA-256 of the previous line), across
 *     restarts and rotated files alike.
 *   - A signed checkpoint (Ed25519 over its own canonical form, which includes prev) follows
 *     every checkpoint_records records, comes at least every checkpoint_interval while
 *     records arrive, and is written at every start, rotation and stop. A start that finds
 *     an unsigned tail left by a crash signs it in a "recovery" checkpoint that says so.
 *   - A gated record (a statement's) is reported written only once it is durable as
 *     audit.fsync says: fdatasync'd (always, batch) or handed to write(2) (none). Nothing is
 *     ever reported written that a later failure takes back.
 *   - When the file cannot be written (ENOSPC, EROFS, EIO, ...), the partial write is cut
 *     off again (ftruncate), the chain rolls back to the last durable record, every record
 *     of the failed write is reported failed, and the trail is "failing": new gated
 *     submissions fail at once, other records are counted as lost. The writer retries on
 *     its own; its first record afterwards is a "gap" record with the counts and the time
 *     span, so the trail itself says what it is missing.
 *   - Bytes a crash (or an uncuttable failed write) left half-written are never removed:
 *     the next record is a "torn_record" marker with their offset, length and SHA-256.
 *   - The queue is bounded in bytes for gated records: a full queue refuses them with
 *     -EAGAIN (the caller waits for a wake and tries again), it never drops one. Records
 *     nobody can wait for (completions, session ends, daemon events) are always queued;
 *     right after a round that wrote records they do not wake the writer but go with the
 *     next gated record, or when its 2 ms linger ends (one wake-up per statement, not two).
 *
 * Threads and locks: one mutex guards the queue, the gates and the failure counters. A
 * gate's wake callback is called with that mutex held, from the writer thread: it must only
 * post (stage_wake() does) and never call back into the trail.
 */
#ifndef PGWARDEN_AUDIT_TRAIL_H
#define PGWARDEN_AUDIT_TRAIL_H

#include "audit/audit_record.h"
#include "config/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit_trail_config {
	const char *path;
	const char *signing_key;
	enum config_audit_fsync fsync;
	uint64_t batch_window_ns;
	size_t queue_size;
	enum config_audit_on_failure on_failure;
	uint64_t rotate_size;         /* 0: never by size */
	uint64_t rotate_interval_ns;  /* 0: never by age */
	uint32_t checkpoint_records;
	uint64_t checkpoint_interval_ns;
	uint32_t disk_warn_percent;   /* 0: no capacity warning */
	const char *group;            /* NULL: files 0600; else 0640 with this group */
	const char *syslog_socket;    /* NULL: no local mirror */
	const char *syslog_address;   /* NULL: no UDP mirror */
	uint64_t retry_interval_ns;   /* while failing, try again this often; 0: 1 s */
	/* What daemon_start records. */
	const char *version;
	const char *config_path;      /* NULL: flags only */
	const uint8_t *config_sha256; /* NULL: not known */
};

/* The trail settings of a config snapshot (strings point into cfg). */
void audit_trail_config_from(struct audit_trail_config *tc, const struct config *cfg);

struct audit_trail;

/*
 * Open (or continue) the trail, load the signing key, write daemon_start and a checkpoint,
 * durably, and start the writer. 0, or -errno with one line in err: nothing is running
 * then, and pgwardend must not start (fail closed).
 */
int audit_trail_open(const struct audit_trail_config *c, struct audit_trail **out, char *err,
		     size_t n) __attribute__((warn_unused_result));

/* Write what is queued, then daemon_stop and the final checkpoint; stop the writer; free.
 * reason: why pgwardend stops. NULL t: nothing. */
void audit_trail_close(struct audit_trail *t, const char *reason);

/* Queue a record nobody waits for. Takes r whatever happens (a record that cannot be
 * written is counted in the next gap record). NULL t: r is freed. */
void audit_trail_submit(struct audit_trail *t, struct audit_rec *r);

/* Is the trail failing right now (an atomic read: a hint for callers' fast paths)? */
bool audit_trail_failing(const struct audit_trail *t);
enum config_audit_on_failure audit_trail_on_failure(const struct audit_trail *t);

/* ---- gates: a session waiting for its statement's records ------------------------- */

struct audit_gate;

/* A gate whose wake(arg) the writer calls when the records submitted through it are all
 * written or failed, or when queue space frees up after an -EAGAIN. NULL on ENOMEM. */
struct audit_gate *audit_gate_new(struct audit_trail *t, void (*wake)(void *arg), void *arg);

/* The session is done with it: no wake after this returns. NULL: nothing. */
void audit_gate_release(struct audit_gate *g);

/*
 * Queue recs[0, n) as one unit (nothing else is queued between them). Returns:
 *   0        queued; wait for a wake, then audit_gate_poll();
 *   -EAGAIN  the queue is full: recs are left with the caller; wait for a wake and retry;
 *   -errno   the trail is failing (recs freed, the statement counted as refused or
 *            unaudited in the next gap record, per audit.on_failure).
 */
int audit_gate_submit(struct audit_gate *g, struct audit_rec **recs, unsigned n)
	__attribute__((warn_unused_result));

/* 1: everything submitted is written; 0: still pending; -errno: some of it failed (the
 * failure is reported once). */
int audit_gate_poll(struct audit_gate *g);

/* For metrics, status and tests. */
struct audit_trail_stats {
	uint64_t seq;              /* last record durably written */
	uint64_t records;          /* written by this process */
	uint64_t checkpoints;
	uint64_t batches;          /* write(2) calls that carried records */
	uint64_t syncs;            /* fdatasync calls */
	uint64_t failures;         /* times the trail entered the failing state */
	uint64_t lost;             /* records that could not be written */
	uint64_t mirror_dropped;   /* records the syslog mirror could not send */
	uint64_t rotations;
	size_t queued_bytes;
	bool failing;
};
void audit_trail_stats(struct audit_trail *t, struct audit_trail_stats *out);

#endif
