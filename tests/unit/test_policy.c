/*
 * test_policy: the policy loader (every error message, from the files in
 * data/policy/bad/, each naming its expected message on its first line), statement
 * judgement (data/policy/statements.txt against data/policy/rules.yaml), connection
 * matching, the shared limits, cgroup path resolution, and the policy stage driven through
 * stage_run_* with a fake session and a fake statement table.
 */
#include "policy/policy.h"
#include "proto/proto.h"
#include "stage/stage.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "case_file.h"

#define DATA "data/policy/"

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	b[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return b;
}

static struct policy *load_rules(void)
{
	char err[POLICY_ERR_MAX];
	struct policy *p = policy_load_file(DATA "rules.yaml", err, sizeof(err));

	if (!p)
		fail_msg("rules.yaml: %s", err);
	return p;
}

/* ---- loader ------------------------------------------------------------------------- */

/* Every file in bad/: "# expect: MESSAGE" then the document, loaded as "bad.yaml" from its
 * second line so the expected line numbers are the document's own. */
static void test_loader_errors(void **state)
{
	DIR *d = opendir(DATA "bad");
	struct dirent *e;
	unsigned n = 0, failures = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		char path[512], err[POLICY_ERR_MAX];
		size_t len;
		char *b, *body, *nl;
		struct policy *p;

		if (!strstr(e->d_name, ".yaml"))
			continue;
		snprintf(path, sizeof(path), DATA "bad/%s", e->d_name);
		b = slurp(path, &len);
		nl = strchr(b, '\n');
		assert_non_null(nl);
		*nl = '\0';
		assert_true(!strncmp(b, "# expect: ", 10));
		body = nl + 1;
		p = policy_load_buffer("bad.yaml", body, len - (size_t)(body - b), err, sizeof(err));
		if (p) {
			fprintf(stderr, "%s: loaded, want: %s\n", e->d_name, b + 10);
			policy_unref(p);
			failures++;
		} else if (strcmp(err, b + 10)) {
			fprintf(stderr, "%s:\n  got  %s\n  want %s\n", e->d_name, err, b + 10);
			failures++;
		}
		free(b);
		n++;
	}
	closedir(d);
	fprintf(stderr, "bad/: %u files\n", n);
	assert_true(n >= 40);
	assert_int_equal(failures, 0);
}

static void test_loader_reads_everything(void **state)
{
	struct policy *p = load_rules();
	const struct policy_rule *r;
	char err[POLICY_ERR_MAX];

	assert_int_equal(p->nrules, 5);
	assert_int_equal(strlen(p->sha256_hex), 64);
	r = &p->rules[0];
	assert_string_equal(r->name, "reporting");
	assert_int_equal(r->match.user.n, 1);
	assert_int_equal(r->match.database.n, 2);
	assert_true(r->has_relation_allow);
	assert_int_equal(r->relation_allow.n, 2);
	assert_string_equal(r->relation_allow.v[0].schema, "public");
	assert_string_equal(r->relation_allow.v[0].name, "*");
	assert_true(r->function_deny.n > 40); /* @dangerous expanded, plus one */
	assert_true(r->one_statement_per_query);
	assert_int_equal(r->audit, POLICY_AUDIT_STATEMENT);
	assert_int_equal(r->allow, SQL_CLASS_BIT(SQL_CLASS_READ) |
					   SQL_CLASS_BIT(SQL_CLASS_TRANSACTION) |
					   SQL_CLASS_BIT(SQL_CLASS_SESSION) |
					   SQL_CLASS_BIT(SQL_CLASS_PREPARE));
	r = &p->rules[1];
	assert_true(r->match.source_local);
	assert_true(r->needs_process_paths);
	assert_int_equal(r->limits.statements_per_second, 5);
	assert_int_equal(r->limits.burst, 2);
	assert_int_equal(r->limits.over, POLICY_OVER_WAIT);
	assert_int_equal(r->limits.max_wait_ms, 2000);
	assert_int_equal(r->limits.idle_ms, 600000);
	assert_int_equal(r->limits.idle_in_transaction_ms, 30000);
	assert_int_equal(r->limits.lifetime_ms, 8ULL * 3600 * 1000);
	/* default search_path */
	assert_int_equal(r->search_path.n, 2);
	assert_string_equal(r->search_path.v[0], "$user");
	r = &p->rules[2];
	assert_int_equal(r->allow, SQL_CLASS_BIT(SQL_CLASS_UNKNOWN) - 1);
	assert_true(r->match.auth_methods & (1u << SESSION_AUTH_CERT));
	assert_int_equal(r->match.nsource, 2);
	r = &p->rules[3];
	assert_int_equal(r->nmasks, 2);
	assert_string_equal(r->masks[1].schema, "public");
	assert_string_equal(r->masks[1].table, "Users");
	assert_string_equal(r->masks[1].column, "SSN");
	assert_string_equal(r->masks[1].strategy, "partial(0,4)");
	assert_int_equal(r->match.ngid, 2);
	r = &p->rules[4];
	assert_int_equal(r->limits.burst, 1);
	assert_int_equal(r->limits.over, POLICY_OVER_REJECT);

	/* The same bytes, the same digest; describe writes every rule. */
	size_t len;
	char *b = slurp(DATA "rules.yaml", &len), *out = NULL;
	struct policy *q = policy_load_buffer("x", b, len, err, sizeof(err));
	FILE *f;
	size_t olen;

	assert_non_null(q);
	assert_string_equal(p->sha256_hex, q->sha256_hex);
	f = open_memstream(&out, &olen);
	policy_describe(q, f);
	fclose(f);
	assert_non_null(strstr(out, "5. app"));
	assert_non_null(strstr(out, "mask: public.Users.SSN: partial(0,4)"));
	free(out);
	free(b);
	policy_unref(q);
	policy_unref(p);

	/* An empty rules list loads: it denies everyone. */
	q = policy_load_buffer("e", "rules: []\n", 10, err, sizeof(err));
	assert_non_null(q);
	assert_int_equal(q->nrules, 0);
	policy_unref(q);
	/* A missing file is one line naming it. */
	assert_null(policy_load_file("/nonexistent/policy.yaml", err, sizeof(err)));
	assert_string_equal(err, "/nonexistent/policy.yaml: cannot open: No such file or directory");
	/* Not a regular file. */
	assert_null(policy_load_file("/tmp", err, sizeof(err)));
	assert_string_equal(err, "/tmp: not a regular file");
	/* More rules than a policy may hold. */
	{
		size_t cap = 64 * (POLICY_MAX_RULES + 2), o = 0;
		char *many = malloc(cap);

		o += (size_t)snprintf(many + o, cap - o, "rules:\n");
		for (int i = 0; i <= POLICY_MAX_RULES; i++)
			o += (size_t)snprintf(many + o, cap - o, "  - {name: r%d, allow: [read]}\n", i);
		assert_null(policy_load_buffer("many", many, o, err, sizeof(err)));
		assert_string_equal(err, "many:2: rules: more than 1024 rules");
		free(many);
	}
	/* Too large, refused before parsing. */
	char *big = calloc(1, POLICY_MAX_FILE_SIZE + 2);
	assert_null(policy_load_buffer("big", big, POLICY_MAX_FILE_SIZE + 1, err, sizeof(err)));
	assert_string_equal(err, "big: larger than 1048576 bytes");
	free(big);
}

/* A broken reload keeps the old policy; a good one replaces it. */
static void test_reload_keeps_old_on_error(void **state)
{
	char path[] = "/tmp/pgwarden-policy-XXXXXX", err[POLICY_ERR_MAX];
	int fd = mkstemp(path);
	struct policy *p;
	uint64_t gen;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "rules:\n  - name: a\n    allow: [read]\n", 37), 37);
	close(fd);
	assert_int_equal(policy_reload(path, NULL, err, sizeof(err)), 0);
	gen = policy_generation();
	p = policy_acquire();
	assert_string_equal(p->rules[0].name, "a");
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "rules:\n  - name: b\n    alow: [read]\n", 36), 36);
	close(fd);
	assert_int_equal(policy_reload(path, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":3: rule: unknown key \"alow\""));
	assert_int_equal(policy_generation(), gen);
	struct policy *still = policy_acquire();

	assert_ptr_equal(still, p);
	policy_unref(still);
	policy_unref(p); /* our reference; the published one keeps it alive */
	policy_publish(NULL);
	assert_null(policy_acquire());
	unlink(path);
}

/* ---- statements ------------------------------------------------------------------------ */

static void test_statements(void **state)
{
	struct policy *p = load_rules();
	FILE *f = fopen(DATA "statements.txt", "r");
	char line[4096];
	unsigned n = 0, lineno = 0, failures = 0;
	static struct sql_analysis a;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *rule, *sql, *want, *s = line;
		const struct policy_rule *r = NULL;
		struct policy_verdict v;
		struct policy_stmt_ctx ctx = {.user = "report"};
		char got[300];

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		rule = trim(strsep(&s, "|"));
		sql = trim(strsep(&s, "|"));
		want = s ? trim(s) : NULL;
		assert_non_null(want);
		/* "\\|" in a statement is a literal pipe; "\\\\" a backslash */
		for (char *c = sql; *c; c++)
			if (c[0] == '\\' && c[1] == '\\')
				memmove(c, c + 1, strlen(c));
		for (unsigned i = 0; i < p->nrules; i++)
			if (!strcmp(p->rules[i].name, rule))
				r = &p->rules[i];
		assert_non_null(r);
		sql_analyze(sql, strlen(sql), 0, &a);
		policy_check_statement(r, &a, &ctx, &v);
		if (v.allowed)
			snprintf(got, sizeof(got), "allow");
		else
			snprintf(got, sizeof(got), "deny %s %s", v.sqlstate, v.reason);
		if (strcmp(got, want)) {
			fprintf(stderr, DATA "statements.txt:%u: %s\n  got  %s\n  want %s\n", lineno, sql,
				got, want);
			failures++;
		}
		n++;
	}
	fclose(f);
	fprintf(stderr, "statements.txt: %u cases\n", n);
	assert_int_equal(failures, 0);

	/* search_path changed: unqualified names fall under the lists wherever they could be. */
	struct policy_verdict v;
	struct policy_stmt_ctx moved = {.user = "report", .search_path_unknown = true};

	sql_analyze("SELECT * FROM orders", 20, 0, &a);
	policy_check_statement(&p->rules[0], &a, &moved, &v);
	assert_false(v.allowed);
	assert_string_equal(v.reason, "relation orders is not in the allowed list (search_path was "
				      "changed: qualify the name)");
	sql_analyze("SELECT * FROM public.orders", 27, 0, &a);
	policy_check_statement(&p->rules[0], &a, &moved, &v);
	assert_true(v.allowed);
	/* Past the analysis budget: 54001. */
	char *deep = malloc(2000);
	memcpy(deep, "SELECT ", 7);
	memset(deep + 7, '(', 1000);
	sql_analyze(deep, 1007, 0, &a);
	policy_check_statement(&p->rules[2], &a, &moved, &v);
	assert_false(v.allowed);
	assert_string_equal(v.sqlstate, "54001");
	free(deep);
	policy_unref(p);
}

/* ---- connections ----------------------------------------------------------------------- */

static void test_connection_matching(void **state)
{
	struct policy *p = load_rules();
	struct policy_identity id = {0};
	struct addr a10 = {0}, a192 = {0};
	struct sockaddr_in *in = (struct sockaddr_in *)&a10.ss;

	in->sin_family = AF_INET;
	inet_pton(AF_INET, "10.1.2.3", &in->sin_addr);
	in = (struct sockaddr_in *)&a192.ss;
	in->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", &in->sin_addr);

	id.user = "report";
	id.database = "analytics";
	id.client = &a192;
	assert_string_equal(policy_match_connection(p, &id, true)->name, "reporting");
	id.database = "postgres";
	assert_null(policy_match_connection(p, &id, true)); /* default deny */

	/* billing: only a local process in its cgroup (or below), with its comm */
	id.user = "billing";
	id.local = true;
	id.process_known = true;
	id.comm = "billing-app";
	id.cgroup = "/system.slice/billing.service";
	assert_string_equal(policy_match_connection(p, &id, true)->name, "billing");
	id.cgroup = "/system.slice/billing.service/worker";
	assert_string_equal(policy_match_connection(p, &id, true)->name, "billing");
	id.cgroup = "/system.slice/billing.service-evil";
	assert_null(policy_match_connection(p, &id, true));
	id.cgroup = NULL; /* not resolvable: fail closed */
	assert_null(policy_match_connection(p, &id, true));
	id.cgroup = "/system.slice/billing.service";
	id.local = false;
	id.client = &a10;
	assert_null(policy_match_connection(p, &id, true));
	id.local = true;
	id.process_known = false;
	assert_null(policy_match_connection(p, &id, true));

	/* ops: before the login the method is unknown and may still match; after, it must */
	memset(&id, 0, sizeof(id));
	id.user = "ops";
	id.client = &a10;
	id.tls_identity = "oncall@example.com";
	id.auth_method = SESSION_AUTH_PENDING;
	assert_string_equal(policy_match_connection(p, &id, false)->name, "ops-breakglass");
	assert_null(policy_match_connection(p, &id, true));
	id.auth_method = SESSION_AUTH_MD5;
	assert_null(policy_match_connection(p, &id, true));
	id.auth_method = SESSION_AUTH_CERT;
	assert_string_equal(policy_match_connection(p, &id, true)->name, "ops-breakglass");
	id.client = &a192;
	assert_null(policy_match_connection(p, &id, true));
	id.client = &a10;
	id.tls_identity = NULL;
	assert_null(policy_match_connection(p, &id, true));

	/* uid/gid/exe */
	memset(&id, 0, sizeof(id));
	id.process_known = true;
	id.uid = 1000;
	id.gid = 1001;
	id.exe = "/usr/bin/psql";
	assert_string_equal(policy_match_connection(p, &id, true)->name, "uid-rule");
	id.exe = "/tmp/psql";
	assert_null(policy_match_connection(p, &id, true));
	id.exe = "/usr/bin/psql";
	id.gid = 7;
	assert_null(policy_match_connection(p, &id, true));
	policy_unref(p);
}

/* ---- limits ----------------------------------------------------------------------------- */

static void test_limits(void **state)
{
	struct policy_limit_entry *a, *b, *c, *bucket;
	const uint64_t s = 1000000000ULL;

	a = policy_limit_session_take("r", POLICY_LIMIT_USER, "u", 2);
	b = policy_limit_session_take("r", POLICY_LIMIT_USER, "u", 2);
	assert_non_null(a);
	assert_ptr_equal(a, b);
	assert_null(policy_limit_session_take("r", POLICY_LIMIT_USER, "u", 2));
	c = policy_limit_session_take("r", POLICY_LIMIT_USER, "v", 2); /* another user */
	assert_non_null(c);
	struct policy_limit_entry *o = policy_limit_session_take("other", POLICY_LIMIT_USER, "u", 2);

	assert_non_null(o); /* another rule: its own count */
	assert_ptr_not_equal(o, a);
	policy_limit_put(o);
	policy_limit_put(a);
	b = policy_limit_session_take("r", POLICY_LIMIT_USER, "u", 2);
	assert_non_null(b); /* a slot came back */
	policy_limit_put(b);
	policy_limit_put(a);
	policy_limit_put(c);
	assert_int_equal(policy_limit_entries(), 0);

	/* 10/s, burst 2: two at once, then one every 100 ms */
	bucket = policy_limit_bucket("r", "u");
	assert_int_equal(policy_limit_take_tokens(bucket, 10, 2, 1, 5 * s, false), 0);
	assert_int_equal(policy_limit_take_tokens(bucket, 10, 2, 1, 5 * s, false), 0);
	assert_int_equal(policy_limit_take_tokens(bucket, 10, 2, 1, 5 * s, false), s / 10);
	assert_int_equal(policy_limit_take_tokens(bucket, 10, 2, 1, 5 * s + s / 20, false), s / 20);
	assert_int_equal(policy_limit_take_tokens(bucket, 10, 2, 1, 5 * s + s / 10, false), 0);
	/* reserving queues waiters fairly: the second waits behind the first */
	assert_int_equal(policy_limit_take_tokens(bucket, 10, 2, 1, 5 * s + s / 10, true), s / 10);
	assert_int_equal(policy_limit_take_tokens(bucket, 10, 2, 1, 5 * s + s / 10, true), 2 * s / 10);
	/* a long idle refills only to the burst */
	assert_int_equal(policy_limit_take_tokens(bucket, 10, 2, 2, 1000 * s, false), 0);
	assert_int_equal(policy_limit_take_tokens(bucket, 10, 2, 1, 1000 * s, false), s / 10);
	/* no overflow with an enormous gap */
	assert_int_equal(policy_limit_take_tokens(bucket, 1000000, 10000000, 1, UINT64_MAX / 2,
						  false), 0);
	policy_limit_put(bucket);
	assert_int_equal(policy_limit_entries(), 0);
}

/* ---- process identity -------------------------------------------------------------------- */

/* Two cgroups made for the test: each id resolves to its own path, through the handle or
 * the walk; an id that names nothing resolves to nothing. */
static void test_cgroup_paths(void **state)
{
	const char *root = policy_proc_cgroup2_root();
	char a[4096], b[4096], got[4096], rel[4096];
	uint64_t ida, idb;

	if (!root || access(root, W_OK)) {
		fprintf(stderr, "no writable cgroup2 mount: cgroup path test skipped\n");
		skip();
	}
	snprintf(a, sizeof(a), "%s/pgwarden-test-%d-a", root, getpid());
	snprintf(b, sizeof(b), "%s/pgwarden-test-%d-b", root, getpid());
	if (mkdir(a, 0755) || mkdir(b, 0755)) {
		rmdir(a);
		fprintf(stderr, "cannot make test cgroups: %s: skipped\n", strerror(errno));
		skip();
	}
	assert_int_equal(policy_proc_cgroup_id(a, &ida), 0);
	assert_int_equal(policy_proc_cgroup_id(b, &idb), 0);
	assert_true(ida != idb);
	assert_int_equal(policy_proc_cgroup_path(ida, got, sizeof(got)), 0);
	snprintf(rel, sizeof(rel), "%s", a + strlen(root));
	assert_string_equal(got, rel);
	assert_int_equal(policy_proc_cgroup_path(idb, got, sizeof(got)), 0);
	snprintf(rel, sizeof(rel), "%s", b + strlen(root));
	assert_string_equal(got, rel);
	assert_true(policy_proc_cgroup_path(0x7ffffffffffffULL, got, sizeof(got)) < 0);
	assert_string_equal(got, "");
	/* our own executable, checked against our own uid and cgroup */
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	uint64_t mine = 0;
	char cg[4096], full[8192];
	FILE *f = fopen("/proc/self/cgroup", "r");

	self[n] = '\0';
	while (f && fgets(cg, sizeof(cg), f))
		if (!strncmp(cg, "0::", 3)) {
			cg[strcspn(cg, "\n")] = '\0';
			snprintf(full, sizeof(full), "%s%s", root, cg + 3);
			assert_int_equal(policy_proc_cgroup_id(full, &mine), 0);
		}
	if (f)
		fclose(f);
	assert_int_equal(policy_proc_exe((uint32_t)getpid(), getuid(), mine, got, sizeof(got)), 0);
	assert_string_equal(got, self);
	/* a different uid than the process has: not trusted */
	assert_int_equal(policy_proc_exe((uint32_t)getpid(), getuid() + 1, mine, got, sizeof(got)),
			 -ESRCH);
	/* a different cgroup than the one recorded: not trusted */
	assert_int_equal(policy_proc_exe((uint32_t)getpid(), getuid(), ida, got, sizeof(got)), -ESRCH);
	rmdir(a);
	rmdir(b);
}

/* ---- the stage ------------------------------------------------------------------------- */

struct fake {
	struct session s;
	char *names[4], *values[4];
	struct stage_pipeline p;
	struct stage_chain ch;
	struct stmt_table stmts;
	struct stage_limits limits;
	struct stage_result r;
	uint8_t buf[4096];
};

/* A verified client certificate for identity (the session's copy). */
static void client_identity(struct session *s, const char *identity)
{
	struct session_tls *leg = session_tls_leg(s, false);

	assert_non_null(leg);
	leg->peer_identity = strdup(identity);
	assert_non_null(leg->peer_identity);
}

static void fake_session(struct fake *f, const char *user, const char *db)
{
	memset(f, 0, sizeof(*f));
	f->s.user = user;
	f->s.database = db;
	((struct sockaddr_in *)&f->s.client.ss)->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.9", &((struct sockaddr_in *)&f->s.client.ss)->sin_addr);
	snprintf(f->s.id_hex, sizeof(f->s.id_hex), "00112233445566778899aabbccddeeff");
	f->s.startup.names = f->names;
	f->s.startup.values = f->values;
}

static void fake_param(struct fake *f, const char *n, const char *v)
{
	f->names[f->s.startup.nparams] = (char *)n;
	f->values[f->s.startup.nparams++] = (char *)v;
}

static void fake_start(struct fake *f)
{
	assert_int_equal(stage_pipeline_add(&f->p, &policy_stage), 0);
	assert_int_equal(stage_chain_init(&f->ch, &f->p, &f->s, &f->stmts, NULL), 0);
	stage_run_session_start(&f->ch, &f->limits, 1, &f->r);
}

/* Log in as the claimed user with method m: the AUTH notice. */
static void fake_login(struct fake *f, enum session_auth_method m)
{
	struct stage_note n = {.kind = STAGE_NOTE_AUTH};

	assert_int_equal(session_set_verified(&f->s, m, false, f->s.user), 0);
	stage_run_notice(&f->ch, &n, &f->limits, 2);
}

static void fake_end(struct fake *f)
{
	stage_chain_end(&f->ch, true);
	stmt_table_release(&f->stmts);
	f->s.startup.names = f->s.startup.values = NULL; /* the fake's own arrays */
	session_release(&f->s);
}

static struct proto_msg msg(struct fake *f, uint8_t type, const char *a, const char *b)
{
	size_t n = 0, la = strlen(a) + 1, lb = b ? strlen(b) + 1 : 0;

	memcpy(f->buf, a, la);
	n = la;
	if (b) {
		memcpy(f->buf + n, b, lb);
		n += lb;
	}
	return (struct proto_msg){.type = type, .body_len = (uint32_t)n, .body = f->buf};
}

static enum stage_verdict run(struct fake *f, uint8_t type, const char *a, const char *b,
			      uint32_t *word, uint64_t now)
{
	struct proto_msg m = msg(f, type, a, b);
	uint32_t words[STAGE_MAX] = {0};

	stage_run_frontend(&f->ch, &m, 1, word ? words : NULL, now, &f->r);
	if (word)
		*word = words[0];
	return f->r.verdict;
}

static void publish_rules(void)
{
	policy_publish(load_rules());
}

static void test_stage_without_policy(void **state)
{
	struct fake f;

	policy_publish(NULL);
	fake_session(&f, "anyone", "db");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_FORWARD);
	assert_false(stage_chain_wants(&f.ch, PROTO_FRONTEND, PqMsg_Query));
	assert_string_equal(policy_stage_rule(&f.ch, 0), "");
	assert_int_equal(policy_stage_audit(&f.ch, 0), POLICY_AUDIT_NONE);
	/* Without a policy a session holds a pointer of the stage, not its state (which was
	 * 704 bytes of every idle session). */
	assert_true(policy_stage.state_size <= sizeof(void *));
	fake_end(&f);
}

static void test_stage_connection(void **state)
{
	struct fake f;
	uint64_t before = policy_firings(POLICY_FIRE_CONNECTION_DENIED);

	publish_rules();
	/* default deny at startup: FATAL 28000 in pgwarden's wording */
	fake_session(&f, "mallory", "analytics");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_CLOSE);
	assert_string_equal(f.r.sqlstate, "28000");
	assert_string_equal(f.r.message, "pgwarden: no policy rule admits user \"mallory\" to "
					 "database \"analytics\" from 192.0.2.9:0");
	assert_int_equal(policy_firings(POLICY_FIRE_CONNECTION_DENIED), before + 1);
	fake_end(&f);

	/* admitted: the rule is visible to listings; its timeouts reach the connection */
	fake_session(&f, "report", "analytics");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_FORWARD);
	assert_string_equal(policy_stage_rule(&f.ch, 0), "reporting");
	assert_int_equal(policy_stage_audit(&f.ch, 0), POLICY_AUDIT_STATEMENT);
	assert_true(stage_chain_wants(&f.ch, PROTO_FRONTEND, PqMsg_Query));
	assert_true(stage_chain_wants(&f.ch, PROTO_FRONTEND, PqMsg_Parse));
	fake_end(&f);

	/* a role in the startup parameters is a role switch */
	fake_session(&f, "report", "analytics");
	fake_param(&f, "options", "-c work_mem=64MB --role=postgres");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_CLOSE);
	assert_string_equal(f.r.sqlstate, "28000");
	assert_non_null(strstr(f.r.message, "role or session_authorization"));
	fake_end(&f);
	fake_session(&f, "report", "analytics");
	fake_param(&f, "role", "postgres");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_CLOSE);
	fake_end(&f);
	fake_session(&f, "report", "analytics");
	fake_param(&f, "options", "-c\\ role=x -csession_authorization=postgres");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_CLOSE);
	fake_end(&f);

	/* an unsafe client_encoding at startup, in any spelling */
	fake_session(&f, "report", "analytics");
	fake_param(&f, "client_encoding", "Shift-JIS");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_CLOSE);
	assert_string_equal(f.r.sqlstate, "0A000");
	fake_end(&f);
	fake_session(&f, "report", "analytics");
	fake_param(&f, "options", "-c client_encoding=gbk");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_CLOSE);
	fake_end(&f);

	/* replication only where a rule allows it */
	fake_session(&f, "report", "analytics");
	f.s.replication = true;
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_CLOSE);
	assert_non_null(strstr(f.r.message, "does not allow replication"));
	fake_end(&f);

	/* the claimed user could be ops; the verified login by md5 is not admitted: the next
	 * message closes the session */
	fake_session(&f, "ops", "postgres");
	((struct sockaddr_in *)&f.s.client.ss)->sin_addr.s_addr = htonl(0x0a000001);
	client_identity(&f.s, "oncall@example.com");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_FORWARD);
	fake_login(&f, SESSION_AUTH_MD5);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 3), STAGE_CLOSE);
	assert_string_equal(f.r.sqlstate, "28000");
	fake_end(&f);
	fake_session(&f, "ops", "postgres");
	((struct sockaddr_in *)&f.s.client.ss)->sin_addr.s_addr = htonl(0x0a000001);
	client_identity(&f.s, "oncall@example.com");
	fake_start(&f);
	fake_login(&f, SESSION_AUTH_CERT);
	assert_int_equal(run(&f, PqMsg_Query, "SET ROLE postgres", NULL, NULL, 3), STAGE_FORWARD);
	assert_string_equal(policy_stage_rule(&f.ch, 0), "ops-breakglass");
	/* not a replication session: walsender commands are unknown statements */
	assert_int_equal(run(&f, PqMsg_Query, "IDENTIFY_SYSTEM", NULL, NULL, 3), STAGE_REJECT);
	fake_end(&f);
	/* a replication session under a rule that allows it: walsender commands pass */
	fake_session(&f, "ops", "postgres");
	f.s.replication = true;
	((struct sockaddr_in *)&f.s.client.ss)->sin_addr.s_addr = htonl(0x0a000001);
	client_identity(&f.s, "oncall@example.com");
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_FORWARD);
	fake_login(&f, SESSION_AUTH_CERT);
	assert_int_equal(run(&f, PqMsg_Query, "IDENTIFY_SYSTEM", NULL, NULL, 3), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "START_REPLICATION SLOT s LOGICAL 0/0", NULL, NULL, 3),
			 STAGE_FORWARD);
	/* ...in a Query only: a Parse of the same text is an unknown statement, whatever the
	 * stage remembers of the Query */
	assert_int_equal(run(&f, PqMsg_Parse, "", "START_REPLICATION SLOT s LOGICAL 0/0", NULL, 3),
			 STAGE_REJECT);
	fake_end(&f);
}

static void test_stage_statements(void **state)
{
	struct fake f;
	uint32_t word;
	uint64_t denied = policy_denials("reporting");

	publish_rules();
	fake_session(&f, "report", "analytics");
	fake_start(&f);
	fake_login(&f, SESSION_AUTH_SCRAM);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT * FROM orders", NULL, NULL, 3), STAGE_FORWARD);
	/* one statement per Query for this rule */
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1; SELECT 2", NULL, NULL, 3), STAGE_REJECT);
	assert_string_equal(f.r.message, "pgwarden: policy rule \"reporting\" denies this: one "
					 "statement per Query message");
	assert_string_equal(f.r.rule, "reporting");
	/* a denied Parse; an allowed one leaves its word */
	assert_int_equal(run(&f, PqMsg_Parse, "s1", "DELETE FROM orders", &word, 3), STAGE_REJECT);
	assert_string_equal(f.r.sqlstate, "42501");
	assert_string_equal(f.r.message, "pgwarden: policy rule \"reporting\" denies this: "
					 "statement class write is not allowed");
	assert_int_equal(run(&f, PqMsg_Parse, "s1", "SELECT a FROM orders", &word, 3), STAGE_FORWARD);
	assert_true(word & 0x80000000u);
	/* re-Parse of the same name with something denied */
	assert_int_equal(run(&f, PqMsg_Parse, "s1", "SELECT * FROM secrets", &word, 3), STAGE_REJECT);
	/* several statements in one Parse: the server refuses them; so do we */
	assert_int_equal(run(&f, PqMsg_Parse, "", "SELECT 1; DELETE FROM orders", &word, 3),
			 STAGE_REJECT);
	/* FunctionCall: not an allowed class here */
	assert_int_equal(run(&f, PqMsg_FunctionCall, "", NULL, NULL, 3), STAGE_REJECT);
	/* too complex */
	char deep[700] = "SELECT ";
	memset(deep + 7, '(', 600);
	deep[607] = '\0';
	assert_int_equal(run(&f, PqMsg_Query, deep, NULL, NULL, 3), STAGE_REJECT);
	assert_string_equal(f.r.sqlstate, "54001");
	assert_true(policy_denials("reporting") >= denied + 6);
	/* standard_conforming_strings off moves string ends: the lexer follows the server */
	struct stage_note sp = {.kind = STAGE_NOTE_SERVER_PARAM, .name = "standard_conforming_strings",
				.value = "off"};
	stage_run_notice(&f.ch, &sp, NULL, 3);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT '\\'; SELECT * FROM secrets; --'", NULL, NULL, 3),
			 STAGE_FORWARD); /* one string: the server sees one SELECT */
	/* the server reports a switch to an unsafe encoding: the next message ends it */
	struct stage_note enc = {.kind = STAGE_NOTE_SERVER_PARAM, .name = "client_encoding",
				 .value = "SJIS"};
	stage_run_notice(&f.ch, &enc, NULL, 3);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 3), STAGE_CLOSE);
	assert_string_equal(f.r.sqlstate, "0A000");
	fake_end(&f);
}

static void test_stage_multi_statement_and_prepared(void **state)
{
	struct fake f;
	struct stmt_entry *e, *ok;
	uint32_t word;

	publish_rules();
	fake_session(&f, "app", "db");
	fake_param(&f, "application_name", "web");
	f.s.application_name = "web";
	fake_start(&f);
	fake_login(&f, SESSION_AUTH_SCRAM);
	e = stmt_new("p", "DELETE FROM t", 13, 0, true);
	ok = stmt_new("q", "SELECT 1", 8, 0, true);
	assert_true(e && ok);
	stmt_commit(&f.stmts, e);
	stmt_commit(&f.stmts, ok);
	/* every statement is judged: one denied one denies the Query */
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1; SELECT pg_sleep(5); SELECT 2", NULL, NULL,
			     5000000000ULL),
			 STAGE_REJECT);
	assert_string_equal(f.r.message, "pgwarden: policy rule \"app\" denies this: statement 2: "
					 "function pg_sleep is denied");
	/* EXECUTE is judged by the prepared text (app may write, not prepare) */
	assert_int_equal(run(&f, PqMsg_Query, "EXECUTE q", NULL, NULL, 6000000000ULL), STAGE_REJECT);
	assert_string_equal(f.r.message, "pgwarden: policy rule \"app\" denies this: statement 1: "
					 "statement class prepare is not allowed");
	fake_end(&f);

	/* reporting may prepare: EXECUTE of a prepared DELETE is a write */
	fake_session(&f, "report", "analytics");
	fake_start(&f);
	fake_login(&f, SESSION_AUTH_SCRAM);
	e = stmt_new("p", "DELETE FROM t", 13, 0, true);
	ok = stmt_new("q", "SELECT 1", 8, 0, true);
	assert_true(e && ok);
	stmt_commit(&f.stmts, e);
	stmt_commit(&f.stmts, ok);
	assert_int_equal(run(&f, PqMsg_Query, "EXECUTE p", NULL, NULL, 3), STAGE_REJECT);
	assert_string_equal(f.r.message, "pgwarden: policy rule \"reporting\" denies this: "
					 "statement 1: statement class write is not allowed");
	assert_int_equal(run(&f, PqMsg_Query, "EXECUTE q", NULL, NULL, 3), STAGE_FORWARD);
	/* hostile: EXECUTE of a name pgwarden never saw prepared (made where it could not
	 * follow) is denied, not waved through as a bare EXECUTE */
	assert_int_equal(run(&f, PqMsg_Query, "EXECUTE unseen", NULL, NULL, 3), STAGE_REJECT);
	assert_non_null(strstr(f.r.message, "\"unseen\", whose text pgwarden has not seen"));
	/* a statement whose text was not kept cannot be judged: denied */
	e = stmt_new("notext", NULL, 40, 0, true);
	assert_non_null(e);
	stmt_commit(&f.stmts, e);
	assert_int_equal(run(&f, PqMsg_Query, "EXECUTE notext", NULL, NULL, 3), STAGE_REJECT);
	e = stmt_lookup(&f.stmts, "p");
	/* Bind of a statement judged under this policy: its word passes it without a re-parse */
	assert_int_equal(run(&f, PqMsg_Parse, "q", "SELECT 1", &word, 3), STAGE_FORWARD);
	ok->words[0] = word;
	e->words[0] = word; /* pretend: the word says allowed under this generation */
	assert_int_equal(run(&f, PqMsg_Bind, "", "p", NULL, 3), STAGE_FORWARD);
	/* after a reload the word is stale: Bind judges the text again */
	publish_rules();
	assert_int_equal(run(&f, PqMsg_Bind, "", "p", NULL, 3), STAGE_REJECT);
	assert_int_equal(run(&f, PqMsg_Bind, "", "q", NULL, 3), STAGE_FORWARD);
	assert_int_equal(stmt_portal_bind(&f.stmts, "c1", e), 0);
	assert_int_equal(run(&f, PqMsg_Execute, "c1", NULL, NULL, 3), STAGE_REJECT);
	fake_end(&f);
}

/* SQL PREPARE and DEALLOCATE earlier in the same Query: EXECUTE runs what they left, which
 * the statement table learns only when the server confirms them. */
static void test_stage_prepare_in_one_query(void **state)
{
	static const char rules[] = "version: 1\nrules:\n  - name: multi\n    match:\n"
				    "      user: multi\n    allow: [read, prepare, session]\n";
	static const char strict[] = "version: 1\nrules:\n  - name: multi\n    match:\n"
				     "      user: multi\n    allow: [read, prepare]\n"
				     "    relations: { deny: [t] }\n";
	char err[POLICY_ERR_MAX];
	struct policy *p = policy_load_buffer("multi", rules, sizeof(rules) - 1, err, sizeof(err));
	struct stmt_entry *e;
	struct fake f;

	assert_non_null(p);
	policy_publish(p);
	fake_session(&f, "multi", "db");
	fake_start(&f);
	fake_login(&f, SESSION_AUTH_SCRAM);
	e = stmt_new("q", "SELECT 1", 8, 0, true);
	assert_non_null(e);
	stmt_commit(&f.stmts, e);
	/* a PREPARE earlier in the same Query is what EXECUTE runs, before the server confirms */
	assert_int_equal(run(&f, PqMsg_Query, "PREPARE n AS SELECT 2; EXECUTE n", NULL, NULL, 3),
			 STAGE_FORWARD);
	/* re-PREPARE under an allowed name: the new body is judged (and a denied one denies) */
	assert_int_equal(run(&f, PqMsg_Query, "DEALLOCATE q; PREPARE q AS DELETE FROM t; EXECUTE q",
			     NULL, NULL, 3), STAGE_REJECT);
	assert_non_null(strstr(f.r.message, "statement 2: statement class write"));
	/* deallocated earlier in the Query: unknown, denied */
	assert_int_equal(run(&f, PqMsg_Query,
			     "DEALLOCATE q; PREPARE q AS SELECT 3; EXECUTE q; DEALLOCATE q; EXECUTE q",
			     NULL, NULL, 3), STAGE_REJECT);
	assert_non_null(strstr(f.r.message, "statement 5: EXECUTE of prepared statement \"q\""));
	assert_int_equal(run(&f, PqMsg_Query, "DEALLOCATE ALL; EXECUTE q", NULL, NULL, 3),
			 STAGE_REJECT);
	assert_int_equal(run(&f, PqMsg_Query, "EXECUTE q", NULL, NULL, 3), STAGE_FORWARD);
	/* the verdict of a text that EXECUTEs is never reused: the statement table decides */
	stmt_remove(&f.stmts, "q");
	e = stmt_new("q", "DELETE FROM t", 13, 0, true);
	assert_non_null(e);
	stmt_commit(&f.stmts, e);
	assert_int_equal(run(&f, PqMsg_Query, "EXECUTE q", NULL, NULL, 3), STAGE_REJECT);
	/* the same Parse text again is allowed without a new analysis... */
	assert_int_equal(run(&f, PqMsg_Parse, "", "SELECT a FROM t", NULL, 3), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Parse, "", "SELECT a FROM t", NULL, 3), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT a FROM t", NULL, NULL, 3), STAGE_FORWARD);
	/* ...until the policy changes: the same text under a stricter rule is denied */
	p = policy_load_buffer("strict", strict, sizeof(strict) - 1, err, sizeof(err));
	assert_non_null(p);
	policy_publish(p);
	assert_int_equal(run(&f, PqMsg_Parse, "", "SELECT a FROM t", NULL, 3), STAGE_REJECT);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT a FROM t", NULL, NULL, 3), STAGE_REJECT);
	/* and a text that differs in one byte is judged on its own */
	assert_int_equal(run(&f, PqMsg_Parse, "", "SELECT a FROM t ", NULL, 3), STAGE_REJECT);
	fake_end(&f);
}

/*
 * Texts that differ only in their numbers share a verdict (sql_shape), and nothing else
 * does: not a literal the analysis reads, not a verdict taken under another search_path,
 * policy or message type. Hostile cases first.
 */
static void test_stage_shapes(void **state)
{
	static const char rules[] =
		"version: 1\nrules:\n  - name: shapes\n    match: { user: shapes }\n"
		"    allow: [read, write, session, transaction]\n"
		"    relations: { allow: [public.t], deny: [public.secret] }\n"
		"    search_path: [public]\n"
		"  - name: roles\n    match: { user: roles }\n    allow: [read, session]\n"
		"    role_switch: true\n";
	static const char stricter[] =
		"version: 1\nrules:\n  - name: shapes\n    match: { user: shapes }\n"
		"    allow: [read, write, session, transaction]\n"
		"    relations: { allow: [public.u] }\n    search_path: [public]\n";
	char err[POLICY_ERR_MAX], sql[64];
	struct policy *p = policy_load_buffer("shapes", rules, sizeof(rules) - 1, err, sizeof(err));
	struct fake f;

	assert_non_null(p);
	policy_publish(p);
	fake_session(&f, "shapes", "db");
	fake_start(&f);
	fake_login(&f, SESSION_AUTH_SCRAM);
	/* a string the analysis reads: set_config('role', ...) is a role switch this rule
	 * does not allow, after the same call on another setting was allowed */
	assert_int_equal(run(&f, PqMsg_Query, "SELECT set_config('application_name', 'x', false)",
			     NULL, NULL, 3), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT set_config('role', 'x', false)", NULL, NULL, 3),
			 STAGE_REJECT);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT set_config('role', 'y', false)", NULL, NULL, 3),
			 STAGE_REJECT);
	/* numbers and relations: one verdict per relation, whatever the number */
	assert_int_equal(run(&f, PqMsg_Query, "SELECT a FROM t WHERE id = 1", NULL, NULL, 3),
			 STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT a FROM t WHERE id = 2", NULL, NULL, 3),
			 STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT a FROM secret WHERE id = 2", NULL, NULL, 3),
			 STAGE_REJECT);
	assert_int_equal(run(&f, PqMsg_Parse, "", "SELECT a FROM t WHERE id = 1", NULL, 3),
			 STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Parse, "", "SELECT a FROM t WHERE id = 2", NULL, 3),
			 STAGE_FORWARD);
	/* search_path moved: an unqualified t could be anywhere now, so the verdict kept for
	 * this shape before the move is not the verdict after it */
	assert_int_equal(run(&f, PqMsg_Query, "SET search_path = evil, public", NULL, NULL, 3),
			 STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT a FROM t WHERE id = 3", NULL, NULL, 3),
			 STAGE_REJECT);
	assert_non_null(strstr(f.r.message, "search_path was changed"));
	assert_int_equal(run(&f, PqMsg_Parse, "", "SELECT a FROM t WHERE id = 3", NULL, 3),
			 STAGE_REJECT);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT a FROM public.t WHERE id = 3", NULL, NULL, 3),
			 STAGE_FORWARD);
	fake_end(&f);

	/* a reload: the shape allowed under the old rules is judged again */
	fake_session(&f, "shapes", "db");
	fake_start(&f);
	fake_login(&f, SESSION_AUTH_SCRAM);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT a FROM t WHERE id = 1", NULL, NULL, 3),
			 STAGE_FORWARD);
	p = policy_load_buffer("stricter", stricter, sizeof(stricter) - 1, err, sizeof(err));
	assert_non_null(p);
	policy_publish(p);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT a FROM t WHERE id = 4", NULL, NULL, 3),
			 STAGE_REJECT);
	/* more shapes than the session keeps: the oldest go, verdicts stay right */
	for (int i = 0; i < 40; i++) {
		snprintf(sql, sizeof(sql), "SELECT c%d FROM u WHERE id = %d", i % 20, i);
		assert_int_equal(run(&f, PqMsg_Query, sql, NULL, NULL, 3), STAGE_FORWARD);
		snprintf(sql, sizeof(sql), "SELECT c%d FROM t WHERE id = %d", i % 20, i);
		assert_int_equal(run(&f, PqMsg_Query, sql, NULL, NULL, 3), STAGE_REJECT);
	}
	fake_end(&f);

	/* role names are identifiers, kept in the shape; SET is never judged by its shape */
	p = policy_load_buffer("shapes", rules, sizeof(rules) - 1, err, sizeof(err));
	assert_non_null(p);
	policy_publish(p);
	fake_session(&f, "roles", "db");
	fake_start(&f);
	fake_login(&f, SESSION_AUTH_SCRAM);
	assert_int_equal(run(&f, PqMsg_Query, "SET ROLE a", NULL, NULL, 3), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SET ROLE b", NULL, NULL, 3), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 3), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "DELETE FROM t WHERE id = 1", NULL, NULL, 3),
			 STAGE_REJECT);
	fake_end(&f);
}

/* A forwarded Query or Parse carries the classes the stage found, one per statement in
 * order, so that the relay does not classify the text again; a verdict remembered for a text
 * or a shape carries the classes of the text judged then, which are the same. */
static void expect_classes(const struct fake *f, unsigned n, const enum sql_class *want)
{
	assert_int_equal(f->r.verdict, STAGE_FORWARD);
	assert_non_null(f->r.classes);
	assert_int_equal(f->r.nclasses, n);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(f->r.classes[i], want[i]);
}

static void test_stage_statement_classes(void **state)
{
	static const char rules[] =
		"version: 1\nrules:\n  - name: classes\n    match: { user: classes }\n"
		"    allow: [read, write, session, transaction, prepare]\n";
	static const enum sql_class tx_read_tx[] = {SQL_CLASS_TRANSACTION, SQL_CLASS_READ,
						    SQL_CLASS_TRANSACTION};
	static const enum sql_class session_read[] = {SQL_CLASS_SESSION, SQL_CLASS_READ};
	static const enum sql_class write[] = {SQL_CLASS_WRITE}, read[] = {SQL_CLASS_READ};
	static const enum sql_class prepare[] = {SQL_CLASS_PREPARE};
	char err[POLICY_ERR_MAX], many[1024] = "";
	struct policy *p = policy_load_buffer("classes", rules, sizeof(rules) - 1, err,
					      sizeof(err));
	struct stmt_entry *e;
	struct fake f;

	assert_non_null(p);
	policy_publish(p);
	fake_session(&f, "classes", "db");
	fake_start(&f);
	fake_login(&f, SESSION_AUTH_SCRAM);
	/* judged, then the same text (remembered), then the same shape (remembered) */
	run(&f, PqMsg_Query, "BEGIN; SELECT a FROM t WHERE id = 1; COMMIT", NULL, NULL, 3);
	expect_classes(&f, 3, tx_read_tx);
	run(&f, PqMsg_Query, "BEGIN; SELECT a FROM t WHERE id = 1; COMMIT", NULL, NULL, 3);
	expect_classes(&f, 3, tx_read_tx);
	run(&f, PqMsg_Query, "BEGIN; SELECT a FROM t WHERE id = 2; COMMIT", NULL, NULL, 3);
	expect_classes(&f, 3, tx_read_tx);
	/* a text never remembered by its shape */
	run(&f, PqMsg_Query, "SET application_name = 'x'; SELECT 1", NULL, NULL, 3);
	expect_classes(&f, 2, session_read);
	/* nothing but separators: no statements, and that is known */
	run(&f, PqMsg_Query, " ; ;", NULL, NULL, 3);
	expect_classes(&f, 0, NULL);
	/* a Parse: its one class; an unnamed statement parsed again with another text gets the
	 * new text's class, also when the verdict was remembered by its shape */
	run(&f, PqMsg_Parse, "", "INSERT INTO t VALUES (1)", NULL, 3);
	expect_classes(&f, 1, write);
	run(&f, PqMsg_Parse, "", "SELECT a FROM t", NULL, 3);
	expect_classes(&f, 1, read);
	run(&f, PqMsg_Parse, "", "INSERT INTO t VALUES (2)", NULL, 3);
	expect_classes(&f, 1, write);
	/* EXECUTE counts as what it is (prepare), not as the text it runs */
	e = stmt_new("q", "SELECT 1", 8, 0, true);
	assert_non_null(e);
	stmt_commit(&f.stmts, e);
	run(&f, PqMsg_Query, "EXECUTE q", NULL, NULL, 3);
	expect_classes(&f, 1, prepare);
	/* more statements than a verdict carries classes for: none, the relay classifies */
	for (int i = 0; i < 40; i++)
		strcat(many, "SELECT 1;");
	assert_int_equal(run(&f, PqMsg_Query, many, NULL, NULL, 3), STAGE_FORWARD);
	assert_null(f.r.classes);
	/* and still none after that text was remembered */
	assert_int_equal(run(&f, PqMsg_Query, many, NULL, NULL, 3), STAGE_FORWARD);
	assert_null(f.r.classes);
	/* a Bind runs a statement classified at its Parse: nothing to carry */
	assert_int_equal(run(&f, PqMsg_Bind, "", "q", NULL, 3), STAGE_FORWARD);
	assert_null(f.r.classes);
	fake_end(&f);
}

static void test_stage_limits(void **state)
{
	static const struct session_process billing_app = {.known = true, .comm = "billing-app"};
	struct fake f, g, h;
	const uint64_t s = 1000000000ULL;

	publish_rules();
	/* app: 1 statement/s, burst 1, reject: 53400 */
	fake_session(&f, "app", "db1");
	f.s.application_name = "web";
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_FORWARD);
	fake_login(&f, SESSION_AUTH_SCRAM);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 100 * s), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 100 * s), STAGE_REJECT);
	assert_string_equal(f.r.sqlstate, "53400");
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 101 * s), STAGE_FORWARD);
	/* sessions per database: 1 under app */
	fake_session(&g, "app", "db1");
	g.s.application_name = "web";
	fake_start(&g);
	assert_int_equal(g.r.verdict, STAGE_CLOSE);
	assert_string_equal(g.r.sqlstate, "53300");
	fake_end(&g);
	fake_end(&f);
	fake_session(&g, "app", "db1");
	g.s.application_name = "web";
	fake_start(&g);
	assert_int_equal(g.r.verdict, STAGE_FORWARD); /* the slot came back */
	fake_end(&g);

	/* billing: 5/s, burst 2, wait: the third statement is paused until a token is due */
	fake_session(&h, "billing", "db");
	assert_int_equal(session_set_process(&h.s, &billing_app), 0);
	h.s.route = SESSION_ROUTE_STEERED;
	fake_start(&h);
	/* no cgroup could be resolved for this fake process: billing cannot match */
	assert_int_equal(h.r.verdict, STAGE_CLOSE);
	fake_end(&h);
	assert_int_equal(policy_limit_entries(), 0);
}

/* Under the billing rule, with the process facts resolvable: the wait limit. */
static void test_stage_rate_wait(void **state)
{
	char err[POLICY_ERR_MAX];
	static const char doc[] =
		"rules:\n"
		"  - name: waiter\n"
		"    allow: [read]\n"
		"    limits: {statements_per_second: 5, burst: 2, over_limit: wait, max_wait: 1s,\n"
		"             sessions_per_user: 2, idle_timeout: 10m, max_lifetime: 1h}\n";
	struct fake f, g, h;
	const uint64_t s = 1000000000ULL;

	policy_publish(policy_load_buffer("w", doc, sizeof(doc) - 1, err, sizeof(err)));
	fake_session(&f, "u", "d");
	f.limits.idle_ms = 3600000; /* the connection's own: policy only tightens */
	fake_start(&f);
	assert_int_equal(f.r.verdict, STAGE_FORWARD);
	assert_int_equal(f.limits.idle_ms, 600000);
	assert_int_equal(f.limits.lifetime_ms, 3600000);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 10 * s), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 10 * s), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 10 * s), STAGE_PAUSE);
	assert_int_equal(f.r.resume_at_ns, 10 * s + s / 5);
	/* resumed: it goes, without taking a second token */
	{
		struct proto_msg m = msg(&f, PqMsg_Query, "SELECT 1", NULL);

		stage_run_frontend(&f.ch, &m, 1, NULL, 10 * s + s / 5, &f.r);
		assert_int_equal(f.r.verdict, STAGE_FORWARD);
	}
	/* 10 at once: more than a second of waiting → 53400 */
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1;SELECT 1;SELECT 1;SELECT 1;SELECT 1;"
					      "SELECT 1;SELECT 1;SELECT 1;SELECT 1;SELECT 1",
			     NULL, NULL, 10 * s + s / 5),
			 STAGE_REJECT);
	assert_string_equal(f.r.sqlstate, "53400");
	/* sessions per user: 2 */
	fake_session(&g, "u", "d");
	fake_start(&g);
	assert_int_equal(g.r.verdict, STAGE_FORWARD);
	fake_session(&h, "u", "d");
	fake_start(&h);
	assert_int_equal(h.r.verdict, STAGE_CLOSE);
	assert_string_equal(h.r.sqlstate, "53300");
	fake_end(&h);
	fake_end(&g);
	fake_end(&f);
	assert_int_equal(policy_limit_entries(), 0);
}

/* A reload that no longer admits a live session ends it at its next message. */
static void test_stage_reload(void **state)
{
	char err[POLICY_ERR_MAX];
	static const char one[] = "rules:\n  - name: r1\n    match: {user: u}\n    allow: [read]\n";
	static const char two[] = "rules:\n  - name: r2\n    match: {user: u}\n    allow: [write]\n";
	static const char none[] = "rules:\n  - name: r3\n    match: {user: v}\n    allow: [read]\n";
	struct fake f;

	policy_publish(policy_load_buffer("1", one, sizeof(one) - 1, err, sizeof(err)));
	fake_session(&f, "u", "d");
	fake_start(&f);
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 1), STAGE_FORWARD);
	assert_int_equal(run(&f, PqMsg_Query, "DELETE FROM t", NULL, NULL, 1), STAGE_REJECT);
	policy_publish(policy_load_buffer("2", two, sizeof(two) - 1, err, sizeof(err)));
	assert_int_equal(run(&f, PqMsg_Query, "DELETE FROM t", NULL, NULL, 1), STAGE_FORWARD);
	assert_string_equal(policy_stage_rule(&f.ch, 0), "r2");
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 1), STAGE_REJECT);
	policy_publish(policy_load_buffer("3", none, sizeof(none) - 1, err, sizeof(err)));
	assert_int_equal(run(&f, PqMsg_Query, "SELECT 1", NULL, NULL, 1), STAGE_CLOSE);
	assert_string_equal(f.r.sqlstate, "28000");
	fake_end(&f);
	policy_publish(NULL);
}

/* Every policy example in docs/POLICY.md and README.md (a yaml block holding "rules:") loads:
 * the documentation cannot drift from the loader. */
static void test_docs_examples_load(void **state)
{
	static const char *const files[] = {"../../docs/POLICY.md", "../../README.md"};
	unsigned n = 0;

	for (unsigned k = 0; k < 2; k++) {
		size_t len;
		char *doc = slurp(files[k], &len), *p = doc;

		while ((p = strstr(p, "```yaml\n"))) {
			char *start = p + 8, *end = strstr(start, "```");
			char err[POLICY_ERR_MAX];
			struct policy *pol;

			assert_non_null(end);
			p = end + 3;
			if (!strstr(start, "rules:") || strstr(start, "rules:") > end)
				continue;
			pol = policy_load_buffer(files[k], start, (size_t)(end - start), err, sizeof(err));
			if (!pol)
				fail_msg("example at offset %ld: %s", (long)(start - doc), err);
			policy_unref(pol);
			n++;
		}
		free(doc);
	}
	assert_true(n >= 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loader_errors),
		cmocka_unit_test(test_loader_reads_everything),
		cmocka_unit_test(test_reload_keeps_old_on_error),
		cmocka_unit_test(test_statements),
		cmocka_unit_test(test_connection_matching),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_cgroup_paths),
		cmocka_unit_test(test_stage_without_policy),
		cmocka_unit_test(test_stage_connection),
		cmocka_unit_test(test_stage_statements),
		cmocka_unit_test(test_stage_multi_statement_and_prepared),
		cmocka_unit_test(test_stage_prepare_in_one_query),
		cmocka_unit_test(test_stage_shapes),
		cmocka_unit_test(test_stage_statement_classes),
		cmocka_unit_test(test_stage_limits),
		cmocka_unit_test(test_stage_rate_wait),
		cmocka_unit_test(test_stage_reload),
		cmocka_unit_test(test_docs_examples_load),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
