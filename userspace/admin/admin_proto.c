/*
 * admin_proto: the admin request grammar and reply building, with no sockets and no
 * threads, so unit tests and the fuzzer reach every branch a peer can.
 *
 * A request is one JSON object: {"cmd": NAME, "id": any scalar (optional), ...arguments}.
 * Unknown keys are errors rather than ignored: a typo in "session" must not turn a kill
 * into a no-op that looks like success.
 */
#include "admin/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const admin_cmd_names[ADMIN_CMD_COUNT] = {
	[ADMIN_CMD_STATUS] = "status",       [ADMIN_CMD_SESSIONS] = "sessions",
	[ADMIN_CMD_KILL] = "kill",           [ADMIN_CMD_RELOAD] = "reload",
	[ADMIN_CMD_SUBSCRIBE] = "subscribe", [ADMIN_CMD_UNSUBSCRIBE] = "unsubscribe",
	[ADMIN_CMD_PING] = "ping",           [ADMIN_CMD_UNLOCK] = "unlock",
	[ADMIN_CMD_LOCKS] = "locks",
	[ADMIN_CMD_METRICS] = "metrics",   [ADMIN_CMD_RESTART] = "restart",
	[ADMIN_CMD_EXPLAIN] = "explain",
};

static const char *const admin_kill_mode_names[ADMIN_KILL_MODE_COUNT] = {
	[ADMIN_KILL_TERMINATE] = "terminate",
	[ADMIN_KILL_CANCEL] = "cancel",
};

const char *admin_cmd_to_str(enum admin_cmd c)
{
	return (unsigned)c < ADMIN_CMD_COUNT ? admin_cmd_names[c] : "unknown";
}

const char *admin_kill_mode_to_str(enum admin_kill_mode m)
{
	return (unsigned)m < ADMIN_KILL_MODE_COUNT ? admin_kill_mode_names[m] : "unknown";
}

bool admin_cmd_read_only(enum admin_cmd c)
{
	switch (c) {
	case ADMIN_CMD_STATUS:
	case ADMIN_CMD_SESSIONS:
	case ADMIN_CMD_SUBSCRIBE:
	case ADMIN_CMD_UNSUBSCRIBE:
	case ADMIN_CMD_PING:
	case ADMIN_CMD_METRICS:
	case ADMIN_CMD_LOCKS:
		return true;
	case ADMIN_CMD_UNLOCK:
	case ADMIN_CMD_KILL:
	case ADMIN_CMD_RELOAD:
	case ADMIN_CMD_RESTART:
	case ADMIN_CMD_EXPLAIN: /* connects to the server as the catalog role */
	case ADMIN_CMD_COUNT:
		break;
	}
	return false;
}

json_t *admin_error(const char *code, const char *msg, const json_t *id)
{
	/* Messages quote the peer's bytes (parser errors, unknown names): keep them UTF-8. */
	json_t *err = json_pack("{s:s, s:o}", "code", code, "message", admin_json_text(msg, 1024));
	json_t *r;

	if (!err)
		return NULL;
	r = json_pack("{s:b, s:o}", "ok", 0, "error", err);
	if (r && id)
		json_object_set(r, "id", (json_t *)id);
	return r;
}

static json_t *errorf(const char *code, const json_t *id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static json_t *errorf(const char *code, const json_t *id, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return admin_error(code, msg, id);
}

/* Which keys each command accepts besides "cmd" and "id". */
static bool key_allowed(enum admin_cmd cmd, const char *key)
{
	if (strcmp(key, "cmd") == 0 || strcmp(key, "id") == 0)
		return true;
	return (cmd == ADMIN_CMD_KILL && (strcmp(key, "session") == 0 || strcmp(key, "mode") == 0)) ||
	       (cmd == ADMIN_CMD_UNLOCK && strcmp(key, "name") == 0) ||
	       (cmd == ADMIN_CMD_EXPLAIN && (strcmp(key, "user") == 0 || strcmp(key, "database") == 0 ||
					     strcmp(key, "sql") == 0));
}

/* A role or database name, or an address: 1 to ADMIN_NAME_MAX bytes (a name is at most 63),
 * no control characters. The string field key of root into out; false when absent or bad. */
static bool parse_name(const json_t *root, const char *key, char out[ADMIN_NAME_MAX + 1])
{
	const json_t *v = json_object_get(root, key);
	const char *s = v && json_is_string(v) ? json_string_value(v) : NULL;
	size_t n = s ? json_string_length(v) : 0;
	bool ok = s && n > 0 && n <= ADMIN_NAME_MAX && strlen(s) == n;

	for (size_t i = 0; ok && i < n; i++)
		ok = (unsigned char)s[i] >= 0x20 && s[i] != 0x7f;
	if (ok)
		memcpy(out, s, n + 1);
	return ok;
}

/* explain's arguments into req: 0, or -EINVAL with the error reply. */
static int parse_explain(const json_t *root, struct admin_request *req, const json_t *id,
			 json_t **reply)
{
	const json_t *sql = json_object_get(root, "sql");
	size_t n = sql && json_is_string(sql) ? json_string_length(sql) : 0;

	if (!parse_name(root, "user", req->name)) {
		*reply = admin_error("bad_request", "explain: \"user\" must be a role name (1 to 64 "
						    "bytes, no control characters)", id);
		return -EINVAL;
	}
	if (!json_object_get(root, "database"))
		memcpy(req->database, req->name, sizeof(req->database)); /* as the server defaults it */
	else if (!parse_name(root, "database", req->database)) {
		*reply = admin_error("bad_request", "explain: \"database\" must be a database name "
						    "(1 to 64 bytes, no control characters)", id);
		return -EINVAL;
	}
	if (!n || strlen(json_string_value(sql)) != n) {
		*reply = admin_error("bad_request", "explain: \"sql\" must be a non-empty statement",
				     id);
		return -EINVAL;
	}
	if (n > ADMIN_EXPLAIN_SQL_MAX) {
		*reply = errorf("too_large", id, "explain: the statement is %zu bytes; at most %d",
				n, ADMIN_EXPLAIN_SQL_MAX);
		return -EINVAL;
	}
	req->sql = strdup(json_string_value(sql));
	if (!req->sql) {
		*reply = admin_error("internal", "out of memory", id);
		return -EINVAL;
	}
	return 0;
}

/* A session id: 32 hex digits, either case; stored lowercase. */
static bool parse_session_id(const char *s, char out[SESSION_ID_HEXLEN + 1])
{
	size_t n = strlen(s);

	if (n != SESSION_ID_HEXLEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c >= 'A' && c <= 'F')
			c = (char)(c - 'A' + 'a');
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
		out[i] = c;
	}
	out[n] = '\0';
	return true;
}

int admin_request_parse(const char *line, size_t len, struct admin_request *req, json_t **reply)
{
	json_error_t jerr;
	json_t *root, *cmd, *id, *value;
	const char *key, *name;
	int c;

	memset(req, 0, sizeof(*req));
	*reply = NULL;
	if (len > 0 && line[len - 1] == '\r')
		len--; /* tolerate CRLF from hand-typed sessions (socat, nc -U) */
	if (len == 0) {
		*reply = admin_error("bad_request", "empty request; send one JSON object per line",
				     NULL);
		return -EINVAL;
	}
	/* Jansson stops at an embedded NUL and rejects "\u0000" in strings by default. */
	if (memchr(line, '\0', len)) {
		*reply = admin_error("bad_json", "request contains a NUL byte", NULL);
		return -EINVAL;
	}
	root = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root) {
		*reply = errorf("bad_json", NULL, "malformed JSON at column %d: %s", jerr.column,
				jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(root)) {
		*reply = admin_error("bad_request", "a request is a JSON object", NULL);
		goto err_free;
	}
	id = json_object_get(root, "id");
	if (id && !(json_is_string(id) || json_is_integer(id))) {
		*reply = admin_error("bad_request", "\"id\" must be a string or an integer", NULL);
		goto err_free;
	}
	cmd = json_object_get(root, "cmd");
	if (!cmd || !json_is_string(cmd)) {
		*reply = admin_error("bad_request", "missing string field \"cmd\"", id);
		goto err_free;
	}
	name = json_string_value(cmd);
	for (c = 0; c < ADMIN_CMD_COUNT; c++)
		if (strcmp(name, admin_cmd_names[c]) == 0)
			break;
	if (c == ADMIN_CMD_COUNT) {
		*reply = errorf("unknown_command", id,
				"unknown command \"%.64s\" (status, sessions, kill, reload, restart, "
				"metrics, subscribe, unsubscribe, ping, unlock, locks, explain)",
				name);
		goto err_free;
	}
	req->cmd = (enum admin_cmd)c;
	json_object_foreach(root, key, value) {
		if (!key_allowed(req->cmd, key)) {
			*reply = errorf("bad_request", id, "%s: unknown field \"%.64s\"", name, key);
			goto err_free;
		}
	}
	if (req->cmd == ADMIN_CMD_KILL) {
		json_t *sid = json_object_get(root, "session");

		if (!sid || !json_is_string(sid)) {
			*reply = admin_error("bad_request", "kill: missing string field \"session\"",
					     id);
			goto err_free;
		}
		if (!parse_session_id(json_string_value(sid), req->session)) {
			*reply = admin_error("bad_request",
					     "kill: \"session\" must be a session id of 32 hex digits",
					     id);
			goto err_free;
		}
		value = json_object_get(root, "mode");
		if (value) {
			int m = -1;

			for (int k = 0; json_is_string(value) && k < ADMIN_KILL_MODE_COUNT; k++)
				if (strcmp(json_string_value(value), admin_kill_mode_names[k]) == 0)
					m = k;
			if (m < 0) {
				*reply = admin_error("bad_request",
						     "kill: \"mode\" must be \"terminate\" or \"cancel\"",
						     id);
				goto err_free;
			}
			req->kill_mode = (enum admin_kill_mode)m;
		}
	}
	if (req->cmd == ADMIN_CMD_UNLOCK) {
		const json_t *nm = json_object_get(root, "name");

		if (!nm || !json_is_string(nm)) {
			*reply = admin_error("bad_request", "unlock: missing string field \"name\"", id);
			goto err_free;
		}
		if (!parse_name(root, "name", req->name)) {
			*reply = admin_error("bad_request",
					     "unlock: \"name\" must be a user or an address (1 to 64 "
					     "bytes, no control characters)",
					     id);
			goto err_free;
		}
	}
	if (req->cmd == ADMIN_CMD_EXPLAIN && parse_explain(root, req, id, reply))
		goto err_free;
	if (id)
		req->id = json_incref(id);
	json_decref(root);
	return 0;

err_free:
	json_decref(root);
	admin_request_release(req);
	if (!*reply)
		*reply = admin_error("internal", "out of memory", NULL);
	return -EINVAL;
}

void admin_request_release(struct admin_request *req)
{
	json_decref(req->id);
	req->id = NULL;
	free(req->sql);
	req->sql = NULL;
}

static json_t *ok_reply(const struct admin_request *req)
{
	json_t *r = json_pack("{s:b}", "ok", 1);

	if (r && req->id)
		json_object_set(r, "id", req->id);
	return r;
}

static json_t *callback_error(const struct admin_request *req, int err)
{
	return errorf("failed", req->id, "%s: %s", admin_cmd_to_str(req->cmd), strerror(-err));
}

static json_t *exec_status(const struct admin_ops *ops, void *ctx,
			   const struct admin_request *req)
{
	json_t *st = json_object(), *r;
	int err;

	if (!st)
		return NULL;
	json_object_set_new(st, "protocol", json_integer(ADMIN_PROTOCOL_VERSION));
	if (ops->status) {
		err = ops->status(ctx, st);
		if (err) {
			json_decref(st);
			return callback_error(req, err);
		}
	}
	r = ok_reply(req);
	if (r)
		json_object_set_new(r, "status", st);
	else
		json_decref(st);
	return r;
}

static json_t *exec_sessions(const struct admin_ops *ops, void *ctx,
			     const struct admin_request *req)
{
	json_t *arr, *r;
	int err;

	if (!ops->sessions)
		return admin_error("unsupported", "sessions: not available in this daemon", req->id);
	arr = json_array();
	if (!arr)
		return NULL;
	err = ops->sessions(ctx, arr);
	if (err) {
		json_decref(arr);
		return callback_error(req, err);
	}
	r = ok_reply(req);
	if (r)
		json_object_set_new(r, "sessions", arr);
	else
		json_decref(arr);
	return r;
}

/* The ok reply with result's fields merged in (result consumed); NULL on ENOMEM. */
static json_t *ok_with(const struct admin_request *req, json_t *result)
{
	json_t *r = ok_reply(req);

	if (r && result)
		json_object_update_missing(r, result);
	json_decref(result);
	return r;
}

static json_t *exec_kill(const struct admin_ops *ops, void *ctx, const struct admin_request *req)
{
	json_t *result;
	int err;

	if (!ops->kill)
		return admin_error("unsupported", "kill: not available in this daemon", req->id);
	result = json_pack("{s:s, s:s}", "session", req->session, "mode",
			   admin_kill_mode_to_str(req->kill_mode));
	if (!result)
		return NULL;
	err = ops->kill(ctx, req->session, req->kill_mode, result);
	if (err) {
		json_decref(result);
		if (err == -ENOENT)
			return errorf("not_found", req->id, "kill: no live session %s", req->session);
		return callback_error(req, err);
	}
	return ok_with(req, result);
}

/* reload and restart: 0 with fields in a result object, or -1 with a reason. */
static json_t *exec_change(int (*fn)(void *, json_t *, char *, size_t), void *ctx,
			   const struct admin_request *req, const char *failed_code)
{
	char msg[512] = "";
	json_t *result;

	if (!fn)
		return errorf("unsupported", req->id, "%s: not available in this daemon",
			      admin_cmd_to_str(req->cmd));
	result = json_object();
	if (!result)
		return NULL;
	if (fn(ctx, result, msg, sizeof(msg)) != 0) {
		json_decref(result);
		return errorf(failed_code, req->id, "%s",
			      msg[0] ? msg : "failed (no reason given)");
	}
	return ok_with(req, result);
}

static json_t *exec_metrics(const struct admin_ops *ops, void *ctx,
			    const struct admin_request *req)
{
	char *text = NULL;
	json_t *r;
	int err;

	if (!ops->metrics)
		return admin_error("unsupported", "metrics: not available in this daemon", req->id);
	err = ops->metrics(ctx, &text);
	if (err)
		return callback_error(req, err);
	r = ok_reply(req);
	if (r)
		json_object_set_new(r, "metrics", json_string(text ? text : ""));
	free(text);
	return r;
}

static json_t *exec_unlock(const struct admin_ops *ops, void *ctx,
			   const struct admin_request *req)
{
	json_t *r;
	int got;

	if (!ops->unlock)
		return admin_error("unsupported", "unlock: not available in this daemon", req->id);
	got = ops->unlock(ctx, req->name);
	if (got < 0)
		return callback_error(req, got);
	if (got == 0)
		return errorf("not_found", req->id,
			      "unlock: no failed logins or lock for \"%.64s\" (as a user or an "
			      "address)",
			      req->name);
	r = ok_reply(req);
	if (r) {
		json_object_set_new(r, "name", admin_json_text(req->name, ADMIN_NAME_MAX));
		json_object_set_new(r, "user", json_boolean(got & ADMIN_UNLOCKED_USER));
		json_object_set_new(r, "source", json_boolean(got & ADMIN_UNLOCKED_SOURCE));
	}
	return r;
}

static json_t *exec_locks(const struct admin_ops *ops, void *ctx,
			  const struct admin_request *req)
{
	json_t *arr, *r;
	int err;

	if (!ops->locks)
		return admin_error("unsupported", "locks: not available in this daemon", req->id);
	arr = json_array();
	if (!arr)
		return NULL;
	err = ops->locks(ctx, arr);
	if (err) {
		json_decref(arr);
		return callback_error(req, err);
	}
	r = ok_reply(req);
	if (r)
		json_object_set_new(r, "locks", arr);
	else
		json_decref(arr);
	return r;
}

static json_t *exec_explain(const struct admin_ops *ops, void *ctx,
			    const struct admin_request *req)
{
	static const struct {
		int err;
		const char *code;
	} codes[] = {
		{-ENOENT, "not_found"},  {-EOPNOTSUPP, "unavailable"}, {-EAGAIN, "unavailable"},
		{-EINVAL, "rejected"},   {-ETIMEDOUT, "timeout"},
	};
	char msg[512] = "";
	json_t *result;
	int err;

	if (!ops->explain)
		return admin_error("unsupported", "explain: not available in this daemon", req->id);
	result = json_pack("{s:o, s:o}", "user", admin_json_text(req->name, ADMIN_NAME_MAX),
			   "database", admin_json_text(req->database, ADMIN_NAME_MAX));
	if (!result)
		return NULL;
	err = ops->explain(ctx, req->name, req->database, req->sql, result, msg, sizeof(msg));
	if (err) {
		const char *code = "failed";

		json_decref(result);
		for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
			if (codes[i].err == err)
				code = codes[i].code;
		/* msg may quote the server's error text: admin_error() sanitises it */
		if (!msg[0])
			snprintf(msg, sizeof(msg), "explain: %s", strerror(-err));
		return admin_error(code, msg, req->id);
	}
	return ok_with(req, result);
}

json_t *admin_execute(const struct admin_ops *ops, void *ctx, const struct admin_request *req,
		      enum admin_access access)
{
	json_t *r;

	if (access != ADMIN_ACCESS_FULL && !admin_cmd_read_only(req->cmd))
		return errorf("forbidden", req->id,
			      "%s: the admin_read_group may only read (status, sessions, metrics, "
			      "events); ask root or pgwardend's user",
			      admin_cmd_to_str(req->cmd));
	switch (req->cmd) {
	case ADMIN_CMD_STATUS:
		return exec_status(ops, ctx, req);
	case ADMIN_CMD_SESSIONS:
		return exec_sessions(ops, ctx, req);
	case ADMIN_CMD_KILL:
		return exec_kill(ops, ctx, req);
	case ADMIN_CMD_RELOAD:
		return exec_change(ops->reload, ctx, req, "reload_failed");
	case ADMIN_CMD_RESTART:
		return exec_change(ops->restart, ctx, req, "restart_failed");
	case ADMIN_CMD_METRICS:
		return exec_metrics(ops, ctx, req);
	case ADMIN_CMD_SUBSCRIBE:
	case ADMIN_CMD_UNSUBSCRIBE:
		r = ok_reply(req);
		if (r)
			json_object_set_new(r, "subscribed",
					    json_boolean(req->cmd == ADMIN_CMD_SUBSCRIBE));
		return r;
	case ADMIN_CMD_PING:
		r = ok_reply(req);
		if (r)
			json_object_set_new(r, "protocol", json_integer(ADMIN_PROTOCOL_VERSION));
		return r;
	case ADMIN_CMD_UNLOCK:
		return exec_unlock(ops, ctx, req);
	case ADMIN_CMD_LOCKS:
		return exec_locks(ops, ctx, req);
	case ADMIN_CMD_EXPLAIN:
		return exec_explain(ops, ctx, req);
	case ADMIN_CMD_COUNT:
		break;
	}
	return admin_error("unknown_command", "unknown command", req->id);
}

char *admin_handle_line(const struct admin_ops *ops, void *ctx, const char *line, size_t len,
			enum admin_access access, int *cmd)
{
	struct admin_request req;
	json_t *reply;
	char *text;
	size_t n;

	*cmd = -1;
	if (admin_request_parse(line, len, &req, &reply) == 0) {
		*cmd = (int)req.cmd;
		reply = admin_execute(ops, ctx, &req, access);
		admin_request_release(&req);
	}
	if (!reply)
		return NULL;
	/* Compact, one line: JSON_COMPACT never emits a raw newline (strings escape them). */
	text = json_dumps(reply, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(reply);
	if (!text)
		return NULL;
	n = strlen(text);
	{
		char *line_out = realloc(text, n + 2);

		if (!line_out) {
			free(text);
			return NULL;
		}
		line_out[n] = '\n';
		line_out[n + 1] = '\0';
		return line_out;
	}
}
