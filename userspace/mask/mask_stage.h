/*
 * mask_stage: masking as an inspection stage (userspace/stage/stage.h, contract v2).
 *
 * For a session whose verified identity has a masking profile, the stage:
 *   - follows the client's requests and the server's answers (mask_track.h), so it knows
 *     which result every DataRow, CopyOutResponse and CopyData belongs to;
 *   - plans each result from its RowDescription (mask_plan.h) and rewrites DataRows in
 *     constant memory (mask_row.h), streamed; COPY TO data likewise (mask_copy.h);
 *   - scrubs ErrorResponse, NoticeResponse, NotificationResponse and ParameterStatus
 *     (mask_scrub.h);
 *   - refuses what it cannot mask: the function-call protocol (42501), replication
 *     (42501), a COPY whose columns or options cannot be read (0A000), a portal executed
 *     without ever being described (0A000), a statement while the catalog for the current
 *     policy is not resolved (55000), more requests in flight than it tracks (54000);
 *   - ends the session when the server's stream cannot be masked as it comes (a row whose
 *     masked columns lie beyond the lookahead: 54000; a malformed row: 08P01; lost track of
 *     which result a row belongs to: XX000), since a server message cannot be refused.
 * Sessions without a profile cost nothing: the stage wants no message types at all.
 *
 * Interest: DataRow is streamed only while the result being received may be masked, and
 * CopyData only during a COPY with masked columns; every other type the stage wants whole
 * is small (RowDescription, completions, errors, parameters).
 *
 * Integration (what the connection core and the policy provide):
 *   - The pipeline must run this stage AFTER the policy stage: a REJECT by an earlier stage
 *     is seen (the message never reaches this one), a REJECT by a later one would not be.
 *   - mask_stage_configure() once at start-up and on reload, with the callbacks below.
 *   - mask_stage_set_key() with the key of mask.key_file (mask_key_load()).
 *   - mask_catalog_publish() whenever the catalog has been resolved (start-up, reload,
 *     and after mask_source.catalog_stale() was called).
 *   - A streamed CopyData's replacement may be more than one CopyData message when one
 *     input message's output exceeds mask.row_lookahead bytes (see MASKING.md): the
 *     connection must accept a sequence of whole CopyData messages as the replacement.
 */
#ifndef PGWARDEN_MASK_STAGE_H
#define PGWARDEN_MASK_STAGE_H

#include "mask/mask_key.h"
#include "mask/mask_policy.h"
#include "mask/mask_stmt.h"
#include "session/session.h"
#include "stage/stage.h"

#include <stddef.h>
#include <stdint.h>

#define MASK_STMTS_PER_QUERY 64 /* statements of one Query described; later ones: unknown */

struct mask_source {
	/*
	 * The masking profile of a session whose login succeeded (session_verified_user() and
	 * the rest of its identity; ctx->chain has the earlier stages' states, e.g. the policy
	 * rule the session matched), or NULL when its identity is not masked. A profile comes
	 * with one reference to its policy (mask_profile_policy()) that the stage takes over
	 * (and drops with mask_policy_put() when done with the profile). It asks at login, and again whenever the session is idle, so that a reloaded policy
	 * applies from the next statement.
	 */
	const struct mask_profile *(*profile)(void *arg, const struct stage_ctx *ctx);
	/*
	 * The classifier: describe each statement of sql[0..len) (a Query's text, or a Parse's)
	 * into out[0..cap), in order. Returns how many it described, or < 0 (then every
	 * statement counts as unknown: computed columns masked whole, COPY refused). lex_opts
	 * are sql.h's (SQL_LEX_BACKSLASH_QUOTES when standard_conforming_strings is off).
	 * NULL: no classifier (everything unknown).
	 */
	int (*analyse)(void *arg, const struct mask_profile *p, const char *sql, size_t len,
		       unsigned lex_opts, struct mask_stmt_info *out, unsigned cap);
	/* Does the published catalog describe s's database? A catalog names tables by OID,
	 * which only mean something in the database they were read from: a masked session
	 * elsewhere has its statements refused (55000). NULL: always. */
	bool (*covers)(void *arg, const struct session *s);
	/* A result of the client's request (stage_ctx.request of its Query or Execute) will be
	 * masked as p says (column i of the result is p->cols[i]; a rule column's name is
	 * mp's mask_policy_column()): for the audit record. Called on the session's worker
	 * thread, before the result's first row; only when p masks something. NULL: none. */
	void (*masked)(void *arg, const struct session *s, uint64_t request,
		       const struct mask_plan *p, const struct mask_policy *mp);
	/* A statement that changes the catalog completed: resolve again and publish. */
	void (*catalog_stale)(void *arg);
	void *arg;
};

struct mask_stage_config {
	struct mask_source source;
	uint32_t row_lookahead; /* mask.row_lookahead: bytes held per session while a row or a
				 * CopyData message is rewritten */
};

/* Set the configuration sessions started from now on use. 0 or -EINVAL (a lookahead
 * below MASK_ROW_LOOKAHEAD_MIN). Safe from any thread. */
int mask_stage_configure(const struct mask_stage_config *cfg)
	__attribute__((warn_unused_result));

/* Hand over the hash key (NULL: none; hash then falls back to null). The previous key is
 * freed. Sessions take their own keyed context at login. Safe from any thread. */
void mask_stage_set_key(struct mask_key *k);

extern const struct stage_ops mask_stage;

/*
 * The references the stage would give the statement in (mask_classify_one()'s description)
 * in a session that has run no DDL, against cat (pgwardenctl policy explain --online):
 * NONE only when the classifier is sure and cat calls every name clean, and no DDL a masked
 * session ran since cat was read makes its names doubtful. Any thread.
 */
enum mask_refs mask_stage_statement_refs(const struct mask_catalog *cat,
					 const struct mask_stmt_info *in);

/*
 * For the audit record (issue #13 item 6): what the session's latest result masked, as
 * "public.customers.ssn=partial-last-4,#3=null(computed)" (computed, view, fallback say why
 * a column became NULL); "" when nothing, or the session is not masked. stage_state is the
 * mask stage's state in the chain (stage_chain_state(chain, index of this stage)). Returns
 * the length written to out (NUL-terminated, cut at a whole entry).
 */
size_t mask_stage_summary(const void *stage_state, char *out, size_t cap);

#endif
