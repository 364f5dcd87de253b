/* mask_wiring: see mask_wiring.h. */
#include "mask/mask_wiring.h"

#include "audit/audit.h"
#include "mask/mask_catalog.h"
#include "mask/mask_catconn.h"
#include "mask/mask_classify.h"
#include "mask/mask_key.h"
#include "mask/mask_rules.h"
#include "mask/mask_stage.h"

#include "base/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct mask_profile *source_profile(void *arg, const struct stage_ctx *ctx)
{
	const struct stage_pipeline *pl = ctx->chain ? ctx->chain->pipeline : NULL;
	const char *rule = "";
	const struct mask_profile *p;
	struct mask_policy *mp;

	for (unsigned i = 0; pl && i < pl->count && i < ctx->index; i++)
		if (pl->stages[i] == &policy_stage)
			rule = policy_stage_rule(ctx->chain, i);
	if (!rule[0])
		return NULL;
	mp = mask_rules_acquire();
	p = mp ? mask_policy_find_profile(mp, rule) : NULL;
	if (!p)
		mask_policy_put(mp);
	return p; /* with mp's reference, which the stage takes over */
}

static int source_analyse(void *arg, const struct mask_profile *p, const char *sql, size_t len,
			  unsigned lex_opts, struct mask_stmt_info *out, unsigned cap)
{
	return mask_classify(sql, len, lex_opts, out, cap);
}

static bool source_covers(void *arg, const struct session *s)
{
	char db[PROTO_NAMEDATALEN];

	mask_catconn_database(db, sizeof(db));
	if (!db[0])
		return true; /* no catalog connection: no catalog, the stage refuses (55000) */
	return s->database && strcmp(s->database, db) == 0;
}

/* What a result masks, for the audit trail (audit_note_masked(): one record per result). */
static void source_masked(void *arg, const struct session *s, uint64_t request,
			  const struct mask_plan *p, const struct mask_policy *mp)
{
	struct audit_masked_column *cols = calloc(p->nmasked, sizeof(*cols));
	char (*names)[MASK_COLREF_STRLEN] = calloc(p->nmasked, sizeof(*names));
	char (*strategies)[MASK_STRATEGY_STRLEN + 16] = calloc(p->nmasked, sizeof(*strategies));
	unsigned n = 0;

	for (unsigned i = 0; cols && names && strategies && i < p->ncols && n < p->nmasked; i++) {
		const struct mask_plan_col *c = &p->cols[i];
		char st[MASK_STRATEGY_STRLEN];

		if (c->kind == MASK_COL_CLEAR)
			continue;
		if (c->rule_col >= 0 && (unsigned)c->rule_col < mask_policy_ncolumns(mp))
			mask_colref_format(mask_policy_column(mp, (unsigned)c->rule_col), names[n],
					   sizeof(names[n]));
		else
			snprintf(names[n], sizeof(names[n]), "#%u", i + 1);
		snprintf(strategies[n], sizeof(strategies[n]), "%s%s",
			 mask_strategy_format(&c->action.st, st, sizeof(st)),
			 c->why == MASK_WHY_COLUMN     ? ""
			 : c->why == MASK_WHY_COMPUTED ? " (computed)"
			 : c->why == MASK_WHY_DERIVED  ? " (view)"
			 : c->why == MASK_WHY_UNLISTED ? " (unlisted)"
						       : " (fallback)");
		cols[n] = (struct audit_masked_column){.name = names[n],
						       .table_oid = c->table_oid,
						       .attnum = c->attnum,
						       .strategy = strategies[n]};
		n++;
	}
	if (n)
		audit_note_masked(s, request, cols, n);
	free(cols);
	free(names);
	free(strategies);
}

static void source_stale(void *arg)
{
	mask_catconn_refresh();
}

static int load_key(const struct config *cfg, struct mask_key **key, char *err, size_t errlen)
{
	char why[256];

	*key = NULL;
	if (!cfg->mask_key_file)
		return 0;
	if (mask_key_load(cfg->mask_key_file, key, why, sizeof(why))) {
		snprintf(err, errlen, "mask.key_file: %s", why);
		return -1;
	}
	return 0;
}

int mask_wiring_check(const struct config *cfg, char *err, size_t errlen)
{
	struct mask_key *key;

	if (load_key(cfg, &key, err, errlen))
		return -1;
	mask_key_free(key);
	return 0;
}

int mask_wiring_apply(const struct config *cfg, struct tls_snapshot *tls, char *err,
		      size_t errlen)
{
	struct mask_stage_config sc = {
		.source = {.profile = source_profile,
			   .analyse = source_analyse,
			   .covers = source_covers,
			   .masked = source_masked,
			   .catalog_stale = source_stale},
		.row_lookahead = cfg->mask_row_lookahead,
	};
	struct mask_catconn_settings cs = {
		.upstream = cfg->upstream,
		.unix_path = cfg->has_upstream ? NULL : cfg->unix_upstream,
		.user = cfg->mask_catalog_user,
		.database = cfg->mask_catalog_database,
		.passwords = cfg->mask_catalog_passwords,
		.tls = tls,
		.timeout_ms = cfg->mask_catalog_timeout_ms,
		.refresh_ms = cfg->mask_catalog_refresh_ms,
	};
	struct mask_key *key;

	if (cs.user && !cfg->has_upstream && !cs.unix_path) {
		snprintf(err, errlen, "mask.catalog_user: needs upstream (or unix_upstream) to "
				      "reach the server");
		return -1;
	}
	if (load_key(cfg, &key, err, errlen))
		return -1;
	if (mask_stage_configure(&sc)) {
		mask_key_free(key);
		snprintf(err, errlen, "mask.row_lookahead: below the rewriter's minimum");
		return -1;
	}
	if (mask_catconn_configure(&cs, err, errlen)) {
		mask_key_free(key);
		return -1;
	}
	mask_stage_set_key(key);
	if (mask_catconn_start()) {
		snprintf(err, errlen, "mask: cannot start the catalog thread");
		return -1;
	}
	return 0;
}

int mask_wiring_build(const struct policy *p, struct mask_policy **out, char *err,
		      size_t errlen)
{
	return mask_rules_build(p, out, err, errlen) ? -1 : 0;
}

void mask_wiring_publish(struct mask_policy *mp)
{
	mask_rules_publish(mp);
	mask_catconn_refresh();
}

void mask_wiring_wait_ready(const struct config *cfg)
{
	int rc = mask_catconn_wait(cfg->mask_catalog_timeout_ms + 1000);

	if (rc == -ETIMEDOUT)
		log_warn("mask_catalog", "the first catalog resolution is still running; masked "
					 "sessions are refused (55000) until it ends");
}

/* The rule a session of user in database would be admitted by, as at the end of its login
 * with only those two known; NULL with err when none or no policy. */
static const struct policy_rule *explain_rule(const struct policy *p, const char *user,
					      const char *database, char *err, size_t errlen)
{
	struct policy_identity id = {.user = user, .database = database,
				     .auth_method = SESSION_AUTH_PENDING};
	const struct policy_rule *rule = p ? policy_match_connection(p, &id, true) : NULL;

	if (!p)
		snprintf(err, errlen, "no policy is loaded: nothing is masked");
	else if (!rule)
		snprintf(err, errlen, "no rule admits user \"%s\" in database \"%s\": the "
				      "connection would be refused (28000)", user, database);
	return rule;
}

int mask_wiring_explain(const char *user, const char *database, const char *sql,
			struct mask_wiring_explained *ex, char *out, size_t cap, char *err,
			size_t errlen)
{
	struct policy *p = policy_acquire();
	struct mask_policy *mp = mask_rules_acquire();
	struct mask_catalog *cat = NULL;
	struct mask_stmt_info *in = NULL;
	const struct policy_rule *rule;
	const struct mask_profile *prof;
	char db[PROTO_NAMEDATALEN];
	int rc;

	memset(ex, 0, sizeof(*ex));
	if (cap)
		out[0] = '\0';
	rule = explain_rule(p, user, database, err, errlen);
	if (!rule) {
		rc = p ? -ENOENT : -EOPNOTSUPP;
		goto out;
	}
	snprintf(ex->rule, sizeof(ex->rule), "%s", rule->name);
	prof = mp ? mask_policy_find_profile(mp, rule->name) : NULL;
	if (!prof || !mask_profile_masks(prof)) {
		rc = 0; /* the rule masks nothing: every column passes clear */
		goto out;
	}
	ex->masks = true;
	mask_catconn_database(db, sizeof(db));
	if (!db[0]) {
		rc = -EOPNOTSUPP;
		snprintf(err, errlen, "mask.catalog_user is not set: masked sessions are refused "
				      "(55000) and no statement can be described");
		goto out;
	}
	if (strcmp(db, database) != 0) {
		rc = -EOPNOTSUPP;
		snprintf(err, errlen, "the masking catalog describes database \"%s\" only: "
				      "masked statements in \"%s\" are refused (55000)", db, database);
		goto out;
	}
	cat = mask_catalog_acquire();
	if (!cat || mask_catalog_policy(cat) != mp) {
		rc = -EAGAIN;
		snprintf(err, errlen, "the catalog for the current masking policy is not resolved "
				      "yet (masked statements are refused with 55000); try again");
		goto out;
	}
	in = malloc(sizeof(*in));
	if (!in) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	mask_classify_one(sql, strlen(sql), 0, in);
	if (in->copy_to) {
		rc = -EINVAL;
		snprintf(err, errlen, "COPY TO has no result columns to describe: `pgwardenctl "
				      "policy explain FILE` says how masking treats it");
		goto out;
	}
	rc = mask_catconn_explain(sql, prof, cat, mask_stage_statement_refs(cat, in), out, cap,
				  err, errlen);
out:
	free(in);
	mask_catalog_put(cat);
	mask_policy_put(mp);
	policy_unref(p);
	return rc;
}

void mask_wiring_stop(void)
{
	mask_catconn_stop();
	mask_stage_set_key(NULL);
	mask_rules_publish(NULL);
	mask_catalog_publish(NULL);
}
