/* metrics_std: names, help and label values of the standard families (see metrics_std.h). */
#include "metrics/metrics_std.h"


const char *const metrics_std_state_names[MSTATE_COUNT + 1] = {
	[MSTATE_STARTUP] = "startup", [MSTATE_CONNECTING] = "connecting", [MSTATE_AUTH] = "auth",
	[MSTATE_IDLE] = "idle",       [MSTATE_ACTIVE] = "active",         [MSTATE_COPY] = "copy",
	[MSTATE_CANCEL] = "cancel",   [MSTATE_CLOSING] = "closing",       [MSTATE_COUNT] = NULL,
};

const char *const metrics_std_refuse_names[MREFUSE_COUNT + 1] = {
	[MREFUSE_MAX_CONNECTIONS] = "max_connections",
	[MREFUSE_POLICY] = "policy",
	[MREFUSE_AUTH] = "auth",
	[MREFUSE_TLS] = "tls",
	[MREFUSE_PROTOCOL] = "protocol",
	[MREFUSE_RATE_LIMIT] = "rate_limit",
	[MREFUSE_UPSTREAM] = "upstream",
	[MREFUSE_TIMEOUT] = "timeout",
	[MREFUSE_SHUTDOWN] = "shutdown",
	[MREFUSE_PRELOGIN_TOTAL] = "prelogin_total",
	[MREFUSE_PRELOGIN_SOURCE] = "prelogin_source",
	[MREFUSE_DESTINATION] = "destination",
	[MREFUSE_LOOP] = "loop",
	[MREFUSE_UNRECORDED] = "unrecorded_steered",
	[MREFUSE_COUNT] = NULL,
};

const char *const metrics_std_stmt_names[MSTMT_COUNT + 1] = {
	[MSTMT_READ] = "read",         [MSTMT_WRITE] = "write",
	[MSTMT_DDL] = "ddl",           [MSTMT_DCL] = "dcl",
	[MSTMT_ADMIN] = "admin",       [MSTMT_COPY] = "copy",
	[MSTMT_FUNCTION] = "function", [MSTMT_TRANSACTION] = "transaction",
	[MSTMT_OTHER] = "other",       [MSTMT_UNKNOWN] = "unknown",
	[MSTMT_COUNT] = NULL,
};

enum metrics_stmt_type metrics_std_stmt_type(enum sql_class c)
{
	static const enum metrics_stmt_type map[SQL_CLASS_COUNT] = {
		[SQL_CLASS_READ] = MSTMT_READ,
		[SQL_CLASS_WRITE] = MSTMT_WRITE,
		[SQL_CLASS_DDL] = MSTMT_DDL,
		[SQL_CLASS_ROLE] = MSTMT_DCL,
		[SQL_CLASS_ADMIN] = MSTMT_ADMIN,
		[SQL_CLASS_COPY_IN] = MSTMT_COPY,
		[SQL_CLASS_COPY_OUT] = MSTMT_COPY,
		[SQL_CLASS_COPY_PROGRAM] = MSTMT_COPY,
		[SQL_CLASS_FUNCTION_CALL] = MSTMT_FUNCTION,
		[SQL_CLASS_TRANSACTION] = MSTMT_TRANSACTION,
		[SQL_CLASS_SESSION] = MSTMT_OTHER,
		[SQL_CLASS_LISTEN_NOTIFY] = MSTMT_OTHER,
		[SQL_CLASS_PREPARE] = MSTMT_OTHER,
		[SQL_CLASS_UNKNOWN] = MSTMT_UNKNOWN,
	};

	return (unsigned)c < SQL_CLASS_COUNT ? map[c] : MSTMT_UNKNOWN;
}

const char *const metrics_std_tls_leg_names[MTLS_COUNT + 1] = {
	[MTLS_CLIENT] = "client",
	[MTLS_SERVER] = "server",
	[MTLS_COUNT] = NULL,
};

const char *const metrics_std_direction_names[MDIR_COUNT + 1] = {
	[MDIR_FROM_CLIENT] = "from_client",
	[MDIR_FROM_SERVER] = "from_server",
	[MDIR_COUNT] = NULL,
};

/* 100µs, 250µs, 500µs, 1ms, 2.5ms, 5ms, 10ms, 25ms, 50ms, 100ms, 250ms, 500ms, 1s, 2.5s, 5s,
 * 10s: a local round trip lands in the first buckets, a slow report in the last. */
const uint64_t metrics_std_latency_bounds_ns[] = {
	100000ULL,    250000ULL,    500000ULL,    1000000ULL,    2500000ULL,    5000000ULL,
	10000000ULL,  25000000ULL,  50000000ULL,  100000000ULL,  250000000ULL,  500000000ULL,
	1000000000ULL, 2500000000ULL, 5000000000ULL, 10000000000ULL,
};
const unsigned metrics_std_latency_nbounds =
	sizeof(metrics_std_latency_bounds_ns) / sizeof(metrics_std_latency_bounds_ns[0]);

int metrics_std_register(struct metrics_registry *r, struct metrics_std *m)
{
#define REG(field, call)               \
	do {                           \
		int id_ = (call);      \
		if (id_ < 0)           \
			return id_;    \
		m->field = id_;        \
	} while (0)

	REG(sessions, metrics_gauge_new(r, "pgwarden_sessions",
					"Client sessions currently open, by connection state.",
					"state", metrics_std_state_names));
	REG(accepted, metrics_counter_new(r, "pgwarden_connections_accepted_total",
					  "Client connections accepted by the relay.", NULL, NULL));
	REG(refused, metrics_counter_new(r, "pgwarden_connections_refused_total",
					 "Client connections refused or ended before the session "
					 "was established, by reason.",
					 "reason", metrics_std_refuse_names));
	REG(sessions_killed, metrics_counter_new(r, "pgwarden_sessions_killed_total",
						 "Sessions ended by an operator through the admin "
						 "socket.",
						 NULL, NULL));
	REG(statements, metrics_counter_new(r, "pgwarden_statements_total",
					    "Statements forwarded to the server, by class.", "type",
					    metrics_std_stmt_names));
	REG(statement_errors, metrics_counter_new(r, "pgwarden_statement_errors_total",
						  "ErrorResponse messages sent to clients (from the "
						  "server or the relay).",
						  NULL, NULL));
	REG(query_duration,
	    metrics_histogram_new(r, "pgwarden_query_duration_seconds",
				  "The client's clock: from the first byte of a Query, Execute or "
				  "FunctionCall read from the client to the last byte of the "
				  "ReadyForQuery that ends it written to the client.",
				  NULL, NULL, metrics_std_latency_bounds_ns,
				  metrics_std_latency_nbounds, 1e9));
	REG(upstream_duration,
	    metrics_histogram_new(r, "pgwarden_upstream_duration_seconds",
				  "The server's clock: from the last byte of the request written "
				  "to the server to its ReadyForQuery read from the server.",
				  NULL, NULL, metrics_std_latency_bounds_ns,
				  metrics_std_latency_nbounds, 1e9));
	REG(bytes, metrics_counter_new(r, "pgwarden_bytes_total",
				       "Bytes relayed, by the side that sent them.", "direction",
				       metrics_std_direction_names));
	REG(tls_sessions, metrics_counter_new(r, "pgwarden_tls_sessions_total",
					      "TLS handshakes completed, by leg (refusals count in "
					      "pgwarden_connections_refused_total{reason=\"tls\"}).",
					      "leg", metrics_std_tls_leg_names));
#undef REG
	return 0;
}
