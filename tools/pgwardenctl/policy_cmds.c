/*
 * pgwardenctl policy: validate a policy file, and explain what it decides for one identity
 * and statement. Both work on the file alone (no daemon): the same loader and the same
 * evaluation code pgwardend runs, so what explain says is what the stage would do. That
 * includes masking as far as the file decides it: the matched rule's `mask:` map built by
 * the daemon's own mask_rules_build() (a strategy it does not know refuses the file here
 * too), and what the masking classifier says of each statement. Which result columns carry
 * masked data is known only against the server's catalog when a statement runs.
 */
#include "ctl.h"

#include "admin/admin.h"
#include "base/sanitize.h"
#include "base/utf8.h"
#include "mask/mask_classify.h"
#include "mask/mask_rules.h"
#include "policy/policy.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static struct sql_analysis analysis; /* 30 KiB: not on the stack */

/* The file as pgwardend loads it: the rules, and the masking they configure. */
static struct policy *load_policy(const char *file, struct mask_policy **masking)
{
	char err[POLICY_ERR_MAX];
	struct policy *p = policy_load_file(file, err, sizeof(err));

	if (!p) {
		ctl_fail(CTL_EXIT_FAIL, "%s", err);
		return NULL;
	}
	if (mask_rules_build(p, masking, err, sizeof(err))) {
		ctl_fail(CTL_EXIT_FAIL, "%s", err);
		policy_unref(p);
		return NULL;
	}
	return p;
}

static int policy_check(int argc, char **argv)
{
	struct mask_policy *masking;
	struct policy *p;

	if (argc != 2)
		return ctl_fail(CTL_EXIT_USAGE, "usage: pgwardenctl policy check FILE");
	p = load_policy(argv[1], &masking);
	if (!p)
		return CTL_EXIT_FAIL;
	mask_policy_put(masking);
	policy_describe(p, stdout);
	printf("%s: policy is valid\n", argv[1]);
	policy_unref(p);
	return CTL_EXIT_OK;
}

static void print_analysis(const struct sql_analysis *a)
{
	static const struct {
		unsigned bit;
		const char *name;
	} flags[] = {
		{SQL_AF_RELATIONS_UNSURE, "relations-unsure"},
		{SQL_AF_FUNCTIONS_UNSURE, "functions-unsure"},
		{SQL_AF_COLUMNS_UNSURE, "columns-unsure"},
		{SQL_AF_ROLE_SWITCH, "role-switch"},
		{SQL_AF_OPAQUE_BODY, "opaque-body"},
		{SQL_AF_TOO_COMPLEX, "too-complex"},
		{SQL_AF_SEARCH_PATH, "search-path"},
		{SQL_AF_BAD_ENCODING, "unsafe-encoding"},
		{SQL_AF_ENCODING_CHANGE, "encoding-change"},
	};
	static const char *const prep[] = {"", "PREPARE", "EXECUTE", "DEALLOCATE",
					   "DEALLOCATE ALL"};

	printf("  class: %s\n  classes:", sql_class_to_str(a->primary));
	for (unsigned c = 0; c < SQL_CLASS_COUNT; c++)
		if (a->classes & SQL_CLASS_BIT(c))
			printf(" %s", sql_class_to_str(c));
	printf("\n  relations:");
	for (unsigned i = 0; i < a->nrelations; i++) {
		const struct sql_relation *r = &a->relations[i];

		printf(" %s%s%s%s%s%s%s%s", r->catalog, r->catalog[0] ? "." : "", r->schema,
		       r->schema[0] ? "." : "", r->name, r->alias[0] ? " AS " : "", r->alias,
		       (r->flags & SQL_RELF_WRITE) ? " (written)" : (r->flags & SQL_RELF_DDL) ? " (ddl)" : "");
		if (i + 1 < a->nrelations)
			putchar(',');
	}
	printf("\n  functions:");
	for (unsigned i = 0; i < a->nfunctions; i++)
		printf(" %s%s%s%s", a->functions[i].schema, a->functions[i].schema[0] ? "." : "",
		       a->functions[i].name, i + 1 < a->nfunctions ? "," : "");
	printf("\n  columns:");
	for (unsigned i = 0; i < a->ncolumns; i++)
		printf(" %s%s%s", a->columns[i].qualifier, a->columns[i].qualifier[0] ? "." : "",
		       a->columns[i].name);
	printf("\n  flags:");
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		if (a->flags & flags[i].bit)
			printf(" %s", flags[i].name);
	if (a->prep)
		printf(" %s%s%s", prep[a->prep], a->prep_name[0] ? " " : "", a->prep_name);
	putchar('\n');
}

/* The rule's `mask:` map, as the stage will apply it. */
static void print_rule_masking(const struct mask_profile *prof)
{
	const struct mask_policy *mp;
	unsigned n = 0;

	if (!prof || !mask_profile_masks(prof)) {
		printf("masking: none (the rule has no mask: map)\n");
		return;
	}
	mp = mask_profile_policy(prof);
	for (unsigned i = 0; i < mask_policy_ncolumns(mp); i++)
		n += mask_profile_strategy(prof, i)->kind != MASK_NONE;
	printf("masking: %u column(s)\n", n);
	for (unsigned i = 0; i < mask_policy_ncolumns(mp); i++) {
		const struct mask_strategy *st = mask_profile_strategy(prof, i);
		char col[MASK_COLREF_STRLEN], how[MASK_STRATEGY_STRLEN];

		if (st->kind != MASK_NONE)
			printf("  %s: %s\n", mask_colref_format(mask_policy_column(mp, i), col,
								sizeof(col)),
			       mask_strategy_format(st, how, sizeof(how)));
	}
	printf("  computed columns of a statement that references them: %s\n",
	       mask_profile_computed(prof) == MASK_COMPUTED_DENY ? "statement denied (42501)"
								  : "masked whole (NULL)");
	printf("  (also every column of a view over them, and the same-named column of child "
	       "tables and partitions; which result columns those are is resolved against the "
	       "server's catalog when a statement runs: docs/MASKING.md)\n");
}

/* What the masking classifier says of one statement, for a rule that masks. Returns
 * whether the mask stage refuses it (0A000: the whole Query, the session goes on). */
static bool print_stmt_masking(const char *sql, size_t len, unsigned lex)
{
	struct mask_stmt_info in;

	mask_classify_one(sql, len, lex, &in);
	if (mask_stmt_copy_unmaskable(&in)) {
		printf("  masking: refused (0A000): %s\n",
		       in.copy_query ? "the columns of COPY (query) TO cannot be placed"
				     : "COPY TO with a column list or options masking cannot read");
		return true;
	}
	if (in.copy_to)
		printf("  masking: COPY TO: masked columns of the table are masked in the data\n");
	else if (in.no_rows)
		printf("  masking: returns no rows\n");
	else if (mask_stmt_refs(&in) == MASK_REFS_NONE)
		printf("  masking: computed columns clear (names no relation, calls no function)\n");
	else
		printf("  masking: masked columns by their rule; computed columns masked whole (it "
		       "may reference a masked column)\n");
	if (in.ddl)
		printf("  masking: DDL: the catalog is read again once it completes\n");
	return false;
}

/* Is s valid UTF-8 (what a JSON string must be)? */
static bool valid_utf8(const char *s)
{
	size_t n = strlen(s);
	uint32_t cp;

	for (size_t i = 0, k; i < n; i += k)
		if (!(k = utf8_decode((const unsigned char *)s + i, n - i, &cp)))
			return false;
	return true;
}

/* One tab-separated line of the daemon's explain, each field made safe for the terminal
 * (the daemon sanitised the result names already; whatever else a daemon sent raw is
 * escaped here, in the same spelling). */
static void print_explain_line(const char *line)
{
	char field[1024];

	for (const char *p = line;;) {
		const char *tab = strchr(p, '\t');
		size_t n = tab ? (size_t)(tab - p) : strlen(p);

		sanitize(field, sizeof(field), p, n, SANITIZE_TERMINAL_ESCAPED, NULL);
		fputs(field, stdout);
		if (!tab)
			break;
		putchar('\t');
		p = tab + 1;
	}
	putchar('\n');
}

/*
 * --online: ask the running pgwardend which result columns of sql a session of user in
 * database would have masked (the admin socket's explain: its live policy and catalog, the
 * statement described by the server, never run). Exit 1 when the statement would be
 * refused, or the daemon could not say.
 */
static int explain_online(const char *user, const char *database, const char *sql)
{
	const char *what = "policy explain --online";
	json_t *req, *reply, *cols, *col;
	const char *deny;
	char buf[1024];
	size_t i;
	int rc;

	if (!valid_utf8(user) || (database && !valid_utf8(database)))
		return ctl_fail(CTL_EXIT_USAGE, "%s: --user and --database must be UTF-8", what);
	if (!valid_utf8(sql))
		return ctl_fail(CTL_EXIT_USAGE, "%s: --sql is not valid UTF-8 (pgwarden's catalog "
						"connection speaks UTF8)", what);
	if (strlen(sql) > ADMIN_EXPLAIN_SQL_MAX)
		return ctl_fail(CTL_EXIT_USAGE, "%s: --sql is %zu bytes; the daemon describes at "
						"most %d", what, strlen(sql), ADMIN_EXPLAIN_SQL_MAX);
	req = json_pack("{s:s, s:s, s:s}", "cmd", "explain", "user", user, "sql", sql);
	if (req && database && json_object_set_new(req, "database", json_string(database)))
		json_decref(req), req = NULL;
	if (!req)
		return ctl_fail(CTL_EXIT_FAIL, "%s: out of memory", what);
	/* The daemon may wait on the server for mask.catalog_timeout (10 s by default). */
	ctl_timeout_at_least(15000);
	rc = ctl_request(req, &reply, what);
	if (rc >= 0)
		return rc;
	cols = json_object_get(reply, "columns");
	deny = json_string_value(json_object_get(reply, "deny"));
	if (ctl_json_output()) {
		ctl_print_json(reply);
	} else {
		sanitize_str(buf, sizeof(buf), json_string_value(json_object_get(reply, "rule")),
			     SANITIZE_TERMINAL_ESCAPED, NULL);
		printf("rule: %s\n", buf);
		if (!json_is_true(json_object_get(reply, "masks")))
			printf("masking: none (the rule has no mask: map): every column passes "
			       "clear\n");
		else if (!json_array_size(cols))
			printf("masking: the statement returns no columns\n");
		json_array_foreach(cols, i, col)
			print_explain_line(json_string_value(col) ? json_string_value(col) : "?");
		if (deny) {
			printf("deny\t");
			print_explain_line(deny);
		}
	}
	json_decref(reply);
	return deny ? CTL_EXIT_FAIL : CTL_EXIT_OK;
}

enum {
	OPT_USER = 1, OPT_DATABASE, OPT_SOURCE, OPT_APPNAME, OPT_COMM, OPT_UID, OPT_GID, OPT_EXE,
	OPT_CGROUP, OPT_TLS, OPT_AUTH, OPT_SQL, OPT_SCS_OFF, OPT_SEARCH_PATH_CHANGED, OPT_ONLINE,
};

static int parse_id(const char *s, uint32_t *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || v > UINT32_MAX - 1)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int policy_explain(int argc, char **argv)
{
	static const struct option opts[] = {
		{"user", required_argument, NULL, OPT_USER},
		{"database", required_argument, NULL, OPT_DATABASE},
		{"source", required_argument, NULL, OPT_SOURCE},
		{"application-name", required_argument, NULL, OPT_APPNAME},
		{"comm", required_argument, NULL, OPT_COMM},
		{"uid", required_argument, NULL, OPT_UID},
		{"gid", required_argument, NULL, OPT_GID},
		{"exe", required_argument, NULL, OPT_EXE},
		{"cgroup", required_argument, NULL, OPT_CGROUP},
		{"tls-identity", required_argument, NULL, OPT_TLS},
		{"auth-method", required_argument, NULL, OPT_AUTH},
		{"sql", required_argument, NULL, OPT_SQL},
		{"standard-conforming-strings-off", no_argument, NULL, OPT_SCS_OFF},
		{"search-path-changed", no_argument, NULL, OPT_SEARCH_PATH_CHANGED},
		{"online", no_argument, NULL, OPT_ONLINE},
		{NULL, 0, NULL, 0},
	};
	struct policy_identity id = {0};
	struct addr client = {0};
	const char *file, *sql = NULL;
	unsigned lex = 0;
	bool path_changed = false, online = false;
	const char *offline_flag = NULL; /* an identity flag only the offline explain reads */
	struct mask_policy *masking;
	const struct mask_profile *prof;
	struct policy *p;
	const struct policy_rule *rule;
	int c, status = CTL_EXIT_OK;

	id.auth_method = SESSION_AUTH_PENDING;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != OPT_USER && c != OPT_DATABASE && c != OPT_SQL && c != OPT_ONLINE && c != '?')
			offline_flag = argv[optind - 1 - (optarg && optarg == argv[optind - 1])];
		switch (c) {
		case OPT_ONLINE: online = true; break;
		case OPT_USER: id.user = optarg; break;
		case OPT_DATABASE: id.database = optarg; break;
		case OPT_APPNAME: id.application_name = optarg; break;
		case OPT_TLS: id.tls_identity = optarg; break;
		case OPT_SQL: sql = optarg; break;
		case OPT_SCS_OFF: lex = SQL_LEX_BACKSLASH_QUOTES; break;
		case OPT_SEARCH_PATH_CHANGED: path_changed = true; break;
		case OPT_COMM: id.comm = optarg; id.process_known = true; break;
		case OPT_EXE: id.exe = optarg; id.process_known = true; break;
		case OPT_CGROUP: id.cgroup = optarg; id.process_known = true; break;
		case OPT_UID:
		case OPT_GID:
			if (parse_id(optarg, c == OPT_UID ? &id.uid : &id.gid))
				return ctl_fail(CTL_EXIT_USAGE, "--%s: not a numeric id: \"%s\"",
						c == OPT_UID ? "uid" : "gid", optarg);
			id.process_known = true;
			break;
		case OPT_SOURCE: {
			struct sockaddr_in *in = (struct sockaddr_in *)&client.ss;
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&client.ss;

			if (!strcmp(optarg, "local")) {
				id.local = true;
			} else if (inet_pton(AF_INET, optarg, &in->sin_addr) == 1) {
				in->sin_family = AF_INET;
				id.client = &client;
			} else if (inet_pton(AF_INET6, optarg, &in6->sin6_addr) == 1) {
				in6->sin6_family = AF_INET6;
				id.client = &client;
			} else {
				return ctl_fail(CTL_EXIT_USAGE, "--source: \"%s\" is not an address or "
								"local", optarg);
			}
			break;
		}
		case OPT_AUTH: {
			bool found = false;

			for (unsigned k = SESSION_AUTH_TRUST; k < SESSION_AUTH_METHOD_COUNT; k++)
				if (!strcmp(optarg, session_auth_method_to_str(k))) {
					id.auth_method = (enum session_auth_method)k;
					found = true;
				}
			if (!found)
				return ctl_fail(CTL_EXIT_USAGE, "--auth-method: unknown method \"%s\"",
						optarg);
			break;
		}
		default:
			return ctl_fail(CTL_EXIT_USAGE, "unknown option \"%s\"", argv[optind - 1]);
		}
	}
	if (online) {
		if (optind != argc || !id.user || !sql)
			return ctl_fail(CTL_EXIT_USAGE, "usage: pgwardenctl policy explain --online "
							"--user U [--database D] --sql 'STATEMENT'");
		if (offline_flag)
			return ctl_fail(CTL_EXIT_USAGE, "policy explain --online: %s: the daemon "
							"matches the rule by --user and --database only",
					offline_flag);
		return explain_online(id.user, id.database, sql);
	}
	if (optind + 1 != argc || !id.user || !sql)
		return ctl_fail(CTL_EXIT_USAGE,
				"usage: pgwardenctl policy explain FILE --user U [--database D] "
				"[--source ADDR|local] [--comm C] [--uid N] [--gid N] [--exe PATH] "
				"[--cgroup PATH] [--application-name N] [--tls-identity I] "
				"[--auth-method M] --sql 'STATEMENT'");
	file = argv[optind];
	if (!id.database)
		id.database = id.user; /* as the server defaults it */
	p = load_policy(file, &masking);
	if (!p)
		return CTL_EXIT_FAIL;
	/* After a successful login: a rule that names an authentication method matches only
	 * when --auth-method says which one was used. */
	rule = policy_match_connection(p, &id, true);
	if (!rule) {
		printf("rule: none: the connection is refused (FATAL 28000)\nverdict: denied\n");
		mask_policy_put(masking);
		policy_unref(p);
		return CTL_EXIT_FAIL;
	}
	printf("rule: %s (line %u)\n", rule->name, rule->line);
	prof = mask_policy_find_profile(masking, rule->name);
	if (prof && !mask_profile_masks(prof))
		prof = NULL;
	print_rule_masking(prof);

	struct sql_splitter sp;
	struct sql_stmt st;
	struct policy_stmt_ctx ctx = {.user = id.user, .search_path_unknown = path_changed};
	unsigned n = 0;

	sql_split_init(&sp, sql, strlen(sql), lex);
	while (sql_split_next(&sp, &st)) {
		struct policy_verdict v;

		n++;
		printf("statement %u: %.*s\n", n, (int)st.text_len, sql + st.text_off);
		sql_analyze(sql + st.off, st.len, lex, &analysis);
		print_analysis(&analysis);
		if (n > 1 && rule->one_statement_per_query) {
			printf("  verdict: denied (42501): one statement per Query message\n");
			status = CTL_EXIT_FAIL;
			continue;
		}
		policy_check_statement(rule, &analysis, &ctx, &v);
		if (prof && print_stmt_masking(sql + st.off, st.len, lex) && v.allowed) {
			printf("  verdict: refused by masking (0A000); the session goes on\n");
			status = CTL_EXIT_FAIL;
			continue;
		}
		if (v.allowed) {
			printf("  verdict: allowed\n");
			if (analysis.flags & SQL_AF_SEARCH_PATH)
				ctx.search_path_unknown = true;
		} else {
			printf("  verdict: denied (%s): %s\n", v.sqlstate, v.reason);
			status = CTL_EXIT_FAIL;
		}
	}
	if (!n)
		printf("no statement\n");
	printf("verdict: %s\n", status == CTL_EXIT_OK ? "allowed"
					: "denied (a Query holding a denied statement runs none of it)");
	mask_policy_put(masking);
	policy_unref(p);
	return status;
}

int ctl_policy(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "check"))
		return policy_check(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "explain"))
		return policy_explain(argc - 1, argv + 1);
	return ctl_fail(CTL_EXIT_USAGE, "usage: pgwardenctl policy check FILE | policy explain FILE "
					"--user U ... --sql 'STATEMENT' | policy explain --online --user U "
					"[--database D] --sql 'STATEMENT'");
}
