/*
 * conn_tls: TLS negotiation on both legs of a connection, as states of its machine.
 *
 * Client leg (pgwarden is the TLS server). An SSLRequest under tls.client.mode prefer or
 * require is answered 'S' (PostgreSQL's postmaster does the same), the connection enters
 * CLIENT_TLS, and once the 'S' has left in plaintext the leg's transport becomes TLS and
 * the handshake runs, bounded by the login deadline. A TLS ClientHello as the very first
 * bytes (PostgreSQL 17 sslnegotiation=direct) starts the handshake at once; the tls module
 * requires ALPN "postgresql" then. Bytes the client sent after its SSLRequest, before the
 * 'S', were never encrypted: they may have been injected by a man in the middle
 * (CVE-2021-23214) and end the connection, nothing forwarded. Under require a plaintext
 * StartupMessage is refused with 28000.
 *
 * Server leg (pgwarden is the TLS client). When tls.server.mode is not disable and the
 * server is reached over TCP, the connect is followed by SERVER_TLS: pgwarden sends an
 * SSLRequest and reads exactly one byte of answer. 'S' starts the handshake (verify-ca and
 * verify-full are the tls module's context and host checks); 'N' continues in plaintext
 * only under prefer; an ErrorResponse is never shown to the client; any byte after the
 * answer, before pgwarden's ClientHello, is an injection (CVE-2021-23222). Only then does
 * the client's StartupMessage leave, inside TLS.
 */
#include "relay/conn_internal.h"

#include "base/log.h"
#include "base/log_limit.h"
#include "proto/proto.h"
#include "relay/transport_tls.h"
#include "tls/tls.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#define SQLSTATE_INVALID_AUTHORIZATION "28000"
#define SQLSTATE_CANNOT_CONNECT "08001"

/* Clients can fail handshakes at will: logged within limits. */
static struct log_limit limit_client_tls =
	LOG_LIMIT_INIT(LOG_LIMIT_PEER_BURST, LOG_LIMIT_PEER_INTERVAL_MS);

static struct tls_snapshot *conn_tls_snapshot(struct conn *c)
{
	if (!c->tls && c->worker->relay->tls)
		c->tls = tls_store_acquire(c->worker->relay->tls);
	return c->tls;
}

bool conn_tls_client_offered(struct conn *c)
{
	struct tls_snapshot *s = conn_tls_snapshot(c);

	return s && s->client_ctx && s->client_mode != CONFIG_TLS_CLIENT_DISABLE;
}

bool conn_tls_client_on(const struct conn *c)
{
	return transport_tls_conn(c->client) != NULL;
}

/* ---- client leg ------------------------------------------------------------------------ */

enum conn_step conn_tls_client_request(struct conn *c, struct conn_dir *d, uint32_t len)
{
	uint8_t yes = 'S';
	char peer[ADDR_STRLEN];

	conn_consume(d, len);
	if (buf_len(d->buf) > d->framed) {
		/* The client cannot have sent these in answer to our 'S', which it has not
		 * seen: they were never going to be encrypted. */
		log_warn("tls_injection", "session=%s peer=%s %u unencrypted bytes followed the "
			 "SSLRequest before the TLS handshake (CVE-2021-23214); closing",
			 c->session.id_hex,
			 addr_format(&c->session.client.ss.sa, peer, sizeof(peer)),
			 buf_len(d->buf) - d->framed);
		conn_refused(c, MREFUSE_TLS);
		conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
			  "received unencrypted data after SSL request",
			  "unencrypted data after SSLRequest");
		return CONN_STEP_FAILED;
	}
	if (conn_inject(c, CONN_S2C, &yes, 1)) {
		conn_close(c, "out of memory");
		return CONN_STEP_FAILED;
	}
	conn_set_state(c, CONN_CLIENT_TLS);
	return CONN_STEP_PROGRESS;
}

/* Put the client leg on TLS over its socket: preread are bytes of a direct ClientHello. */
static int conn_tls_client_switch(struct conn *c, const uint8_t *preread, uint32_t n,
				  bool direct)
{
	struct tls_conn_params params = {.direct = direct};
	struct transport *t;
	int err = 0;

	t = transport_tls_new(c->client, c->tls, TLS_LEG_CLIENT, &params, preread, n, &err);
	if (!t)
		return err;
	/* The socket moved to t (same descriptor, same loop watch); the plain transport is
	 * left holding none. */
	c->client = t;
	return 0;
}

enum conn_step conn_tls_client_direct(struct conn *c, struct conn_dir *d, uint32_t avail)
{
	uint8_t *p = d->buf->data + d->buf->head + d->framed;
	int err;

	if (!conn_tls_client_offered(c) || c->negotiated) {
		/* A ClientHello would not understand an ErrorResponse. */
		conn_refused(c, MREFUSE_TLS);
		conn_close(c, c->negotiated ? "direct TLS after an encryption request"
					    : "direct TLS connection refused: TLS is not enabled");
		return CONN_STEP_FAILED;
	}
	err = conn_tls_client_switch(c, p, avail, true);
	if (err) {
		log_warn("tls", "session=%s cannot start TLS: %s", c->session.id_hex,
			 strerror(-err));
		conn_refused(c, MREFUSE_TLS);
		conn_close(c, "TLS setup failed");
		return CONN_STEP_FAILED;
	}
	conn_consume(d, avail); /* the transport holds them now */
	conn_set_state(c, CONN_CLIENT_TLS);
	return CONN_STEP_PROGRESS;
}

bool conn_tls_client_refuses_plain(struct conn *c)
{
	struct tls_snapshot *s = conn_tls_snapshot(c);

	if (!s || s->client_mode != CONFIG_TLS_CLIENT_REQUIRE || conn_tls_client_on(c))
		return false;
	conn_refused(c, MREFUSE_TLS);
	/* PostgreSQL's answer to a plaintext client that only hostssl lines admit is 28000. */
	conn_fail(c, SQLSTATE_INVALID_AUTHORIZATION,
		  "SSL connection is required: pgwarden accepts only encrypted connections "
		  "(tls.client.mode is require)", "plaintext refused: TLS required");
	return true;
}

static bool conn_tls_client_step(struct conn *c)
{
	const struct conn_dir *s2c = &c->dir[CONN_S2C];
	struct tls_conn *tc = transport_tls_conn(c->client);
	struct session_tls *leg;
	char peer[ADDR_STRLEN];
	int err;

	if (!tc) {
		/* The 'S' leaves in plaintext first; nothing was read after the request. */
		if (s2c->buf && s2c->framed)
			return false;
		err = conn_tls_client_switch(c, NULL, 0, false);
		if (err) {
			log_warn("tls", "session=%s cannot start TLS: %s", c->session.id_hex,
				 strerror(-err));
			conn_refused(c, MREFUSE_TLS);
			conn_fail(c, SQLSTATE_INTERNAL, "TLS setup failed", "TLS setup failed");
			return true;
		}
	}
	if (!transport_can_write(c->client)) /* the handshake's needs are in write_needs */
		return false;
	err = transport_handshake(c->client);
	if (err == -EAGAIN)
		return false;
	if (err) {
		const char *why = transport_error(c->client);

		log_limited(&limit_client_tls, LOG_INFO, "tls_handshake_failed",
			    "session=%s peer=%s leg=client %s", c->session.id_hex,
			    addr_format(&c->session.client.ss.sa, peer, sizeof(peer)),
			    why ? why : strerror(-err));
		conn_refused(c, MREFUSE_TLS);
		conn_set_reason(c, why && strstr(why, "renegotiat") ? "TLS renegotiation refused"
								   : "client TLS handshake failed");
		conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION, "TLS handshake failed",
			  "client TLS handshake failed");
		return true;
	}
	tc = transport_tls_conn(c->client);
	leg = session_tls_leg(&c->session, false);
	if (!leg || tls_conn_fill_session(tc, leg)) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return true;
	}
	c->negotiated |= CONN_NEGOTIATED_SSL;
	if (conn_metrics(c))
		metrics_inc(conn_metrics(c), conn_mstd(c)->tls_sessions, MTLS_CLIENT);
	log_debug("tls", "session=%s leg=client %s %s%s%s", c->session.id_hex, leg->version,
		  leg->cipher, tc->direct ? " direct" : "", leg->peer_identity ? " cert" : "");
	conn_set_state(c, CONN_NEGOTIATE);
	return true;
}

/* ---- server leg ------------------------------------------------------------------------ */

bool conn_tls_server_wanted(struct conn *c)
{
	return tls_server_leg_wanted(conn_tls_snapshot(c), c->session.upstream_unix) &&
	       c->state == CONN_CONNECTING &&
	       !tls_server_known_plain(c->tls, &c->session.upstream, conn_now(c));
}

void conn_tls_server_reuse_accept(struct conn *c, struct server_pool_accept *acc)
{
	struct tls_snapshot *s = conn_tls_snapshot(c);
	bool tls = tls_server_leg_wanted(s, c->session.upstream_unix);

	acc->tls_generation = tls ? s->generation : 0;
	acc->plain_ok = !tls || s->server_mode == CONFIG_TLS_SERVER_PREFER;
}

uint64_t conn_tls_server_generation(const struct conn *c)
{
	return c->server && transport_tls_conn(c->server) && c->tls ? c->tls->generation : 0;
}

int conn_tls_server_adopted(struct conn *c)
{
	struct tls_conn *tc = transport_tls_conn(c->server);
	struct session_tls *leg;

	if (!tc)
		return 0;
	leg = session_tls_leg(&c->session, true);
	return leg && tls_conn_fill_session(tc, leg) == 0 ? 0 : -ENOMEM;
}

void conn_tls_server_begin(struct conn *c)
{
	c->server_tls_step = CONN_SERVER_TLS_ASK;
	c->server_tls_sent = 0;
	conn_set_state(c, CONN_SERVER_TLS);
}

static void conn_tls_server_fail(struct conn *c, const char *sqlstate, const char *text,
				 const char *reason)
{
	char where[SESSION_UPSTREAM_STRLEN];

	log_warn("tls", "session=%s leg=server upstream=%s %s", c->session.id_hex,
		 session_upstream_text(&c->session, where, sizeof(where)), text);
	conn_refused(c, MREFUSE_TLS);
	conn_fail(c, sqlstate, text, reason);
}

/* Read the server's one-byte answer, and check that nothing came after it. */
static bool conn_tls_server_answer(struct conn *c)
{
	struct transport *t = c->server;
	uint8_t answer, extra;
	ssize_t n;
	char text[200], host[NI_MAXHOST];
	struct tls_conn_params params = {0};
	struct transport *tt;
	int err = 0;

	if (!transport_can_read(t))
		return false;
	n = transport_read(t, &answer, 1); /* one byte, never more (CVE-2021-23222) */
	if (n == -EAGAIN)
		return false;
	if (n <= 0) {
		conn_tls_server_fail(c, SQLSTATE_CONNECTION_FAILURE,
				     "the database server closed the connection during SSL negotiation",
				     "server closed during SSL negotiation");
		return true;
	}
	if (answer == 'E') {
		/* Its text is the server's word to an SSLRequest, not to this client: never
		 * shown (a downgrade or phishing vector, as libpq treats it). */
		conn_tls_server_fail(c, SQLSTATE_CANNOT_CONNECT,
				     "the database server answered the SSL request with an error",
				     "server refused SSLRequest");
		return true;
	}
	if (answer != 'S' && answer != 'N') {
		snprintf(text, sizeof(text),
			 "received invalid response to SSL negotiation from the database server: 0x%02x",
			 answer);
		conn_tls_server_fail(c, SQLSTATE_CONNECTION_FAILURE, text, "invalid SSL response");
		return true;
	}
	/* A server says nothing more until pgwarden speaks (a ClientHello, or the
	 * StartupMessage): anything already here was injected. */
	n = transport_read(t, &extra, 1);
	if (n != -EAGAIN) {
		conn_tls_server_fail(c, SQLSTATE_CONNECTION_FAILURE,
				     n > 0 ? "received unencrypted data after SSL response"
					   : "the database server closed the connection during SSL "
					     "negotiation",
				     n > 0 ? "unencrypted data after SSL response"
					   : "server closed during SSL negotiation");
		return true;
	}
	tls_server_note_answer(c->tls, &c->session.upstream, answer == 'S', conn_now(c));
	if (answer == 'N') {
		if (c->tls->server_mode != CONFIG_TLS_SERVER_PREFER) {
			conn_tls_server_fail(c, SQLSTATE_CANNOT_CONNECT,
					     "the database server does not support SSL, but "
					     "tls.server.mode requires it",
					     "server refused TLS");
			return true;
		}
		c->server_tls_step = CONN_SERVER_TLS_NONE;
		conn_set_state(c, CONN_AUTH);
		return true;
	}
	params.host = tls_server_host(c->tls, &c->session.upstream, host, sizeof(host));
	tt = transport_tls_new(t, c->tls, TLS_LEG_SERVER, &params, NULL, 0, &err);
	if (!tt) {
		snprintf(text, sizeof(text), "could not start TLS towards the database server: %s",
			 strerror(-err));
		conn_tls_server_fail(c, SQLSTATE_CONNECTION_FAILURE, text, "TLS setup failed");
		return true;
	}
	/* Same descriptor, same loop watch; the plain transport holds none now. */
	c->server = tt;
	c->server_tls_step = CONN_SERVER_TLS_HANDSHAKE;
	return true;
}

static bool conn_tls_server_step(struct conn *c)
{
	struct session_tls *leg;
	char text[300];
	int err;

	switch (c->server_tls_step) {
	case CONN_SERVER_TLS_ASK: {
		uint8_t req[8];

		if (proto_write_ssl_request(req, sizeof(req)) != (int)sizeof(req)) {
			conn_fail(c, SQLSTATE_INTERNAL, "could not encode an SSLRequest", "internal");
			return true;
		}
		while (c->server_tls_sent < sizeof(req)) {
			ssize_t n;

			if (!transport_can_write(c->server))
				return false;
			n = transport_write(c->server, req + c->server_tls_sent,
					    sizeof(req) - c->server_tls_sent);
			if (n == -EAGAIN)
				return false;
			if (n < 0) {
				snprintf(text, sizeof(text), "could not send the SSL request to the "
					 "database server: %s", strerror((int)-n));
				conn_tls_server_fail(c, SQLSTATE_CONNECTION_FAILURE, text,
						     "server send failed");
				return true;
			}
			c->server_tls_sent += (uint8_t)n;
		}
		c->server_tls_step = CONN_SERVER_TLS_ANSWER;
		return true;
	}
	case CONN_SERVER_TLS_ANSWER:
		return conn_tls_server_answer(c);
	case CONN_SERVER_TLS_HANDSHAKE:
		break;
	default:
		return false;
	}
	if (!transport_can_write(c->server))
		return false;
	err = transport_handshake(c->server);
	if (err == -EAGAIN)
		return false;
	if (err) {
		const char *why = transport_error(c->server);

		snprintf(text, sizeof(text), "SSL connection to the database server failed: %s",
			 why ? why : strerror(-err));
		conn_tls_server_fail(c, SQLSTATE_CONNECTION_FAILURE, text,
				     "server TLS handshake failed");
		return true;
	}
	leg = session_tls_leg(&c->session, true);
	if (!leg || tls_conn_fill_session(transport_tls_conn(c->server), leg)) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return true;
	}
	log_debug("tls", "session=%s leg=server %s %s", c->session.id_hex, leg->version,
		  leg->cipher);
	if (conn_metrics(c))
		metrics_inc(conn_metrics(c), conn_mstd(c)->tls_sessions, MTLS_SERVER);
	c->server_tls_step = CONN_SERVER_TLS_NONE;
	conn_set_state(c, CONN_AUTH);
	return true;
}

bool conn_tls_negotiate(struct conn *c)
{
	switch (c->state) {
	case CONN_CLIENT_TLS:
		return conn_tls_client_step(c);
	case CONN_SERVER_TLS:
		return conn_tls_server_step(c);
	default:
		return false;
	}
}

/* ---- channel binding ------------------------------------------------------------------- */

#define SASL_PLUS "SCRAM-SHA-256-PLUS"

uint32_t conn_tls_sasl_offer(struct conn *c, const struct proto_msg *m, uint8_t *out,
			     uint32_t cap)
{
	struct proto_sasl_iter it;
	uint8_t list[256];
	size_t kept = 0;
	bool plus = false;
	const char *mech;
	int n, r;

	/* Malformed offers pass unchanged: the login's own checks refuse them. */
	if (proto_auth_sasl_begin(m, &it) != PROTO_OK)
		return 0;
	while ((r = proto_auth_sasl_next(&it, &mech)) == 1) {
		size_t len = strlen(mech);

		if (strcmp(mech, SASL_PLUS) == 0) {
			plus = true;
		} else if (kept + len + 1 < sizeof(list)) {
			memcpy(list + kept, mech, len + 1);
			kept += len + 1;
		} else {
			return 0; /* longer than any real offer */
		}
	}
	if (r < 0 || !plus || tls_binding_passes_through(transport_tls_conn(c->client),
						transport_tls_conn(c->server)))
		return 0;
	list[kept++] = '\0';
	/* A server that offers -PLUS alone leaves nothing to offer: its offer passes, and the
	 * login fails at the server as it must (an empty list is refused here, n <= 0). */
	n = proto_write_auth(out, cap, AUTH_REQ_SASL, list, kept);
	if (n <= 0)
		return 0;
	log_debug("tls", "session=%s SCRAM-SHA-256-PLUS not offered to the client: the legs do "
		  "not present the same certificate (docs/TLS.md)", c->session.id_hex);
	return (uint32_t)n;
}

void conn_tls_release(struct conn *c)
{
	tls_snapshot_unref(c->tls);
	c->tls = NULL;
}
