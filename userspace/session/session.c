/* session: identity of one client session (see session.h). */
#include "session/session.h"

#include "base/rand_pool.h"
#include "proto/proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

_Static_assert(SESSION_UPSTREAM_STRLEN >= sizeof("unix:") + sizeof(((struct sockaddr_un *)0)->sun_path),
	       "a Unix upstream's text fits");
_Static_assert(SESSION_UPSTREAM_STRLEN >= ADDR_STRLEN, "an address's text fits");

int session_new_id(struct session *s)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t id[SESSION_ID_LEN];
	int err = rand_pool_bytes(id, sizeof(id));

	if (err)
		return err;
	for (int i = 0; i < SESSION_ID_LEN; i++) {
		s->id_hex[2 * i] = hex[id[i] >> 4];
		s->id_hex[2 * i + 1] = hex[id[i] & 15];
	}
	s->id_hex[SESSION_ID_HEXLEN] = '\0';
	return 0;
}

static void session_verified_release(struct session *s)
{
	if (s->auth.verified_copied)
		free((char *)s->auth.verified_user);
	s->auth.verified_user = NULL;
	s->auth.verified_copied = false;
}

/* The first of the first n parameters whose value is text, or n. */
static size_t startup_value_index(const struct proto_startup *st, size_t n, const char *text)
{
	size_t i = 0;

	while (i < n && strcmp(st->params[i].value, text) != 0)
		i++;
	return i;
}

int session_set_startup(struct session *s, const struct proto_startup *st)
{
	size_t n = st->nparams < PROTO_STARTUP_MAX_PARAMS ? st->nparams : PROTO_STARTUP_MAX_PARAMS;
	size_t slots = n ? n : 1, text = 0, shared[3];
	const char *ident[3] = {st->user, st->database, st->application_name};
	char **names, *p, *copies[3] = {NULL, NULL, NULL};

	for (size_t i = 0; i < n; i++) {
		text += strlen(st->params[i].name) + 1;
		if (startup_value_index(st, i, st->params[i].value) == i)
			text += strlen(st->params[i].value) + 1;
	}
	for (size_t i = 0; i < 3; i++) {
		shared[i] = ident[i] ? startup_value_index(st, n, ident[i]) : n;
		text += ident[i] && shared[i] == n ? strlen(ident[i]) + 1 : 0;
	}
	/* One allocation: two pointer arrays, the parameters' names and values (a value equal
	 * to an earlier one is that one's text: database is often user), then those of the
	 * three values the parser resolved (the server's reading, even past the parameters
	 * kept here) that no parameter holds already: the usual user and database are views
	 * into their parameters' values. */
	names = malloc(2 * slots * sizeof(char *) + text);
	if (!names)
		return -ENOMEM;
	if (s->auth.verified_user && !s->auth.verified_copied) {
		/* A verified user viewing the old startup text takes a copy of its own. */
		char *own = strdup(s->auth.verified_user);

		if (!own) {
			free(names);
			return -ENOMEM;
		}
		s->auth.verified_user = own;
		s->auth.verified_copied = true;
	}
	free(s->startup.names);
	s->startup.names = names;
	s->startup.values = names + slots;
	s->startup.nparams = (unsigned)n;
	s->startup.protocol = st->code;
	p = (char *)(s->startup.values + slots);
	for (size_t i = 0; i < n; i++) {
		size_t ln = strlen(st->params[i].name) + 1, lv = strlen(st->params[i].value) + 1;
		size_t same = startup_value_index(st, i, st->params[i].value);

		s->startup.names[i] = memcpy(p, st->params[i].name, ln);
		p += ln;
		if (same < i) {
			s->startup.values[i] = s->startup.values[same];
			continue;
		}
		s->startup.values[i] = memcpy(p, st->params[i].value, lv);
		p += lv;
	}
	for (size_t i = 0; i < 3; i++) {
		if (!ident[i])
			continue;
		if (shared[i] < n) {
			copies[i] = s->startup.values[shared[i]];
			continue;
		}
		copies[i] = memcpy(p, ident[i], strlen(ident[i]) + 1);
		p += strlen(ident[i]) + 1;
	}
	s->user = copies[0];
	s->database = copies[1];
	s->application_name = copies[2];
	s->protocol = st->code;
	s->replication = st->replication;
	return 0;
}

const char *session_startup_param(const struct session *s, const char *name)
{
	/* The last one wins, as PostgreSQL reads duplicates. */
	for (unsigned i = s->startup.nparams; i-- > 0;)
		if (strcmp(s->startup.names[i], name) == 0)
			return s->startup.values[i];
	return NULL;
}

/* The reports something in pgwarden reads (the lexer's quoting rules, the masks' encoding
 * and date order). The server sends a dozen more at every login; keeping them all cost
 * every idle session about 300 bytes. */
static const char *const kept_server_params[] = {"client_encoding", "DateStyle",
						 "standard_conforming_strings"};
#define KEPT_SERVER_PARAMS (sizeof(kept_server_params) / sizeof(kept_server_params[0]))

/* The block's byte that stands for name (its index in kept_server_params, from 1), or 0
 * when pgwarden does not keep it. */
static char server_param_tag(const char *name)
{
	for (size_t i = 0; i < KEPT_SERVER_PARAMS; i++)
		if (strcmp(name, kept_server_params[i]) == 0)
			return (char)(i + 1);
	return 0;
}

/* In the block, a pair is the name's tag byte and the value with its NUL. */
static const char *server_param_by_tag(const struct session *s, char tag)
{
	const char *p = s->server_params, *end = p ? p + s->server_params_len : NULL;

	while (p && p < end) {
		if (*p == tag)
			return p + 1;
		p += 1 + strlen(p + 1) + 1;
	}
	return NULL;
}

const char *session_server_param(const struct session *s, const char *name)
{
	char tag = server_param_tag(name);

	return tag ? server_param_by_tag(s, tag) : NULL;
}

int session_set_server_param(struct session *s, const char *name, const char *value)
{
	char tag = server_param_tag(name);
	const char *old = tag ? server_param_by_tag(s, tag) : NULL;
	size_t lv = strlen(value) + 1, keep = s->server_params_len;
	char *block, *out;

	if (!tag || (old && strcmp(old, value) == 0))
		return 0;
	if (old)
		keep -= 1 + strlen(old) + 1;
	if (keep + 1 + lv > UINT32_MAX)
		return -ENOMEM;
	block = malloc(keep + 1 + lv);
	if (!block)
		return -ENOMEM;
	/* Copy every other pair, then the new one: a report replaces, never appends. */
	out = block;
	for (const char *p = s->server_params, *end = p ? p + s->server_params_len : NULL;
	     p && p < end;) {
		size_t pair = 1 + strlen(p + 1) + 1;

		if (*p != tag) {
			memcpy(out, p, pair);
			out += pair;
		}
		p += pair;
	}
	*out = tag;
	memcpy(out + 1, value, lv);
	free(s->server_params);
	s->server_params = block;
	s->server_params_len = (uint32_t)(keep + 1 + lv);
	return 0;
}

int session_set_verified(struct session *s, enum session_auth_method method, bool at_relay,
			 const char *user)
{
	/* The usual case (the role the client claimed) costs no copy. */
	bool view = s->user && strcmp(user, s->user) == 0;
	const char *verified = view ? s->user : strdup(user);

	if (!verified)
		return -ENOMEM;
	session_verified_release(s);
	s->auth.verified_user = verified;
	s->auth.verified_copied = !view;
	s->auth.method = method;
	s->auth.at_relay = at_relay;
	s->auth.ok = true;
	return 0;
}

const struct session_tls session_tls_plain;
const struct session_process session_process_unknown;

int session_set_process(struct session *s, const struct session_process *p)
{
	struct session_process *copy = malloc(sizeof(*copy));

	if (!copy)
		return -ENOMEM;
	*copy = *p;
	free(s->process);
	s->process = copy;
	return 0;
}

void session_forget_process(struct session *s)
{
	free(s->process);
	s->process = NULL;
}

struct session_tls *session_tls_leg(struct session *s, bool server)
{
	if (!s->tls) {
		struct session_tls_legs *legs = calloc(1, sizeof(*legs));

		if (!legs)
			return NULL;
		__atomic_store_n(&s->tls, legs, __ATOMIC_RELEASE);
	}
	return server ? &s->tls->server : &s->tls->client;
}

static void session_tls_release(struct session_tls *t)
{
	free(t->peer_subject);
	free(t->peer_identity);
	free(t->peer_fingerprint);
}

void session_release(struct session *s)
{
	session_forget_process(s);
	session_verified_release(s); /* before the startup text it may point into */
	free(s->startup.names);
	s->startup.names = s->startup.values = NULL;
	s->startup.nparams = 0;
	s->user = s->database = s->application_name = NULL;
	free(s->server_params);
	s->server_params = NULL;
	s->server_params_len = 0;
	if (s->tls) {
		session_tls_release(&s->tls->client);
		session_tls_release(&s->tls->server);
		free(s->tls);
		s->tls = NULL;
	}
	free(s->end_reason);
	s->end_reason = NULL;
}

void session_end_reason(struct session *s, const char *fmt, ...)
{
	char *text;
	va_list ap;

	if (s->end_reason)
		return;
	text = malloc(SESSION_END_REASON_MAX);
	if (!text)
		return; /* the logs say "unknown" */
	va_start(ap, fmt);
	vsnprintf(text, SESSION_END_REASON_MAX, fmt, ap);
	va_end(ap);
	__atomic_store_n(&s->end_reason, text, __ATOMIC_RELEASE);
}

const char *session_upstream_text(const struct session *s, char *buf, size_t n)
{
	if (s->upstream_unix)
		snprintf(buf, n, "unix:%s", s->upstream_unix);
	else if (s->upstream.len)
		addr_format(&s->upstream.ss.sa, buf, n);
	else if (n)
		buf[0] = '\0';
	return buf;
}
