/*
 * admin: the control socket of pgwardend. Line-delimited JSON over a Unix stream socket:
 * one request object per line, one reply object per line, in order; a subscribed client
 * also receives event objects ({"event": ...}) between replies. docs/ADMIN.md is the
 * protocol reference.
 *
 * Threading. The server runs on its own thread with its own loop (admin_server_start()).
 * It never touches relay state: everything it knows comes through struct admin_ops, whose
 * callbacks the daemon implements and which run on the admin thread. Callbacks must not
 * wait on a worker: a worker's session registry is read under that worker's registry mutex
 * (taken by the worker only at session add/remove), counters are read racily, and a kill
 * is posted to the owning worker's mailbox and woken with loop_wake(). Workers report
 * session events with admin_server_publish(), which costs one atomic load when nobody is
 * subscribed.
 *
 * Safety. The socket is created mode 0600 in a directory created 0700 (0660 and the read
 * group's, when admin_read_group is set), bound under a temporary name and renamed into
 * place so it is never reachable with looser permissions; peers are also checked with
 * SO_PEERCRED and SO_PEERGROUPS: root or the daemon's own uid may do everything, a member of
 * the read group only what admin_cmd_read_only() allows, anyone else is refused. Requests are
 * bounded (ADMIN_MAX_REQUEST bytes), clients are bounded (ADMIN_MAX_CLIENTS), idle
 * request clients are closed, a subscriber that stops reading is dropped once its backlog
 * passes ADMIN_MAX_BACKLOG. Anything malformed gets {"ok":false,"error":{...}}.
 */
#ifndef PGWARDEN_ADMIN_H
#define PGWARDEN_ADMIN_H

#include "session/session.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ADMIN_PROTOCOL_VERSION 1
#define ADMIN_MAX_REQUEST (64 * 1024)        /* bytes per request line, newline included */
#define ADMIN_MAX_CLIENTS 16                 /* concurrent connections */
#define ADMIN_MAX_BACKLOG (4 * 1024 * 1024)  /* unsent event bytes before a subscriber is dropped */
#define ADMIN_MAX_REPLY (256 * 1024 * 1024)  /* unsent reply bytes before a client is dropped */
#define ADMIN_IDLE_TIMEOUT_MS 60000          /* a request client silent this long is closed */
#define ADMIN_EVENT_QUEUE_MAX 4096           /* events published and not yet fanned out */
#define ADMIN_STATEMENT_MAX 1024             /* bytes of statement text in a listing */
#define ADMIN_EXPLAIN_SQL_MAX (16 * 1024)    /* bytes of the statement explain describes */

/* What kill does to the session's server side (docs/ADMIN.md). */
enum admin_kill_mode {
	ADMIN_KILL_TERMINATE = 0, /* cancel the running statement, then end the session */
	ADMIN_KILL_CANCEL,        /* cancel the running statement only; the session stays */
	ADMIN_KILL_MODE_COUNT,
};

const char *admin_kill_mode_to_str(enum admin_kill_mode m);

/* Implemented by the daemon; every callback runs on the admin thread and is optional
 * (a missing one answers {"ok":false,"error":{"code":"unsupported"}}). */
struct admin_ops {
	/* Append one object per live session to array, built with admin_session_json().
	 * 0 or -errno. */
	int (*sessions)(void *ctx, json_t *array);
	/*
	 * Ask the worker owning session_id (32 lowercase hex digits) to act on it. Both modes
	 * send the server a CancelRequest with the session's real key when the server gave it
	 * one, so the running statement stops; TERMINATE then ends the session: the client gets
	 * FATAL 57P01 "terminating connection due to administrator command", the server
	 * Terminate, and the end is logged with reason "admin_kill". Adds what it did to
	 * result ("backend_pid", "server_cancel"). Returns once the request is posted (the
	 * session ends moments later): 0, -ENOENT when no live session has this id, other
	 * -errno.
	 */
	int (*kill)(void *ctx, const char *session_id, enum admin_kill_mode mode, json_t *result);
	/* Reload the configuration (same path as SIGHUP; a seamless restart instead when the
	 * binary or a restart-bound setting changed). 0 with what happened in result, or -1
	 * with a one-line reason in err (nothing changed). */
	int (*reload)(void *ctx, json_t *result, char *err, size_t errlen);
	/* Add daemon fields to obj (see docs/ADMIN.md: version, workers, listen, sessions,
	 * connections_accepted, connections_refused, errors, steering {...}). 0 or -errno. */
	int (*status)(void *ctx, json_t *obj);
	/* Forget the failed logins and any lock of name, as a user and as a source address
	 * (auth lockout). Returns the bits of what was there (ADMIN_UNLOCKED_USER,
	 * ADMIN_UNLOCKED_SOURCE), 0 when nothing was (answered not_found), or -errno. */
	int (*unlock)(void *ctx, const char *name);
	/* Append one object per user or source with failed logins or a lock:
	 * {"kind":"user"|"source","name":...,"failures":N,"locked":bool,
	 *  "locked_seconds":N}. 0 or -errno. */
	int (*locks)(void *ctx, json_t *array);
	/* The Prometheus text exposition of the daemon's metrics, malloc'd, in *text. 0 or
	 * -errno. */
	int (*metrics)(void *ctx, char **text);
	/* Hand the listeners to a new pgwardend and drain (docs/ADMIN.md, "Seamless
	 * restart"). 0 once the new daemon is ready, with its pid in result; -1 with a reason
	 * in err (the running daemon carries on as before). */
	int (*restart)(void *ctx, json_t *result, char *err, size_t errlen);
	/*
	 * Which result columns of sql (one statement) a session of user in database would
	 * have masked, with the live policy and catalog (pgwardenctl policy explain
	 * --online; docs/ADMIN.md): adds "rule", "masks" and "columns" (one string per result
	 * column, mask_explain()'s tab-separated line, its result name already sanitised) and
	 * "deny" (a string or null) to result. May wait on the server up to
	 * mask.catalog_timeout (on the admin thread only, never a worker). 0, or -errno with
	 * a one-line reason in err: -ENOENT (no rule admits the identity), -EOPNOTSUPP
	 * (masking not configured for it), -EAGAIN (catalog not resolved yet), -EINVAL (the
	 * server rejected the statement), -ETIMEDOUT, other -errno.
	 */
	int (*explain)(void *ctx, const char *user, const char *database, const char *sql,
		       json_t *result, char *err, size_t errlen);
};
#define ADMIN_UNLOCKED_USER 1
#define ADMIN_UNLOCKED_SOURCE 2
#define ADMIN_NAME_MAX 64 /* unlock: a role name (< 64 bytes) or an address */

struct admin_server_config {
	const char *path; /* NULL: CONFIG_DEFAULT_ADMIN_SOCKET */
	mode_t mode;      /* socket file mode; 0: 0600, or 0660 with read_gid */
	gid_t gid;        /* with mode 0660: the group allowed in; (gid_t)-1: unchanged */
	bool read_group;  /* members of read_gid may use it read-only (admin_read_group) */
	gid_t read_gid;
	bool take_over;   /* replace the socket of a live predecessor (seamless restart)
			   * instead of refusing with "in use" */
	unsigned max_clients;   /* 0: ADMIN_MAX_CLIENTS */
	size_t max_request;     /* 0: ADMIN_MAX_REQUEST */
	uint64_t idle_timeout_ms; /* 0: ADMIN_IDLE_TIMEOUT_MS */
};

struct admin_server;

/*
 * Create the socket and start the admin thread. An existing socket nobody answers on is
 * replaced; one a live daemon answers on is an error ("in use"). 0, or -errno with a
 * one-line message in err.
 */
int admin_server_start(const struct admin_server_config *cfg, const struct admin_ops *ops,
		       void *ctx, struct admin_server **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Stop the thread, close every client, remove the socket (if it is still ours), free.
 * Call from the thread that started it, before the callbacks' ctx goes away. NULL is fine. */
void admin_server_stop(struct admin_server *srv);

/* True when at least one client is subscribed; a worker checks this before building an
 * event. Any thread; one relaxed atomic load. NULL → false. */
bool admin_server_has_subscribers(const struct admin_server *srv);

/*
 * Queue an event for every subscriber: {"event":event,"time":"<RFC 3339 UTC>", ...fields}.
 * fields (an object, reference stolen, may be NULL) is merged into the event. Any thread;
 * takes the event-queue mutex for a list append and calls loop_wake(). When the queue is
 * full the event is dropped and counted (subscribers see {"event":"overflow","dropped":N}).
 * Events: "session_start" {"session":{...}}, "session_end" {"session":{...}} (whose
 * "end_reason" says why), "session_kill" and "reload" (published by the server itself).
 */
void admin_server_publish(struct admin_server *srv, const char *event, json_t *fields);

/* The socket path the server listens on. */
const char *admin_server_path(const struct admin_server *srv);

/* ---- session listing --------------------------------------------------------------- */

/* What the relay knows about a session beyond struct session. Strings may be NULL. */
struct admin_session_view {
	const char *state;          /* conn_state_to_str(): "startup", "auth", "idle", "active", ... */
	const char *last_statement; /* the current or last statement, normalised if available */
	int64_t last_latency_ns;    /* client-observed latency of the last statement; -1: none */
	uint64_t now_mono_ns;       /* clock_mono_ns() once per listing; 0: read it here */
	uint64_t errors;            /* ErrorResponses sent to this client */
	const char *tls_version;    /* NULL: plaintext */
	const char *tls_cipher;
	const char *tls_client_subject;
	const char *upstream_tls_version; /* the server leg's; NULL: plaintext */
	const char *upstream_tls_cipher;
	const char *auth_method;    /* "scram-sha-256", "cert", "trust"... */
	const char *rule;           /* the policy rule that admitted the session; NULL: none */
};

/*
 * The session as docs/ADMIN.md lists it. Text from the client (user, database,
 * application_name, statement) and the process's comm are read up to ADMIN_STATEMENT_MAX
 * bytes and sanitised (base/sanitize.h, SANITIZE_JSON): controls, C1 and invalid UTF-8
 * become \xHH, a backslash \\, so a client can neither break the JSON nor reach the
 * terminal of whoever prints a value. NULL on ENOMEM.
 */
json_t *admin_session_json(const struct session *s, const struct admin_session_view *v);

/* A JSON string for peer-supplied text: the first max bytes, sanitised (SANITIZE_JSON);
 * json_null() for NULL. NULL on ENOMEM. */
json_t *admin_json_text(const char *s, size_t max);

/* ---- protocol (no sockets: tests and the fuzzer drive it directly) ------------------- */

enum admin_cmd {
	ADMIN_CMD_STATUS = 0,
	ADMIN_CMD_SESSIONS,
	ADMIN_CMD_KILL,
	ADMIN_CMD_RELOAD,
	ADMIN_CMD_SUBSCRIBE,
	ADMIN_CMD_UNSUBSCRIBE,
	ADMIN_CMD_PING,
	ADMIN_CMD_UNLOCK,
	ADMIN_CMD_LOCKS,
	ADMIN_CMD_METRICS,
	ADMIN_CMD_RESTART,
	ADMIN_CMD_EXPLAIN,
	ADMIN_CMD_COUNT,
};

const char *admin_cmd_to_str(enum admin_cmd c);

/* May a member of the read group run c? (status, sessions, metrics, subscribe,
 * unsubscribe, ping: what only reads.) */
bool admin_cmd_read_only(enum admin_cmd c);

/* Who is asking: root or the daemon's uid, or a member of admin_read_group. */
enum admin_access {
	ADMIN_ACCESS_FULL = 0,
	ADMIN_ACCESS_READ,
};

struct admin_request {
	enum admin_cmd cmd;
	char session[SESSION_ID_HEXLEN + 1]; /* kill: lowercase hex id */
	char name[ADMIN_NAME_MAX + 1];       /* unlock: the user or address; explain: user */
	char database[ADMIN_NAME_MAX + 1];   /* explain: the database ("user" when not sent) */
	char *sql;                           /* explain: the statement, owned; at most
					      * ADMIN_EXPLAIN_SQL_MAX bytes, no NUL */
	enum admin_kill_mode kill_mode;      /* kill: "mode", default terminate */
	json_t *id;                          /* echoed back when the client sent one; owned */
};

/*
 * Parse one request line (without its newline; embedded NULs are malformed). 0 with req
 * filled (release with admin_request_release()), or an error reply in *reply (the caller
 * sends and frees it) and -EINVAL.
 */
int admin_request_parse(const char *line, size_t len, struct admin_request *req, json_t **reply)
	__attribute__((warn_unused_result));
void admin_request_release(struct admin_request *req);

/* Run a parsed request against ops for a peer with the given access and build its reply
 * (never NULL unless ENOMEM); a read-only peer asking for more gets "forbidden".
 * Subscribe/unsubscribe only acknowledge: the server tracks who is subscribed. */
json_t *admin_execute(const struct admin_ops *ops, void *ctx, const struct admin_request *req,
		      enum admin_access access);

/* Parse, execute, and serialise: the reply line (newline-terminated, malloc'd) for one
 * request line. *cmd is the parsed command or -1. Never NULL unless ENOMEM. */
char *admin_handle_line(const struct admin_ops *ops, void *ctx, const char *line, size_t len,
			enum admin_access access, int *cmd);

/* {"ok":false,"error":{"code":code,"message":msg}} (+ "id" when id is not NULL). */
json_t *admin_error(const char *code, const char *msg, const json_t *id);

#endif
