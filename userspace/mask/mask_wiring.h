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

/* Stop the catalog thread, drop the key and the current masking policy. */
void mask_wiring_stop(void);

#endif
