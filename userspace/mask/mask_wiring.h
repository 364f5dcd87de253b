/*
 * mask_wiring: masking's place in the daemon, so that pgwardend.c calls it in a few lines.
 *
 *   - mask_wiring_apply(): at start and on every reload, the stage's configuration
 *     (mask_stage_configure(): the source below, mask.row_lookahead), the hash key
 *     (mask.key_file through mask_key_load()), and the catalog connection's settings
 *     (mask_catconn.h, which then resolves the catalog again, over TLS as tls.server.*
 *     says, and again every mask.catalog_refresh);
 *   - mask_wiring_policy(): builds the masking policy of a policy snapshot about to be
 *     published (mask_rules_build(): a bad `mask:` entry refuses the whole file), and once
 *     published, makes it current and asks for the catalog;
 *   - the source the stage asks: a session's profile is the current masking policy's
 *     profile named like the policy rule the policy stage matched the session to
 *     (policy_stage_rule()); the classifier is mask_classify(); the catalog covers the
 *     configured catalog database only; DDL asks for a new resolution.
 *
 * The stage must run after the policy stage (it reads the rule the policy stage chose).
 */
#ifndef PGWARDEN_MASK_WIRING_H
#define PGWARDEN_MASK_WIRING_H

#include "config/config.h"
#include "mask/mask_policy.h"
#include "policy/policy.h"
#include "tls/tls.h"

#include <stdbool.h>
#include <stddef.h>

/* Configure the stage, the key and the catalog connection from cfg (starting the catalog
 * thread the first time); the catalog connection follows tls.server.* with tls, the
 * snapshot built from cfg (NULL: plaintext). 0, or -1 with a one-line reason in err and
 * nothing changed but what the reason says. Main thread. */
int mask_wiring_apply(const struct config *cfg, struct tls_snapshot *tls, char *err,
		      size_t errlen) __attribute__((warn_unused_result));

/* Check cfg's masking settings without applying them (--check-config): the key file. */
int mask_wiring_check(const struct config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The masking policy of p (NULL: no policy), to publish with it. 0, or -1 with err. */
int mask_wiring_build(const struct policy *p, struct mask_policy **out, char *err,
		      size_t errlen) __attribute__((warn_unused_result));

/* Make mp current (the reference is taken over) and resolve its catalog. */
void mask_wiring_publish(struct mask_policy *mp);

/* Start-up: wait (at most mask.catalog_timeout) for the first catalog, logging the
 * outcome; the daemon starts either way (masked sessions are refused until it is read). */
void mask_wiring_wait_ready(const struct config *cfg);

/* What the online explain found besides the per-column text. */
struct mask_wiring_explained {
	char rule[128]; /* the rule that admits the identity (cut at 127 bytes) */
	bool masks;     /* false: the rule has no mask: map, every column passes clear */
};

/*
 * `pgwardenctl policy explain --online` (the admin socket's explain): which result columns
 * of sql (one statement) a session of user in database would get masked, with the policy,
 * masking policy and catalog in force now. The rule is matched as at the end of a login
 * with only the user and the database known (a rule that also requires a source, a
 * process, a certificate or an authentication method does not match); the references are
 * the stage's (mask_stage_statement_refs()); the server describes the statement on a
 * connection made as the catalog connection's (mask_catconn_explain(): never run, read-only,
 * mask.catalog_timeout). mask_explain()'s text goes to out. Blocks up to
 * mask.catalog_timeout: call it on the admin thread, never a worker. Returns the text's
 * length (0 and ex->masks false when the rule masks nothing), or -errno with a one-line
 * reason in err (which may quote the server's error text: peer text): -ENOENT no rule
 * admits the identity; -EOPNOTSUPP no policy, no mask.catalog_user, or a database the
 * catalog does not describe; -EAGAIN the catalog is not resolved yet; -EINVAL the server
 * rejected the statement (or a COPY TO); -ETIMEDOUT; other -errno.
 */
int mask_wiring_explain(const char *user, const char *database, const char *sql,
			struct mask_wiring_explained *ex, char *out, size_t cap, char *err,
			size_t errlen) __attribute__((warn_unused_result));

/* Stop the catalog thread, drop the key and the current masking policy. */
void mask_wiring_stop(void);

#endif
