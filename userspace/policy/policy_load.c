/*
 * policy_load: the YAML policy file into an immutable snapshot, all or nothing.
 *
 * libyaml's document API builds the node graph; the loader walks it once, refusing any node
 * reached twice (an alias), unknown keys, wrong shapes and out-of-range values, each with
 * "FILE:LINE: what". Everything the snapshot holds lives in one arena freed with it.
 */
#include "policy/policy.h"

#include "config/config.h" /* config_parse_duration: one duration syntax everywhere */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_NODES 100000 /* a 1 MiB file cannot sensibly hold more */

/* ---- arena -------------------------------------------------------------------------- */

struct policy_arena {
	struct policy_arena *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

static void *arena_alloc(struct policy_arena **ap, size_t n)
{
	struct policy_arena *a = *ap;

	n = (n + 15) & ~(size_t)15;
	if (!a || a->cap - a->used < n) {
		size_t cap = n > 16384 ? n : 16384;
		struct policy_arena *b = malloc(sizeof(*b) + cap);

		if (!b)
			return NULL;
		b->next = a;
		b->used = 0;
		b->cap = cap;
		*ap = a = b;
	}
	void *p = a->data + a->used;

	a->used += n;
	memset(p, 0, n);
	return p;
}

static void arena_free(struct policy_arena *a)
{
	while (a) {
		struct policy_arena *n = a->next;

		free(a);
		a = n;
	}
}

/* ---- the walk ------------------------------------------------------------------------ */

struct loader {
	const char *name;
	yaml_document_t doc;
	struct policy *p;
	char *err;
	size_t errlen;
	bool failed;
	unsigned char *seen; /* node index → visited */
	size_t nnodes;
};

static void fail(struct loader *l, const yaml_node_t *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(struct loader *l, const yaml_node_t *at, const char *fmt, ...)
{
	char msg[POLICY_ERR_MAX];
	va_list ap;

	if (l->failed)
		return;
	l->failed = true;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (l->err && l->errlen)
		snprintf(l->err, l->errlen, "%s:%lu: %s", l->name,
			 at ? (unsigned long)at->start_mark.line + 1 : 1UL, msg);
}

/* Text from the file, made printable for a message (quotes and controls escaped). */
static const char *shown(const char *s, char *buf, size_t n)
{
	size_t o = 0;

	for (; *s && o + 5 < n; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
			o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	if (*s && o + 4 < n) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

static yaml_node_t *node(struct loader *l, int id)
{
	yaml_node_t *n = yaml_document_get_node(&l->doc, id);

	if (!n) {
		fail(l, NULL, "malformed document");
		return NULL;
	}
	size_t i = (size_t)(id - 1);

	if (i < l->nnodes) {
		if (l->seen[i]) {
			fail(l, n, "aliases are not allowed in a policy file");
			return NULL;
		}
		l->seen[i] = 1;
	}
	return n;
}

static const char *kind_name(const yaml_node_t *n)
{
	return n->type == YAML_MAPPING_NODE ? "a mapping"
	       : n->type == YAML_SEQUENCE_NODE ? "a list"
					       : "a value";
}

static const char *scalar(struct loader *l, yaml_node_t *n, const char *key)
{
	if (n->type != YAML_SCALAR_NODE) {
		fail(l, n, "%s: expected a value, got %s", key, kind_name(n));
		return NULL;
	}
	if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length) {
		fail(l, n, "%s: a NUL byte inside a value", key);
		return NULL;
	}
	return (const char *)n->data.scalar.value;
}

static char *arena_strdup(struct loader *l, const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = arena_alloc(&l->p->arena, n);

	if (!d) {
		fail(l, NULL, "out of memory");
		return NULL;
	}
	memcpy(d, s, n);
	return d;
}

/* A value or a list of values: calls each(l, node, text, i) for every item. */
typedef void (*item_fn)(struct loader *l, yaml_node_t *n, const char *text, unsigned i,
			void *arg);

static unsigned count_items(yaml_node_t *n)
{
	if (n->type == YAML_SEQUENCE_NODE)
		return (unsigned)(n->data.sequence.items.top - n->data.sequence.items.start);
	return 1;
}

static void each_item(struct loader *l, yaml_node_t *n, const char *key, item_fn fn, void *arg)
{
	if (n->type == YAML_MAPPING_NODE) {
		fail(l, n, "%s: expected a value or a list, got a mapping", key);
		return;
	}
	if (n->type == YAML_SCALAR_NODE) {
		const char *t = scalar(l, n, key);

		if (t)
			fn(l, n, t, 0, arg);
		return;
	}
	unsigned i = 0;

	for (yaml_node_item_t *it = n->data.sequence.items.start;
	     it < n->data.sequence.items.top && !l->failed; it++, i++) {
		yaml_node_t *c = node(l, *it);
		const char *t;

		if (!c)
			return;
		t = scalar(l, c, key);
		if (t)
			fn(l, c, t, i, arg);
	}
	if (i == 0)
		fail(l, n, "%s: an empty list", key);
}

static void *alloc_items(struct loader *l, yaml_node_t *n, size_t size)
{
	void *p = arena_alloc(&l->p->arena, size * (count_items(n) ? count_items(n) : 1));

	if (!p)
		fail(l, n, "out of memory");
	return p;
}

/* ---- value parsers ---------------------------------------------------------------------- */

static bool parse_bool(const char *t, bool *v)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(t, yes[i])) {
			*v = true;
			return true;
		}
		if (!strcasecmp(t, no[i])) {
			*v = false;
			return true;
		}
	}
	return false;
}

static bool parse_u32(const char *t, uint32_t max, uint32_t *v)
{
	uint64_t n = 0;

	if (!*t)
		return false;
	for (; *t; t++) {
		if (*t < '0' || *t > '9')
			return false;
		n = n * 10 + (uint64_t)(*t - '0');
		if (n > max)
			return false;
	}
	*v = (uint32_t)n;
	return true;
}

/*
 * A name as SQL writes it: ident(.ident)* with an optional final '*', at most `parts`
 * parts. out[i] receives decoded parts. Returns the number of parts, 0 when malformed.
 */
static unsigned parse_sql_name(const char *text, unsigned parts, char out[][SQL_NAME_MAX],
			       bool *star)
{
	struct sql_lexer lx;
	struct sql_token t;
	unsigned n = 0;
	size_t len = strlen(text);

	*star = false;
	sql_lex_init(&lx, text, len, 0);
	for (;;) {
		sql_lex_next(&lx, &t);
		if (t.kind == SQL_TOK_OP && t.len == 1 && text[t.off] == '*') {
			if (n >= parts)
				return 0;
			strcpy(out[n++], "*");
			*star = true;
			sql_lex_next(&lx, &t);
			return t.kind == SQL_TOK_EOF ? n : 0;
		}
		if (t.kind != SQL_TOK_IDENT && t.kind != SQL_TOK_QIDENT)
			return 0;
		if (n >= parts || t.len >= SQL_NAME_MAX + 2 ||
		    !sql_ident_decode(&lx, &t, '\\', out[n]))
			return 0;
		if (t.kind == SQL_TOK_IDENT && t.len >= SQL_NAME_MAX)
			return 0; /* the server would cut it: say so rather than match a cut name */
		n++;
		sql_lex_next(&lx, &t);
		if (t.kind == SQL_TOK_EOF)
			return n;
		if (!(t.kind == SQL_TOK_PUNCT && t.len == 1 && text[t.off] == '.'))
			return 0;
	}
}

/* The built-in set behind "@dangerous" in deny_functions (docs/POLICY.md lists why). */
static const char *const dangerous_functions[] = {
	"pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir",
	"pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir",
	"pg_ls_logicalmapdir", "pg_ls_replslotdir", "lo_import", "lo_export", "lo_get",
	"lo_put", "lo_from_bytea", "dblink", "dblink_exec", "dblink_connect",
	"dblink_connect_u", "dblink_open", "dblink_send_query", "set_config", "pg_sleep",
	"pg_sleep_for", "pg_sleep_until", "pg_terminate_backend", "pg_cancel_backend",
	"pg_reload_conf", "pg_rotate_logfile", "pg_promote", "pg_file_write",
	"pg_file_rename", "pg_file_unlink", "pg_logdir_ls", "pg_switch_wal",
	"pg_create_restore_point", "pg_start_backup", "pg_backup_start", "pg_stop_backup",
	"pg_backup_stop", "pg_drop_replication_slot", "pg_create_logical_replication_slot",
	"pg_create_physical_replication_slot", "pg_logical_slot_get_changes",
	"pg_logical_slot_peek_changes", "pg_replication_origin_create",
	"pg_import_system_collations", "query_to_xml", "query_to_xmlschema",
	"query_to_xml_and_xmlschema", "pg_current_logfile", NULL,
};

static void add_name(struct loader *l, yaml_node_t *n, struct policy_names *names,
		     const char *text, bool functions, const char *key)
{
	char parts[2][SQL_NAME_MAX], buf[96];
	bool star;
	unsigned k = parse_sql_name(text, 2, parts, &star);
	struct policy_name *e;

	if (!k) {
		fail(l, n, "%s: \"%s\" is not a name like schema.table, table, schema.* or *",
		     key, shown(text, buf, sizeof(buf)));
		return;
	}
	if (functions && star) {
		fail(l, n, "%s: \"%s\": a function name cannot be a wildcard", key,
		     shown(text, buf, sizeof(buf)));
		return;
	}
	if (k == 2 && !strcmp(parts[0], "*")) {
		fail(l, n, "%s: \"%s\": only the last part may be *", key, shown(text, buf, sizeof(buf)));
		return;
	}
	e = &names->v[names->n++];
	if (k == 2) {
		strcpy(e->schema, parts[0]);
		strcpy(e->name, parts[1]);
	} else {
		e->schema[0] = '\0';
		strcpy(e->name, parts[0]);
	}
}

struct names_arg {
	struct policy_names *names;
	bool functions;
	const char *key;
};

static void name_item(struct loader *l, yaml_node_t *n, const char *text, unsigned i, void *arg)
{
	struct names_arg *a = arg;

	if (a->functions && !strcmp(text, "@dangerous")) {
		/* Expanded in place: the array was sized for it (see parse_names). */
		for (const char *const *f = dangerous_functions; *f; f++) {
			struct policy_name *e = &a->names->v[a->names->n++];

			e->schema[0] = '\0';
			strcpy(e->name, *f);
		}
		return;
	}
	if (text[0] == '@') {
		char buf[64];

		fail(l, n, "%s: unknown function set \"%s\" (the one set is @dangerous)", a->key,
		     shown(text, buf, sizeof(buf)));
		return;
	}
	add_name(l, n, a->names, text, a->functions, a->key);
}

static void parse_names(struct loader *l, yaml_node_t *n, struct policy_names *out,
			bool functions, const char *key)
{
	struct names_arg a = {.names = out, .functions = functions, .key = key};
	size_t room = count_items(n) + (functions ? ARRAY_SIZE(dangerous_functions) : 0);

	out->v = arena_alloc(&l->p->arena, room * sizeof(*out->v));
	if (!out->v) {
		fail(l, n, "out of memory");
		return;
	}
	out->n = 0;
	each_item(l, n, key, name_item, &a);
}

struct str_arg {
	struct policy_strlist *list;
	const char *key;
	size_t max; /* longest accepted, bytes; 0: any */
	bool absolute; /* must start with '/' */
};

static void str_item(struct loader *l, yaml_node_t *n, const char *text, unsigned i, void *arg)
{
	struct str_arg *a = arg;
	char buf[96];

	if (!*text) {
		fail(l, n, "%s: an empty value", a->key);
		return;
	}
	if (a->max && strlen(text) > a->max) {
		fail(l, n, "%s: \"%s\" is longer than %zu bytes%s", a->key,
		     shown(text, buf, sizeof(buf)), a->max,
		     a->max == 63 ? " (PostgreSQL cuts names there: write the name it keeps)" : "");
		return;
	}
	if (a->absolute && text[0] != '/') {
		fail(l, n, "%s: \"%s\" is not an absolute path", a->key, shown(text, buf, sizeof(buf)));
		return;
	}
	a->list->v[a->list->n++] = arena_strdup(l, text);
}

static void parse_strs(struct loader *l, yaml_node_t *n, struct policy_strlist *out,
		       const char *key, size_t max, bool absolute)
{
	struct str_arg a = {.list = out, .key = key, .max = max, .absolute = absolute};

	out->v = alloc_items(l, n, sizeof(char *));
	if (!out->v)
		return;
	out->n = 0;
	each_item(l, n, key, str_item, &a);
}

struct id_arg {
	uint32_t *v;
	unsigned *n;
	const char *key;
};

static void id_item(struct loader *l, yaml_node_t *n, const char *text, unsigned i, void *arg)
{
	struct id_arg *a = arg;
	uint32_t v;
	char buf[64];

	if (!parse_u32(text, UINT32_MAX - 1, &v)) {
		fail(l, n, "%s: \"%s\" is not a numeric id", a->key, shown(text, buf, sizeof(buf)));
		return;
	}
	a->v[(*a->n)++] = v;
}

static void source_item(struct loader *l, yaml_node_t *n, const char *text, unsigned i,
			void *arg)
{
	struct policy_match *m = arg;
	char buf[96];

	if (!strcmp(text, "local")) {
		m->source_local = true;
		return;
	}
	if (cidr_parse(text, &m->source[m->nsource])) {
		fail(l, n, "match.source: \"%s\" is not an address range like 10.0.0.0/8, "
			   "192.0.2.7 or fd00::/8, nor local",
		     shown(text, buf, sizeof(buf)));
		return;
	}
	cidr_mask(&m->source[m->nsource]);
	m->nsource++;
}

static void auth_item(struct loader *l, yaml_node_t *n, const char *text, unsigned i, void *arg)
{
	struct policy_match *m = arg;
	char buf[64];

	for (unsigned k = SESSION_AUTH_TRUST; k < SESSION_AUTH_METHOD_COUNT; k++)
		if (!strcmp(text, session_auth_method_to_str((enum session_auth_method)k))) {
			m->auth_methods |= 1u << k;
			return;
		}
	fail(l, n, "match.auth_method: unknown method \"%s\"", shown(text, buf, sizeof(buf)));
}

static void class_item(struct loader *l, yaml_node_t *n, const char *text, unsigned i,
		       void *arg)
{
	uint32_t *allow = arg;
	enum sql_class c;
	char buf[64];

	if (!strcmp(text, "all")) {
		*allow |= SQL_CLASS_BIT(SQL_CLASS_UNKNOWN) - 1; /* every class but unknown */
		return;
	}
	c = sql_class_from_str(text, strlen(text));
	if (c == SQL_CLASS_COUNT || c == SQL_CLASS_UNKNOWN) {
		fail(l, n, "allow: unknown statement class \"%s\" (read, write, ddl, role, admin, "
			   "copy_in, copy_out, copy_program, function_call, transaction, session, "
			   "listen_notify, prepare, all)",
		     shown(text, buf, sizeof(buf)));
		return;
	}
	*allow |= SQL_CLASS_BIT(c);
}

/* ---- mappings ---------------------------------------------------------------------------- */

/* Iterate a mapping's pairs: fn(l, key node, key text, value node, arg) for each. */
typedef void (*pair_fn)(struct loader *l, yaml_node_t *k, const char *key, yaml_node_t *v,
			void *arg);

static void each_pair(struct loader *l, yaml_node_t *n, const char *what, pair_fn fn, void *arg)
{
	if (n->type != YAML_MAPPING_NODE) {
		fail(l, n, "%s: expected a mapping, got %s", what, kind_name(n));
		return;
	}
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
	     p < n->data.mapping.pairs.top && !l->failed; p++) {
		yaml_node_t *k = node(l, p->key), *v;
		const char *key;

		if (!k)
			return;
		key = scalar(l, k, what);
		if (!key)
			return;
		/* A repeated key is a mistake YAML lets through: refuse it. */
		for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
			yaml_node_t *qk = yaml_document_get_node(&l->doc, q->key);

			if (qk && qk->type == YAML_SCALAR_NODE &&
			    !strcmp((const char *)qk->data.scalar.value, key)) {
				char buf[64];

				fail(l, k, "%s: \"%s\" given twice", what, shown(key, buf, sizeof(buf)));
				return;
			}
		}
		v = node(l, p->value);
		if (!v)
			return;
		fn(l, k, key, v, arg);
	}
}

static void unknown_key(struct loader *l, yaml_node_t *k, const char *where, const char *key)
{
	char buf[64];

	fail(l, k, "%s: unknown key \"%s\"", where, shown(key, buf, sizeof(buf)));
}

static void match_pair(struct loader *l, yaml_node_t *k, const char *key, yaml_node_t *v,
		       void *arg)
{
	struct policy_rule *r = arg;
	struct policy_match *m = &r->match;

	if (!strcmp(key, "user"))
		parse_strs(l, v, &m->user, "match.user", SQL_NAME_MAX - 1, false);
	else if (!strcmp(key, "database"))
		parse_strs(l, v, &m->database, "match.database", SQL_NAME_MAX - 1, false);
	else if (!strcmp(key, "application_name"))
		parse_strs(l, v, &m->application_name, "match.application_name", SQL_NAME_MAX - 1,
			   false);
	else if (!strcmp(key, "tls_identity"))
		parse_strs(l, v, &m->tls_identity, "match.tls_identity", 1024, false);
	else if (!strcmp(key, "comm"))
		parse_strs(l, v, &m->comm, "match.comm", 15, false);
	else if (!strcmp(key, "exe")) {
		parse_strs(l, v, &m->exe, "match.exe", 4095, true);
		r->needs_process_paths = true;
	} else if (!strcmp(key, "cgroup")) {
		parse_strs(l, v, &m->cgroup, "match.cgroup", 4095, true);
		r->needs_process_paths = true;
		for (unsigned i = 0; i < m->cgroup.n; i++) { /* "/a/b/" is "/a/b" */
			size_t n = strlen(m->cgroup.v[i]);

			while (n > 1 && m->cgroup.v[i][n - 1] == '/')
				m->cgroup.v[i][--n] = '\0';
		}
	} else if (!strcmp(key, "source")) {
		m->source = alloc_items(l, v, sizeof(*m->source));
		if (m->source)
			each_item(l, v, "match.source", source_item, m);
	} else if (!strcmp(key, "auth_method")) {
		each_item(l, v, "match.auth_method", auth_item, m);
	} else if (!strcmp(key, "uid") || !strcmp(key, "gid")) {
		bool uid = key[0] == 'u';
		struct id_arg a = {.n = uid ? &m->nuid : &m->ngid, .key = uid ? "match.uid" : "match.gid"};

		a.v = alloc_items(l, v, sizeof(uint32_t));
		if (!a.v)
			return;
		if (uid)
			m->uid = a.v;
		else
			m->gid = a.v;
		each_item(l, v, a.key, id_item, &a);
	} else {
		unknown_key(l, k, "match", key);
	}
}

static void relations_pair(struct loader *l, yaml_node_t *k, const char *key, yaml_node_t *v,
			   void *arg)
{
	struct policy_rule *r = arg;

	if (!strcmp(key, "allow")) {
		parse_names(l, v, &r->relation_allow, false, "relations.allow");
		r->has_relation_allow = true;
	} else if (!strcmp(key, "deny")) {
		parse_names(l, v, &r->relation_deny, false, "relations.deny");
	} else {
		unknown_key(l, k, "relations", key);
	}
}

static void duration(struct loader *l, yaml_node_t *v, const char *key, uint64_t max_ms,
		     uint64_t *out)
{
	const char *t = scalar(l, v, key);
	char buf[64];

	if (!t)
		return;
	if (config_parse_duration(t, out) || *out > max_ms) {
		fail(l, v, "%s: expected a duration like 30s, 500ms, 10m or 8h (at most %llu h), "
			   "got \"%s\"",
		     key, (unsigned long long)(max_ms / 3600000), shown(t, buf, sizeof(buf)));
	}
}

static void count(struct loader *l, yaml_node_t *v, const char *key, uint32_t max, uint32_t *out)
{
	const char *t = scalar(l, v, key);
	char buf[64];

	if (t && (!parse_u32(t, max, out) || *out == 0))
		fail(l, v, "%s: expected a whole number from 1 to %u, got \"%s\"", key, max,
		     shown(t, buf, sizeof(buf)));
}

#define DAY_MS (24ULL * 3600 * 1000)

static void limits_pair(struct loader *l, yaml_node_t *k, const char *key, yaml_node_t *v,
			void *arg)
{
	struct policy_limits *lim = arg;

	if (!strcmp(key, "statements_per_second"))
		count(l, v, "limits.statements_per_second", 1000000, &lim->statements_per_second);
	else if (!strcmp(key, "burst"))
		count(l, v, "limits.burst", 10000000, &lim->burst);
	else if (!strcmp(key, "over_limit")) {
		const char *t = scalar(l, v, "limits.over_limit");

		if (t && !strcmp(t, "reject"))
			lim->over = POLICY_OVER_REJECT;
		else if (t && !strcmp(t, "wait"))
			lim->over = POLICY_OVER_WAIT;
		else if (t)
			fail(l, v, "limits.over_limit: expected reject or wait");
	} else if (!strcmp(key, "max_wait"))
		duration(l, v, "limits.max_wait", 60000, &lim->max_wait_ms);
	else if (!strcmp(key, "sessions_per_user"))
		count(l, v, "limits.sessions_per_user", 1000000, &lim->sessions_per_user);
	else if (!strcmp(key, "sessions_per_database"))
		count(l, v, "limits.sessions_per_database", 1000000, &lim->sessions_per_database);
	else if (!strcmp(key, "sessions_per_source"))
		count(l, v, "limits.sessions_per_source", 1000000, &lim->sessions_per_source);
	else if (!strcmp(key, "login_timeout"))
		duration(l, v, "limits.login_timeout", 3600000, &lim->login_timeout_ms);
	else if (!strcmp(key, "idle_timeout"))
		duration(l, v, "limits.idle_timeout", 30 * DAY_MS, &lim->idle_ms);
	else if (!strcmp(key, "idle_in_transaction_timeout"))
		duration(l, v, "limits.idle_in_transaction_timeout", 30 * DAY_MS,
			 &lim->idle_in_transaction_ms);
	else if (!strcmp(key, "max_lifetime"))
		duration(l, v, "limits.max_lifetime", 365 * DAY_MS, &lim->lifetime_ms);
	else
		unknown_key(l, k, "limits", key);
}

static void mask_pair(struct loader *l, yaml_node_t *k, const char *key, yaml_node_t *v,
		      void *arg)
{
	struct policy_rule *r = arg;
	char parts[3][SQL_NAME_MAX], buf[96];
	bool star;
	const char *strategy = scalar(l, v, "mask");
	struct policy_mask *m;

	if (!strategy)
		return;
	if (parse_sql_name(key, 3, parts, &star) != 3 || star) {
		fail(l, k, "mask: \"%s\" is not schema.table.column", shown(key, buf, sizeof(buf)));
		return;
	}
	if (!*strategy || strlen(strategy) > 256) {
		fail(l, v, "mask: %s: the strategy must be 1 to 256 bytes of text",
		     shown(key, buf, sizeof(buf)));
		return;
	}
	for (unsigned i = 0; i < r->nmasks; i++)
		if (!strcmp(r->masks[i].schema, parts[0]) && !strcmp(r->masks[i].table, parts[1]) &&
		    !strcmp(r->masks[i].column, parts[2])) {
			fail(l, k, "mask: %s is masked twice", shown(key, buf, sizeof(buf)));
			return;
		}
	m = &r->masks[r->nmasks++];
	strcpy(m->schema, parts[0]);
	strcpy(m->table, parts[1]);
	strcpy(m->column, parts[2]);
	m->strategy = arena_strdup(l, strategy);
	m->line = (unsigned)k->start_mark.line + 1;
}

struct rule_arg {
	struct policy_rule *r;
	bool has_allow;
};

static void flag(struct loader *l, yaml_node_t *v, const char *key, bool *out)
{
	const char *t = scalar(l, v, key);

	if (t && !parse_bool(t, out))
		fail(l, v, "%s: expected true or false", key);
}

static void rule_pair(struct loader *l, yaml_node_t *k, const char *key, yaml_node_t *v,
		      void *arg)
{
	struct rule_arg *ra = arg;
	struct policy_rule *r = ra->r;

	if (!strcmp(key, "name")) {
		const char *t = scalar(l, v, "name");
		char buf[96];

		if (!t)
			return;
		if (!*t || strlen(t) > POLICY_NAME_MAX) {
			fail(l, v, "name: 1 to %d bytes", POLICY_NAME_MAX);
			return;
		}
		for (const char *c = t; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			      (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c == '.')) {
				fail(l, v, "name: \"%s\": use letters, digits, _, - and . only",
				     shown(t, buf, sizeof(buf)));
				return;
			}
		r->name = arena_strdup(l, t);
	} else if (!strcmp(key, "match")) {
		each_pair(l, v, "match", match_pair, r);
	} else if (!strcmp(key, "allow")) {
		ra->has_allow = true;
		each_item(l, v, "allow", class_item, &r->allow);
	} else if (!strcmp(key, "relations")) {
		each_pair(l, v, "relations", relations_pair, r);
	} else if (!strcmp(key, "deny_functions")) {
		parse_names(l, v, &r->function_deny, true, "deny_functions");
	} else if (!strcmp(key, "search_path")) {
		parse_strs(l, v, &r->search_path, "search_path", SQL_NAME_MAX - 1, false);
	} else if (!strcmp(key, "one_statement_per_query")) {
		flag(l, v, "one_statement_per_query", &r->one_statement_per_query);
	} else if (!strcmp(key, "role_switch")) {
		flag(l, v, "role_switch", &r->role_switch);
	} else if (!strcmp(key, "replication")) {
		flag(l, v, "replication", &r->replication);
	} else if (!strcmp(key, "mask")) {
		if (v->type != YAML_MAPPING_NODE) {
			fail(l, v, "mask: expected a mapping of schema.table.column: strategy");
			return;
		}
		r->masks = arena_alloc(&l->p->arena,
				       sizeof(*r->masks) *
					       (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start + 1));
		if (!r->masks) {
			fail(l, v, "out of memory");
			return;
		}
		each_pair(l, v, "mask", mask_pair, r);
	} else if (!strcmp(key, "limits")) {
		each_pair(l, v, "limits", limits_pair, &r->limits);
	} else if (!strcmp(key, "audit")) {
		const char *t = scalar(l, v, "audit");

		if (!t)
			return;
		for (unsigned a = 0; a < POLICY_AUDIT_COUNT; a++)
			if (!strcmp(t, policy_audit_to_str((enum policy_audit)a))) {
				r->audit = (enum policy_audit)a;
				return;
			}
		fail(l, v, "audit: expected none, connection, statement or full");
	} else {
		unknown_key(l, k, "rule", key);
	}
}

static void load_rule(struct loader *l, yaml_node_t *n, struct policy_rule *r, unsigned index)
{
	struct rule_arg ra = {.r = r};
	static const char *const default_path[] = {"$user", "public"};

	r->index = index;
	r->line = (unsigned)n->start_mark.line + 1;
	if (n->type != YAML_MAPPING_NODE) {
		fail(l, n, "rules: each rule is a mapping with name, match and allow");
		return;
	}
	each_pair(l, n, "rule", rule_pair, &ra);
	if (l->failed)
		return;
	if (!r->name) {
		fail(l, n, "rule %u has no name", index + 1);
		return;
	}
	for (unsigned i = 0; i < index; i++)
		if (!strcmp(l->p->rules[i].name, r->name)) {
			fail(l, n, "rule \"%s\" is defined twice (first at line %u)", r->name,
			     l->p->rules[i].line);
			return;
		}
	if (!ra.has_allow) {
		fail(l, n, "rule \"%s\": no allow list (write allow: [] to admit sessions that may "
			   "run nothing)", r->name);
		return;
	}
	if (r->limits.burst && !r->limits.statements_per_second) {
		fail(l, n, "rule \"%s\": limits.burst without limits.statements_per_second", r->name);
		return;
	}
	if (r->limits.statements_per_second && !r->limits.burst)
		r->limits.burst = r->limits.statements_per_second;
	if (r->limits.over == POLICY_OVER_WAIT && !r->limits.max_wait_ms)
		r->limits.max_wait_ms = 10000;
	if (!r->search_path.n) {
		r->search_path.v = arena_alloc(&l->p->arena, sizeof(char *) * 2);
		if (!r->search_path.v) {
			fail(l, n, "out of memory");
			return;
		}
		r->search_path.v[0] = (char *)default_path[0];
		r->search_path.v[1] = (char *)default_path[1];
		r->search_path.n = 2;
	}
	if (r->needs_process_paths)
		l->p->needs_process_paths = true;
}

static void top_pair(struct loader *l, yaml_node_t *k, const char *key, yaml_node_t *v, void *arg)
{
	bool *have_rules = arg;

	if (!strcmp(key, "version")) {
		const char *t = scalar(l, v, "version");

		if (t && strcmp(t, "1"))
			fail(l, v, "version: this pgwarden reads policy version 1");
	} else if (!strcmp(key, "rules")) {
		unsigned n;

		*have_rules = true;
		if (v->type != YAML_SEQUENCE_NODE) {
			fail(l, v, "rules: expected a list of rules");
			return;
		}
		n = count_items(v);
		if (n > POLICY_MAX_RULES) {
			fail(l, v, "rules: more than %d rules", POLICY_MAX_RULES);
			return;
		}
		l->p->rules = arena_alloc(&l->p->arena, sizeof(struct policy_rule) * (n ? n : 1));
		if (!l->p->rules) {
			fail(l, v, "out of memory");
			return;
		}
		for (unsigned i = 0; i < n && !l->failed; i++) {
			yaml_node_t *rn = node(l, v->data.sequence.items.start[i]);

			if (!rn)
				return;
			load_rule(l, rn, &l->p->rules[i], i);
			l->p->nrules = i + 1;
		}
	} else {
		unknown_key(l, k, "policy", key);
	}
}

static void sha256_hex(const char *data, size_t len, char out[65]);

struct policy *policy_load_buffer(const char *name, const char *data, size_t len, char *err,
				  size_t errlen)
{
	struct loader l = {.name = name, .err = err, .errlen = errlen};
	yaml_parser_t parser;
	yaml_node_t *root;
	bool have_rules = false;

	if (err && errlen)
		err[0] = '\0';
	if (len > POLICY_MAX_FILE_SIZE) {
		snprintf(err, errlen, "%s: larger than %d bytes", name, POLICY_MAX_FILE_SIZE);
		return NULL;
	}
	l.p = calloc(1, sizeof(*l.p));
	if (!l.p) {
		snprintf(err, errlen, "%s: out of memory", name);
		return NULL;
	}
	l.p->refcount = 1;
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", name);
		free(l.p);
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
	if (!yaml_parser_load(&parser, &l.doc)) {
		snprintf(err, errlen, "%s:%lu: %s", name,
			 (unsigned long)parser.problem_mark.line + 1,
			 parser.problem ? parser.problem : "not valid YAML");
		yaml_parser_delete(&parser);
		free(l.p);
		return NULL;
	}
	yaml_parser_delete(&parser);
	l.nnodes = (size_t)(l.doc.nodes.top - l.doc.nodes.start);
	if (l.nnodes > MAX_NODES) {
		fail(&l, NULL, "more than %d YAML nodes", MAX_NODES);
		goto out;
	}
	l.seen = calloc(l.nnodes ? l.nnodes : 1, 1);
	if (!l.seen) {
		fail(&l, NULL, "out of memory");
		goto out;
	}
	root = yaml_document_get_root_node(&l.doc);
	if (!root) {
		fail(&l, NULL, "the file is empty: a policy needs rules (an empty list denies "
			       "everyone)");
		goto out;
	}
	root = node(&l, 1) ? root : NULL;
	if (!root)
		goto out;
	each_pair(&l, root, "policy", top_pair, &have_rules);
	if (!l.failed && !have_rules)
		fail(&l, root, "no rules: list them under rules: (an empty list denies everyone)");
	if (!l.failed) {
		l.p->path = arena_strdup(&l, name);
		sha256_hex(data, len, l.p->sha256_hex);
	}
out:
	free(l.seen);
	yaml_document_delete(&l.doc);
	if (l.failed) {
		arena_free(l.p->arena);
		free(l.p);
		return NULL;
	}
	return l.p;
}

#include <openssl/evp.h>

static void sha256_hex(const char *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	out[0] = '\0';
	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return;
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

struct policy *policy_load_file(const char *path, char *err, size_t errlen)
{
	struct stat st;
	char *buf;
	ssize_t got;
	size_t have = 0;
	struct policy *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return NULL;
	}
	if (st.st_size > POLICY_MAX_FILE_SIZE) {
		snprintf(err, errlen, "%s: larger than %d bytes", path, POLICY_MAX_FILE_SIZE);
		close(fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", path);
		close(fd);
		return NULL;
	}
	/* Read what is there now, however the size changed since fstat, up to the cap. */
	while ((got = read(fd, buf + have, (size_t)st.st_size + 1 - have)) > 0) {
		have += (size_t)got;
		if (have > (size_t)st.st_size)
			break;
	}
	close(fd);
	if (got < 0 || have > (size_t)st.st_size) {
		snprintf(err, errlen, "%s: %s", path, got < 0 ? strerror(errno) : "changed while read");
		free(buf);
		return NULL;
	}
	p = policy_load_buffer(path, buf, have, err, errlen);
	free(buf);
	return p;
}

void policy_ref(struct policy *p)
{
	__atomic_add_fetch(&p->refcount, 1, __ATOMIC_RELAXED);
}

void policy_unref(struct policy *p)
{
	if (p && __atomic_sub_fetch(&p->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
		arena_free(p->arena);
		free(p);
	}
}

const char *policy_audit_to_str(enum policy_audit a)
{
	static const char *const names[POLICY_AUDIT_COUNT] = {"none", "connection", "statement",
							       "full"};

	return (unsigned)a < POLICY_AUDIT_COUNT ? names[a] : "?";
}
