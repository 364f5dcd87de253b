/* mask_catconn: see mask_catconn.h. */
#include "mask/mask_catconn.h"

#include "auth/scram.h"
#include "auth/userlist.h"
#include "base/log.h"
#include "mask/mask_catalog.h"
#include "mask/mask_plan.h"
#include "mask/mask_rules.h"
#include "proto/proto.h"
#include "relay/transport.h"
#include "relay/transport_tls.h"
#include "tls/tls.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The settings, copied (strings and the TLS snapshot's reference owned here). */
struct settings {
	struct addr upstream;
	char *unix_path, *user, *database;
	struct userlist *passwords;
	struct tls_snapshot *tls;
	uint64_t timeout_ms, refresh_ms;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* The thread waits on wake with a deadline on the monotonic clock (wake_init()), so that
 * setting the wall clock neither delays nor hurries a refresh. */
static pthread_cond_t wake;
static pthread_once_t wake_once = PTHREAD_ONCE_INIT;
static pthread_cond_t idle = PTHREAD_COND_INITIALIZER; /* a resolution ended */
static struct settings conf;
static bool started, stopping, requested, busy, last_ok;
static uint64_t n_ok, n_failed;
static pthread_t thread;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A deadline ms from now on clock, for pthread_cond_timedwait(). */
static void deadline_in(clockid_t clock, uint64_t ms, struct timespec *ts)
{
	clock_gettime(clock, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void wake_init(void)
{
	pthread_condattr_t a;

	/* Both calls only fail for invalid arguments; the default clock would still work. */
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&wake, &a);
	pthread_condattr_destroy(&a);
}

static void settings_free(struct settings *s)
{
	free(s->unix_path);
	free(s->user);
	free(s->database);
	userlist_unref(s->passwords);
	tls_snapshot_unref(s->tls);
	memset(s, 0, sizeof(*s));
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* ---- one connection ------------------------------------------------------------------------ */

/*
 * The connection moves its bytes through the relay's transports (relay/transport.h): the
 * socket transport, and over it, when tls.server.* asks for TLS, the same TLS transport and
 * contexts the relay's server leg uses. The transports are non-blocking; this thread waits
 * for the readiness they say they need with poll(), bounded by the resolution's deadline.
 */
struct conn {
	struct transport plain; /* the socket; holds none once TLS took it over */
	struct transport *t;    /* &plain, or the TLS transport over its socket */
	const char *leg;        /* how the bytes travel, for the log (leg_planned()) */
	uint64_t deadline;
	uint8_t *buf; /* received bytes: [0, len) */
	size_t len, cap;
	char why[256];
};

/* Wait until the socket offers what the transport needs (TRANSPORT_READ / _WRITE). */
static int wait_ready(struct conn *c, uint32_t needs)
{
	struct pollfd p = {.fd = c->t->fd};
	uint64_t now = now_ms();
	uint32_t events = 0;
	int rc;

	if (now >= c->deadline) {
		snprintf(c->why, sizeof(c->why), "timed out");
		return -ETIMEDOUT;
	}
	p.events = (short)(((needs & TRANSPORT_READ) ? POLLIN : 0) |
			   ((needs & TRANSPORT_WRITE) ? POLLOUT : 0));
	rc = poll(&p, 1, (int)(c->deadline - now > 60000 ? 60000 : c->deadline - now));
	if (rc < 0)
		return errno == EINTR ? 0 : -errno;
	if (p.revents & POLLIN)
		events |= EPOLLIN;
	if (p.revents & POLLOUT)
		events |= EPOLLOUT;
	if (p.revents & POLLHUP)
		events |= EPOLLHUP;
	if (p.revents & POLLERR)
		events |= EPOLLERR;
	transport_note_events(c->t, events);
	return 0;
}

/* The transport's reason for a failure, else errno's. */
static void set_why_io(struct conn *c, const char *what, ssize_t err)
{
	const char *tw = transport_error(c->t);

	snprintf(c->why, sizeof(c->why), "%s: %s", what, tw ? tw : strerror((int)-err));
}

static int send_all(struct conn *c, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = transport_write(c->t, p, n);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w != -EAGAIN) {
			set_why_io(c, "send", w ? w : -EIO);
			return w ? (int)w : -EIO;
		}
		/* The same bytes are offered again: TLS has committed to them. */
		if (wait_ready(c, c->t->write_needs ? c->t->write_needs : TRANSPORT_WRITE))
			return -ETIMEDOUT;
	}
	return 0;
}

/* The next whole server message into *m (valid until the next call). */
static int recv_msg(struct conn *c, struct proto_msg *m, size_t *consumed)
{
	int rc;

	if (*consumed) {
		memmove(c->buf, c->buf + *consumed, c->len - *consumed);
		c->len -= *consumed;
		*consumed = 0;
	}
	for (;;) {
		ssize_t r;

		rc = proto_frame(c->buf, c->len, PROTO_BACKEND, MASK_CATCONN_MAX_MESSAGE, m);
		if (rc == PROTO_OK && c->len >= PROTO_HEADER_LEN + (size_t)m->body_len) {
			if (proto_validate(PROTO_BACKEND, m) != PROTO_OK) {
				snprintf(c->why, sizeof(c->why), "the server sent a malformed %s",
					 proto_type_name(PROTO_BACKEND, m->type));
				return -EPROTO;
			}
			*consumed = PROTO_HEADER_LEN + m->body_len;
			return 0;
		}
		if (rc < 0) {
			snprintf(c->why, sizeof(c->why), "the server's stream: %s", proto_err_str(rc));
			return -EPROTO;
		}
		if (rc == PROTO_OK && PROTO_HEADER_LEN + (size_t)m->body_len > c->cap) {
			size_t want = PROTO_HEADER_LEN + (size_t)m->body_len;
			uint8_t *nb = realloc(c->buf, want);

			if (!nb)
				return -ENOMEM;
			c->buf = nb;
			c->cap = want;
		}
		if (c->len == c->cap) { /* only the header so far, with a full small buffer */
			uint8_t *nb = realloc(c->buf, c->cap * 2);

			if (!nb)
				return -ENOMEM;
			c->buf = nb;
			c->cap *= 2;
		}
		r = transport_read(c->t, c->buf + c->len, c->cap - c->len);
		if (r > 0) {
			c->len += (size_t)r;
			continue;
		}
		if (r == 0) {
			snprintf(c->why, sizeof(c->why), "the server closed the connection");
			return -ECONNRESET;
		}
		if (r != -EAGAIN) {
			set_why_io(c, "recv", r);
			return (int)r;
		}
		if (wait_ready(c, c->t->read_needs ? c->t->read_needs : TRANSPORT_READ))
			return -ETIMEDOUT;
	}
}

static int connect_to(struct conn *c, const struct settings *s)
{
	struct sockaddr_un un;
	const struct sockaddr *sa;
	socklen_t salen;
	int fd, err = 0;
	socklen_t elen = sizeof(err);

	if (s->unix_path) {
		memset(&un, 0, sizeof(un));
		un.sun_family = AF_UNIX;
		if (strlen(s->unix_path) >= sizeof(un.sun_path))
			return -ENAMETOOLONG;
		memcpy(un.sun_path, s->unix_path, strlen(s->unix_path) + 1);
		sa = (const struct sockaddr *)&un;
		salen = sizeof(un);
	} else {
		sa = (const struct sockaddr *)&s->upstream.ss;
		salen = s->upstream.len;
	}
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	transport_sock_init(&c->plain, fd, s->unix_path != NULL);
	if (connect(fd, sa, salen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EAGAIN) {
		snprintf(c->why, sizeof(c->why), "connect: %s", strerror(errno));
		return -errno;
	}
	if (wait_ready(c, TRANSPORT_WRITE))
		return -ETIMEDOUT;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) || err) {
		snprintf(c->why, sizeof(c->why), "connect: %s", strerror(err ? err : errno));
		return -(err ? err : errno);
	}
	return 0;
}

/* How the bytes will travel, as the settings plan it; prefer may still fall back. */
static const char *leg_planned(const struct settings *s)
{
	if (s->unix_path)
		return "the Unix socket";
	if (tls_server_leg_wanted(s->tls, false))
		return "TCP, negotiating TLS as tls.server.mode says";
	return "plaintext: tls.server.mode is disable";
}

/*
 * tls.server.*, as the relay's server leg follows it (relay/conn_tls.c): an SSLRequest and
 * exactly one byte of answer; 'S' starts the handshake (verify-ca and verify-full are the
 * snapshot's context and the host check), 'N' continues in plaintext only under prefer, an
 * ErrorResponse is refused unread, and any byte after the answer, before pgwarden's
 * ClientHello, is an injection (CVE-2021-23222). c->leg then says how the bytes travel.
 */
static int negotiate_tls(struct conn *c, const struct settings *s)
{
	struct tls_conn_params params = {0};
	char host[NI_MAXHOST];
	struct transport *tt;
	uint8_t req[8], answer, extra;
	ssize_t n;
	int err = 0;

	if (!tls_server_leg_wanted(s->tls, s->unix_path != NULL))
		return 0;
	if (proto_write_ssl_request(req, sizeof(req)) != (int)sizeof(req))
		return -EINVAL;
	err = send_all(c, req, sizeof(req));
	if (err)
		return err;
	while ((n = transport_read(c->t, &answer, 1)) == -EAGAIN) /* one byte, never more */
		if (wait_ready(c, TRANSPORT_READ))
			return -ETIMEDOUT;
	if (n <= 0) {
		snprintf(c->why, sizeof(c->why), "the server closed the connection during SSL "
						 "negotiation");
		return -ECONNRESET;
	}
	if (answer != 'S' && answer != 'N') {
		snprintf(c->why, sizeof(c->why), "the server answered the SSL request with %s",
			 answer == 'E' ? "an error" : "an invalid response");
		return -EPROTO;
	}
	n = transport_read(c->t, &extra, 1);
	if (n != -EAGAIN) {
		snprintf(c->why, sizeof(c->why), "%s", n > 0 ? "received unencrypted data after "
							     "the SSL response"
							   : "the server closed the connection "
							     "during SSL negotiation");
		return -EPROTO;
	}
	if (answer == 'N') {
		if (s->tls->server_mode != CONFIG_TLS_SERVER_PREFER) {
			snprintf(c->why, sizeof(c->why), "the server does not support SSL, but "
							 "tls.server.mode requires it");
			return -EPROTO;
		}
		c->leg = "plaintext: the server offers no TLS, tls.server.mode is prefer";
		return 0;
	}
	params.host = tls_server_host(s->tls, &s->upstream, host, sizeof(host));
	tt = transport_tls_new(&c->plain, s->tls, TLS_LEG_SERVER, &params, NULL, 0, &err);
	if (!tt) {
		snprintf(c->why, sizeof(c->why), "could not start TLS: %s", strerror(-err));
		return err;
	}
	c->t = tt;
	for (;;) {
		err = transport_handshake(c->t);
		if (err != -EAGAIN)
			break;
		if (wait_ready(c, c->t->write_needs ? c->t->write_needs
						    : TRANSPORT_READ | TRANSPORT_WRITE))
			return -ETIMEDOUT;
	}
	if (err) {
		set_why_io(c, "SSL connection to the server failed", err);
		return err;
	}
	c->leg = "TLS";
	return 0;
}

static int server_error(struct conn *c, const struct proto_msg *m)
{
	struct proto_error_fields f;

	/* The server's text names only catalog things (the query has no data in it), but it
	 * is still peer text: the log sanitises it. */
	if (proto_read_error(m, &f) == PROTO_OK)
		snprintf(c->why, sizeof(c->why), "the server refused: %s %s",
			 f.sqlstate ? f.sqlstate : "?????", f.message ? f.message : "");
	else
		snprintf(c->why, sizeof(c->why), "the server sent a malformed error");
	return -EPROTO;
}

/* What one connection is for: its startup options and application_name. */
struct purpose {
	const char *options;
	const char *application_name;
};

/* Startup and authentication, up to the first ReadyForQuery. */
static int login(struct conn *c, const struct settings *s, const struct purpose *why,
		 size_t *consumed)
{
	uint8_t out[1024];
	char msg[SCRAM_MESSAGE_MAX];
	struct scram_client scram;
	const char *password = s->passwords ? userlist_password(s->passwords, s->user) : NULL;
	struct proto_param params[] = {
		{"user", s->user},
		{"database", s->database ? s->database : s->user},
		{"options", why->options},
		{"application_name", why->application_name},
		{"client_encoding", "UTF8"},
	};
	enum { START, SASL_FIRST, SASL_FINAL, VERIFIED, DONE } st = START;
	int w, rc = 0;

	memset(&scram, 0, sizeof(scram));
	w = proto_write_startup(out, sizeof(out), PROTO_VERSION_3_0, params,
				sizeof(params) / sizeof(params[0]));
	if (w < 0 || send_all(c, out, (size_t)w))
		return w < 0 ? -EINVAL : -EIO;
	for (;;) {
		struct proto_msg m;
		const uint8_t *data;
		uint32_t code, len;
		size_t n = 0;
		const char *mech;

		rc = recv_msg(c, &m, consumed);
		if (rc)
			break;
		if (m.type == 'E') {
			rc = server_error(c, &m);
			break;
		}
		if (m.type == 'Z') {
			rc = st == DONE ? 0 : -EPROTO;
			if (rc)
				snprintf(c->why, sizeof(c->why), "ReadyForQuery before the login");
			break;
		}
		if (m.type != 'R')
			continue; /* ParameterStatus, BackendKeyData, NoticeResponse */
		if (proto_read_auth_data(&m, &code, &data, &len) != PROTO_OK) {
			snprintf(c->why, sizeof(c->why), "invalid authentication request");
			rc = -EPROTO;
			break;
		}
		if (code == AUTH_REQ_OK && (st == START || st == VERIFIED)) {
			st = DONE;
			continue;
		}
		if (code == AUTH_REQ_SASL && st == START) {
			struct scram_client_params p = {.password = password};

			if (!password) {
				snprintf(c->why, sizeof(c->why),
					 "the server asks for a password and mask.catalog_passwords has "
					 "none for this role");
				rc = -EACCES;
				break;
			}
			rc = scram_client_init(&scram, &p);
			if (!rc)
				rc = scram_client_first(&scram, data, len, &mech, msg, sizeof(msg), &n);
			w = rc ? -1
			       : proto_write_sasl_initial(out, sizeof(out), mech, (const uint8_t *)msg,
							  (uint32_t)n);
		} else if (code == AUTH_REQ_SASL_CONT && st == SASL_FIRST) {
			rc = scram_client_final(&scram, data, len, msg, sizeof(msg), &n);
			w = rc ? -1
			       : proto_write_sasl_response(out, sizeof(out), (const uint8_t *)msg,
							   (uint32_t)n);
		} else if (code == AUTH_REQ_SASL_FIN && st == SASL_FINAL) {
			rc = scram_client_verify(&scram, data, len);
			if (rc) {
				snprintf(c->why, sizeof(c->why), "SCRAM: %s", scram_error(rc)->message);
				rc = -EACCES;
				break;
			}
			st = VERIFIED;
			continue;
		} else {
			snprintf(c->why, sizeof(c->why),
				 "the server asked for authentication code %u, which the catalog "
				 "connection does not answer (SCRAM-SHA-256 or trust only)",
				 code);
			rc = -EACCES;
			break;
		}
		OPENSSL_cleanse(msg, sizeof(msg));
		if (rc || w < 0) {
			snprintf(c->why, sizeof(c->why), "SCRAM: %s", scram_error(rc)->message);
			rc = -EACCES;
			break;
		}
		rc = send_all(c, out, (size_t)w);
		OPENSSL_cleanse(out, sizeof(out));
		if (rc)
			break;
		st = st == START ? SASL_FIRST : SASL_FINAL;
	}
	scram_client_clear(&scram);
	OPENSSL_cleanse(msg, sizeof(msg));
	OPENSSL_cleanse(out, sizeof(out));
	return rc;
}

/* The query and its result into a catalog. */
static int resolve(struct conn *c, struct mask_policy *mp, size_t *consumed,
		   struct mask_catalog **out)
{
	int err = 0, rc;
	char *sql = mask_catalog_query(mp, &err);
	struct mask_catalog_builder *b;
	uint8_t *q;
	size_t qcap;
	bool described = false, failed = false;

	if (!sql)
		return err;
	qcap = strlen(sql) + 16;
	q = malloc(qcap);
	b = mask_catalog_builder_new(mp);
	if (!q || !b) {
		free(sql);
		free(q);
		mask_catalog_builder_free(b);
		return -ENOMEM;
	}
	rc = proto_write_query(q, qcap, sql);
	free(sql);
	rc = rc < 0 ? -EINVAL : send_all(c, q, (size_t)rc);
	free(q);
	while (!rc) {
		struct proto_msg m;

		rc = recv_msg(c, &m, consumed);
		if (rc)
			break;
		if (m.type == 'T') {
			described = true;
			if (mask_catalog_builder_rowdesc(b, &m)) {
				snprintf(c->why, sizeof(c->why), "the catalog result has another shape");
				failed = true;
			}
		} else if (m.type == 'D' && !failed) {
			rc = described ? mask_catalog_builder_row(b, &m) : -EPROTO;
			if (rc) {
				snprintf(c->why, sizeof(c->why), "a catalog row was refused (%s)",
					 strerror(-rc));
				failed = true;
				rc = 0; /* read on to ReadyForQuery, then fail */
			}
		} else if (m.type == 'E') {
			server_error(c, &m);
			failed = true;
		} else if (m.type == 'Z') {
			break;
		}
	}
	if (rc || failed || !described) {
		if (!rc && !failed)
			snprintf(c->why, sizeof(c->why), "the catalog query returned no result");
		mask_catalog_builder_free(b);
		return rc ? rc : -EPROTO;
	}
	return mask_catalog_builder_finish(b, out);
}

/* Connect, negotiate TLS and log in as s says, for purpose p, within s->timeout_ms from
 * now. 0, or -errno with c->why; either way conn_close() undoes it. */
static int conn_open(struct conn *c, const struct settings *s, const struct purpose *p,
		     size_t *consumed)
{
	int rc;

	*c = (struct conn){.deadline = now_ms() + s->timeout_ms, .leg = leg_planned(s)};
	transport_sock_init(&c->plain, -1, s->unix_path != NULL);
	c->t = &c->plain;
	c->cap = 8192;
	c->buf = malloc(c->cap);
	if (!c->buf)
		return -ENOMEM;
	rc = connect_to(c, s);
	if (!rc)
		rc = negotiate_tls(c, s);
	if (!rc)
		rc = login(c, s, p, consumed);
	return rc;
}

/* Say goodbye when the work succeeded (a lost goodbye or close_notify changes nothing),
 * close, and put the reason of a failure rc, with the leg, in why. */
static void conn_close(struct conn *c, int rc, char *why, size_t n)
{
	if (!rc) {
		uint8_t bye[8];
		int w = proto_write_terminate(bye, sizeof(bye));

		if (w > 0 && transport_write(c->t, bye, (size_t)w) == w)
			(void)transport_shutdown(c->t);
	}
	if (c->t != &c->plain)
		transport_destroy(c->t);
	transport_destroy(&c->plain);
	free(c->buf);
	c->buf = NULL;
	snprintf(why, n, "%s (over %s)", c->why[0] ? c->why : strerror(rc < 0 ? -rc : EIO), c->leg);
}

/* One resolution of mp with settings s: publish on success. 0 or -errno with why. */
static int resolve_once(const struct settings *s, struct mask_policy *mp, char *why, size_t n)
{
	const struct purpose p = {.options = mask_catalog_startup_options(),
				  .application_name = "pgwarden-mask-catalog"};
	struct conn c;
	struct mask_catalog *cat = NULL;
	size_t consumed = 0;
	int rc;

	rc = conn_open(&c, s, &p, &consumed);
	if (!rc)
		rc = resolve(&c, mp, &consumed, &cat);
	conn_close(&c, rc, why, n);
	if (!rc) {
		for (unsigned i = 0; i < mask_catalog_nwarnings(cat); i++)
			log_warn("mask_catalog", "%s", mask_catalog_warning(cat, i));
		mask_catalog_publish(cat);
	}
	return rc;
}

/* ---- the thread ---------------------------------------------------------------------------- */

void mask_catconn_schedule_next(struct mask_catconn_schedule *s, enum mask_catconn_outcome o,
				uint64_t now, uint64_t refresh_ms)
{
	switch (o) {
	case MASK_CATCONN_READ:
		s->retry_ms = 0;
		s->due_ms = refresh_ms ? now + refresh_ms : 0;
		break;
	case MASK_CATCONN_FAILED:
		s->retry_ms = s->retry_ms ? s->retry_ms * 2 : MASK_CATCONN_RETRY_FIRST_MS;
		if (s->retry_ms > MASK_CATCONN_RETRY_MAX_MS)
			s->retry_ms = MASK_CATCONN_RETRY_MAX_MS;
		s->due_ms = now + s->retry_ms;
		break;
	case MASK_CATCONN_LOCAL:
	case MASK_CATCONN_UNCONFIGURED:
		s->retry_ms = 0;
		s->due_ms = 0;
		break;
	}
}

/* A copy of the settings the resolution can use without the lock (the userlist and the
 * TLS snapshot shared). */
static void settings_snapshot(struct settings *out)
{
	out->upstream = conf.upstream;
	out->unix_path = dup_or_null(conf.unix_path);
	out->user = dup_or_null(conf.user);
	out->database = dup_or_null(conf.database);
	out->passwords = conf.passwords;
	if (out->passwords)
		userlist_ref(out->passwords);
	out->tls = tls_snapshot_ref(conf.tls);
	out->timeout_ms = conf.timeout_ms;
	out->refresh_ms = conf.refresh_ms;
}

/* One resolution with settings s, of the current masking policy. What happened, with why
 * set when it failed. */
static enum mask_catconn_outcome resolve_current(const struct settings *s, bool periodic,
						 char *why, size_t n)
{
	struct mask_policy *mp = mask_rules_acquire();
	enum mask_catconn_outcome o;

	if (!mp) {
		o = MASK_CATCONN_LOCAL; /* no policy: nothing is masked, nothing to resolve */
	} else if (!mask_policy_ncolumns(mp)) {
		struct mask_catalog *cat;

		o = mask_catalog_empty(mp, &cat) ? MASK_CATCONN_FAILED : MASK_CATCONN_LOCAL;
		if (o == MASK_CATCONN_LOCAL)
			mask_catalog_publish(cat);
		snprintf(why, n, "out of memory");
	} else if (!s->user) {
		o = MASK_CATCONN_UNCONFIGURED;
		snprintf(why, n, "the policy masks columns but mask.catalog_user is not set: masked "
				 "sessions are refused (55000)");
	} else {
		o = resolve_once(s, mp, why, n) ? MASK_CATCONN_FAILED : MASK_CATCONN_READ;
	}
	/* A refresh that finds what was there says so only at debug level: it runs every
	 * mask.catalog_refresh. */
	if (o == MASK_CATCONN_READ && log_enabled(periodic ? LOG_DEBUG : LOG_INFO))
		log_msg(periodic ? LOG_DEBUG : LOG_INFO, "mask_catalog",
		       "%s %u masked column(s) as %s in %s", periodic ? "refreshed" : "resolved",
		       mask_policy_ncolumns(mp), s->user, s->database ? s->database : s->user);
	mask_policy_put(mp);
	return o;
}

static void *run(void *arg)
{
	struct mask_catconn_schedule sched = {0};

	(void)arg;
	pthread_mutex_lock(&lock);
	while (!stopping) {
		struct settings s = {0};
		enum mask_catconn_outcome o;
		char why[384];
		bool periodic;

		if (!requested) {
			uint64_t now = now_ms();
			struct timespec ts;

			if (!sched.due_ms) {
				pthread_cond_wait(&wake, &lock);
				continue;
			}
			if (now < sched.due_ms) {
				/* Woken early (a request, stop) or by the deadline: look again. */
				deadline_in(CLOCK_MONOTONIC, sched.due_ms - now, &ts);
				pthread_cond_timedwait(&wake, &lock, &ts);
				continue;
			}
		}
		periodic = !requested;
		requested = false;
		busy = true;
		settings_snapshot(&s);
		pthread_mutex_unlock(&lock);

		o = resolve_current(&s, periodic, why, sizeof(why));
		settings_free(&s);

		pthread_mutex_lock(&lock);
		busy = false;
		last_ok = o == MASK_CATCONN_READ || o == MASK_CATCONN_LOCAL;
		pthread_cond_broadcast(&idle);
		if (last_ok) {
			n_ok++;
		} else {
			/* The published catalog stays: a failed refresh leaves the last one read,
			 * and a policy it does not describe keeps its sessions refused (55000). */
			n_failed++;
			log_error("mask_catalog", "catalog resolution failed: %s", why);
		}
		mask_catconn_schedule_next(&sched, o, now_ms(), conf.refresh_ms);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

int mask_catconn_start(void)
{
	int rc;

	pthread_once(&wake_once, wake_init);
	pthread_mutex_lock(&lock);
	if (started) {
		pthread_mutex_unlock(&lock);
		return 0;
	}
	stopping = false;
	rc = pthread_create(&thread, NULL, run, NULL);
	started = rc == 0;
	pthread_mutex_unlock(&lock);
	return -rc;
}

int mask_catconn_configure(const struct mask_catconn_settings *s, char *err, size_t errlen)
{
	struct settings n = {0};

	if (s->passwords &&
	    userlist_load(s->passwords, USERLIST_PASSWORDS, &n.passwords, err, errlen))
		return -1;
	n.upstream = s->upstream;
	n.unix_path = dup_or_null(s->unix_path);
	n.user = dup_or_null(s->user);
	n.database = dup_or_null(s->database);
	n.tls = tls_snapshot_ref(s->tls);
	n.timeout_ms = s->timeout_ms;
	n.refresh_ms = s->refresh_ms;
	if ((s->unix_path && !n.unix_path) || (s->user && !n.user) ||
	    (s->database && !n.database)) {
		settings_free(&n);
		snprintf(err, errlen, "mask.catalog: out of memory");
		return -1;
	}
	pthread_once(&wake_once, wake_init);
	pthread_mutex_lock(&lock);
	settings_free(&conf);
	conf = n;
	requested = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	return 0;
}

int mask_catconn_wait(uint64_t timeout_ms)
{
	struct timespec ts;
	int rc = 0;

	deadline_in(CLOCK_REALTIME, timeout_ms, &ts); /* idle waits on the default clock */
	pthread_mutex_lock(&lock);
	while (started && (requested || busy) && rc == 0)
		rc = pthread_cond_timedwait(&idle, &lock, &ts);
	rc = rc ? -ETIMEDOUT : last_ok ? 0 : -EIO;
	pthread_mutex_unlock(&lock);
	return rc;
}

void mask_catconn_refresh(void)
{
	pthread_once(&wake_once, wake_init);
	pthread_mutex_lock(&lock);
	requested = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
}

void mask_catconn_database(char *out, size_t n)
{
	pthread_mutex_lock(&lock);
	snprintf(out, n, "%s", conf.user ? (conf.database ? conf.database : conf.user) : "");
	pthread_mutex_unlock(&lock);
}

void mask_catconn_counts(uint64_t *ok, uint64_t *failed)
{
	pthread_mutex_lock(&lock);
	*ok = n_ok;
	*failed = n_failed;
	pthread_mutex_unlock(&lock);
}

void mask_catconn_stop(void)
{
	bool join;

	pthread_once(&wake_once, wake_init);
	pthread_mutex_lock(&lock);
	join = started;
	stopping = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	if (join)
		pthread_join(thread, NULL);
	pthread_mutex_lock(&lock);
	started = false;
	settings_free(&conf);
	pthread_mutex_unlock(&lock);
}

/* ---- explain ------------------------------------------------------------------------------- */

/*
 * Parse, Describe, Sync: the description goes to mask_explain(). Nothing else is sent, so
 * the statement is parsed and analysed but never planned or run; an ErrorResponse is the
 * server rejecting it (its text is peer text: the admin reply sanitises it).
 */
static int describe(struct conn *c, const char *sql, const struct mask_profile *prof,
		    const struct mask_catalog *cat, enum mask_refs refs, char *out, size_t cap,
		    size_t *consumed)
{
	size_t qcap = strlen(sql) + 64;
	uint8_t *q = malloc(qcap);
	int rc, len = -EPROTO;
	bool described = false;

	if (!q)
		return -ENOMEM;
	rc = mask_explain_request(q, qcap, sql);
	rc = rc < 0 ? -EINVAL : send_all(c, q, (size_t)rc);
	free(q);
	while (!rc) {
		struct proto_msg m;

		rc = recv_msg(c, &m, consumed);
		if (rc)
			break;
		if ((m.type == PqMsg_RowDescription || m.type == PqMsg_NoData) && !described) {
			described = true;
			len = mask_explain(&m, prof, cat, refs, out, cap);
			if (len < 0)
				snprintf(c->why, sizeof(c->why), "the server sent a description "
								 "masking cannot read");
		} else if (m.type == PqMsg_ErrorResponse) {
			struct proto_error_fields f;

			if (proto_read_error(&m, &f) == PROTO_OK)
				snprintf(c->why, sizeof(c->why), "the server rejected the statement: %s %s",
					 f.sqlstate ? f.sqlstate : "?????", f.message ? f.message : "");
			else
				snprintf(c->why, sizeof(c->why), "the server sent a malformed error");
			len = -EINVAL;
		} else if (m.type == PqMsg_ReadyForQuery) {
			break;
		}
	}
	if (rc)
		return rc;
	if (!described && len != -EINVAL)
		snprintf(c->why, sizeof(c->why), "the server did not describe the statement");
	return len;
}

int mask_catconn_explain(const char *sql, const struct mask_profile *prof,
			 const struct mask_catalog *cat, enum mask_refs refs, char *out, size_t cap,
			 char *why, size_t n)
{
	/* Read-only by default, so even a statement the server were somehow made to run could
	 * change nothing; the role is the catalog role, which needs no privilege on tables to
	 * have a statement described (privileges are checked when one runs). */
	static const struct purpose explain = {
		.options = "-c default_transaction_read_only=on",
		.application_name = "pgwarden-mask-explain",
	};
	struct settings s = {0};
	struct conn c;
	size_t consumed = 0;
	int rc;

	pthread_mutex_lock(&lock);
	settings_snapshot(&s);
	pthread_mutex_unlock(&lock);
	if (!s.user) {
		settings_free(&s);
		snprintf(why, n, "mask.catalog_user is not set: there is no connection to describe "
				 "statements on");
		return -EOPNOTSUPP;
	}
	rc = conn_open(&c, &s, &explain, &consumed);
	if (!rc)
		rc = describe(&c, sql, prof, cat, refs, out, cap, &consumed);
	conn_close(&c, rc < 0 ? rc : 0, why, n);
	if (rc == -ETIMEDOUT)
		snprintf(why, n, "the server did not answer within mask.catalog_timeout (%llu ms)",
			 (unsigned long long)s.timeout_ms);
	settings_free(&s);
	return rc;
}
