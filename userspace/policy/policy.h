/*
 * policy: who may connect, and what each session may run, from a YAML file of ordered
 * rules (docs/POLICY.md is the reference).
 *
 * A loaded policy is an immutable snapshot: rules, their match predicates, what they allow,
 * their limits. policy_load_*() builds one or refuses the whole file with one line
 * ("FILE:LINE: what"); policy_publish() swaps the process-wide current snapshot atomically,
 * and readers take a reference (policy_acquire) that keeps theirs alive however many
 * reloads happen meanwhile. Sessions re-read the current snapshot at their next statement.
 *
 * Evaluation is pure: policy_match_connection() picks the first rule whose predicates all
 * hold for an identity (default deny: none), policy_check_statement() judges one analysed
 * statement against a rule. What the SQL analysis could not tell is denied wherever the
 * rule depends on it. The stage (policy_stage.c) ties these to sessions; the limits
 * (policy_limits.c) hold the only state shared between sessions.
 */
#ifndef PGWARDEN_POLICY_H
#define PGWARDEN_POLICY_H

#include "session/session.h"
#include "sql/sql.h"
#include "base/cidr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define POLICY_ERR_MAX 512
#define POLICY_MAX_FILE_SIZE (1024 * 1024)
#define POLICY_MAX_RULES 1024
#define POLICY_NAME_MAX 63 /* a rule's name: also what STAGE_RULE_MAX holds */

enum policy_audit {
	POLICY_AUDIT_NONE = 0,   /* nothing beyond the session log */
	POLICY_AUDIT_CONNECTION, /* logins and their rule */
	POLICY_AUDIT_STATEMENT,  /* every statement's normalised text and verdict */
	POLICY_AUDIT_FULL,       /* statements with parameters and row counts */
	POLICY_AUDIT_COUNT,
};

enum policy_over_limit {
	POLICY_OVER_REJECT = 0, /* answer 53400 */
	POLICY_OVER_WAIT,       /* hold the statement until the bucket refills */
};

struct policy_strlist {
	char **v;
	unsigned n;
};

/* A relation or function name in a rule: "name" (any schema), "schema.name", "schema.*",
 * "*". Parsed as SQL names: unquoted folded to lower case, "quoted" kept. */
struct policy_name {
	char schema[SQL_NAME_MAX]; /* "" : any schema */
	char name[SQL_NAME_MAX];   /* "*" : any name */
};

struct policy_names {
	struct policy_name *v;
	unsigned n;
};

/* A mask entry (schema.table.column → strategy text); the masking stage interprets the
 * strategy, policy only checks the shape. */
struct policy_mask {
	char schema[SQL_NAME_MAX];
	char table[SQL_NAME_MAX];
	char column[SQL_NAME_MAX];
	char *strategy;
	unsigned line;
};

struct policy_match {
	struct policy_strlist user, database, application_name, tls_identity, comm, exe, cgroup;
	struct cidr *source;
	unsigned nsource;
	bool source_local; /* "local": Unix-socket clients and steered local processes */
	uint32_t auth_methods; /* bits of enum session_auth_method; 0: any */
	uint32_t *uid, *gid;
	unsigned nuid, ngid;
};

struct policy_limits {
	uint32_t statements_per_second; /* 0: no rate limit */
	uint32_t burst;                 /* bucket size; default: one second's worth */
	enum policy_over_limit over;
	uint64_t max_wait_ms;           /* POLICY_OVER_WAIT: longer than this is 53400 */
	uint32_t sessions_per_user, sessions_per_database, sessions_per_source; /* 0: none */
	uint64_t login_timeout_ms, idle_ms, idle_in_transaction_ms, lifetime_ms; /* 0: none */
};

struct policy_rule {
	char *name;
	unsigned index; /* position in the file, from 0 */
	unsigned line;
	struct policy_match match;
	uint32_t allow;               /* SQL_CLASS_BIT()s */
	bool has_relation_allow;      /* relations.allow given: anything else is denied */
	struct policy_names relation_allow, relation_deny, function_deny;
	struct policy_strlist search_path; /* what unqualified names resolve through */
	bool one_statement_per_query;
	bool role_switch;
	bool replication;
	struct policy_mask *masks;
	unsigned nmasks;
	struct policy_limits limits;
	enum policy_audit audit;
	/* Uses process facts that need /proc or the cgroup tree (exe, cgroup). */
	bool needs_process_paths;
};

struct policy {
	int refcount; /* atomic */
	uint64_t generation; /* set by policy_publish: 1, 2, ... */
	char *path;          /* what it was loaded from (a name for buffers) */
	char sha256_hex[65];
	struct policy_rule *rules;
	unsigned nrules;
	bool needs_process_paths; /* some rule does */
	struct policy_arena *arena; /* owns every string and array above */
};

/* ---- loading and publishing --------------------------------------------------------- */

/* Read and validate a policy file. NULL with a one-line message in err on any problem. */
struct policy *policy_load_file(const char *path, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* The same from memory; name is what messages call it. */
struct policy *policy_load_buffer(const char *name, const char *data, size_t len, char *err,
				  size_t errlen) __attribute__((warn_unused_result));

void policy_ref(struct policy *p);
void policy_unref(struct policy *p); /* frees at zero; NULL is fine */

/* Make p (a reference the caller gives up) the current policy; NULL: no policy (pgwarden
 * then runs no statement checks). Logs the change with the file's SHA-256. The previous
 * snapshot stays alive while sessions hold it. */
void policy_publish(struct policy *p);
/* The current policy with a reference the caller must drop, or NULL. */
struct policy *policy_acquire(void);
/* The current generation (0 before any publish): a cheap "did it change" check. */
uint64_t policy_generation(void);

/*
 * Load path and publish it: 0, or -1 with err set, logged (event=policy_rejected), and the
 * current policy untouched. accept (may be NULL) sees the loaded policy before it is
 * published and may refuse it (-1 with err set): what else the file configures (masking)
 * is built and made current there, so it is never behind the rules that name it.
 */
int policy_reload(const char *path, int (*accept)(struct policy *p, char *err, size_t errlen),
		  char *err, size_t errlen) __attribute__((warn_unused_result));

/* ---- evaluation ----------------------------------------------------------------------- */

/* What a connection rule sees. Strings may be NULL (unknown). */
struct policy_identity {
	const char *user;             /* verified once known, else claimed (cut to 63 bytes) */
	const char *database;
	const char *application_name;
	const struct addr *client;    /* NULL or AF_UNIX: a local Unix-socket client */
	bool local;                   /* Unix socket or a steered local process */
	const char *tls_identity;     /* the verified client certificate's identity */
	enum session_auth_method auth_method; /* PENDING before the login */
	bool process_known;
	uint32_t uid, gid;
	const char *comm;
	const char *exe;              /* resolved executable path, NULL when unknown */
	const char *cgroup;           /* cgroup path below the cgroup2 root, NULL: unknown */
};

/*
 * The first rule whose predicates all hold. With final false (before the login), a
 * predicate on something not known yet (the authentication method) counts as holding, so
 * that a session is refused early only when no rule could ever admit it; the stage checks
 * again with final true once the login is verified. NULL: no rule admits it.
 */
const struct policy_rule *policy_match_connection(const struct policy *p,
						  const struct policy_identity *id, bool final);

/* Facts about the session that statement checks depend on. */
struct policy_stmt_ctx {
	const char *user;          /* for "$user" in search_path */
	bool search_path_unknown;  /* the session changed search_path: unqualified names
				    * could be anywhere */
};

struct policy_verdict {
	bool allowed;
	char sqlstate[6];
	char reason[200]; /* "class ddl is not allowed", "relation public.secret is denied" */
};

/* Judge one analysed statement under rule r. */
void policy_check_statement(const struct policy_rule *r, const struct sql_analysis *a,
			    const struct policy_stmt_ctx *ctx, struct policy_verdict *v);

/* Whether a function-name reference matches the rule's deny list (for FunctionCall and
 * tests); schema "" is unqualified. */
bool policy_function_denied(const struct policy_rule *r, const char *schema, const char *name);

const char *policy_audit_to_str(enum policy_audit a);

/* Write a human description of p (pgwardenctl policy check). */
void policy_describe(const struct policy *p, FILE *out);

/* ---- process identity ---------------------------------------------------------------- */

/*
 * Resolve a local client's executable and cgroup path from what the kernel recorded at
 * connect time. The cgroup path comes from the recorded cgroup id (not /proc/PID/cgroup,
 * which the process could have changed since): a file handle on the cgroup2 mount
 * (open_by_handle_at), or a walk of the cgroup2 tree comparing ids where that is not
 * permitted. The executable is /proc/PID/exe, trusted only if that pid still has the
 * recorded uid and is still in the recorded cgroup (a reused pid fails the check).
 * 0, or -errno with the path left empty.
 */
int policy_proc_cgroup_path(uint64_t cgroup_id, char *out, size_t n)
	__attribute__((warn_unused_result));
int policy_proc_exe(uint32_t pid, uint32_t uid, uint64_t cgroup_id, char *out, size_t n)
	__attribute__((warn_unused_result));
/* The cgroup2 mount point from /proc/self/mounts (cached); NULL when there is none. */
const char *policy_proc_cgroup2_root(void);
/* The cgroup id (the kernfs inode the BPF helpers report) of a path, for tests. */
int policy_proc_cgroup_id(const char *path, uint64_t *id) __attribute__((warn_unused_result));

/* ---- limits (state shared by every session, keyed by rule name and identity) ------------ */

struct policy_limit_entry;

enum policy_limit_kind {
	POLICY_LIMIT_RATE = 0, /* statements per second: a token bucket */
	POLICY_LIMIT_USER,     /* sessions per user */
	POLICY_LIMIT_DATABASE, /* sessions per database */
	POLICY_LIMIT_SOURCE,   /* sessions per source address */
	POLICY_LIMIT_KIND_COUNT,
};

/* Take one of max session slots for (rule, kind, key): the entry, or NULL when the count is
 * already max (53300). Release with policy_limit_put(). */
struct policy_limit_entry *policy_limit_session_take(const char *rule,
						     enum policy_limit_kind kind,
						     const char *key, uint32_t max);
/* The token bucket for (rule, identity), with a reference. NULL on ENOMEM. */
struct policy_limit_entry *policy_limit_bucket(const char *rule, const char *identity);
/*
 * Take n tokens at now_ns from a bucket refilling at rate per second up to burst. 0 when
 * they were there; otherwise the nanoseconds until they will be. With reserve, a positive
 * wait also takes the tokens now (the bucket goes into debt), so waiters queue fairly.
 */
uint64_t policy_limit_take_tokens(struct policy_limit_entry *e, uint32_t rate, uint32_t burst,
				  uint32_t n, uint64_t now_ns, bool reserve);
void policy_limit_put(struct policy_limit_entry *e); /* NULL is fine */
/* Entries held now (tests: everything released is forgotten). */
unsigned policy_limit_entries(void);

/* ---- metrics ---------------------------------------------------------------------------- */

/* Counted by the stage; exposed by the collector policy_metrics_register() adds. */
void policy_count_denial(const char *rule);
enum policy_firing {
	POLICY_FIRE_RATE_REJECT = 0,
	POLICY_FIRE_RATE_WAIT,
	POLICY_FIRE_SESSIONS,
	POLICY_FIRE_CONNECTION_DENIED,
	POLICY_FIRE_TOO_COMPLEX,
	POLICY_FIRE_COUNT,
};
void policy_count_firing(enum policy_firing f);
uint64_t policy_denials(const char *rule);
uint64_t policy_firings(enum policy_firing f);
struct metrics_registry;
int policy_metrics_register(struct metrics_registry *r) __attribute__((warn_unused_result));

/* ---- the stage ------------------------------------------------------------------------- */

struct stage_ops;
struct stage_chain;
extern const struct stage_ops policy_stage;

/* The rule that admitted the session whose chain this is (policy_stage at index), for
 * `pgwardenctl sessions` and pgwarden-top; "" before admission or without policy. */
const char *policy_stage_rule(const struct stage_chain *ch, unsigned index);
/* The audit level the session's rule asks for (the audit stage reads it). */
enum policy_audit policy_stage_audit(const struct stage_chain *ch, unsigned index);

#endif
