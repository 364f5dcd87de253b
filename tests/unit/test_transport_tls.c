/*
 * transport_tls unit tests: handshakes between pgwarden's two TLS roles, and between each
 * and a raw OpenSSL peer configured to do what pgwarden must refuse, over socketpairs.
 *
 * Nothing here blocks. A step polls each socket (0 timeout) and reports what it sees with
 * transport_note_events(), then runs an operation only when transport_can_read() /
 * transport_can_write() say it may, as the relay's loop does; a transport whose readiness
 * bookkeeping is wrong stalls, and the step budget fails the test.
 *
 * Covered: TLS 1.3 and 1.2 handshakes; payload both ways in large writes, one byte per
 * write, and through a pump that forwards one byte at a time (every record arrives in
 * pieces); a handshake step that waits for its socket edge; pending decrypted bytes;
 * close_notify both ways, and a peer that closes without it; refusals (TLS 1.1, CBC-only,
 * RSA key exchange only, DHE, renegotiation from either side, ALPN wrong or missing for
 * direct SSL, client certificates expired, revoked, under an expired CRL, untrusted, for
 * the wrong purpose, with a NUL in the CN, with two CNs, missing when required, too deep
 * a chain); server verification (verify-ca, verify-full by name and by address, SNI and
 * ALPN offered); what a session records; channel binding and its passthrough predicate; a
 * reload with a live session; tickets and 0-RTT; and the memory an idle TLS session
 * holds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "config/config.h"
#include "relay/transport_tls.h"
#include "tls/tls.h"
#include "tls_pki.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define STEPS 20000

static char *dir;
static struct pki_cert ca, other_ca, server, server2, alice, bob_expired, carol_revoked,
	dave_untrusted, erin_server_only, nul_cn, two_cn, chain_leaf4, chain_leaf5;
static struct pki_cert inter[5];
static char ca_pem[256], server_pem[256], server_key[256], server2_pem[256],
	server2_key[256], crl_pem[256], crl_expired_pem[256], alice_pem[256], alice_key[256];

/* ---- fixtures ---------------------------------------------------------------------- */

static const char *path(const char *name, char *buf, size_t n)
{
	return pki_path(dir, name, buf, n);
}

static struct pki_cert client(const char *cn, const struct pki_cert *issuer, enum pki_usage u,
			      bool expired)
{
	struct pki_spec spec = {.subject = {{"CN", cn}}, .usage = u, .expired = expired};

	return pki_make(&spec, issuer);
}

/* More idle sessions than a secure heap sized for the keys alone (64 KiB) held: each
 * keeps its key share's private half there until it ends. */
enum { IDLE_N = 1200, IDLE_QUERY = 200, IDLE_ROWS = 8000 };
#define SECURE_HEAP_SESSIONS (IDLE_N + 64)

static int group_setup(void **state)
{
	struct pki_spec ca_spec = {.subject = {{"CN", "Test CA"}}, .usage = PKI_CA};
	struct pki_spec other_spec = {.subject = {{"CN", "Other CA"}}, .usage = PKI_CA};
	struct pki_spec srv = {.subject = {{"CN", "db.example.com"}},
			       .san = {{"DNS", "db.example.com"}, {"IP", "127.0.0.1"}},
			       .usage = PKI_SERVER};
	struct pki_spec srv2 = {.subject = {{"CN", "db2.example.com"}},
				.san = {{"DNS", "db2.example.com"}}, .usage = PKI_SERVER};
	struct pki_spec nul = {.subject = {{"CN", "alice\0.evil", 11}}, .usage = PKI_CLIENT};
	struct pki_spec two = {.subject = {{"CN", "alice"}, {"CN", "root"}}, .usage = PKI_CLIENT};
	X509 *chain[6];
	X509_CRL *crl;
	long revoked;
	char p[256], err[TLS_ERR_MAX], warning[256];
	struct rlimit nofile;

	/* As the daemon does, first: the secure heap, sized for the sessions these tests hold
	 * at once (test_idle_memory's, each with a socket pair). */
	if (tls_process_init(false, SECURE_HEAP_SESSIONS, warning, sizeof(warning), err,
			     sizeof(err)))
		fail_msg("tls_process_init: %s", err);
	if (warning[0])
		print_message("%s\n", warning);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &nofile), 0);
	nofile.rlim_cur = nofile.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &nofile), 0);
	if (nofile.rlim_cur < 2 * IDLE_N + 64)
		fail_msg("test_idle_memory needs %d descriptors, the hard limit is %llu", 2 * IDLE_N + 64,
			 (unsigned long long)nofile.rlim_cur);

	dir = pki_mkdir();
	ca = pki_make(&ca_spec, NULL);
	other_ca = pki_make(&other_spec, NULL);
	server = pki_make(&srv, &ca);
	server2 = pki_make(&srv2, &ca);
	alice = client("alice", &ca, PKI_CLIENT, false);
	bob_expired = client("bob", &ca, PKI_CLIENT, true);
	carol_revoked = client("carol", &ca, PKI_CLIENT, false);
	dave_untrusted = client("dave", &other_ca, PKI_CLIENT, false);
	erin_server_only = client("erin", &ca, PKI_SERVER, false);
	nul_cn = pki_make(&nul, &ca);
	two_cn = pki_make(&two, &ca);
	/* A chain of five intermediates below the CA. */
	for (int i = 0; i < 5; i++) {
		char cn[32];
		struct pki_spec s = {.usage = PKI_CA};

		snprintf(cn, sizeof(cn), "Intermediate %d", i + 1);
		s.subject[0] = (struct pki_name){"CN", cn, 0};
		inter[i] = pki_make(&s, i ? &inter[i - 1] : &ca);
	}
	chain_leaf4 = client("four", &inter[3], PKI_CLIENT, false);
	chain_leaf5 = client("five", &inter[4], PKI_CLIENT, false);

	pki_write_cert(path("ca.pem", ca_pem, sizeof(ca_pem)), ca.cert);
	pki_write_cert(path("server.pem", server_pem, sizeof(server_pem)), server.cert);
	pki_write_key(path("server.key", server_key, sizeof(server_key)), server.key);
	pki_write_cert(path("server2.pem", server2_pem, sizeof(server2_pem)), server2.cert);
	pki_write_key(path("server2.key", server2_key, sizeof(server2_key)), server2.key);
	pki_write_cert(path("alice.pem", alice_pem, sizeof(alice_pem)), alice.cert);
	pki_write_key(path("alice.key", alice_key, sizeof(alice_key)), alice.key);
	revoked = ASN1_INTEGER_get(X509_get0_serialNumber(carol_revoked.cert));
	crl = pki_crl(&ca, &revoked, 1, 86400);
	pki_write_crls(path("ca.crl", crl_pem, sizeof(crl_pem)), &crl, 1);
	X509_CRL_free(crl);
	crl = pki_crl(&ca, NULL, 0, -3600);
	pki_write_crls(path("expired.crl", crl_expired_pem, sizeof(crl_expired_pem)), &crl, 1);
	X509_CRL_free(crl);
	(void)chain;
	(void)p;
	return 0;
}

static int group_teardown(void **state)
{
	struct pki_cert *all[] = {&ca, &other_ca, &server, &server2, &alice, &bob_expired,
				  &carol_revoked, &dave_untrusted, &erin_server_only, &nul_cn,
				  &two_cn, &chain_leaf4, &chain_leaf5};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		pki_free(all[i]);
	for (int i = 0; i < 5; i++)
		pki_free(&inter[i]);
	pki_rmdir(dir);
	return 0;
}

/* A snapshot from key, value pairs over a valid base config, NULL-terminated. */
static struct tls_snapshot *snap(const char *key, ...)
{
	struct config *cfg = config_new();
	struct tls_snapshot *s;
	char err[CONFIG_ERR_MAX];
	va_list ap;

	assert_non_null(cfg);
	assert_int_equal(config_set(cfg, "listen", "127.0.0.1:6432", err, sizeof(err)), 0);
	assert_int_equal(config_set(cfg, "upstream", "127.0.0.1:5432", err, sizeof(err)), 0);
	va_start(ap, key);
	for (const char *k = key; k; k = va_arg(ap, const char *)) {
		const char *v = va_arg(ap, const char *);

		if (config_set(cfg, k, v, err, sizeof(err)))
			fail_msg("%s=%s: %s", k, v, err);
	}
	va_end(ap);
	if (config_validate(cfg, err, sizeof(err)) || tls_snapshot_build(cfg, &s, err, sizeof(err)))
		fail_msg("%s", err);
	config_unref(cfg);
	return s;
}

/* pgwarden towards clients: the server certificate, nothing asked of clients. */
static struct tls_snapshot *snap_server_role(void)
{
	return snap("tls.client.mode", "prefer", "tls.client.cert_file", server_pem,
		    "tls.client.key_file", server_key, NULL);
}

/* pgwarden towards clients with mutual TLS. */
static struct tls_snapshot *snap_mtls(const char *verify, const char *crl)
{
	if (crl)
		return snap("tls.client.mode", "require", "tls.client.cert_file", server_pem,
			    "tls.client.key_file", server_key, "tls.client.verify", verify,
			    "tls.client.ca_file", ca_pem, "tls.client.crl_file", crl, NULL);
	return snap("tls.client.mode", "require", "tls.client.cert_file", server_pem,
		    "tls.client.key_file", server_key, "tls.client.verify", verify,
		    "tls.client.ca_file", ca_pem, NULL);
}

/* ---- parties ------------------------------------------------------------------------- */

/* One end of a connection: pgwarden's transport, or a raw OpenSSL peer. */
struct party {
	struct transport *t;
	SSL *raw;
	SSL_CTX *raw_ctx;
	int fd;
	int hs;    /* 1: handshake done, 0: running, < 0: failed */
	int hs_rc; /* what the failing handshake returned */
};

static void nonblock(int fd)
{
	assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

static void socket_pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	nonblock(sv[0]);
	nonblock(sv[1]);
}

static struct party ours(int fd, struct tls_snapshot *s, enum tls_leg leg,
			 const struct tls_conn_params *p, const void *preread, size_t len)
{
	struct transport plain;
	struct party me = {.fd = fd};
	int err = 0;

	transport_sock_init(&plain, fd, false);
	me.t = transport_tls_new(&plain, s, leg, p, preread, len, &err);
	if (!me.t)
		fail_msg("transport_tls_new: %s", strerror(-err));
	assert_int_equal(plain.fd, -1); /* the socket moved */
	transport_destroy(&plain);      /* harmless now */
	return me;
}

static struct party raw_peer(int fd, SSL_CTX *ctx, bool server_side)
{
	struct party me = {.fd = fd, .raw_ctx = ctx};

	me.raw = SSL_new(ctx);
	assert_non_null(me.raw);
	SSL_set_fd(me.raw, fd);
	if (server_side)
		SSL_set_accept_state(me.raw);
	else
		SSL_set_connect_state(me.raw);
	return me;
}

static void party_free(struct party *p)
{
	if (p->t)
		transport_destroy(p->t);
	if (p->raw) {
		SSL_free(p->raw);
		close(p->fd);
	}
	SSL_CTX_free(p->raw_ctx);
	memset(p, 0, sizeof(*p));
}

/* Tell the transport what the socket is ready for, as the loop's epoll would. */
static void note(struct party *p)
{
	struct pollfd pfd = {.fd = p->t ? p->t->fd : p->fd, .events = POLLIN | POLLOUT | POLLRDHUP};

	if (p->t && poll(&pfd, 1, 0) > 0)
		transport_note_events(p->t, (uint32_t)pfd.revents);
}

static void hs_step(struct party *p)
{
	int r;

	if (p->hs)
		return;
	if (p->t) {
		note(p);
		if (!transport_can_write(p->t))
			return;
		r = transport_handshake(p->t);
		if (r == 0)
			p->hs = 1;
		else if (r != -EAGAIN)
			p->hs = -1, p->hs_rc = r;
		return;
	}
	ERR_clear_error();
	r = SSL_do_handshake(p->raw);
	if (r == 1) {
		p->hs = 1;
		return;
	}
	r = SSL_get_error(p->raw, r);
	if (r != SSL_ERROR_WANT_READ && r != SSL_ERROR_WANT_WRITE)
		p->hs = -1;
	ERR_clear_error();
}

/* Forward bytes between two sockets one at a time in each direction. */
struct pump {
	int a, b;
	bool on;
};

static void pump_one(int from, int to)
{
	char c;

	if (recv(from, &c, 1, MSG_DONTWAIT | MSG_PEEK) == 1 &&
	    send(to, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
		assert_int_equal(recv(from, &c, 1, MSG_DONTWAIT), 1);
}

static void pump_step(struct pump *pm)
{
	if (!pm || !pm->on)
		return;
	pump_one(pm->a, pm->b);
	pump_one(pm->b, pm->a);
}

/* Run both handshakes until each has finished or failed. */
static void handshake(struct party *a, struct party *b, struct pump *pm)
{
	for (int i = 0; i < STEPS && (!a->hs || !b->hs); i++) {
		hs_step(a);
		hs_step(b);
		pump_step(pm);
		/* One side failed: the other gets the alert or the close on its next steps. */
		if ((a->hs < 0 || b->hs < 0) && i > 200)
			break;
	}
}

/* A connected pair: pgwarden's server role (client leg) and its client role (server leg). */
struct pair {
	struct party server, client;
	struct pump pump;
	int extra[2];
};

static void pair_open(struct pair *pr, struct tls_snapshot *srv, struct tls_snapshot *cli,
		      const char *host, bool bytewise)
{
	int sv[2];
	struct tls_conn_params cp = {.host = host};

	memset(pr, 0, sizeof(*pr));
	socket_pair(sv);
	if (bytewise) {
		socket_pair(pr->extra);
		pr->pump = (struct pump){.a = sv[1], .b = pr->extra[0], .on = true};
		pr->server = ours(sv[0], srv, TLS_LEG_CLIENT, NULL, NULL, 0);
		pr->client = ours(pr->extra[1], cli, TLS_LEG_SERVER, &cp, NULL, 0);
	} else {
		pr->server = ours(sv[0], srv, TLS_LEG_CLIENT, NULL, NULL, 0);
		pr->client = ours(sv[1], cli, TLS_LEG_SERVER, &cp, NULL, 0);
	}
	handshake(&pr->server, &pr->client, &pr->pump);
}

static void pair_close(struct pair *pr)
{
	party_free(&pr->server);
	party_free(&pr->client);
	if (pr->pump.on) {
		close(pr->pump.a);
		close(pr->extra[0]);
	}
}

/* ---- payload ------------------------------------------------------------------------- */

/* Move n bytes from one transport to the other, writing at most chunk bytes per call. */
static void transfer(struct transport *from, struct transport *to, const uint8_t *data, size_t n,
		     size_t chunk, struct pump *pm)
{
	uint8_t *got = malloc(n);
	size_t sent = 0, recvd = 0;

	assert_non_null(got);
	for (int i = 0; i < STEPS * 10 && recvd < n; i++) {
		struct party pf = {.t = from}, pt = {.t = to};

		note(&pf);
		note(&pt);
		if (sent < n && transport_can_write(from)) {
			size_t want = n - sent < chunk ? n - sent : chunk;
			ssize_t w = transport_write(from, data + sent, want);

			if (w > 0)
				sent += (size_t)w;
			else if (w != -EAGAIN)
				fail_msg("write: %zd (%s)", w, transport_error(from));
		}
		pump_step(pm);
		while (recvd < n && transport_can_read(to)) {
			ssize_t r = transport_read(to, got + recvd, n - recvd);

			if (r == -EAGAIN)
				break;
			if (r <= 0)
				fail_msg("read: %zd (%s)", r, transport_error(to));
			recvd += (size_t)r;
		}
	}
	assert_int_equal(recvd, n);
	assert_memory_equal(got, data, n);
	free(got);
}

static void test_handshake_and_payload(void **state)
{
	struct tls_snapshot *srv = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	static uint8_t big[1 << 20];
	struct session_tls st = {0};
	struct pair pr;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + (i >> 11));
	pair_open(&pr, srv, cli, "db.example.com", false);
	assert_int_equal(pr.server.hs, 1);
	assert_int_equal(pr.client.hs, 1);
	/* Either direction, big writes (partial writes and full socket buffers). */
	transfer(pr.client.t, pr.server.t, big, sizeof(big), sizeof(big), NULL);
	transfer(pr.server.t, pr.client.t, big, sizeof(big), 70000, NULL);
	/* One byte per write: each its own record. */
	transfer(pr.client.t, pr.server.t, (const uint8_t *)"Q\0\0\0\x0dSELECT 1\0", 14, 1, NULL);
	/* What the session records. Nothing about the peer: no certificate was verified. */
	assert_int_equal(tls_conn_fill_session(transport_tls_conn(pr.server.t), &st), 0);
	assert_string_equal(st.version, "TLSv1.3");
	assert_string_equal(st.cipher, "TLS_AES_256_GCM_SHA384");
	assert_null(st.peer_identity);
	assert_null(st.peer_subject);
	assert_null(st.peer_fingerprint);
	memset(&st, 0, sizeof(st));
	/* The client role saw the server's certificate but did not verify it (require). */
	assert_int_equal(tls_conn_fill_session(transport_tls_conn(pr.client.t), &st), 0);
	assert_null(st.peer_identity);
	/* Only TLS transports have a tls_conn. */
	{
		struct transport plain;

		transport_sock_init(&plain, -1, false);
		assert_null(transport_tls_conn(&plain));
	}
	pair_close(&pr);
	tls_snapshot_unref(srv);
	tls_snapshot_unref(cli);
}

static void test_one_byte_pump(void **state)
{
	struct tls_snapshot *srv = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	uint8_t msg[3000];
	struct pair pr;

	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)i;
	/* Every byte of the handshake and of each record arrives on its own. */
	pair_open(&pr, srv, cli, "db.example.com", true);
	assert_int_equal(pr.server.hs, 1);
	assert_int_equal(pr.client.hs, 1);
	transfer(pr.client.t, pr.server.t, msg, sizeof(msg), sizeof(msg), &pr.pump);
	transfer(pr.server.t, pr.client.t, msg, sizeof(msg), 1, &pr.pump);
	pair_close(&pr);
	tls_snapshot_unref(srv);
	tls_snapshot_unref(cli);
}

/* A read before the handshake finished drives it, and waits for what it needs: a loop
 * that only reads must not spin on a transport that cannot move. */
static void test_read_drives_handshake(void **state)
{
	struct tls_snapshot *srv = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	struct party srvp, clip;
	uint8_t b[16];
	int sv[2];
	ssize_t r = -EAGAIN;

	socket_pair(sv);
	srvp = ours(sv[0], srv, TLS_LEG_CLIENT, NULL, NULL, 0);
	clip = ours(sv[1], cli, TLS_LEG_SERVER, NULL, NULL, 0);
	/* Nothing from the client yet. */
	assert_int_equal(transport_read(srvp.t, b, sizeof(b)), -EAGAIN);
	assert_int_equal(srvp.t->read_needs, TRANSPORT_READ);
	assert_false(transport_can_read(srvp.t));
	/* The client writes (its handshake first), the server only ever reads. */
	for (int i = 0; i < STEPS && r == -EAGAIN; i++) {
		note(&clip);
		if (transport_can_write(clip.t))
			(void)transport_write(clip.t, "hello", 5);
		note(&srvp);
		if (transport_can_read(srvp.t))
			r = transport_read(srvp.t, b, sizeof(b));
	}
	assert_int_equal(r, 5);
	assert_memory_equal(b, "hello", 5);
	party_free(&srvp);
	party_free(&clip);
	tls_snapshot_unref(srv);
	tls_snapshot_unref(cli);
}

/* Bytes waiting in the socket, for a transport that holds none. */
static int socket_unread(int fd)
{
	int n = -1;

	assert_int_equal(ioctl(fd, FIONREAD, &n), 0);
	return n;
}

/*
 * A handshake step reads the socket only after an edge since it was last found drained:
 * OpenSSL asks for the peer's next flight right after sending its own, when that receive
 * could only say EAGAIN. The bookkeeping must not stall: the flight that comes later brings
 * its edge, and the step then takes it.
 */
static void test_handshake_waits_for_edge(void **state)
{
	struct tls_snapshot *srv = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	struct party srvp, clip;
	int sv[2];

	socket_pair(sv);
	srvp = ours(sv[0], srv, TLS_LEG_CLIENT, NULL, NULL, 0);
	clip = ours(sv[1], cli, TLS_LEG_SERVER, NULL, NULL, 0);
	/* The client's ClientHello leaves; it waits for the answer without a receive. */
	assert_int_equal(transport_handshake(clip.t), -EAGAIN);
	assert_int_equal(clip.t->write_needs, TRANSPORT_READ);
	assert_true(socket_unread(sv[0]) > 0);
	/* The ClientHello is in the server's socket, but no edge has said so: not read. */
	assert_int_equal(transport_handshake(srvp.t), -EAGAIN);
	assert_int_equal(srvp.t->write_needs, TRANSPORT_READ);
	assert_false(transport_can_write(srvp.t));
	assert_true(socket_unread(sv[0]) > 0);
	assert_int_equal(socket_unread(sv[1]), 0);
	/* Its edge: the server takes it and answers with its flight. */
	note(&srvp);
	assert_true(transport_can_write(srvp.t));
	assert_int_equal(transport_handshake(srvp.t), -EAGAIN);
	assert_int_equal(socket_unread(sv[0]), 0);
	assert_true(socket_unread(sv[1]) > 0);
	/* From here on, steps driven by edges alone finish both handshakes. */
	handshake(&srvp, &clip, NULL);
	assert_int_equal(srvp.hs, 1);
	assert_int_equal(clip.hs, 1);
	party_free(&srvp);
	party_free(&clip);
	tls_snapshot_unref(srv);
	tls_snapshot_unref(cli);
}

/*
 * Two records in the socket at once. Under edge-triggered epoll the second must be served
 * with no further socket event (read-ahead took it with the first), and once both are read
 * the leg is drained: no receive that could only say EAGAIN, the socket's own rule.
 */
static void test_read_ahead_drain(void **state)
{
	struct tls_snapshot *srv = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	uint8_t got[64];
	struct pair pr;
	ssize_t r = -EAGAIN;

	pair_open(&pr, srv, cli, NULL, false);
	assert_int_equal(transport_write(pr.server.t, "first", 5), 5);
	assert_int_equal(transport_write(pr.server.t, "second", 6), 6);
	note(&pr.client);
	for (int i = 0; i < STEPS && r == -EAGAIN; i++) {
		r = transport_read(pr.client.t, got, sizeof(got));
		note(&pr.client);
	}
	assert_int_equal(r, 5);
	assert_memory_equal(got, "first", 5);
	/* No event from here on: the second record is already inside the transport. */
	pr.client.t->ready &= ~TRANSPORT_READ;
	assert_true(transport_can_read(pr.client.t));
	assert_int_equal(transport_read(pr.client.t, got, sizeof(got)), 6);
	assert_memory_equal(got, "second", 6);
	assert_false(transport_can_read(pr.client.t));
	assert_int_equal(pr.client.t->read_needs, TRANSPORT_READ);
	/* The next record arrives with its edge. */
	assert_int_equal(transport_write(pr.server.t, "third", 5), 5);
	note(&pr.client);
	assert_true(transport_can_read(pr.client.t));
	assert_int_equal(transport_read(pr.client.t, got, sizeof(got)), 5);
	assert_memory_equal(got, "third", 5);
	pair_close(&pr);
	tls_snapshot_unref(srv);
	tls_snapshot_unref(cli);
}

static void test_pending(void **state)
{
	struct tls_snapshot *srv = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	uint8_t msg[100], got[100];
	struct pair pr;
	ssize_t r;

	memset(msg, 'x', sizeof(msg));
	pair_open(&pr, srv, cli, NULL, false);
	assert_int_equal(transport_write(pr.server.t, msg, sizeof(msg)), (ssize_t)sizeof(msg));
	note(&pr.client);
	assert_true(transport_can_read(pr.client.t));
	/* Drain the one record into OpenSSL; take 10 bytes of it. */
	for (int i = 0; i < STEPS; i++) {
		r = transport_read(pr.client.t, got, 10);
		if (r != -EAGAIN)
			break;
		note(&pr.client);
	}
	assert_int_equal(r, 10);
	/* 90 decrypted bytes wait inside the transport: readable with no socket event. */
	assert_int_equal(pr.client.t->ops->pending(pr.client.t), 90);
	pr.client.t->ready = 0;
	pr.client.t->read_needs = TRANSPORT_READ;
	assert_true(transport_can_read(pr.client.t));
	assert_int_equal(transport_read(pr.client.t, got + 10, 90), 90);
	assert_int_equal(pr.client.t->ops->pending(pr.client.t), 0);
	assert_memory_equal(got, msg, sizeof(msg));
	/* Drained: a read says so and waits for the socket. */
	assert_int_equal(transport_read(pr.client.t, got, 1), -EAGAIN);
	assert_int_equal(pr.client.t->read_needs, TRANSPORT_READ);
	assert_false(pr.client.t->ready & TRANSPORT_READ);
	assert_false(transport_can_read(pr.client.t));
	/* An error something else left on this thread's queue is not this leg's: the read
	 * still waits, and the queue is empty after it. */
	ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
	assert_int_equal(transport_read(pr.client.t, got, 1), -EAGAIN);
	assert_int_equal(ERR_peek_error(), 0);
	pair_close(&pr);
	tls_snapshot_unref(srv);
	tls_snapshot_unref(cli);
}

/* Read until something other than -EAGAIN. */
static ssize_t read_settled(struct party *p, void *buf, size_t n)
{
	ssize_t r = -EAGAIN;

	for (int i = 0; i < STEPS && r == -EAGAIN; i++) {
		note(p);
		if (transport_can_read(p->t))
			r = transport_read(p->t, buf, n);
	}
	return r;
}

static void test_shutdown(void **state)
{
	struct tls_snapshot *srv = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	struct pair pr;
	char b;

	/* The client role ends: the server role reads end of stream, and the other way. */
	pair_open(&pr, srv, cli, NULL, false);
	assert_int_equal(transport_shutdown(pr.client.t), 0);
	assert_int_equal(read_settled(&pr.server, &b, 1), 0);
	assert_int_equal(transport_shutdown(pr.server.t), 0);
	assert_int_equal(read_settled(&pr.client, &b, 1), 0);
	/* Writing after the peer's close_notify: nobody would read it. */
	assert_int_equal(transport_write(pr.client.t, "x", 1), -EPIPE);
	pair_close(&pr);

	/* A peer that closes the socket without close_notify truncated the stream. */
	pair_open(&pr, srv, cli, NULL, false);
	{
		int fd = pr.client.t->fd;

		pr.client.t->fd = -1;
		close(fd);
	}
	assert_int_equal(read_settled(&pr.server, &b, 1), -ECONNRESET);
	assert_string_equal(transport_error(pr.server.t),
			    "TLS read failed: the peer closed the connection without a TLS close_notify");
	/* After a failure no close_notify is attempted; the socket end still works. */
	assert_int_equal(transport_shutdown(pr.server.t), 0);
	pair_close(&pr);
	tls_snapshot_unref(srv);
	tls_snapshot_unref(cli);
}

/* ---- refusals by a raw client ---------------------------------------------------------- */

struct raw_client_opts {
	int max_version;       /* 0: any */
	int min_version;
	const char *ciphers;   /* TLS 1.2 list; NULL: OpenSSL's default */
	const char *alpn;      /* wire format; NULL: none */
	size_t alpn_len;
	X509 *cert;            /* client certificate and key */
	EVP_PKEY *key;
	X509 *chain[5];        /* intermediates sent after cert */
};

static SSL_CTX *raw_client_ctx(const struct raw_client_opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	assert_non_null(ctx);
	if (o->ciphers) {
		/* SECLEVEL=0 so the client even offers what OpenSSL now refuses by default. */
		char list[512];

		snprintf(list, sizeof(list), "%s:@SECLEVEL=0", o->ciphers);
		assert_int_equal(SSL_CTX_set_cipher_list(ctx, list), 1);
	}
	if (o->min_version)
		SSL_CTX_set_min_proto_version(ctx, o->min_version);
	if (o->max_version)
		SSL_CTX_set_max_proto_version(ctx, o->max_version);
	if (o->alpn)
		assert_int_equal(SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)o->alpn,
							 (unsigned)o->alpn_len),
				 0);
	if (o->cert) {
		assert_int_equal(SSL_CTX_use_certificate(ctx, o->cert), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(ctx, o->key), 1);
		for (int i = 0; i < 5 && o->chain[i]; i++)
			assert_int_equal(SSL_CTX_add1_chain_cert(ctx, o->chain[i]), 1);
	}
	return ctx;
}

/*
 * Did a raw peer learn that the other side refused it? In TLS 1.3 a client finishes its
 * handshake before the server has judged its certificate; the server's alert then ends
 * the client's first read.
 */
static bool raw_told(struct party *p)
{
	char b;

	if (p->hs < 0)
		return true;
	for (int i = 0; i < STEPS; i++) {
		int r = SSL_read(p->raw, &b, 1), e = SSL_get_error(p->raw, r);

		ERR_clear_error();
		if (r > 0)
			return false;
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
			return true;
	}
	return false;
}

/*
 * A raw client against pgwarden's server role from snapshot s. Returns the server party's
 * outcome (1 accepted, < 0 refused) and its error text in why.
 */
static int against_server_role(struct tls_snapshot *s, const struct raw_client_opts *o,
			       bool direct, char *why, size_t n, struct session_tls *st)
{
	struct tls_conn_params p = {.direct = direct};
	struct party srv, cli;
	int sv[2], hs;

	socket_pair(sv);
	srv = ours(sv[0], s, TLS_LEG_CLIENT, &p, NULL, 0);
	cli = raw_peer(sv[1], raw_client_ctx(o), false);
	handshake(&srv, &cli, NULL);
	hs = srv.hs;
	snprintf(why, n, "%s", transport_error(srv.t) ? transport_error(srv.t) : "");
	if (hs == 1 && st)
		assert_int_equal(tls_conn_fill_session(transport_tls_conn(srv.t), st), 0);
	if (hs == 1)
		assert_int_equal(cli.hs, 1);
	else
		assert_true(raw_told(&cli)); /* the client was told, not left hanging */
	party_free(&srv);
	party_free(&cli);
	return hs;
}

static void expect_refused(struct tls_snapshot *s, const struct raw_client_opts *o, bool direct,
			   const char *want)
{
	char why[256];
	int hs = against_server_role(s, o, direct, why, sizeof(why), NULL);

	if (hs != -1 || strcmp(why, want) != 0)
		fail_msg("handshake %d, why \"%s\"; want refused: \"%s\"", hs, why, want);
}

static void test_refuse_protocols_and_ciphers(void **state)
{
	struct tls_snapshot *s = snap_server_role();
	char why[256];

	expect_refused(s, &(struct raw_client_opts){.max_version = TLS1_1_VERSION,
						    .ciphers = "ALL"},
		       false, "TLS handshake failed: unsupported protocol");
	expect_refused(s, &(struct raw_client_opts){.max_version = TLS1_VERSION, .ciphers = "ALL"},
		       false, "TLS handshake failed: unsupported protocol");
	/* TLS 1.2 with nothing but CBC, RSA key exchange, or finite-field DHE. */
	expect_refused(s, &(struct raw_client_opts){.max_version = TLS1_2_VERSION,
						    .ciphers = "ECDHE-ECDSA-AES128-SHA256:"
							       "ECDHE-ECDSA-AES256-SHA384:"
							       "ECDHE-ECDSA-AES128-SHA"},
		       false, "TLS handshake failed: no shared cipher");
	expect_refused(s, &(struct raw_client_opts){.max_version = TLS1_2_VERSION,
						    .ciphers = "AES128-GCM-SHA256:AES256-GCM-SHA384"},
		       false, "TLS handshake failed: no shared cipher");
	expect_refused(s, &(struct raw_client_opts){.max_version = TLS1_2_VERSION,
						    .ciphers = "DHE-RSA-AES128-GCM-SHA256"},
		       false, "TLS handshake failed: no shared cipher");
	/* TLS 1.2 with ECDHE + AEAD is fine. */
	{
		struct session_tls st = {0};

		assert_int_equal(against_server_role(s,
						     &(struct raw_client_opts){
							     .max_version = TLS1_2_VERSION},
						     false, why, sizeof(why), &st),
				 1);
		assert_string_equal(st.version, "TLSv1.2");
		assert_string_equal(st.cipher, "ECDHE-ECDSA-AES256-GCM-SHA384");
	}
	tls_snapshot_unref(s);
	/* tls.min_version TLSv1.3 refuses TLS 1.2 too. */
	s = snap("tls.client.mode", "prefer", "tls.client.cert_file", server_pem,
		 "tls.client.key_file", server_key, "tls.min_version", "TLSv1.3", NULL);
	expect_refused(s, &(struct raw_client_opts){.max_version = TLS1_2_VERSION}, false,
		       "TLS handshake failed: unsupported protocol");
	tls_snapshot_unref(s);
}

static void test_alpn(void **state)
{
	static const char pg[] = "\x0apostgresql", http[] = "\x08http/1.1",
			  both[] = "\x08http/1.1\x0apostgresql";
	struct tls_snapshot *s = snap_server_role();
	char why[256];

	/* After an SSLRequest ALPN is optional, but if offered it must name postgresql. */
	assert_int_equal(against_server_role(s, &(struct raw_client_opts){0}, false, why,
					     sizeof(why), NULL),
			 1);
	assert_int_equal(against_server_role(s, &(struct raw_client_opts){.alpn = pg,
									  .alpn_len = 11},
					     false, why, sizeof(why), NULL),
			 1);
	expect_refused(s, &(struct raw_client_opts){.alpn = http, .alpn_len = 9}, false,
		       "the client offered ALPN without \"postgresql\"");
	/* Direct SSL: ALPN postgresql is required. */
	expect_refused(s, &(struct raw_client_opts){0}, true,
		       "direct TLS connection without ALPN \"postgresql\"");
	expect_refused(s, &(struct raw_client_opts){.alpn = http, .alpn_len = 9}, true,
		       "the client offered ALPN without \"postgresql\"");
	assert_int_equal(against_server_role(s, &(struct raw_client_opts){.alpn = pg,
									  .alpn_len = 11},
					     true, why, sizeof(why), NULL),
			 1);
	assert_int_equal(against_server_role(s, &(struct raw_client_opts){.alpn = both,
									  .alpn_len = 20},
					     true, why, sizeof(why), NULL),
			 1);
	tls_snapshot_unref(s);
}

/* Direct SSL: the relay read the first bytes of the ClientHello before it knew; they are
 * handed to the transport and the handshake carries on from the socket. */
static void test_direct_preread(void **state)
{
	struct tls_snapshot *s = snap_server_role();
	struct raw_client_opts o = {.alpn = "\x0apostgresql", .alpn_len = 11};
	uint8_t first[7];
	struct party srv, cli;
	int sv[2];

	socket_pair(sv);
	cli = raw_peer(sv[1], raw_client_ctx(&o), false);
	hs_step(&cli); /* the ClientHello goes out */
	for (int i = 0; i < 100 && recv(sv[0], first, sizeof(first), MSG_PEEK) < 7; i++)
		usleep(1000);
	assert_int_equal(recv(sv[0], first, sizeof(first), 0), 7);
	assert_int_equal(first[0], 0x16); /* a handshake record: proto_startup_is_tls() */
	srv = ours(sv[0], s, TLS_LEG_CLIENT, &(struct tls_conn_params){.direct = true}, first,
		   sizeof(first));
	assert_int_equal(srv.t->ops->pending(srv.t), 7);
	handshake(&srv, &cli, NULL);
	assert_int_equal(srv.hs, 1);
	assert_int_equal(cli.hs, 1);
	assert_int_equal(srv.t->ops->pending(srv.t), 0);
	party_free(&srv);
	party_free(&cli);
	{
		struct transport plain;
		int err = 0;

		transport_sock_init(&plain, 0, false);
		assert_null(transport_tls_new(&plain, s, TLS_LEG_CLIENT, NULL, first,
					      TRANSPORT_TLS_PREREAD_MAX + 1, &err));
		assert_int_equal(err, -EMSGSIZE);
		assert_int_equal(plain.fd, 0); /* nothing taken on failure */
		/* A leg that is disable has no context to make a connection from. */
		struct tls_snapshot *off = snap("tls.server.mode", "disable", NULL);

		transport_sock_init(&plain, 0, false);
		assert_null(transport_tls_new(&plain, off, TLS_LEG_SERVER, NULL, NULL, 0, &err));
		assert_int_equal(err, -ENOTCONN);
		assert_null(transport_tls_new(&plain, off, TLS_LEG_CLIENT, NULL, NULL, 0, &err));
		assert_int_equal(err, -ENOTCONN);
		assert_int_equal(plain.fd, 0);
		tls_snapshot_unref(off);
	}
	tls_snapshot_unref(s);
}

static void test_renegotiation(void **state)
{
	struct tls_snapshot *s = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	struct raw_client_opts o = {.max_version = TLS1_2_VERSION};
	struct party srv, raw;
	char b[16];
	int sv[2];

	/* A client that asks to renegotiate TLS 1.2 loses its connection. */
	socket_pair(sv);
	srv = ours(sv[0], s, TLS_LEG_CLIENT, NULL, NULL, 0);
	raw = raw_peer(sv[1], raw_client_ctx(&o), false);
	handshake(&srv, &raw, NULL);
	assert_int_equal(srv.hs, 1);
	assert_int_equal(SSL_renegotiate(raw.raw), 1);
	(void)SSL_do_handshake(raw.raw); /* sends the new ClientHello */
	ERR_clear_error();
	assert_int_equal(read_settled(&srv, b, sizeof(b)), -EPROTO);
	assert_string_equal(transport_error(srv.t), "the client tried to renegotiate TLS");
	assert_int_equal(transport_write(srv.t, "x", 1), -EPROTO);
	party_free(&srv);
	party_free(&raw);

	/* A server that asks pgwarden's client role to renegotiate (HelloRequest) too. */
	{
		SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

		assert_int_equal(SSL_CTX_use_certificate(ctx, server.cert), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(ctx, server.key), 1);
		SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
		socket_pair(sv);
		raw = raw_peer(sv[0], ctx, true);
		srv = ours(sv[1], cli, TLS_LEG_SERVER, NULL, NULL, 0);
		handshake(&srv, &raw, NULL);
		assert_int_equal(srv.hs, 1);
		assert_int_equal(SSL_renegotiate(raw.raw), 1);
		(void)SSL_do_handshake(raw.raw); /* HelloRequest */
		ERR_clear_error();
		assert_int_equal(read_settled(&srv, b, sizeof(b)), -EPROTO);
		assert_string_equal(transport_error(srv.t), "the server tried to renegotiate TLS");
		party_free(&srv);
		party_free(&raw);
	}
	tls_snapshot_unref(s);
	tls_snapshot_unref(cli);
}

/* ---- client certificates ------------------------------------------------------------- */

static void test_client_certificates(void **state)
{
	struct tls_snapshot *req = snap_mtls("required", crl_pem), *opt = snap_mtls("optional", crl_pem);
	struct tls_snapshot *nocrl = snap_mtls("required", NULL);
	struct tls_snapshot *old_crl = snap_mtls("required", crl_expired_pem);
	struct session_tls st = {0};
	char why[256], fp[SESSION_FINGERPRINT_HEXLEN + 1];

#define WITH(c) (&(struct raw_client_opts){.cert = (c).cert, .key = (c).key})
	/* A valid certificate: the session knows who it is. */
	assert_int_equal(against_server_role(req, WITH(alice), false, why, sizeof(why), &st), 1);
	assert_string_equal(st.peer_identity, "alice");
	assert_string_equal(st.peer_subject, "CN=alice");
	assert_int_equal(tls_cert_fingerprint(alice.cert, fp), 0);
	assert_string_equal(st.peer_fingerprint, fp);
	free(st.peer_identity);
	free(st.peer_fingerprint);
	free(st.peer_subject);
	memset(&st, 0, sizeof(st));
	expect_refused(req, WITH(bob_expired), false,
		       "client certificate refused: certificate has expired (depth 0)");
	expect_refused(req, WITH(carol_revoked), false,
		       "client certificate refused: certificate revoked (depth 0)");
	expect_refused(old_crl, WITH(alice), false,
		       "client certificate refused: CRL has expired (depth 0)");
	expect_refused(req, WITH(dave_untrusted), false,
		       "client certificate refused: unable to get local issuer certificate (depth 0)");
	expect_refused(req, WITH(erin_server_only), false,
		       "client certificate refused: unsuitable certificate purpose (depth 0)");
	expect_refused(req, WITH(nul_cn), false,
		       "client certificate refused: a common name with a NUL byte or a control character");
	expect_refused(req, WITH(two_cn), false,
		       "client certificate refused: more than one common name");
	expect_refused(req, &(struct raw_client_opts){0}, false,
		       "TLS handshake failed: peer did not return a certificate");
	/* optional: no certificate is fine, a bad one is not. */
	assert_int_equal(against_server_role(opt, &(struct raw_client_opts){0}, false, why,
					     sizeof(why), &st),
			 1);
	assert_null(st.peer_identity);
	expect_refused(opt, WITH(bob_expired), false,
		       "client certificate refused: certificate has expired (depth 0)");
	/* Chains: four intermediates is the most. */
	{
		struct raw_client_opts four = {.cert = chain_leaf4.cert, .key = chain_leaf4.key,
					       .chain = {inter[3].cert, inter[2].cert, inter[1].cert,
							 inter[0].cert}};
		struct raw_client_opts five = {.cert = chain_leaf5.cert, .key = chain_leaf5.key,
					       .chain = {inter[4].cert, inter[3].cert, inter[2].cert,
							 inter[1].cert, inter[0].cert}};

		assert_int_equal(against_server_role(nocrl, &four, false, why, sizeof(why), &st), 1);
		assert_string_equal(st.peer_identity, "four");
		free(st.peer_identity);
		free(st.peer_fingerprint);
		free(st.peer_subject);
		memset(&st, 0, sizeof(st));
		expect_refused(nocrl, &five, false,
			       "client certificate refused: certificate chain too long (depth 5)");
	}
#undef WITH
	tls_snapshot_unref(req);
	tls_snapshot_unref(opt);
	tls_snapshot_unref(nocrl);
	tls_snapshot_unref(old_crl);
}

/* ---- pgwarden's client role against a raw server -------------------------------------- */

struct raw_server_seen {
	char sni[256];
	uint8_t alpn[64];
	unsigned alpn_len;
};

static int seen_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			const unsigned char *in, unsigned int inlen, void *arg)
{
	struct raw_server_seen *seen = arg;

	memcpy(seen->alpn, in, inlen < sizeof(seen->alpn) ? inlen : sizeof(seen->alpn));
	seen->alpn_len = inlen;
	return SSL_TLSEXT_ERR_NOACK;
}

static int seen_sni_cb(SSL *ssl, int *al, void *arg)
{
	struct raw_server_seen *seen = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	snprintf(seen->sni, sizeof(seen->sni), "%s", name ? name : "");
	return SSL_TLSEXT_ERR_OK;
}

/* pgwarden's client role (snapshot s, host) against a raw server presenting c (signed by
 * issuer chain). Returns the client role's outcome; its error in why. */
static int against_raw_server(struct tls_snapshot *s, const char *host, const struct pki_cert *c,
			      struct raw_server_seen *seen, char *why, size_t n)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	struct tls_conn_params p = {.host = host};
	struct party us, raw;
	int sv[2], hs;

	assert_int_equal(SSL_CTX_use_certificate(ctx, c->cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, c->key), 1);
	SSL_CTX_set_alpn_select_cb(ctx, seen_alpn_cb, seen);
	SSL_CTX_set_tlsext_servername_callback(ctx, seen_sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, seen);
	socket_pair(sv);
	raw = raw_peer(sv[0], ctx, true);
	us = ours(sv[1], s, TLS_LEG_SERVER, &p, NULL, 0);
	handshake(&us, &raw, NULL);
	hs = us.hs;
	snprintf(why, n, "%s", transport_error(us.t) ? transport_error(us.t) : "");
	party_free(&us);
	party_free(&raw);
	return hs;
}

static void test_server_verification(void **state)
{
	struct tls_snapshot *full = snap("tls.server.mode", "verify-full", "tls.server.ca_file",
					 ca_pem, NULL);
	struct tls_snapshot *vca = snap("tls.server.mode", "verify-ca", "tls.server.ca_file",
					ca_pem, NULL);
	struct tls_snapshot *req = snap("tls.server.mode", "require", NULL);
	struct tls_snapshot *named = snap("tls.server.mode", "verify-full", "tls.server.ca_file",
					  ca_pem, "tls.server.server_name", "db.example.com", NULL);
	struct raw_server_seen seen = {0};
	char why[256];

	assert_int_equal(against_raw_server(full, "db.example.com", &server, &seen, why, sizeof(why)), 1);
	/* SNI with the name, ALPN postgresql offered. */
	assert_string_equal(seen.sni, "db.example.com");
	assert_int_equal(seen.alpn_len, 11);
	assert_memory_equal(seen.alpn, "\x0apostgresql", 11);
	assert_int_equal(against_raw_server(full, "other.example.com", &server, &seen, why, sizeof(why)), -1);
	assert_string_equal(why, "server certificate refused: hostname mismatch (depth 0)");
	/* By address: an IP SAN, and no SNI (an address is not a host name). */
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(against_raw_server(full, "127.0.0.1", &server, &seen, why, sizeof(why)), 1);
	assert_string_equal(seen.sni, "");
	assert_int_equal(against_raw_server(full, "10.0.0.9", &server, &seen, why, sizeof(why)), -1);
	assert_string_equal(why, "server certificate refused: IP address mismatch (depth 0)");
	/* verify-ca checks the chain, not the name; an untrusted server is refused. */
	assert_int_equal(against_raw_server(vca, "other.example.com", &server, &seen, why, sizeof(why)), 1);
	assert_int_equal(against_raw_server(vca, "db.example.com", &dave_untrusted, &seen, why,
					    sizeof(why)),
			 -1);
	assert_string_equal(why,
			    "server certificate refused: unable to get local issuer certificate (depth 0)");
	/* A server certificate with two CNs or a client-only one is refused by a verifying
	 * leg... */
	{
		struct pki_spec two = {.subject = {{"CN", "db.example.com"}, {"CN", "evil"}},
				       .usage = PKI_SERVER};
		struct pki_cert c = pki_make(&two, &ca);

		assert_int_equal(against_raw_server(vca, "db.example.com", &c, &seen, why,
						    sizeof(why)),
				 -1);
		assert_string_equal(why, "server certificate refused: more than one common name");
		pki_free(&c);
	}
	assert_int_equal(against_raw_server(vca, "db.example.com", &alice, &seen, why, sizeof(why)), -1);
	assert_string_equal(why, "server certificate refused: unsuitable certificate purpose (depth 0)");
	/* ...and require encrypts without checking who answers, as libpq's does. */
	assert_int_equal(against_raw_server(req, "db.example.com", &dave_untrusted, &seen, why,
					    sizeof(why)),
			 1);
	/* tls.server.server_name is what the core passes as host when it is set. */
	assert_int_equal(against_raw_server(named, named->server_name, &server, &seen, why,
					    sizeof(why)),
			 1);
	{
		struct transport plain;
		int err = 0;

		/* verify-full with nothing to verify against is refused up front. */
		transport_sock_init(&plain, 0, false);
		assert_null(transport_tls_new(&plain, full, TLS_LEG_SERVER, NULL, NULL, 0, &err));
		assert_int_equal(err, -EINVAL);
	}
	tls_snapshot_unref(full);
	tls_snapshot_unref(vca);
	tls_snapshot_unref(req);
	tls_snapshot_unref(named);
}

/* ---- channel binding ------------------------------------------------------------------ */

static void test_channel_binding(void **state)
{
	struct tls_snapshot *srv = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	uint8_t a[TLS_CB_HASH_MAX], b[TLS_CB_HASH_MAX], want[TLS_CB_HASH_MAX];
	size_t alen, blen, wlen;
	struct pair client_leg, server_leg;

	/* The client leg: a client connected to pgwarden (here: pgwarden's client role). */
	pair_open(&client_leg, srv, cli, NULL, false);
	/* The server leg: pgwarden connected to a server that presents the same certificate
	 * (here: another pair whose server role uses the same snapshot). */
	pair_open(&server_leg, srv, cli, NULL, false);
	assert_int_equal(tls_cert_end_point_hash(server.cert, want, &wlen), 0);
	assert_int_equal(tls_conn_channel_binding(transport_tls_conn(client_leg.server.t), a, &alen), 0);
	assert_int_equal(tls_conn_channel_binding(transport_tls_conn(server_leg.client.t), b, &blen), 0);
	assert_int_equal(alen, wlen);
	assert_memory_equal(a, want, wlen);
	assert_int_equal(blen, wlen);
	assert_memory_equal(b, want, wlen);
	assert_true(tls_binding_passes_through(transport_tls_conn(client_leg.server.t),
					       transport_tls_conn(server_leg.client.t)));
	/* Legs the wrong way round, or a plaintext upstream: no. */
	assert_false(tls_binding_passes_through(transport_tls_conn(server_leg.client.t),
						transport_tls_conn(client_leg.server.t)));
	assert_false(tls_binding_passes_through(transport_tls_conn(client_leg.server.t), NULL));
	pair_close(&server_leg);
	/* A server with another certificate: the client would bind to the wrong hash. */
	{
		struct tls_snapshot *srv2 = snap("tls.client.mode", "prefer", "tls.client.cert_file",
						 server2_pem, "tls.client.key_file", server2_key, NULL);

		pair_open(&server_leg, srv2, cli, NULL, false);
		assert_false(tls_binding_passes_through(transport_tls_conn(client_leg.server.t),
							transport_tls_conn(server_leg.client.t)));
		pair_close(&server_leg);
		tls_snapshot_unref(srv2);
	}
	pair_close(&client_leg);
	tls_snapshot_unref(srv);
	tls_snapshot_unref(cli);
}

/* ---- reload with a live session ------------------------------------------------------- */

static void test_reload_keeps_live_session(void **state)
{
	struct tls_snapshot *a = snap_server_role(), *cli = snap("tls.server.mode", "require", NULL);
	struct tls_snapshot *b = snap("tls.client.mode", "prefer", "tls.client.cert_file",
				      server2_pem, "tls.client.key_file", server2_key, NULL);
	struct tls_store st;
	struct tls_snapshot *held;
	struct pair live, fresh;
	char fp2[SESSION_FINGERPRINT_HEXLEN + 1];
	X509 *seen;

	tls_store_init(&st);
	tls_store_publish(&st, a);
	held = tls_store_acquire(&st);
	pair_open(&live, held, cli, NULL, false);
	tls_snapshot_unref(held); /* even the session's reference goes: the SSL keeps its ctx */
	tls_store_publish(&st, b); /* SIGHUP: a is freed now */
	transfer(live.client.t, live.server.t, (const uint8_t *)"still here", 10, 10, NULL);
	transfer(live.server.t, live.client.t, (const uint8_t *)"and here", 8, 8, NULL);
	held = tls_store_acquire(&st);
	pair_open(&fresh, held, cli, NULL, false);
	seen = SSL_get0_peer_certificate(transport_tls_conn(fresh.client.t)->ssl);
	assert_int_equal(tls_cert_fingerprint(server2.cert, fp2), 0);
	{
		char got[SESSION_FINGERPRINT_HEXLEN + 1];

		assert_int_equal(tls_cert_fingerprint(seen, got), 0);
		assert_string_equal(got, fp2);
	}
	assert_int_equal(transport_shutdown(live.client.t), 0);
	pair_close(&live);
	pair_close(&fresh);
	tls_snapshot_unref(held);
	tls_store_destroy(&st);
	tls_snapshot_unref(cli);
}

/* ---- resumption ----------------------------------------------------------------------- */

/* Connect a raw TLS 1.3 client (resuming sess when given) to pgwarden's server role; the
 * session it ends with (caller frees), and whether it resumed. */
static SSL_SESSION *connect_resume(struct tls_snapshot *s, SSL_SESSION *sess, bool *reused)
{
	SSL_CTX *ctx = raw_client_ctx(&(struct raw_client_opts){0});
	struct party srv, cli;
	SSL_SESSION *out;
	char b;
	int sv[2];

	socket_pair(sv);
	srv = ours(sv[0], s, TLS_LEG_CLIENT, NULL, NULL, 0);
	cli = raw_peer(sv[1], ctx, false);
	if (sess)
		assert_int_equal(SSL_set_session(cli.raw, sess), 1);
	handshake(&srv, &cli, NULL);
	assert_int_equal(srv.hs, 1);
	/* TLS 1.3 tickets arrive after the handshake: a byte each way brings them in. */
	assert_int_equal(transport_write(srv.t, "x", 1), 1);
	for (int i = 0; i < STEPS && SSL_read(cli.raw, &b, 1) != 1; i++)
		ERR_clear_error();
	*reused = SSL_session_reused(cli.raw);
	out = SSL_get1_session(cli.raw);
	/* A clean close: OpenSSL voids a session whose connection was dropped. */
	(void)SSL_shutdown(cli.raw);
	ERR_clear_error();
	party_free(&srv);
	party_free(&cli);
	return out;
}

static void test_tickets(void **state)
{
	struct tls_snapshot *off = snap_server_role();
	struct tls_snapshot *on = snap("tls.client.mode", "prefer", "tls.client.cert_file",
				       server_pem, "tls.client.key_file", server_key,
				       "tls.session_tickets", "true", NULL);
	struct tls_snapshot *on2 = snap("tls.client.mode", "prefer", "tls.client.cert_file",
					server_pem, "tls.client.key_file", server_key,
					"tls.session_tickets", "true", NULL);
	SSL_SESSION *s1, *s2;
	bool reused;

	/* Off (the default): nothing to resume with. */
	s1 = connect_resume(off, NULL, &reused);
	assert_false(SSL_SESSION_is_resumable(s1));
	s2 = connect_resume(off, s1, &reused);
	assert_false(reused);
	SSL_SESSION_free(s1);
	SSL_SESSION_free(s2);
	/* On: resumption within the snapshot, never 0-RTT. */
	s1 = connect_resume(on, NULL, &reused);
	assert_true(SSL_SESSION_is_resumable(s1));
	assert_int_equal(SSL_SESSION_get_max_early_data(s1), 0);
	s2 = connect_resume(on, s1, &reused);
	assert_true(reused);
	SSL_SESSION_free(s2);
	/* A reload's new snapshot has new keys: earlier tickets are worthless. */
	s2 = connect_resume(on2, s1, &reused);
	assert_false(reused);
	SSL_SESSION_free(s1);
	SSL_SESSION_free(s2);
	tls_snapshot_unref(off);
	tls_snapshot_unref(on);
	tls_snapshot_unref(on2);
}

/* ---- idle memory ---------------------------------------------------------------------- */

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static size_t rss_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	assert_non_null(f);
	assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
	fclose(f);
	return resident * (size_t)sysconf(_SC_PAGESIZE);
}


/* The clients, in a child process so that the parent's memory is the server roles' alone:
 * each logs in (handshake), sends a query's worth, reads a result's worth, and then all
 * stay connected until the parent writes to done. */
static void idle_clients(const int *fds, int done)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	static SSL *ssl[IDLE_N];
	static uint8_t buf[IDLE_ROWS];
	char c;

	for (int i = 0; i < IDLE_N; i++) {
		size_t got = 0;

		assert_int_equal(fcntl(fds[i], F_SETFL, 0), 0); /* blocking in the child */
		ssl[i] = SSL_new(ctx);
		SSL_set_fd(ssl[i], fds[i]);
		if (SSL_connect(ssl[i]) != 1)
			_exit(10);
		memset(buf, 'q', IDLE_QUERY);
		if (SSL_write(ssl[i], buf, IDLE_QUERY) != IDLE_QUERY)
			_exit(11);
		while (got < IDLE_ROWS) {
			int r = SSL_read(ssl[i], buf, (int)(IDLE_ROWS - got));

			if (r <= 0)
				_exit(12);
			got += (size_t)r;
		}
	}
	(void)!read(done, &c, 1);
	_exit(0);
}

/*
 * What an idle TLS session costs pgwarden: N sessions are opened and used (a query's worth
 * in, a result's worth out, so record buffers are allocated and must be released again),
 * then left idle. The clients live in a child process: what grew in this one is the server
 * roles'. RELEASE_BUFFERS is what keeps it small: a session holding its record buffers
 * would cost about 34 KiB more.
 */
static void test_idle_memory(void **state)
{
	struct tls_snapshot *srv = snap_server_role();
	static uint8_t query[IDLE_QUERY], rows[IDLE_ROWS];
	static struct transport *t[IDLE_N];
	int child_fds[IDLE_N], pipefd[2], status;
	size_t heap0, rss0, heap1, rss1, secure0, secure1;
	pid_t pid;

	memset(rows, 'r', sizeof(rows));
	assert_int_equal(pipe(pipefd), 0);
	for (int i = 0; i < IDLE_N; i++) {
		int sv[2];

		socket_pair(sv);
		child_fds[i] = sv[1];
		t[i] = (struct transport *)(intptr_t)sv[0]; /* the fd, until the transport exists */
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pipefd[1]);
		idle_clients(child_fds, pipefd[0]);
	}
	close(pipefd[0]);
	for (int i = 0; i < IDLE_N; i++)
		close(child_fds[i]);
	malloc_trim(0);
	secure0 = CRYPTO_secure_used();
	heap0 = heap_in_use();
	rss0 = rss_bytes();
	for (int i = 0; i < IDLE_N; i++) {
		struct party p = ours((int)(intptr_t)t[i], srv, TLS_LEG_CLIENT, NULL, NULL, 0);
		size_t got = 0, sent = 0;

		for (int k = 0; k < STEPS && (got < sizeof(query) || sent < sizeof(rows)); k++) {
			ssize_t r;

			note(&p);
			if (got < sizeof(query) && transport_can_read(p.t)) {
				r = transport_read(p.t, query + got, sizeof(query) - got);
				if (r > 0)
					got += (size_t)r;
				else if (r != -EAGAIN)
					fail_msg("read %zd: %s", r, transport_error(p.t));
			}
			if (got == sizeof(query) && sent < sizeof(rows) && transport_can_write(p.t)) {
				r = transport_write(p.t, rows + sent, sizeof(rows) - sent);
				if (r > 0)
					sent += (size_t)r;
				else if (r != -EAGAIN)
					fail_msg("write %zd: %s", r, transport_error(p.t));
			}
			if (got < sizeof(query) || sent < sizeof(rows))
				poll(&(struct pollfd){.fd = p.t->fd, .events = POLLIN}, 1, 5);
		}
		assert_int_equal(got, sizeof(query));
		assert_int_equal(sent, sizeof(rows));
		t[i] = p.t;
	}
	heap1 = heap_in_use();
	rss1 = rss_bytes();
	secure1 = CRYPTO_secure_used();
	/* What each idle session keeps in the secure heap (its key share's private half) must
	 * stay within what tls_process_init() sized the heap for. */
	print_message("secure heap: %zu bytes each\n", (secure1 - secure0) / IDLE_N);
	assert_true(secure1 - secure0 <= (size_t)IDLE_N * TLS_SECURE_BYTES_PER_SESSION);
	print_message("idle TLS session, server role (TLS 1.3, P-256 certificate): %zu bytes of "
		      "heap, %zu bytes resident each (%d sessions)\n",
		      (heap1 - heap0) / IDLE_N, (rss1 - rss0) / IDLE_N, IDLE_N);
	/* Measured 14.6 KiB of heap here (OpenSSL 3.0.x: 8.5 KiB of it is SSL_new() itself);
	 * a session that kept its record buffers would hold 34 KiB more. */
	assert_true((heap1 - heap0) / IDLE_N < 20 * 1024);
	assert_int_equal(write(pipefd[1], "x", 1), 1);
	close(pipefd[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	for (int i = 0; i < IDLE_N; i++)
		transport_destroy(t[i]);
	tls_snapshot_unref(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_and_payload),
		cmocka_unit_test(test_one_byte_pump),
		cmocka_unit_test(test_read_drives_handshake),
		cmocka_unit_test(test_handshake_waits_for_edge),
		cmocka_unit_test(test_pending),
		cmocka_unit_test(test_read_ahead_drain),
		cmocka_unit_test(test_shutdown),
		cmocka_unit_test(test_refuse_protocols_and_ciphers),
		cmocka_unit_test(test_alpn),
		cmocka_unit_test(test_direct_preread),
		cmocka_unit_test(test_renegotiation),
		cmocka_unit_test(test_client_certificates),
		cmocka_unit_test(test_server_verification),
		cmocka_unit_test(test_channel_binding),
		cmocka_unit_test(test_reload_keeps_live_session),
		cmocka_unit_test(test_tickets),
		cmocka_unit_test(test_idle_memory),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
