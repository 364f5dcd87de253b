/* mask_catconn: see mask_catconn.h. */
#include "mask/mask_catconn.h"

#include "auth/scram.h"
#include "auth/userlist.h"
#include "base/log.h"
#include "mask/mask_catalog.h"
#include "mask/mask_rules.h"
#include "proto/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RETRY_FIRST_MS 1000
#define RETRY_MAX_MS 30000

/* The settings, copied (strings owned here). */
struct settings {
	struct addr upstream;
	char *unix_path, *user, *database;
	struct userlist *passwords;
	uint64_t timeout_ms;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t idle = PTHREAD_COND_INITIALIZER; /* a resolution ended */
static struct settings conf;
static bool started, stopping, requested, busy, last_ok;
static uint64_t generation; /* of conf: a resolution with older settings is retried */
static uint64_t n_ok, n_failed;
static pthread_t thread;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void settings_free(struct settings *s)
{
	free(s->unix_path);
	free(s->user);
	free(s->database);
	userlist_unref(s->passwords);
	memset(s, 0, sizeof(*s));
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* ---- one connection ------------------------------------------------------------------------ */

struct conn {
	int fd;
	uint64_t deadline;
	uint8_t *buf; /* received bytes: [0, len) */
	size_t len, cap;
	char why[256];
};

static int wait_fd(struct conn *c, short events)
{
	struct pollfd p = {.fd = c->fd, .events = events};
	uint64_t now = now_ms();
	int rc;

	if (now >= c->deadline) {
		snprintf(c->why, sizeof(c->why), "timed out");
		return -ETIMEDOUT;
	}
	rc = poll(&p, 1, (int)(c->deadline - now > 60000 ? 60000 : c->deadline - now));
	if (rc < 0)
		return errno == EINTR ? 0 : -errno;
	return 0;
}

static int send_all(struct conn *c, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			snprintf(c->why, sizeof(c->why), "send: %s", strerror(errno));
			return -errno;
		}
		if (wait_fd(c, POLLOUT))
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
		r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (r > 0) {
			c->len += (size_t)r;
			continue;
		}
		if (r == 0) {
			snprintf(c->why, sizeof(c->why), "the server closed the connection");
			return -ECONNRESET;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			snprintf(c->why, sizeof(c->why), "recv: %s", strerror(errno));
			return -errno;
		}
		if (wait_fd(c, POLLIN))
			return -ETIMEDOUT;
	}
}

static int connect_to(struct conn *c, const struct settings *s)
{
	struct sockaddr_un un;
	const struct sockaddr *sa;
	socklen_t salen;
	int err = 0;
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
	c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	if (connect(c->fd, sa, salen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EAGAIN) {
		snprintf(c->why, sizeof(c->why), "connect: %s", strerror(errno));
		return -errno;
	}
	if (wait_fd(c, POLLOUT))
		return -ETIMEDOUT;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) || err) {
		snprintf(c->why, sizeof(c->why), "connect: %s", strerror(err ? err : errno));
		return -(err ? err : errno);
	}
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

/* Startup and authentication, up to the first ReadyForQuery. */
static int login(struct conn *c, const struct settings *s, size_t *consumed)
{
	uint8_t out[1024];
	char msg[SCRAM_MESSAGE_MAX];
	struct scram_client scram;
	const char *password = s->passwords ? userlist_password(s->passwords, s->user) : NULL;
	struct proto_param params[] = {
		{"user", s->user},
		{"database", s->database ? s->database : s->user},
		{"options", mask_catalog_startup_options()},
		{"application_name", "pgwarden-mask-catalog"},
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

/* One resolution of mp with settings s: publish on success. 0 or -errno with why. */
static int resolve_once(const struct settings *s, struct mask_policy *mp, char *why, size_t n)
{
	struct conn c = {.fd = -1, .deadline = now_ms() + s->timeout_ms};
	struct mask_catalog *cat = NULL;
	size_t consumed = 0;
	int rc;

	c.cap = 8192;
	c.buf = malloc(c.cap);
	if (!c.buf)
		return -ENOMEM;
	rc = connect_to(&c, s);
	if (!rc)
		rc = login(&c, s, &consumed);
	if (!rc)
		rc = resolve(&c, mp, &consumed, &cat);
	if (!rc) {
		uint8_t bye[8];
		int w = proto_write_terminate(bye, sizeof(bye));

		if (w > 0 && send(c.fd, bye, (size_t)w, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			(void)0; /* the catalog is read; a lost goodbye changes nothing */
		for (unsigned i = 0; i < mask_catalog_nwarnings(cat); i++)
			log_warn("mask_catalog", "%s", mask_catalog_warning(cat, i));
		mask_catalog_publish(cat);
	}
	if (c.fd >= 0)
		close(c.fd);
	free(c.buf);
	snprintf(why, n, "%s", c.why[0] ? c.why : strerror(rc < 0 ? -rc : EIO));
	return rc;
}

/* ---- the thread ---------------------------------------------------------------------------- */

/* A copy of the settings the resolution can use without the lock (the userlist shared). */
static void settings_snapshot(struct settings *out)
{
	out->upstream = conf.upstream;
	out->unix_path = dup_or_null(conf.unix_path);
	out->user = dup_or_null(conf.user);
	out->database = dup_or_null(conf.database);
	out->passwords = conf.passwords;
	if (out->passwords)
		userlist_ref(out->passwords);
	out->timeout_ms = conf.timeout_ms;
}

static void *run(void *arg)
{
	uint64_t retry_ms = 0, retry_at = 0;

	(void)arg;
	pthread_mutex_lock(&lock);
	while (!stopping) {
		struct settings s = {0};
		struct mask_policy *mp;
		char why[300];
		uint64_t gen;
		int rc;

		if (!requested) {
			if (retry_at) {
				struct timespec ts;
				uint64_t wait = retry_at > now_ms() ? retry_at - now_ms() : 0;

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec += (time_t)(wait / 1000);
				ts.tv_nsec += (long)(wait % 1000) * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&wake, &lock, &ts);
				if (!requested && now_ms() < retry_at)
					continue;
			} else {
				pthread_cond_wait(&wake, &lock);
				continue;
			}
		}
		requested = false;
		busy = true;
		retry_at = 0;
		gen = generation;
		settings_snapshot(&s);
		pthread_mutex_unlock(&lock);

		mp = mask_rules_acquire();
		rc = 0;
		if (!mp) {
			/* no policy: nothing is masked, nothing to resolve */
		} else if (!mask_policy_ncolumns(mp)) {
			struct mask_catalog *cat;

			rc = mask_catalog_empty(mp, &cat);
			if (!rc)
				mask_catalog_publish(cat);
			snprintf(why, sizeof(why), "out of memory");
		} else if (!s.user) {
			rc = -ENOENT;
			snprintf(why, sizeof(why),
				 "the policy masks columns but mask.catalog_user is not set: masked "
				 "sessions are refused (55000)");
		} else {
			rc = resolve_once(&s, mp, why, sizeof(why));
		}
		if (rc == 0 && mp && mask_policy_ncolumns(mp))
			log_info("mask_catalog", "resolved %u masked column(s) as %s in %s",
				 mask_policy_ncolumns(mp), s.user,
				 s.database ? s.database : s.user);
		mask_policy_put(mp);
		settings_free(&s);

		pthread_mutex_lock(&lock);
		busy = false;
		last_ok = rc == 0;
		pthread_cond_broadcast(&idle);
		if (rc == 0) {
			n_ok++;
			retry_ms = 0;
		} else {
			n_failed++;
			log_error("mask_catalog", "catalog resolution failed: %s", why);
			if (rc != -ENOENT || gen != generation) {
				retry_ms = retry_ms ? retry_ms * 2 : RETRY_FIRST_MS;
				if (retry_ms > RETRY_MAX_MS)
					retry_ms = RETRY_MAX_MS;
				retry_at = now_ms() + retry_ms;
			}
		}
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

int mask_catconn_start(void)
{
	int rc;

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
	n.timeout_ms = s->timeout_ms;
	if ((s->unix_path && !n.unix_path) || (s->user && !n.user) ||
	    (s->database && !n.database)) {
		settings_free(&n);
		snprintf(err, errlen, "mask.catalog: out of memory");
		return -1;
	}
	pthread_mutex_lock(&lock);
	settings_free(&conf);
	conf = n;
	generation++;
	requested = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	return 0;
}

int mask_catconn_wait(uint64_t timeout_ms)
{
	struct timespec ts;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(timeout_ms / 1000);
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&lock);
	while (started && (requested || busy) && rc == 0)
		rc = pthread_cond_timedwait(&idle, &lock, &ts);
	rc = rc ? -ETIMEDOUT : last_ok ? 0 : -EIO;
	pthread_mutex_unlock(&lock);
	return rc;
}

void mask_catconn_refresh(void)
{
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
