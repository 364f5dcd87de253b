/* conn_admin: a connection as the admin socket lists it (docs/ADMIN.md). */
#include "relay/conn_internal.h"

#include "admin/admin.h"
#include "policy/policy.h"
#include "sql/sql.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(POLICY_NAME_MAX + 1 <= ADMIN_NAME_MAX, "a rule's whole name fits the listing");

void conn_publish_rule(struct conn *c)
{
	const struct stage_pipeline *p = c->chain.pipeline;
	const char *rule = "";
	size_t len;

	for (unsigned i = 0; p && i < p->count; i++)
		if (p->stages[i] == &policy_stage)
			rule = policy_stage_rule(&c->chain, i);
	if (!c->rule) {
		struct admin_name *shown;

		if (!*rule)
			return;
		/* Out of memory: the listing shows no rule until a later call manages. */
		shown = calloc(1, sizeof(*shown));
		if (!shown)
			return;
		admin_text_set(shown, rule, strlen(rule));
		__atomic_store_n(&c->rule, shown, __ATOMIC_RELEASE);
		return;
	}
	/* The rule changes at login and at a reload, and this runs for every message: compare
	 * in place before the seqlock write. */
	len = strlen(rule);
	if (!admin_text_holds(c->rule, rule, len))
		admin_text_set(c->rule, rule, len);
}

void conn_publish_statement(struct conn *c, const char *sql, size_t len)
{
	if (!c->last_statement) {
		struct admin_text *shown = calloc(1, sizeof(*shown));

		if (!shown)
			return;
		__atomic_store_n(&c->last_statement, shown, __ATOMIC_RELEASE);
	}
	admin_text_set(c->last_statement, sql, len < ADMIN_TEXT_MAX ? len : ADMIN_TEXT_MAX);
}

json_t *conn_admin_json(struct conn *c, uint64_t now)
{
	char stmt[ADMIN_TEXT_MAX], normalised[ADMIN_TEXT_MAX], rule[ADMIN_TEXT_MAX];
	/* Set once by the worker when each handshake finished (conn_tls.c). */
	const struct session_tls *tls = session_client_tls(&c->session);
	const struct session_tls *up_tls = session_server_tls(&c->session);
	struct admin_session_view v = {
		.state = conn_state_to_str(__atomic_load_n(&c->state, __ATOMIC_RELAXED)),
		.last_statement = stmt,
		.last_latency_ns = __atomic_load_n(&c->last_latency_ns, __ATOMIC_RELAXED),
		.now_mono_ns = now,
		.errors = __atomic_load_n(&c->errors, __ATOMIC_RELAXED),
		/* Set once by the login (conn_auth.c) before ok, never changed after. */
		.auth_method = c->session.auth.ok ? session_auth_method_to_str(c->session.auth.method)
						  : NULL,
		.tls_version = tls->version,
		.tls_cipher = tls->cipher,
		.tls_client_subject = tls->peer_subject,
		.upstream_tls_version = up_tls->version,
		.upstream_tls_cipher = up_tls->cipher,
	};
	const struct admin_text *said = __atomic_load_n(&c->last_statement, __ATOMIC_ACQUIRE);
	size_t len = said ? admin_text_get(said, stmt, sizeof(stmt)) : 0;
	const struct admin_name *shown = __atomic_load_n(&c->rule, __ATOMIC_ACQUIRE);

	if (shown && admin_text_get(shown, rule, sizeof(rule)))
		v.rule = rule;

	/* Literals leave the listing here, on the admin thread, never on the data path. */
	if (!len)
		v.last_statement = NULL;
	else if (sql_normalize(stmt, len, 0, normalised, sizeof(normalised), NULL) != -EINVAL)
		v.last_statement = normalised;
	return admin_session_json(&c->session, &v);
}
