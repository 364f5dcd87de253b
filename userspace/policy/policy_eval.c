/*
 * policy_eval: connection matching (first rule whose predicates all hold) and statement
 * judgement. Pure functions over an immutable snapshot and an analysed statement.
 *
 * Unqualified names (docs/POLICY.md, "search_path"): the server resolves them through
 * pg_catalog first (every catalog relation's name starts with "pg_") and then the session's
 * search_path, which the text does not show. A rule says what search_path it assumes
 * (default "$user", public); a name is allowed only if it is allowed in every schema it
 * could resolve to, and denied if any of those is denied. Once a session changed its
 * search_path, an unqualified name could be anywhere: it is then denied wherever a
 * relation list applies to it.
 */
#include "policy/policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* ---- connections ---------------------------------------------------------------------- */

static bool in_strs(const struct policy_strlist *l, const char *v)
{
	if (!l->n)
		return true;
	if (!v)
		return false;
	for (unsigned i = 0; i < l->n; i++)
		if (!strcmp(l->v[i], v))
			return true;
	return false;
}

/* A cgroup path is in a listed cgroup or below it. */
static bool in_cgroups(const struct policy_strlist *l, const char *path)
{
	if (!l->n)
		return true;
	if (!path)
		return false;
	for (unsigned i = 0; i < l->n; i++) {
		size_t n = strlen(l->v[i]);

		if (!strcmp(l->v[i], "/") || (!strncmp(path, l->v[i], n) &&
					       (path[n] == '\0' || path[n] == '/')))
			return true;
	}
	return false;
}

static bool in_ids(const uint32_t *v, unsigned n, bool known, uint32_t id)
{
	if (!n)
		return true;
	if (!known)
		return false;
	for (unsigned i = 0; i < n; i++)
		if (v[i] == id)
			return true;
	return false;
}

static bool source_ok(const struct policy_match *m, const struct policy_identity *id)
{
	uint8_t a16[16] = {0};
	const struct sockaddr *sa;

	if (!m->nsource && !m->source_local)
		return true;
	if (id->local && m->source_local)
		return true;
	if (!id->client)
		return false;
	sa = (const struct sockaddr *)&id->client->ss;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		a16[10] = a16[11] = 0xff;
		memcpy(a16 + 12, &in->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(a16, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	} else {
		return false; /* a Unix client matches only "local" */
	}
	for (unsigned i = 0; i < m->nsource; i++)
		if (cidr_match(&m->source[i], a16))
			return true;
	return false;
}

static bool rule_matches(const struct policy_rule *r, const struct policy_identity *id,
			 bool final)
{
	const struct policy_match *m = &r->match;

	if (!in_strs(&m->user, id->user) || !in_strs(&m->database, id->database) ||
	    !in_strs(&m->application_name, id->application_name) ||
	    !in_strs(&m->tls_identity, id->tls_identity) || !source_ok(m, id))
		return false;
	if (m->auth_methods) {
		if (id->auth_method == SESSION_AUTH_PENDING) {
			if (final)
				return false;
		} else if (!(m->auth_methods & (1u << id->auth_method))) {
			return false;
		}
	}
	/* Process predicates hold only for a process the kernel recorded. */
	if ((m->nuid || m->ngid || m->comm.n || m->exe.n || m->cgroup.n) && !id->process_known)
		return false;
	return in_ids(m->uid, m->nuid, id->process_known, id->uid) &&
	       in_ids(m->gid, m->ngid, id->process_known, id->gid) &&
	       in_strs(&m->comm, id->comm) && in_strs(&m->exe, id->exe) &&
	       in_cgroups(&m->cgroup, id->cgroup);
}

const struct policy_rule *policy_match_connection(const struct policy *p,
						  const struct policy_identity *id, bool final)
{
	for (unsigned i = 0; i < p->nrules; i++)
		if (rule_matches(&p->rules[i], id, final))
			return &p->rules[i];
	return NULL;
}

/* ---- names ------------------------------------------------------------------------------ */

static bool entry_covers(const struct policy_name *e, const char *schema, const char *name)
{
	if (e->schema[0] && strcmp(e->schema, schema))
		return false;
	return !strcmp(e->name, "*") || !strcmp(e->name, name);
}

static bool list_covers(const struct policy_names *l, const char *schema, const char *name)
{
	for (unsigned i = 0; i < l->n; i++)
		if (entry_covers(&l->v[i], schema, name))
			return true;
	return false;
}

/* The schemas an unqualified name could resolve to, for rule r; false: unknown. */
static bool resolve_schemas(const struct policy_rule *r, const struct policy_stmt_ctx *ctx,
			    const char *name, const char **out, unsigned *n, unsigned cap)
{
	*n = 0;
	if (ctx->search_path_unknown)
		return false;
	if (!strncmp(name, "pg_", 3))
		out[(*n)++] = "pg_catalog";
	for (unsigned i = 0; i < r->search_path.n && *n < cap; i++) {
		const char *s = r->search_path.v[i];

		if (!strcmp(s, "$user")) {
			if (!ctx->user || !*ctx->user)
				continue;
			s = ctx->user;
		}
		out[(*n)++] = s;
	}
	return true;
}

/* Deny list: any entry that could name this reference. */
static bool names_deny(const struct policy_rule *r, const struct policy_names *l,
		       const struct policy_stmt_ctx *ctx, const char *schema, const char *name)
{
	const char *schemas[66];
	unsigned n;

	if (schema[0])
		return list_covers(l, schema, name);
	for (unsigned i = 0; i < l->n; i++)
		if (!strcmp(l->v[i].name, name) || !l->v[i].schema[0])
			if (entry_covers(&l->v[i], l->v[i].schema, name))
				return true;
	if (!resolve_schemas(r, ctx, name, schemas, &n, 66)) {
		/* Anywhere: a schema wildcard could hold it (pg_catalog only pg_ names). */
		for (unsigned i = 0; i < l->n; i++)
			if (!strcmp(l->v[i].name, "*") &&
			    (strcmp(l->v[i].schema, "pg_catalog") || !strncmp(name, "pg_", 3)))
				return true;
		return false;
	}
	for (unsigned i = 0; i < n; i++)
		if (list_covers(l, schemas[i], name))
			return true;
	return false;
}

/* Allow list: allowed in every schema the reference could be in. */
static bool names_allow(const struct policy_rule *r, const struct policy_names *l,
			const struct policy_stmt_ctx *ctx, const char *schema, const char *name)
{
	const char *schemas[66];
	unsigned n;

	if (schema[0])
		return list_covers(l, schema, name);
	/* An entry without a schema allows the name wherever it is. */
	for (unsigned i = 0; i < l->n; i++)
		if (!l->v[i].schema[0] && entry_covers(&l->v[i], "", name))
			return true;
	if (!resolve_schemas(r, ctx, name, schemas, &n, 66) || n == 0)
		return false;
	for (unsigned i = 0; i < n; i++)
		if (!list_covers(l, schemas[i], name))
			return false;
	return true;
}

bool policy_function_denied(const struct policy_rule *r, const char *schema, const char *name)
{
	/* Functions resolve through pg_catalog first and then search_path; an unqualified
	 * call is denied by an entry of that name in any schema. */
	for (unsigned i = 0; i < r->function_deny.n; i++) {
		const struct policy_name *e = &r->function_deny.v[i];

		if (strcmp(e->name, name))
			continue;
		if (!e->schema[0] || !schema[0] || !strcmp(e->schema, schema))
			return true;
	}
	return false;
}

/* ---- statements ------------------------------------------------------------------------- */

static void deny(struct policy_verdict *v, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void deny(struct policy_verdict *v, const char *sqlstate, const char *fmt, ...)
{
	va_list ap;

	v->allowed = false;
	snprintf(v->sqlstate, sizeof(v->sqlstate), "%s", sqlstate);
	va_start(ap, fmt);
	vsnprintf(v->reason, sizeof(v->reason), fmt, ap);
	va_end(ap);
}

void policy_check_statement(const struct policy_rule *r, const struct sql_analysis *a,
			    const struct policy_stmt_ctx *ctx, struct policy_verdict *v)
{
	bool lists = r->has_relation_allow || r->relation_deny.n;

	v->allowed = true;
	v->sqlstate[0] = '\0';
	v->reason[0] = '\0';
	if (a->flags & SQL_AF_TOO_COMPLEX) {
		deny(v, "54001", "statement too complex to inspect");
		return;
	}
	if (a->primary == SQL_CLASS_UNKNOWN) {
		deny(v, "42501", "statement cannot be classified");
		return;
	}
	if (a->flags & SQL_AF_BAD_ENCODING) {
		deny(v, "42501", "client_encoding would switch to an encoding pgwarden cannot "
				 "inspect");
		return;
	}
	for (unsigned c = 0; c < SQL_CLASS_COUNT; c++)
		if ((a->classes & SQL_CLASS_BIT(c)) && !(r->allow & SQL_CLASS_BIT(c))) {
			deny(v, "42501", "statement class %s is not allowed", sql_class_to_str(c));
			return;
		}
	if ((a->flags & SQL_AF_ROLE_SWITCH) && !r->role_switch) {
		deny(v, "42501", "%s", (a->flags & SQL_AF_OPAQUE_BODY)
					       ? "a DO block cannot be inspected (it could switch "
						 "roles)"
					       : "role switching is not allowed");
		return;
	}
	if (r->function_deny.n) {
		if (a->flags & SQL_AF_FUNCTIONS_UNSURE) {
			deny(v, "42501", "the functions this statement calls cannot all be told");
			return;
		}
		for (unsigned i = 0; i < a->nfunctions; i++)
			if (policy_function_denied(r, a->functions[i].schema, a->functions[i].name)) {
				deny(v, "42501", "function %s%s%s is denied", a->functions[i].schema,
				     a->functions[i].schema[0] ? "." : "", a->functions[i].name);
				return;
			}
		/* Attribute notation: t.f calls f(t) when f takes t's row type. */
		for (unsigned i = 0; i < a->ncolumns; i++)
			if (a->columns[i].qualifier[0] &&
			    policy_function_denied(r, "", a->columns[i].name)) {
				deny(v, "42501", "function %s is denied (attribute notation)",
				     a->columns[i].name);
				return;
			}
	}
	if (!lists)
		return;
	if (a->flags & SQL_AF_RELATIONS_UNSURE) {
		deny(v, "42501", "the relations this statement touches cannot all be told");
		return;
	}
	for (unsigned i = 0; i < a->nrelations; i++) {
		const struct sql_relation *rel = &a->relations[i];
		const char *dot = rel->schema[0] ? "." : "";

		if (r->relation_deny.n &&
		    names_deny(r, &r->relation_deny, ctx, rel->schema, rel->name)) {
			deny(v, "42501", "relation %s%s%s is denied", rel->schema, dot, rel->name);
			return;
		}
		if (r->has_relation_allow &&
		    !names_allow(r, &r->relation_allow, ctx, rel->schema, rel->name)) {
			deny(v, "42501", "relation %s%s%s is not in the allowed list%s", rel->schema,
			     dot, rel->name,
			     !rel->schema[0] && ctx->search_path_unknown
				     ? " (search_path was changed: qualify the name)"
				     : "");
			return;
		}
	}
}
