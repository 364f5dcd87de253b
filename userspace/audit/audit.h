/*
 * audit: the tamper-evident audit trail (docs/AUDIT.md). This is the module's face: what
 * pgwardend and other modules call. The pieces behind it:
 *   audit_record  one record: builder, canonical form, chain hash, line parser
 *   audit_trail   the writer thread, files, checkpoints, failure handling, syslog mirror
 *   audit_sign    Ed25519 keys
 *   audit_verify  offline verification (pgwardenctl audit verify)
 *   audit_stage   the inspection stage that records sessions and statements
 *
 * Lifecycle (pgwardend's main thread):
 *   audit_trail_open()   at start, before the workers: writes daemon_start durably, or
 *                        fails and pgwardend must not start;
 *   audit_stage_bind()   then add &audit_stage to the pipeline (last, after policy and
 *                        masking, so that it hears their decisions and records what is
 *                        forwarded);
 *   audit_trail_close()  after the workers have stopped: daemon_stop and the final
 *                        checkpoint.
 *
 * Events that belong to no session (any thread; never blocks; a NULL trail does nothing):
 * reloads, steering attach/detach, kills, cancels, lockouts. Strings may be anything a
 * peer sent: they are escaped by the writer.
 */
#ifndef PGWARDEN_AUDIT_H
#define PGWARDEN_AUDIT_H

#include "audit/audit_record.h"
#include "audit/audit_trail.h"
#include "base/addr.h"
#include "stage/stage.h"

#include <stdbool.h>
#include <stdint.h>

/* A peer's address as a record field: {"address": "...", "port": N}, or null. */
void audit_rec_addr(struct audit_rec *r, const char *key, const struct addr *a);

/* ---- events outside sessions -------------------------------------------------------- */

/*
 * A configuration or policy (re)load: what ("config", "policy"), from where (NULL: flags
 * only), the SHA-256 of the exact bytes read (NULL: not known), and whether it was
 * accepted; error: why not (NULL when accepted).
 */
void audit_event_reload(struct audit_trail *t, const char *what, const char *path,
			const uint8_t *sha256, bool accepted, const char *error);

/* Steering attached or detached ("attach", "detach"), for the named instance; detail: a
 * short description (ports, relay, mode), may be NULL. */
void audit_event_steer(struct audit_trail *t, const char *action, const char *instance,
		       const char *detail);

/* A session ended by `pgwardenctl kill` (or the admin socket): who asked ("admin socket",
 * or a uid), and whether the session was found. */
void audit_event_kill(struct audit_trail *t, const char *session_id, const char *requested_by,
		      bool found);

/*
 * A CancelRequest: from whom, for which backend (and the session it maps to, NULL when
 * none), and what pgwarden did ("forwarded", "refused: unknown key", ...).
 */
void audit_event_cancel(struct audit_trail *t, const struct addr *client, const char *session_id,
			uint32_t backend_pid, const char *outcome);

/* A lockout: logins for user from client refused until until_wall_ns after failures
 * failed attempts (the authentication module decides; this records it). */
void audit_event_lockout(struct audit_trail *t, const char *user, const struct addr *client,
			 unsigned failures, uint64_t until_wall_ns);

/* ---- the stage ---------------------------------------------------------------------- */

struct audit_stage_options {
	bool literals;            /* statement text as sent; server error texts */
	bool parameters;          /* bind parameter values */
	uint32_t max_text;        /* longest statement text in a record */
	uint64_t write_timeout_ns;/* a statement waits this long for its record */
};

/* The stage's options from a config snapshot. */
void audit_stage_options_from(struct audit_stage_options *o, const struct config *cfg);

/* Give the stage its trail and options (main thread, before the workers start). */
void audit_stage_bind(struct audit_trail *t, const struct audit_stage_options *o);

/*
 * The stage (stage contract v2). Per session: session_start, auth, every Query, Execute
 * and FunctionCall (written and durable before it is forwarded: PAUSE until the writer
 * wakes the session; 53100 when the trail cannot be written, or after write_timeout),
 * completions with tag, rows and duration, other stages' decisions, errors, session_end.
 * Parse, Bind and Close are followed (not recorded) so that an Execute is recorded with
 * the text it runs.
 */
extern const struct stage_ops audit_stage;

/*
 * The hook for masking: record that the result of a request had these columns masked.
 * Called by the masking stage from its own callbacks (the session's worker thread), with
 * the request number its frontend calls saw; one record per call.
 */
struct audit_masked_column {
	const char *name;     /* the column as RowDescription names it */
	uint32_t table_oid;   /* 0 when computed */
	int16_t attnum;
	const char *strategy; /* "null", "redact", "partial", "hmac", ... */
};
void audit_note_masked(const struct session *s, uint64_t request,
		       const struct audit_masked_column *cols, unsigned n);

#endif
