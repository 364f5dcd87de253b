/*
 * metrics_std: the families every pgwardend exposes, registered in one place so names,
 * help texts, label values and bucket bounds are consistent and documented together.
 *
 * The relay indexes labels with the enums below; their order is the order of the exposed
 * label values (metrics_std_*_names). A capability that lands later (policy, masking,
 * audit) registers its own families next to these before the first shard is created.
 */
#ifndef PGWARDEN_METRICS_STD_H
#define PGWARDEN_METRICS_STD_H

#include "metrics/metrics.h"
#include "sql/sql.h" /* enum sql_class: the statements_total labels map its classes */

/* pgwarden_sessions{state=...}: gauge, sessions currently in each state. The label values
 * are conn_state_to_str()'s names (what the admin listing shows), with the three COPY
 * states folded into "copy". */
enum metrics_session_state {
	MSTATE_STARTUP = 0, /* before the StartupMessage (SSLRequest, TLS handshake included) */
	MSTATE_CONNECTING,  /* upstream TCP/TLS connect */
	MSTATE_AUTH,        /* authenticating (client side or upstream) */
	MSTATE_IDLE,        /* last ReadyForQuery seen, nothing in flight */
	MSTATE_ACTIVE,      /* a query or extended-protocol pipeline in flight */
	MSTATE_COPY,        /* COPY IN / OUT / BOTH */
	MSTATE_CANCEL,      /* a CancelRequest connection being forwarded */
	MSTATE_CLOSING,
	MSTATE_COUNT,
};

/* pgwarden_connections_refused_total{reason=...}. */
enum metrics_refuse_reason {
	MREFUSE_MAX_CONNECTIONS = 0, /* max_connections reached */
	MREFUSE_POLICY,              /* a policy rule denied the connection */
	MREFUSE_AUTH,                /* authentication failed or method not acceptable */
	MREFUSE_TLS,                 /* TLS required, handshake failed, bad certificate */
	MREFUSE_PROTOCOL,            /* malformed startup, unsupported protocol version */
	MREFUSE_RATE_LIMIT,          /* per-source connection rate (admission.rate) */
	MREFUSE_UPSTREAM,            /* upstream unreachable or refused */
	MREFUSE_TIMEOUT,             /* startup/auth did not finish in time */
	MREFUSE_SHUTDOWN,            /* daemon draining */
	MREFUSE_PRELOGIN_TOTAL,      /* admission.prelogin_max: too many still logging in */
	MREFUSE_PRELOGIN_SOURCE,     /* admission.prelogin_per_source for this source */
	MREFUSE_DESTINATION,         /* a TPROXY'd client's destination is not protected */
	MREFUSE_LOOP,                /* the relay's own upstream connection came back to it */
	MREFUSE_UNRECORDED,          /* on the steering address without a kernel origin record */
	MREFUSE_COUNT,
};

/* pgwarden_statements_total{type=...}: the SQL classifier's classes folded to a stable label
 * set (metrics_std_stmt_type() says how), so dashboards do not change when policy grows a
 * finer class. */
enum metrics_stmt_type {
	MSTMT_READ = 0,
	MSTMT_WRITE,
	MSTMT_DDL,
	MSTMT_DCL,
	MSTMT_ADMIN,
	MSTMT_COPY,
	MSTMT_FUNCTION,    /* FunctionCall message or a bare function call */
	MSTMT_TRANSACTION, /* BEGIN, COMMIT, ROLLBACK, SAVEPOINT */
	MSTMT_OTHER,       /* SET, SHOW, DISCARD, LISTEN, ... (sql.h lists them) */
	MSTMT_UNKNOWN,     /* the SQL classifier could not classify it (policy will deny these) */
	MSTMT_COUNT,
};

/* pgwarden_bytes_total{direction=...}. */
enum metrics_direction {
	MDIR_FROM_CLIENT = 0,
	MDIR_FROM_SERVER,
	MDIR_COUNT,
};

/* pgwarden_tls_sessions_total{leg=...}: TLS handshakes completed on each leg. */
enum metrics_tls_leg {
	MTLS_CLIENT = 0, /* towards the client: pgwarden is the TLS server */
	MTLS_SERVER,     /* towards PostgreSQL */
	MTLS_COUNT,
};

extern const char *const metrics_std_state_names[MSTATE_COUNT + 1];
extern const char *const metrics_std_tls_leg_names[MTLS_COUNT + 1];
extern const char *const metrics_std_refuse_names[MREFUSE_COUNT + 1];
extern const char *const metrics_std_stmt_names[MSTMT_COUNT + 1];
extern const char *const metrics_std_direction_names[MDIR_COUNT + 1];

/* Family ids of the standard metrics (see metrics_std.c for names and help). */
struct metrics_std {
	int sessions;             /* gauge {state} */
	int accepted;             /* counter: pgwarden_connections_accepted_total */
	int refused;              /* counter {reason} */
	int sessions_killed;      /* counter: pgwarden_sessions_killed_total (admin kill) */
	int statements;           /* counter {type} */
	int statement_errors;     /* counter: pgwarden_statement_errors_total (ErrorResponse) */
	int query_duration;       /* histogram (ns), the client's clock: first byte of the
				   * request read → its ReadyForQuery written to the client */
	int upstream_duration;    /* histogram (ns), the server's clock: last byte of the
				   * request written upstream → server's ReadyForQuery read */
	int bytes;                /* counter {direction} */
	int tls_sessions;         /* counter {leg}: TLS handshakes completed */
};

/* The statements_total label an SQL class is counted under: role → dcl, the three COPY
 * classes → copy, function_call → function, session / listen_notify / prepare → other. */
enum metrics_stmt_type metrics_std_stmt_type(enum sql_class c);

/* Register the standard families into r. 0 or the first registration error. */
int metrics_std_register(struct metrics_registry *r, struct metrics_std *out)
	__attribute__((warn_unused_result));

/* Latency buckets, in nanoseconds: 100µs .. 10s. */
extern const uint64_t metrics_std_latency_bounds_ns[];
extern const unsigned metrics_std_latency_nbounds;

#endif
