/*
 * auth: the context snapshot, the runtime that publishes it, and what the three machines
 * share (errors for the client, the lockout source key). See auth.h.
 */
#include "auth/auth.h"

#include "auth/certmap.h"
#include "auth/secret.h"
#include "auth/userlist.h"
#include "base/clock.h"
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MOCK_SECRET_LEN 32
#define MOCK_SECRET_FILE_MAX 4096

static const char *const action_names[AUTH_ACTION_COUNT] = {
	[AUTH_FORWARD] = "forward",         [AUTH_TO_CLIENT] = "to_client",
	[AUTH_TO_SERVER] = "to_server",     [AUTH_WAIT_SERVER] = "wait_server",
	[AUTH_DONE] = "done",               [AUTH_REFUSE] = "refuse",
};

const char *auth_action_to_str(enum auth_action a)
{
	return (unsigned)a < AUTH_ACTION_COUNT ? action_names[a] : "unknown";
}

const char *auth_methods_format(uint32_t methods, char *buf, size_t n)
{
	size_t o = 0;

	if (n)
		buf[0] = '\0';
	for (unsigned i = 0; i < AUTH_METHOD_NAMES_COUNT; i++) {
		int w;

		if (!(methods & (1u << i)))
			continue;
		w = snprintf(buf + o, n - o, "%s%s", o ? ", " : "", auth_method_names[i]);
		if (w < 0 || (size_t)w >= n - o)
			break;
		o += (size_t)w;
	}
	return buf;
}

const char *auth_source_key(const struct session *s, char *buf, size_t n)
{
	const struct sockaddr *sa = &s->client.ss.sa;

	if (sa->sa_family == AF_INET) {
		addr_format_ipv4(&s->client.ss.in4.sin_addr, buf, n);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &s->client.ss.in6.sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a))
			addr_format_ipv4((const struct in_addr *)&a->s6_addr[12], buf, n);
		else
			inet_ntop(AF_INET6, a, buf, (socklen_t)n);
	} else {
		const struct session_process *proc = session_process(s);

		if (proc->known)
			snprintf(buf, n, "local:uid=%u", (unsigned)proc->uid);
		else
			snprintf(buf, n, "local");
	}
	return buf;
}

/* ---- snapshots ------------------------------------------------------------------------- */

void auth_ctx_ref(struct auth_ctx *c)
{
	__atomic_add_fetch(&c->refcount, 1, __ATOMIC_RELAXED);
}

static void ctx_free(struct auth_ctx *c)
{
	secret_free((void *)c->mock_secret);
	userlist_unref(c->users);
	userlist_unref(c->upstream_passwords);
	certmap_free(c->certmap);
	free(c);
}

void auth_ctx_unref(struct auth_ctx *c)
{
	if (c && __atomic_sub_fetch(&c->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		ctx_free(c);
}

/* The mock secret from a file: at least MOCK_SECRET_LEN bytes, hashed to 32. */
static int read_mock_secret(const char *path, uint8_t out[MOCK_SECRET_LEN], char *err,
			    size_t errlen)
{
	char why[256];
	uint8_t *buf;
	ssize_t n;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		snprintf(err, errlen, "auth.mock_secret_file: %s: %s", path, strerror(errno));
		return -1;
	}
	if (userlist_check_file(fd, true, why, sizeof(why))) {
		snprintf(err, errlen, "auth.mock_secret_file: %s: %s", path, why);
		close(fd);
		return -1;
	}
	buf = secret_alloc(MOCK_SECRET_FILE_MAX);
	if (!buf) {
		snprintf(err, errlen, "auth.mock_secret_file: out of memory");
		close(fd);
		return -1;
	}
	do
		n = read(fd, buf, MOCK_SECRET_FILE_MAX);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n < MOCK_SECRET_LEN)
		snprintf(err, errlen,
			 "auth.mock_secret_file: %s: holds %zd bytes; it needs at least %d random "
			 "ones (head -c 32 /dev/urandom)",
			 path, n < 0 ? (ssize_t)0 : n, MOCK_SECRET_LEN);
	else if (scram_hash(buf, (size_t)n, out))
		snprintf(err, errlen, "auth.mock_secret_file: cannot hash the secret");
	else
		rc = 0;
	secret_free(buf);
	return rc;
}

/* A snapshot of cfg's auth.* settings with their files loaded. It owns mock_secret (a
 * secret_alloc block) from here on, also when it fails. */
static int ctx_build(const struct config *cfg, struct lockout *lockout,
		     const uint8_t *mock_secret, struct auth_ctx **out, char *err, size_t errlen)
{
	struct auth_ctx *c = calloc(1, sizeof(*c));
	char why[USERLIST_ERR_MAX];

	*out = NULL;
	if (!c) {
		secret_free((void *)mock_secret);
		snprintf(err, errlen, "auth: out of memory");
		return -1;
	}
	c->refcount = 1;
	c->mode = (enum auth_mode)cfg->auth_mode;
	c->server_methods = cfg->auth_server_methods;
	snprintf(c->cert_map_name, sizeof(c->cert_map_name), "%s", cfg->auth_cert_map_name);
	c->require_cert_and_password = cfg->auth_require_cert_and_password;
	c->mock_secret = mock_secret;
	c->lockout = lockout;
	if (cfg->auth_users_file &&
	    userlist_load(cfg->auth_users_file, USERLIST_VERIFIERS, &c->users, why, sizeof(why))) {
		snprintf(err, errlen, "auth.users_file: %s", why);
		goto err_free;
	}
	if (cfg->auth_upstream_passwords &&
	    userlist_load(cfg->auth_upstream_passwords, USERLIST_PASSWORDS, &c->upstream_passwords,
			  why, sizeof(why))) {
		snprintf(err, errlen, "auth.upstream_passwords: %s", why);
		goto err_free;
	}
	if (cfg->auth_cert_map && certmap_load(cfg->auth_cert_map, &c->certmap, why, sizeof(why))) {
		snprintf(err, errlen, "auth.cert_map: %s", why);
		goto err_free;
	}
	c->mock_iterations = userlist_common_iterations(c->users);
	c->mock_salt_len = userlist_common_salt_len(c->users);
	if (c->mock_salt_len < SCRAM_SALT_MIN_LEN || c->mock_salt_len > SCRAM_KEY_LEN)
		c->mock_salt_len = SCRAM_SALT_DEFAULT_LEN;
	*out = c;
	return 0;
err_free:
	ctx_free(c);
	return -1;
}

/* ---- the runtime ------------------------------------------------------------------------ */

struct auth_runtime {
	pthread_mutex_t mu;
	struct auth_ctx *current;
	struct lockout *lockout;
	/* Without auth.mock_secret_file: one random secret for the daemon's life, so that an
	 * unknown user's mock salt does not change with a reload. Secret memory. */
	uint8_t *random_secret;
};

static void lockout_params_of(const struct config *cfg, struct lockout_params *p)
{
	p->failures = cfg->auth_lockout_failures;
	p->window_ms = cfg->auth_lockout_window_ms;
	p->duration_ms = cfg->auth_lockout_duration_ms;
	p->max_entries = cfg->auth_lockout_max_entries;
}

/* A fresh secret block with the mock secret for cfg: the file's, or random_secret. */
static uint8_t *mock_secret_for(const uint8_t *random_secret, const struct config *cfg,
				char *err, size_t errlen)
{
	uint8_t *s = secret_alloc(MOCK_SECRET_LEN);

	if (!s) {
		snprintf(err, errlen, "auth: out of memory");
		return NULL;
	}
	if (cfg->auth_mock_secret_file) {
		if (read_mock_secret(cfg->auth_mock_secret_file, s, err, errlen)) {
			secret_free(s);
			return NULL;
		}
	} else if (random_secret) {
		memcpy(s, random_secret, MOCK_SECRET_LEN);
	} else if (RAND_bytes(s, MOCK_SECRET_LEN) != 1) {
		snprintf(err, errlen, "auth: no randomness for the mock secret");
		secret_free(s);
		return NULL;
	}
	return s;
}

int auth_runtime_new(const struct config *cfg, struct auth_runtime **out, char *err,
		     size_t errlen)
{
	struct auth_runtime *rt = calloc(1, sizeof(*rt));
	struct lockout_params lp;

	*out = NULL;
	if (!rt) {
		snprintf(err, errlen, "auth: out of memory");
		return -1;
	}
	pthread_mutex_init(&rt->mu, NULL);
	lockout_params_of(cfg, &lp);
	rt->lockout = lockout_new(&lp);
	rt->random_secret = secret_alloc(MOCK_SECRET_LEN);
	if (!rt->lockout || !rt->random_secret ||
	    RAND_bytes(rt->random_secret, MOCK_SECRET_LEN) != 1) {
		snprintf(err, errlen, "auth: out of memory or randomness");
		auth_runtime_free(rt);
		return -1;
	}
	if (auth_runtime_reload(rt, cfg, err, errlen)) {
		auth_runtime_free(rt);
		return -1;
	}
	*out = rt;
	return 0;
}

int auth_runtime_reload(struct auth_runtime *rt, const struct config *cfg, char *err,
			size_t errlen)
{
	struct lockout_params lp;
	struct auth_ctx *c, *old;
	uint8_t *secret = mock_secret_for(rt->random_secret, cfg, err, errlen);

	if (!secret || ctx_build(cfg, rt->lockout, secret, &c, err, errlen))
		return -1;
	lockout_params_of(cfg, &lp);
	lockout_set_params(rt->lockout, &lp);
	pthread_mutex_lock(&rt->mu);
	old = rt->current;
	rt->current = c;
	pthread_mutex_unlock(&rt->mu);
	auth_ctx_unref(old); /* sessions that hold it keep it */
	return 0;
}

struct auth_ctx *auth_runtime_acquire(struct auth_runtime *rt)
{
	struct auth_ctx *c;

	pthread_mutex_lock(&rt->mu);
	c = rt->current;
	auth_ctx_ref(c);
	pthread_mutex_unlock(&rt->mu);
	return c;
}

struct lockout *auth_runtime_lockout(struct auth_runtime *rt)
{
	return rt->lockout;
}

void auth_runtime_free(struct auth_runtime *rt)
{
	if (!rt)
		return;
	auth_ctx_unref(rt->current);
	lockout_free(rt->lockout);
	secret_free(rt->random_secret);
	pthread_mutex_destroy(&rt->mu);
	free(rt);
}

int auth_check_config(const struct config *cfg, char *err, size_t errlen)
{
	uint8_t *secret = mock_secret_for(NULL, cfg, err, errlen);
	struct auth_ctx *c;

	if (!secret || ctx_build(cfg, NULL, secret, &c, err, errlen))
		return -1;
	auth_ctx_unref(c);
	return 0;
}
