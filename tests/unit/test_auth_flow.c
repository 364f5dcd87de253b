/*
 * test_auth_flow: the three authentication machines, driven message by message as the
 * connection core drives them, with no network: the passthrough observer between a real
 * SCRAM client and server (ours, which the PostgreSQL 15 vectors pin to libpq and the
 * server), and against hostile servers and clients; terminate mode end to end (a client
 * through the relay to a server holding the same verifier, no password anywhere); the
 * lockout, alone and through the machines (a locked login looks exactly like a wrong
 * password); certificate logins and two factors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "auth/auth.h"
#include "auth/certmap.h"
#include "auth/userlist.h"
#include "base/log.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PASSWORD "pencil"
#define SALT16 "0123456789abcdef"

/* ---- fixtures ------------------------------------------------------------------------ */

static struct scram_verifier verifier;
static char verifier_text[SCRAM_VERIFIER_MAX];
static const uint8_t mock_secret[32] = "flow test mock secret...........";

struct fixture {
	struct auth_ctx ctx;
	struct lockout *lockout;
	struct session s;
	uint8_t out[AUTH_OUT_MAX];
	size_t out_len;
	uint8_t msg[2048];
	struct proto_msg m;
	struct auth_observer obs;
	struct auth_terminate term;
	struct auth_upstream up;
};

static void make_ctx(struct fixture *f, uint32_t methods, const char *users_doc,
		     const char *passwords_doc, const char *map_doc)
{
	struct lockout_params lp = {.failures = 3, .window_ms = 60000, .duration_ms = 600000,
				    .max_entries = 1000};
	char err[512];

	memset(f, 0, sizeof(*f));
	f->lockout = lockout_new(&lp);
	assert_non_null(f->lockout);
	f->ctx.refcount = 1;
	f->ctx.mode = users_doc || map_doc ? AUTH_MODE_TERMINATE : AUTH_MODE_PASSTHROUGH;
	f->ctx.server_methods = methods;
	f->ctx.lockout = f->lockout;
	f->ctx.mock_secret = mock_secret;
	f->ctx.mock_iterations = 4096;
	f->ctx.mock_salt_len = 16;
	snprintf(f->ctx.cert_map_name, sizeof(f->ctx.cert_map_name), "pgwarden");
	if (users_doc && userlist_parse("users", users_doc, strlen(users_doc), USERLIST_VERIFIERS,
					&f->ctx.users, err, sizeof(err)))
		fail_msg("%s", err);
	if (passwords_doc &&
	    userlist_parse("pw", passwords_doc, strlen(passwords_doc), USERLIST_PASSWORDS,
			   &f->ctx.upstream_passwords, err, sizeof(err)))
		fail_msg("%s", err);
	if (map_doc && certmap_parse("map", map_doc, strlen(map_doc), &f->ctx.certmap, err,
				     sizeof(err)))
		fail_msg("%s", err);
}

/* The client certificate's identity: the test's own string, put in the session's client
 * leg and taken out (NULL) before the session is released. */
static void cert_identity(struct fixture *f, char *identity)
{
	struct session_tls *leg;

	if (!identity) {
		if (f->s.tls)
			f->s.tls->client.peer_identity = NULL;
		return;
	}
	leg = session_tls_leg(&f->s, false);
	assert_non_null(leg);
	leg->peer_identity = identity;
}

static void new_session(struct fixture *f, const char *user, const char *ip)
{
	cert_identity(f, NULL); /* the tests' own strings, not the session's */
	f->s.user = NULL;
	session_release(&f->s);
	memset(&f->s, 0, sizeof(f->s));
	assert_int_equal(session_new_id(&f->s), 0);
	f->s.user = user;
	f->s.client.ss.in4.sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, ip, &f->s.client.ss.in4.sin_addr), 1);
}

static void drop_ctx(struct fixture *f)
{
	cert_identity(f, NULL);
	f->s.user = NULL;
	session_release(&f->s);
	userlist_unref(f->ctx.users);
	userlist_unref(f->ctx.upstream_passwords);
	certmap_free(f->ctx.certmap);
	lockout_free(f->lockout);
}

/* Frame n bytes just written into f->msg as the message f->m. */
static struct proto_msg *framed(struct fixture *f, int n, enum proto_dir dir)
{
	assert_true(n > 0);
	assert_int_equal(proto_frame(f->msg, (size_t)n, dir, 1 << 20, &f->m), PROTO_OK);
	assert_int_equal(f->m.body_len + PROTO_HEADER_LEN, (uint32_t)n);
	return &f->m;
}

static struct proto_msg *auth_msg(struct fixture *f, uint32_t code, const void *data, size_t len)
{
	return framed(f, proto_write_auth(f->msg, sizeof(f->msg), code, data, (uint32_t)len),
		      PROTO_BACKEND);
}

static struct proto_msg *error_msg(struct fixture *f, const char *sqlstate)
{
	return framed(f, proto_write_error(f->msg, sizeof(f->msg), "FATAL", sqlstate, "nope"),
		      PROTO_BACKEND);
}

static struct proto_msg *initial_msg(struct fixture *f, const char *mech, const void *d, size_t n)
{
	return framed(f, proto_write_sasl_initial(f->msg, sizeof(f->msg), mech, d, (uint32_t)n),
		      PROTO_FRONTEND);
}

static struct proto_msg *response_msg(struct fixture *f, const void *d, size_t n)
{
	return framed(f, proto_write_sasl_response(f->msg, sizeof(f->msg), d, (uint32_t)n),
		      PROTO_FRONTEND);
}

/* The SQLSTATE and message of the ErrorResponse in f->out. */
static void assert_error(const struct fixture *f, const char *sqlstate, const char *fragment)
{
	struct proto_msg m;
	struct proto_error_fields ef;

	assert_int_equal(proto_frame(f->out, f->out_len, PROTO_BACKEND, 1 << 20, &m), PROTO_OK);
	assert_int_equal(m.type, PqMsg_ErrorResponse);
	assert_int_equal(proto_read_error(&m, &ef), PROTO_OK);
	assert_string_equal(ef.severity, "FATAL");
	if (strcmp(ef.sqlstate, sqlstate) != 0)
		fail_msg("sqlstate %s (%s), want %s", ef.sqlstate, ef.message, sqlstate);
	if (fragment && !strstr(ef.message, fragment))
		fail_msg("message \"%s\" lacks \"%s\"", ef.message, fragment);
}

/* The data of the 'R' message in f->out with the given code. */
static const uint8_t *out_auth(const struct fixture *f, uint32_t want, uint32_t *len)
{
	static uint8_t copy[AUTH_OUT_MAX];
	struct proto_msg m;
	const uint8_t *d;
	uint32_t code;

	assert_int_equal(proto_frame(f->out, f->out_len, PROTO_BACKEND, 1 << 20, &m), PROTO_OK);
	assert_int_equal(proto_read_auth_data(&m, &code, &d, len), PROTO_OK);
	assert_int_equal(code, want);
	memcpy(copy, d, *len);
	return copy;
}

static int setup(void **state)
{
	static bool done;

	if (!done) {
		assert_int_equal(scram_verifier_from_password(PASSWORD, (const uint8_t *)SALT16, 16,
							      4096, &verifier),
				 SCRAM_OK);
		assert_true(scram_verifier_format(&verifier, verifier_text,
						  sizeof(verifier_text)) > 0);
		done = true;
	}
	log_set_level(LOG_ERROR); /* the machines log every failure; keep the run readable */
	return 0;
}

static char users_doc[1024];

static const char *users(void)
{
	snprintf(users_doc, sizeof(users_doc), "\"alice\" \"%s\"\n\"bob\" \"%s\"\n", verifier_text,
		 verifier_text);
	return users_doc;
}

/* ---- passthrough ----------------------------------------------------------------------- */

/*
 * A real exchange between our SCRAM client and server (byte-identical to libpq and
 * PostgreSQL on the recorded vectors), every message through the observer. Returns the
 * observer's last answer; *step is how many messages went through before it.
 */
static enum auth_action observe_exchange(struct fixture *f, const char *password, int *step)
{
	struct scram_server srv;
	struct scram_client cli;
	struct scram_server_params sp = {.verifier = &verifier, .user = "alice"};
	struct scram_client_params cp = {.password = password};
	static const uint8_t mechs[] = SCRAM_MECHANISM "\0";
	char a[SCRAM_MESSAGE_MAX], b[SCRAM_MESSAGE_MAX];
	const char *mech;
	size_t an, bn;
	enum auth_action act;
	int rc;

	*step = 0;
	assert_int_equal(scram_server_init(&srv, &sp), 0);
	assert_int_equal(scram_client_init(&cli, &cp), 0);
	act = auth_observer_server(&f->obs, auth_msg(f, AUTH_REQ_SASL, mechs, sizeof(mechs)),
				   f->out, sizeof(f->out), &f->out_len, 1000);
	if (act != AUTH_FORWARD)
		return act;
	(*step)++;
	assert_int_equal(scram_client_first(&cli, mechs, sizeof(mechs), &mech, a, sizeof(a), &an), 0);
	act = auth_observer_client(&f->obs, initial_msg(f, mech, a, an), f->out, sizeof(f->out),
				   &f->out_len);
	if (act != AUTH_FORWARD)
		return act;
	(*step)++;
	assert_int_equal(scram_server_first(&srv, mech, (uint8_t *)a, an, b, sizeof(b), &bn), 0);
	act = auth_observer_server(&f->obs, auth_msg(f, AUTH_REQ_SASL_CONT, b, bn), f->out,
				   sizeof(f->out), &f->out_len, 1000);
	if (act != AUTH_FORWARD)
		return act;
	(*step)++;
	assert_int_equal(scram_client_final(&cli, (uint8_t *)b, bn, a, sizeof(a), &an), 0);
	act = auth_observer_client(&f->obs, response_msg(f, a, an), f->out, sizeof(f->out),
				   &f->out_len);
	if (act != AUTH_FORWARD)
		return act;
	(*step)++;
	rc = scram_server_final(&srv, (uint8_t *)a, an, b, sizeof(b), &bn);
	if (rc == SCRAM_ERR_AUTH_FAILED) /* the server's real answer: an ErrorResponse */
		return auth_observer_server(&f->obs, error_msg(f, "28P01"), f->out, sizeof(f->out),
					    &f->out_len, 1000);
	assert_int_equal(rc, 0);
	act = auth_observer_server(&f->obs, auth_msg(f, AUTH_REQ_SASL_FIN, b, bn), f->out,
				   sizeof(f->out), &f->out_len, 1000);
	if (act != AUTH_FORWARD)
		return act;
	(*step)++;
	return auth_observer_server(&f->obs, auth_msg(f, AUTH_REQ_OK, NULL, 0), f->out,
				    sizeof(f->out), &f->out_len, 1000);
}

static void test_observer_scram_passes_and_records(void **state)
{
	struct fixture f;
	int step;

	make_ctx(&f, AUTH_METHOD_SCRAM, NULL, NULL, NULL);
	new_session(&f, "alice", "192.0.2.10");
	auth_observer_begin(&f.obs, &f.ctx, &f.s, 1000);
	assert_int_equal(observe_exchange(&f, PASSWORD, &step), AUTH_DONE);
	assert_int_equal(step, 5);
	assert_true(f.s.auth.ok);
	assert_false(f.s.auth.at_relay);
	assert_int_equal(f.s.auth.method, SESSION_AUTH_SCRAM);
	assert_string_equal(f.s.auth.verified_user, "alice");
	/* After login the observer only forwards. */
	assert_int_equal(auth_observer_server(&f.obs, error_msg(&f, "42P01"), f.out, sizeof(f.out),
					      &f.out_len, 1000),
			 AUTH_FORWARD);
	auth_observer_end(&f.obs);
	drop_ctx(&f);
}

/* The hostile-server rule: under a strict auth.server_methods a request for another method
 * is refused before the client sees it, so the client never sends a secret for it. */
static void test_observer_refuses_weak_methods(void **state)
{
	static const struct {
		uint32_t code;
		const char *data;
		size_t len;
		const char *method;
	} cases[] = {
		{AUTH_REQ_PASSWORD, NULL, 0, "password"},
		{AUTH_REQ_MD5, "salt", 4, "md5"},
		{AUTH_REQ_OK, NULL, 0, "trust"},
		{AUTH_REQ_GSS, NULL, 0, "gss"},
		{AUTH_REQ_SSPI, NULL, 0, "sspi"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fixture f;

		make_ctx(&f, AUTH_METHOD_SCRAM, NULL, NULL, NULL);
		new_session(&f, "alice", "192.0.2.10");
		auth_observer_begin(&f.obs, &f.ctx, &f.s, 1000);
		assert_int_equal(auth_observer_server(&f.obs, auth_msg(&f, cases[i].code,
								       cases[i].data, cases[i].len),
						      f.out, sizeof(f.out), &f.out_len, 1000),
				 AUTH_REFUSE);
		assert_error(&f, "28000", cases[i].method);
		assert_false(f.s.auth.ok);
		/* Whatever comes next (a password the client should never have sent) is not
		 * forwarded either: the machine stays refused... and the core has closed. */
		assert_int_equal(f.obs.state, AUTH_OBS_FAILED);
		drop_ctx(&f);
	}
	/* Allowed, the same requests pass. */
	struct fixture f;

	make_ctx(&f, AUTH_METHODS_ALL, NULL, NULL, NULL);
	new_session(&f, "alice", "192.0.2.10");
	auth_observer_begin(&f.obs, &f.ctx, &f.s, 1000);
	assert_int_equal(auth_observer_server(&f.obs, auth_msg(&f, AUTH_REQ_MD5, "salt", 4), f.out,
					      sizeof(f.out), &f.out_len, 1000),
			 AUTH_FORWARD);
	assert_int_equal(auth_observer_client(&f.obs,
					      framed(&f, proto_write_password(f.msg, sizeof(f.msg),
									      "md5abc"),
						     PROTO_FRONTEND),
					      f.out, sizeof(f.out), &f.out_len),
			 AUTH_FORWARD);
	assert_int_equal(auth_observer_server(&f.obs, auth_msg(&f, AUTH_REQ_OK, NULL, 0), f.out,
					      sizeof(f.out), &f.out_len, 1000),
			 AUTH_DONE);
	assert_int_equal(f.s.auth.method, SESSION_AUTH_MD5);
	drop_ctx(&f);
}

static void test_observer_channel_binding_policy(void **state)
{
	static const uint8_t plain[] = SCRAM_MECHANISM "\0";
	static const uint8_t both[] = SCRAM_MECHANISM_PLUS "\0" SCRAM_MECHANISM "\0";
	struct fixture f;

	/* Only -PLUS allowed, the server cannot bind: refused at the request. */
	make_ctx(&f, AUTH_METHOD_SCRAM_PLUS, NULL, NULL, NULL);
	new_session(&f, "alice", "192.0.2.10");
	auth_observer_begin(&f.obs, &f.ctx, &f.s, 1000);
	assert_int_equal(auth_observer_server(&f.obs, auth_msg(&f, AUTH_REQ_SASL, plain, sizeof(plain)),
					      f.out, sizeof(f.out), &f.out_len, 1000),
			 AUTH_REFUSE);
	assert_error(&f, "28000", "scram-sha-256");
	drop_ctx(&f);
	/* The server can; the client picks the unbound mechanism: refused at its first message
	 * (which holds no secret). */
	make_ctx(&f, AUTH_METHOD_SCRAM_PLUS, NULL, NULL, NULL);
	new_session(&f, "alice", "192.0.2.10");
	auth_observer_begin(&f.obs, &f.ctx, &f.s, 1000);
	assert_int_equal(auth_observer_server(&f.obs, auth_msg(&f, AUTH_REQ_SASL, both, sizeof(both)),
					      f.out, sizeof(f.out), &f.out_len, 1000),
			 AUTH_FORWARD);
	assert_int_equal(auth_observer_client(&f.obs, initial_msg(&f, SCRAM_MECHANISM,
								  "n,,n=,r=abcdefghijkl", 20),
					      f.out, sizeof(f.out), &f.out_len),
			 AUTH_REFUSE);
	assert_error(&f, "28000", "scram-sha-256");
	drop_ctx(&f);
	/* ... and -PLUS with a gs2 header that does not bind is a protocol violation. */
	make_ctx(&f, AUTH_METHODS_ALL, NULL, NULL, NULL);
	new_session(&f, "alice", "192.0.2.10");
	auth_observer_begin(&f.obs, &f.ctx, &f.s, 1000);
	assert_int_equal(auth_observer_server(&f.obs, auth_msg(&f, AUTH_REQ_SASL, both, sizeof(both)),
					      f.out, sizeof(f.out), &f.out_len, 1000),
			 AUTH_FORWARD);
	assert_int_equal(auth_observer_client(&f.obs, initial_msg(&f, SCRAM_MECHANISM_PLUS,
								  "n,,n=,r=abcdefghijkl", 20),
					      f.out, sizeof(f.out), &f.out_len),
			 AUTH_REFUSE);
	assert_error(&f, "08P01", "malformed SCRAM message");
	drop_ctx(&f);
}

/* A hostile server: each of these reaches the client never. */
static void test_observer_hostile_server(void **state)
{
	static const uint8_t mechs[] = SCRAM_MECHANISM "\0";
	static const char *const firsts[] = {
		"r=abcdefghijklSERVERPART,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=1",
		"r=abcdefghijklSERVERPART,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4294967296",
		"r=abcdefghijklSERVERPART,s=,i=4096",
		"r=abcdefghijkl,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096",
		"r=zzzzzzzzzzzzSERVERPART,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096",
	};

	for (size_t i = 0; i <= sizeof(firsts) / sizeof(firsts[0]); i++) {
		struct fixture f;

		make_ctx(&f, AUTH_METHODS_ALL, NULL, NULL, NULL);
		new_session(&f, "alice", "192.0.2.10");
		auth_observer_begin(&f.obs, &f.ctx, &f.s, 1000);
		assert_int_equal(auth_observer_server(&f.obs, auth_msg(&f, AUTH_REQ_SASL, mechs,
								       sizeof(mechs)),
						      f.out, sizeof(f.out), &f.out_len, 1000),
				 AUTH_FORWARD);
		assert_int_equal(auth_observer_client(&f.obs, initial_msg(&f, SCRAM_MECHANISM,
									  "n,,n=,r=abcdefghijkl", 20),
						      f.out, sizeof(f.out), &f.out_len),
				 AUTH_FORWARD);
		if (i < sizeof(firsts) / sizeof(firsts[0])) {
			assert_int_equal(auth_observer_server(&f.obs, auth_msg(&f, AUTH_REQ_SASL_CONT,
									       firsts[i],
									       strlen(firsts[i])),
							      f.out, sizeof(f.out), &f.out_len, 1000),
					 AUTH_REFUSE);
			assert_error(&f, "08P01", NULL);
		} else {
			/* AuthenticationOk without finishing SCRAM: the server never proved it
			 * knows the verifier. */
			assert_int_equal(auth_observer_server(&f.obs, auth_msg(&f, AUTH_REQ_OK, NULL, 0),
							      f.out, sizeof(f.out), &f.out_len, 1000),
					 AUTH_REFUSE);
			assert_error(&f, "08P01", "before the authentication exchange finished");
			assert_false(f.s.auth.ok);
		}
		drop_ctx(&f);
	}
	/* A client answering a request nobody made. */
	struct fixture f;

	make_ctx(&f, AUTH_METHODS_ALL, NULL, NULL, NULL);
	new_session(&f, "alice", "192.0.2.10");
	auth_observer_begin(&f.obs, &f.ctx, &f.s, 1000);
	assert_int_equal(auth_observer_client(&f.obs, response_msg(&f, "x", 1), f.out,
					      sizeof(f.out), &f.out_len),
			 AUTH_REFUSE);
	assert_error(&f, "08P01", "unexpected password packet");
	drop_ctx(&f);
}

/* Lockout in passthrough: the server's 28P01s are counted; once locked, even the right
 * password ends in the same 28P01, and the server's proof never reaches the client. */
static void test_observer_lockout(void **state)
{
	struct fixture f;
	int step;

	make_ctx(&f, AUTH_METHODS_ALL, NULL, NULL, NULL);
	for (int i = 0; i < 3; i++) {
		new_session(&f, "alice", "192.0.2.10");
		auth_observer_begin(&f.obs, &f.ctx, &f.s, 1000);
		assert_false(f.obs.locked);
		assert_int_equal(observe_exchange(&f, "wrong", &step), AUTH_FORWARD);
		assert_int_equal(step, 4); /* the server's 28P01 is forwarded as it is */
	}
	new_session(&f, "alice", "198.51.100.1"); /* another source: the user is locked */
	auth_observer_begin(&f.obs, &f.ctx, &f.s, 2000);
	assert_true(f.obs.locked);
	assert_int_equal(observe_exchange(&f, PASSWORD, &step), AUTH_REFUSE);
	assert_int_equal(step, 4); /* refused at the server-final */
	assert_error(&f, "28P01", "password authentication failed for user \"alice\"");
	assert_false(f.s.auth.ok);
	/* Unlocked by the operator: the same login passes. */
	assert_int_equal(lockout_unlock(f.lockout, "alice"), LOCKOUT_CLEARED_USER);
	new_session(&f, "alice", "198.51.100.1");
	auth_observer_begin(&f.obs, &f.ctx, &f.s, 3000);
	assert_int_equal(observe_exchange(&f, PASSWORD, &step), AUTH_DONE);
	/* The source 192.0.2.10 is locked too (3 failures from it). */
	new_session(&f, "bob", "192.0.2.10");
	auth_observer_begin(&f.obs, &f.ctx, &f.s, 3000);
	assert_true(f.obs.locked);
	drop_ctx(&f);
}

/* ---- terminate mode ------------------------------------------------------------------- */

/* Drive the client leg with our SCRAM client; the action of the last step. */
static enum auth_action terminate_login(struct fixture *f, const char *user, const char *password,
					uint64_t now, char *server_first, size_t *sf_len)
{
	struct scram_client cli;
	struct scram_client_params cp = {.password = password};
	char a[SCRAM_MESSAGE_MAX];
	const uint8_t *d;
	const char *mech;
	uint32_t dl;
	size_t an;
	enum auth_action act;

	act = auth_terminate_begin(&f->term, &f->ctx, &f->s, NULL, 0, now, f->out, sizeof(f->out),
				   &f->out_len);
	if (act != AUTH_TO_CLIENT)
		return act;
	d = out_auth(f, AUTH_REQ_SASL, &dl);
	assert_int_equal(scram_client_init(&cli, &cp), 0);
	assert_int_equal(scram_client_first(&cli, d, dl, &mech, a, sizeof(a), &an), 0);
	act = auth_terminate_client(&f->term, initial_msg(f, mech, a, an), now, f->out,
				    sizeof(f->out), &f->out_len);
	if (act != AUTH_TO_CLIENT)
		return act;
	d = out_auth(f, AUTH_REQ_SASL_CONT, &dl);
	if (server_first) {
		memcpy(server_first, d, dl);
		*sf_len = dl;
	}
	assert_int_equal(scram_client_final(&cli, d, dl, a, sizeof(a), &an), 0);
	act = auth_terminate_client(&f->term, response_msg(f, a, an), now, f->out, sizeof(f->out),
				    &f->out_len);
	if (act == AUTH_DONE) {
		d = out_auth(f, AUTH_REQ_SASL_FIN, &dl);
		assert_int_equal(scram_client_verify(&cli, d, dl), 0); /* we proved ourselves */
	}
	scram_client_clear(&cli);
	(void)user;
	return act;
}

/* The upstream leg against a server (our SCRAM server) holding the given verifier. */
static enum auth_action upstream_login(struct fixture *f, const struct scram_verifier *v)
{
	static const uint8_t mechs[] = SCRAM_MECHANISM "\0";
	struct scram_server srv;
	struct scram_server_params sp = {.verifier = v, .user = "alice"};
	char b[SCRAM_MESSAGE_MAX];
	size_t bn;
	struct proto_msg m;
	const char *mech;
	const uint8_t *data;
	int32_t dl;
	enum auth_action act;

	assert_int_equal(scram_server_init(&srv, &sp), 0);
	act = auth_upstream_server(&f->up, auth_msg(f, AUTH_REQ_SASL, mechs, sizeof(mechs)), f->out,
				   sizeof(f->out), &f->out_len);
	if (act != AUTH_TO_SERVER)
		return act;
	assert_int_equal(proto_frame(f->out, f->out_len, PROTO_FRONTEND, 1 << 20, &m), PROTO_OK);
	assert_int_equal(proto_read_sasl_initial(&m, &mech, &data, &dl), PROTO_OK);
	if (scram_server_first(&srv, mech, data, (size_t)dl, b, sizeof(b), &bn))
		return AUTH_ACTION_COUNT;
	act = auth_upstream_server(&f->up, auth_msg(f, AUTH_REQ_SASL_CONT, b, bn), f->out,
				   sizeof(f->out), &f->out_len);
	if (act != AUTH_TO_SERVER)
		return act;
	assert_int_equal(proto_frame(f->out, f->out_len, PROTO_FRONTEND, 1 << 20, &m), PROTO_OK);
	if (scram_server_final(&srv, m.body, m.body_len, b, sizeof(b), &bn))
		return auth_upstream_server(&f->up, error_msg(f, "28P01"), f->out, sizeof(f->out),
					    &f->out_len);
	act = auth_upstream_server(&f->up, auth_msg(f, AUTH_REQ_SASL_FIN, b, bn), f->out,
				   sizeof(f->out), &f->out_len);
	if (act != AUTH_WAIT_SERVER)
		return act;
	return auth_upstream_server(&f->up, auth_msg(f, AUTH_REQ_OK, NULL, 0), f->out,
				    sizeof(f->out), &f->out_len);
}

static void test_terminate_end_to_end_without_password(void **state)
{
	struct fixture f;
	uint32_t dl;

	make_ctx(&f, AUTH_METHOD_SCRAM, users(), NULL, NULL);
	new_session(&f, "alice", "192.0.2.10");
	assert_int_equal(terminate_login(&f, "alice", PASSWORD, 1000, NULL, NULL), AUTH_DONE);
	assert_true(f.s.auth.ok);
	assert_true(f.s.auth.at_relay);
	assert_int_equal(f.s.auth.method, SESSION_AUTH_SCRAM);
	assert_non_null(auth_terminate_client_key(&f.term));
	/* The relay logs in upstream with the client's key; the server has the same verifier.
	 * pgwarden never had the password. */
	auth_upstream_begin(&f.up, &f.ctx, &f.s, &f.term, false, NULL, 0);
	auth_terminate_end(&f.term);
	assert_int_equal(upstream_login(&f, &verifier), AUTH_DONE);
	(void)out_auth(&f, AUTH_REQ_OK, &dl);
	auth_upstream_end(&f.up);
	/* A server whose verifier differs (another salt): refused, and said why. */
	{
		struct scram_verifier other;

		assert_int_equal(scram_verifier_from_password(PASSWORD, (const uint8_t *)"fedcba9876543210",
							      16, 4096, &other),
				 0);
		new_session(&f, "alice", "192.0.2.10");
		assert_int_equal(terminate_login(&f, "alice", PASSWORD, 1000, NULL, NULL), AUTH_DONE);
		auth_upstream_begin(&f.up, &f.ctx, &f.s, &f.term, false, NULL, 0);
		auth_terminate_end(&f.term);
		assert_int_equal(upstream_login(&f, &other), AUTH_REFUSE);
		assert_error(&f, "28000", "salt or iterations differ");
		auth_upstream_end(&f.up);
	}
	drop_ctx(&f);
}

/* Wrong password, unknown user, locked user: the client sees the same messages, shaped the
 * same, failing at the same step with the same bytes. */
static void test_terminate_failures_look_alike(void **state)
{
	struct fixture f;
	uint8_t wrong[AUTH_OUT_MAX], locked[AUTH_OUT_MAX];
	size_t wrong_len, locked_len, n1, n2, n3;
	char sf1[SCRAM_MESSAGE_MAX], sf2[SCRAM_MESSAGE_MAX], sf3[SCRAM_MESSAGE_MAX];
	struct scram_server_first p1, p2;

	make_ctx(&f, AUTH_METHOD_SCRAM, users(), NULL, NULL);
	new_session(&f, "alice", "192.0.2.10");
	assert_int_equal(terminate_login(&f, "alice", "wrong", 1000, sf1, &n1), AUTH_REFUSE);
	assert_error(&f, "28P01", "password authentication failed for user \"alice\"");
	memcpy(wrong, f.out, f.out_len);
	wrong_len = f.out_len;
	auth_terminate_end(&f.term);
	/* Unknown user: a mock exchange, shaped like the real one, failing the same way. */
	new_session(&f, "ghost", "192.0.2.20");
	assert_int_equal(terminate_login(&f, "ghost", PASSWORD, 1000, sf2, &n2), AUTH_REFUSE);
	assert_error(&f, "28P01", "password authentication failed for user \"ghost\"");
	auth_terminate_end(&f.term);
	assert_int_equal(n1, n2);
	assert_int_equal(scram_parse_server_first(sf1, n1, sf1 + 2, 24, &p1), 0);
	assert_int_equal(scram_parse_server_first(sf2, n2, sf2 + 2, 24, &p2), 0);
	assert_int_equal(p1.salt_len, p2.salt_len);
	assert_int_equal(p1.iterations, p2.iterations);
	/* The same unknown user gets the same salt next time (a real salt does not change). */
	new_session(&f, "ghost", "192.0.2.21");
	assert_int_equal(terminate_login(&f, "ghost", PASSWORD, 1000, sf3, &n3), AUTH_REFUSE);
	assert_int_equal(scram_parse_server_first(sf3, n3, sf3 + 2, 24, &p1), 0);
	assert_memory_equal(p1.salt, p2.salt, p2.salt_len);
	auth_terminate_end(&f.term);
	/* Lock alice (3 failures in all), then the right password gives the same bytes as the
	 * wrong one did. */
	for (int i = 0; i < 2; i++) {
		new_session(&f, "alice", "192.0.2.30");
		assert_int_equal(terminate_login(&f, "alice", "wrong", 1000, NULL, NULL), AUTH_REFUSE);
		auth_terminate_end(&f.term);
	}
	new_session(&f, "alice", "203.0.113.5");
	assert_int_equal(terminate_login(&f, "alice", PASSWORD, 2000, NULL, NULL), AUTH_REFUSE);
	memcpy(locked, f.out, f.out_len);
	locked_len = f.out_len;
	auth_terminate_end(&f.term);
	assert_int_equal(locked_len, wrong_len);
	assert_memory_equal(locked, wrong, wrong_len);
	assert_false(f.s.auth.ok);
	/* pgwardenctl unlock alice: the right password works again. */
	assert_true(lockout_unlock(f.lockout, "alice") & LOCKOUT_CLEARED_USER);
	new_session(&f, "alice", "203.0.113.5");
	assert_int_equal(terminate_login(&f, "alice", PASSWORD, 3000, NULL, NULL), AUTH_DONE);
	auth_terminate_end(&f.term);
	drop_ctx(&f);
}

static void test_terminate_hostile_client(void **state)
{
	struct fixture f;

	make_ctx(&f, AUTH_METHOD_SCRAM, users(), NULL, NULL);
	new_session(&f, "alice", "192.0.2.10");
	assert_int_equal(auth_terminate_begin(&f.term, &f.ctx, &f.s, NULL, 0, 1000, f.out,
					      sizeof(f.out), &f.out_len),
			 AUTH_TO_CLIENT);
	/* A query instead of the SASL answer. */
	assert_int_equal(auth_terminate_client(&f.term,
					       framed(&f, proto_write_query(f.msg, sizeof(f.msg),
									    "select 1"),
						      PROTO_FRONTEND),
					       1000, f.out, sizeof(f.out), &f.out_len),
			 AUTH_REFUSE);
	assert_error(&f, "08P01", "expected SASL response");
	auth_terminate_end(&f.term);
	/* -PLUS on a plain leg; SCRAM-SHA-1; an authzid; a mandatory extension. */
	static const struct {
		const char *mech, *msg, *state;
	} cases[] = {
		{SCRAM_MECHANISM_PLUS, "p=tls-server-end-point,,n=,r=abcdefghijkl", "08P01"},
		{"SCRAM-SHA-1", "n,,n=,r=abcdefghijkl", "08P01"},
		{SCRAM_MECHANISM, "n,a=postgres,n=,r=abcdefghijkl", "0A000"},
		{SCRAM_MECHANISM, "n,,m=x,n=,r=abcdefghijkl", "0A000"},
		{SCRAM_MECHANISM, "n,,n=,r=abc", "08P01"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		new_session(&f, "alice", "192.0.2.10");
		assert_int_equal(auth_terminate_begin(&f.term, &f.ctx, &f.s, NULL, 0, 1000, f.out,
						      sizeof(f.out), &f.out_len),
				 AUTH_TO_CLIENT);
		assert_int_equal(auth_terminate_client(&f.term,
						       initial_msg(&f, cases[i].mech, cases[i].msg,
								   strlen(cases[i].msg)),
						       1000, f.out, sizeof(f.out), &f.out_len),
				 AUTH_REFUSE);
		assert_error(&f, cases[i].state, NULL);
		auth_terminate_end(&f.term);
	}
	/* Protocol violations are not password guesses: nothing was counted. */
	assert_false(lockout_is_locked(f.lockout, "alice", "192.0.2.10", 1000));
	drop_ctx(&f);
}

static void test_terminate_certificates(void **state)
{
	static const char map[] = "pgwarden /^(.*)@example\\.com$ \\1\n";
	struct fixture f;
	char ident[] = "alice@example.com", other[] = "mallory@example.com";

	/* A mapped certificate alone. */
	make_ctx(&f, AUTH_METHOD_SCRAM, users(), NULL, map);
	new_session(&f, "alice", "192.0.2.10");
	cert_identity(&f, ident);
	assert_int_equal(auth_terminate_begin(&f.term, &f.ctx, &f.s, NULL, 0, 1000, f.out,
					      sizeof(f.out), &f.out_len),
			 AUTH_DONE);
	assert_int_equal(f.out_len, 0);
	assert_int_equal(f.s.auth.method, SESSION_AUTH_CERT);
	assert_null(auth_terminate_client_key(&f.term));
	cert_identity(&f, NULL);
	/* A certificate for someone else: falls back to the password. */
	new_session(&f, "alice", "192.0.2.10");
	cert_identity(&f, other);
	assert_int_equal(terminate_login(&f, "alice", PASSWORD, 1000, NULL, NULL), AUTH_DONE);
	assert_int_equal(f.s.auth.method, SESSION_AUTH_SCRAM);
	cert_identity(&f, NULL);
	auth_terminate_end(&f.term);
	drop_ctx(&f);

	/* Two factors. */
	make_ctx(&f, AUTH_METHOD_SCRAM, users(), NULL, map);
	f.ctx.require_cert_and_password = true;
	new_session(&f, "alice", "192.0.2.10");
	assert_int_equal(auth_terminate_begin(&f.term, &f.ctx, &f.s, NULL, 0, 1000, f.out,
					      sizeof(f.out), &f.out_len),
			 AUTH_REFUSE);
	assert_error(&f, "28000", "requires a valid client certificate");
	new_session(&f, "alice", "192.0.2.11");
	cert_identity(&f, other);
	assert_int_equal(auth_terminate_begin(&f.term, &f.ctx, &f.s, NULL, 0, 1000, f.out,
					      sizeof(f.out), &f.out_len),
			 AUTH_REFUSE);
	assert_error(&f, "28000", "certificate authentication failed for user \"alice\"");
	cert_identity(&f, ident);
	new_session(&f, "alice", "192.0.2.12");
	cert_identity(&f, ident);
	assert_int_equal(terminate_login(&f, "alice", "wrong", 1000, NULL, NULL), AUTH_REFUSE);
	assert_error(&f, "28P01", NULL);
	auth_terminate_end(&f.term);
	new_session(&f, "alice", "192.0.2.13");
	cert_identity(&f, ident);
	assert_int_equal(terminate_login(&f, "alice", PASSWORD, 1000, NULL, NULL), AUTH_REFUSE);
	/* ^ the third failure of alice locked her: the certificate and the password do not
	 * help while locked, and the answer is still 28P01. */
	assert_error(&f, "28P01", NULL);
	auth_terminate_end(&f.term);
	lockout_unlock(f.lockout, "alice");
	new_session(&f, "alice", "192.0.2.14");
	cert_identity(&f, ident);
	assert_int_equal(terminate_login(&f, "alice", PASSWORD, 1000, NULL, NULL), AUTH_DONE);
	assert_int_equal(f.s.auth.method, SESSION_AUTH_CERT_SCRAM);
	cert_identity(&f, NULL);
	auth_terminate_end(&f.term);
	drop_ctx(&f);
}

/* The upstream leg never sends a password the policy forbids, and reports the server's own
 * refusal as the server wrote it. */
static void test_upstream_policy(void **state)
{
	struct fixture f;
	char pw_doc[] = "\"alice\" \"" PASSWORD "\"\n";

	make_ctx(&f, AUTH_METHOD_SCRAM, users(), pw_doc, NULL);
	new_session(&f, "alice", "192.0.2.10");
	auth_upstream_begin(&f.up, &f.ctx, &f.s, NULL, false, NULL, 0);
	assert_int_equal(auth_upstream_server(&f.up, auth_msg(&f, AUTH_REQ_PASSWORD, NULL, 0), f.out,
					      sizeof(f.out), &f.out_len),
			 AUTH_REFUSE);
	assert_error(&f, "28000", "cleartext password");
	assert_null(memmem(f.out, f.out_len, PASSWORD, strlen(PASSWORD)));
	auth_upstream_end(&f.up);
	/* With the password from auth.upstream_passwords, SCRAM logs in. */
	auth_upstream_begin(&f.up, &f.ctx, &f.s, NULL, false, NULL, 0);
	assert_int_equal(upstream_login(&f, &verifier), AUTH_DONE);
	auth_upstream_end(&f.up);
	/* A server that does not know the verifier fails its proof. */
	{
		struct scram_verifier other;

		assert_int_equal(scram_verifier_from_password("other", (const uint8_t *)SALT16, 16, 4096,
							      &other),
				 0);
		auth_upstream_begin(&f.up, &f.ctx, &f.s, NULL, false, NULL, 0);
		assert_int_equal(upstream_login(&f, &other), AUTH_REFUSE);
		/* our proof was wrong for that server: it answered with its own 28P01 */
		assert_error(&f, "28P01", NULL);
		auth_upstream_end(&f.up);
	}
	/* md5, when allowed: libpq's answer. */
	f.ctx.server_methods = AUTH_METHOD_MD5;
	auth_upstream_begin(&f.up, &f.ctx, &f.s, NULL, false, NULL, 0);
	assert_int_equal(auth_upstream_server(&f.up, auth_msg(&f, AUTH_REQ_MD5, "\x01\x02\x03\x04", 4),
					      f.out, sizeof(f.out), &f.out_len),
			 AUTH_TO_SERVER);
	{
		struct proto_msg m;
		const char *pw;

		assert_int_equal(proto_frame(f.out, f.out_len, PROTO_FRONTEND, 1 << 20, &m), 0);
		assert_int_equal(proto_read_password(&m, &pw), 0);
		assert_int_equal(strlen(pw), 35);
		assert_int_equal(strncmp(pw, "md5", 3), 0);
	}
	/* trust without any exchange, not allowed. */
	auth_upstream_end(&f.up);
	auth_upstream_begin(&f.up, &f.ctx, &f.s, NULL, false, NULL, 0);
	assert_int_equal(auth_upstream_server(&f.up, auth_msg(&f, AUTH_REQ_OK, NULL, 0), f.out,
					      sizeof(f.out), &f.out_len),
			 AUTH_REFUSE);
	assert_error(&f, "28000", "trust");
	auth_upstream_end(&f.up);
	drop_ctx(&f);
}

/* ---- the lockout table ------------------------------------------------------------------ */

static unsigned listed;

static void count_entry(const struct lockout_entry *e, void *arg)
{
	listed++;
	(void)e;
	(void)arg;
}

static void test_lockout_rules(void **state)
{
	struct lockout_params p = {.failures = 3, .window_ms = 1000, .duration_ms = 5000,
				   .max_entries = 64};
	struct lockout *l = lockout_new(&p);

	/* Three failures inside the window lock; the window starts at the first. */
	assert_int_equal(lockout_record_failure(l, "u", "10.0.0.1", NULL, 0), 0);
	assert_int_equal(lockout_record_failure(l, "u", "10.0.0.2", NULL, 500), 0);
	assert_int_equal(lockout_record_failure(l, "u", "10.0.0.3", NULL, 900), LOCKOUT_USER_LOCKED);
	assert_true(lockout_is_locked(l, "u", NULL, 901));
	assert_false(lockout_is_locked(l, NULL, "10.0.0.1", 901));
	/* Failures while locked do not extend the lock. */
	lockout_record_failure(l, "u", NULL, NULL, 5000);
	assert_true(lockout_is_locked(l, "u", NULL, 5899));
	assert_false(lockout_is_locked(l, "u", NULL, 5900));
	/* Outside the window, the count starts over. */
	assert_int_equal(lockout_record_failure(l, "v", NULL, NULL, 0), 0);
	assert_int_equal(lockout_record_failure(l, "v", NULL, NULL, 800), 0);
	assert_int_equal(lockout_record_failure(l, "v", NULL, NULL, 2000), 0);
	assert_int_equal(lockout_record_failure(l, "v", NULL, NULL, 2100), 0);
	assert_int_equal(lockout_record_failure(l, "v", NULL, NULL, 2200), LOCKOUT_USER_LOCKED);
	/* A success clears the user's run, never the source's. */
	lockout_record_failure(l, "w", "10.9.9.9", NULL, 0);
	lockout_record_failure(l, "w", "10.9.9.9", NULL, 1);
	lockout_record_success(l, "w");
	assert_int_equal(lockout_record_failure(l, "w", "10.9.9.9", NULL, 2), LOCKOUT_SOURCE_LOCKED);
	assert_false(lockout_is_locked(l, "w", NULL, 3));
	assert_true(lockout_is_locked(l, "x", "10.9.9.9", 3));
	/* A success does not clear a lock either. */
	lockout_record_success(l, "v");
	assert_true(lockout_is_locked(l, "v", NULL, 2300));
	/* Listing and unlocking. */
	listed = 0;
	assert_true(lockout_each(l, 2300, count_entry, NULL) >= 2);
	assert_int_equal(lockout_unlock(l, "10.9.9.9"), LOCKOUT_CLEARED_SOURCE);
	assert_int_equal(lockout_unlock(l, "10.9.9.9"), 0);
	assert_false(lockout_is_locked(l, NULL, "10.9.9.9", 2300));
	/* 0 failures: counted and logged, never locked. */
	p.failures = 0;
	lockout_set_params(l, &p);
	for (int i = 0; i < 20; i++)
		assert_int_equal(lockout_record_failure(l, "z", NULL, NULL, 10000), 0);
	assert_false(lockout_is_locked(l, "z", NULL, 10000));
	lockout_free(l);
}

static void test_lockout_bounded(void **state)
{
	struct lockout_params p = {.failures = 1, .window_ms = 1000, .duration_ms = 1000000,
				   .max_entries = 64};
	struct lockout *l = lockout_new(&p);
	char name[32];

	/* One real lock, then a flood of junk names: the table stays at its cap and the flood
	 * evicts junk (unlocked entries are gone first... but here every entry locks at its
	 * first failure, so the oldest lock goes, and it is logged). */
	p.failures = 2;
	lockout_set_params(l, &p);
	lockout_record_failure(l, "victim", NULL, NULL, 0);
	lockout_record_failure(l, "victim", NULL, NULL, 1);
	for (int i = 0; i < 10000; i++) {
		snprintf(name, sizeof(name), "junk%d", i);
		lockout_record_failure(l, name, NULL, NULL, 2 + (uint64_t)i);
		assert_true(lockout_size(l) <= 64);
	}
	/* The junk never reached two failures, so it was what got evicted: the lock holds. */
	assert_true(lockout_is_locked(l, "victim", NULL, 20000));
	lockout_free(l);
}

struct hammer {
	struct lockout *l;
	int id;
};

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	char name[32];

	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "t%d-%d", h->id, i % 300);
		lockout_record_failure(h->l, name, "10.0.0.1", NULL, (uint64_t)i);
		(void)lockout_is_locked(h->l, name, "10.0.0.2", (uint64_t)i);
		if (i % 97 == 0)
			lockout_unlock(h->l, name);
	}
	return NULL;
}

static void test_lockout_threads(void **state)
{
	struct lockout_params p = {.failures = 5, .window_ms = 100, .duration_ms = 1000,
				   .max_entries = 256};
	struct lockout *l = lockout_new(&p);
	pthread_t t[4];
	struct hammer h[4];

	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){.l = l, .id = i};
		assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_true(lockout_size(l) <= 256);
	lockout_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_observer_scram_passes_and_records, setup),
		cmocka_unit_test_setup(test_observer_refuses_weak_methods, setup),
		cmocka_unit_test_setup(test_observer_channel_binding_policy, setup),
		cmocka_unit_test_setup(test_observer_hostile_server, setup),
		cmocka_unit_test_setup(test_observer_lockout, setup),
		cmocka_unit_test_setup(test_terminate_end_to_end_without_password, setup),
		cmocka_unit_test_setup(test_terminate_failures_look_alike, setup),
		cmocka_unit_test_setup(test_terminate_hostile_client, setup),
		cmocka_unit_test_setup(test_terminate_certificates, setup),
		cmocka_unit_test_setup(test_upstream_policy, setup),
		cmocka_unit_test_setup(test_lockout_rules, setup),
		cmocka_unit_test_setup(test_lockout_bounded, setup),
		cmocka_unit_test_setup(test_lockout_threads, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
