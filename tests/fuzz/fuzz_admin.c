/*
 * fuzz_admin: the admin request parser and dispatcher (admin_handle_line) on arbitrary
 * bytes, plus the peer-text sanitiser (admin_json_text).
 *
 * Invariants checked on every input: a reply always comes back; it is exactly one
 * newline-terminated line; it parses as a JSON object whose "ok" is a boolean; an error
 * carries a code and a message; a kill reaches the daemon only with a well-formed id, an
 * explain only with a well-formed identity and a bounded statement.
 */
#include "admin/admin.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int kills;

static int f_sessions(void *ctx, json_t *arr)
{
	struct session s;

	memset(&s, 0, sizeof(s));
	memcpy(s.id_hex, "00112233445566778899aabbccddeeff", SESSION_ID_HEXLEN + 1);
	s.user = (char *)ctx; /* the input's text as a hostile user name */
	json_array_append_new(arr, admin_session_json(&s, NULL));
	return 0;
}

static int f_kill(void *ctx, const char *id, enum admin_kill_mode mode, json_t *result)
{
	if ((unsigned)mode >= ADMIN_KILL_MODE_COUNT)
		abort(); /* the parser let an unknown mode through */
	if (strlen(id) != SESSION_ID_HEXLEN || strspn(id, "0123456789abcdef") != SESSION_ID_HEXLEN)
		abort(); /* the parser let a malformed id through */
	kills++;
	return id[0] == '0' ? 0 : -ENOENT;
}

static int f_reload(void *ctx, json_t *result, char *err, size_t n)
{
	snprintf(err, n, "no");
	return -1;
}

static int f_restart(void *ctx, json_t *result, char *err, size_t n)
{
	snprintf(err, n, "no");
	return -1;
}

static int f_metrics(void *ctx, char **text)
{
	*text = strdup("x 1\n");
	return *text ? 0 : -ENOMEM;
}

static int f_status(void *ctx, json_t *obj)
{
	return json_object_set_new(obj, "version", json_string("fuzz")) ? -ENOMEM : 0;
}

/* A name the parser passed: 1 to ADMIN_NAME_MAX bytes, no control characters. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > ADMIN_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* Explain fails with the input's own text in the reason, as a server's error quoting the
 * statement would: the reply must still be one valid line. */
static int f_explain(void *ctx, const char *user, const char *database, const char *sql,
		     json_t *result, char *err, size_t n)
{
	size_t len = strlen(sql);

	if (!name_ok(user) || !name_ok(database) || len == 0 || len > ADMIN_EXPLAIN_SQL_MAX)
		abort(); /* the parser let a bad identity or statement through */
	snprintf(err, n, "the server rejected the statement: %s", (const char *)ctx);
	return -EINVAL;
}

static const struct admin_ops ops = {
	.sessions = f_sessions, .kill = f_kill, .reload = f_reload, .status = f_status,
	.restart = f_restart, .metrics = f_metrics, .explain = f_explain,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	char *out;
	json_t *r, *ok, *err;
	size_t n;
	int cmd;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	/* Inputs of odd length come from a member of the read group: every request must be
	 * answered either way, and a reader must never reach kill, reload or restart. */
	out = admin_handle_line(&ops, text, text, size, size % 2 ? ADMIN_ACCESS_READ : ADMIN_ACCESS_FULL,
				&cmd);
	if (!out)
		abort();
	n = strlen(out);
	if (n < 2 || out[n - 1] != '\n' || memchr(out, '\n', n - 1))
		abort();
	r = json_loadb(out, n - 1, 0, NULL);
	if (!r || !json_is_object(r))
		abort();
	ok = json_object_get(r, "ok");
	if (!json_is_boolean(ok))
		abort();
	if (json_is_false(ok)) {
		err = json_object_get(r, "error");
		if (!json_is_string(json_object_get(err, "code")) ||
		    !json_is_string(json_object_get(err, "message")))
			abort();
		/* only these can fail once parsed, with these ops (unlock and locks have none:
		 * "unsupported") */
		if (cmd != -1 && cmd != ADMIN_CMD_KILL && cmd != ADMIN_CMD_RELOAD &&
		    cmd != ADMIN_CMD_RESTART && cmd != ADMIN_CMD_EXPLAIN && cmd != ADMIN_CMD_UNLOCK &&
		    cmd != ADMIN_CMD_LOCKS)
			abort();
	} else if (size % 2 && cmd != -1 && !admin_cmd_read_only((enum admin_cmd)cmd)) {
		abort(); /* a reader got through to a command that changes things */
	}
	json_decref(r);
	free(out);

	/* Any bytes, any cut: always a valid JSON string. */
	r = admin_json_text(text, size % 64);
	if (!r || !json_is_string(r))
		abort();
	out = json_dumps(r, JSON_ENCODE_ANY);
	if (!out)
		abort();
	free(out);
	json_decref(r);
	free(text);
	return 0;
}
