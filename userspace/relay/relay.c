/* relay: process-wide shared context (see relay.h). */
#include "relay/relay.h"

#include "base/log.h"
#include "steer/steer_origin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RELAY_UNIX_BACKLOG 4096

void relay_init(struct relay *r)
{
	pthread_mutex_init(&r->config_lock, NULL);
	r->unix_listener.fd = -1;
	r->connector = &relay_socket_connector;
}

int relay_unix_listener_open(struct relay *r, const char *path)
{
	struct relay_unix_listener *u = &r->unix_listener;
	struct stat st;
	int fd = steer_listen_unix(path, RELAY_UNIX_BACKLOG);

	if (fd < 0) {
		log_error("listen", "cannot listen on unix:%s: %s", path,
			  fd == -EADDRINUSE ? "another process accepts connections there"
			  : fd == -EEXIST	? "a file that is not a socket is in the way"
					       : strerror(-fd));
		return fd;
	}
	u->path = strdup(path);
	if (!u->path || stat(path, &st) != 0) {
		int err = u->path ? -errno : -ENOMEM;

		log_error("listen", "cannot listen on unix:%s: %s", path, strerror(-err));
		unlink(path);
		close(fd);
		free(u->path);
		u->path = NULL;
		return err;
	}
	u->dev = st.st_dev;
	u->ino = st.st_ino;
	u->fd = fd;
	return 0;
}

void relay_unix_listener_close(struct relay *r)
{
	struct relay_unix_listener *u = &r->unix_listener;
	struct stat st;

	if (u->fd < 0)
		return;
	/* Another daemon may have replaced a file we left; never remove that one. */
	if (lstat(u->path, &st) == 0 && st.st_dev == u->dev && st.st_ino == u->ino)
		unlink(u->path);
	close(u->fd);
	u->fd = -1;
	free(u->path);
	u->path = NULL;
}

struct config *relay_config_acquire(struct relay *r)
{
	struct config *cfg;

	pthread_mutex_lock(&r->config_lock);
	cfg = r->config;
	config_ref(cfg);
	pthread_mutex_unlock(&r->config_lock);
	return cfg;
}

void relay_config_publish(struct relay *r, struct config *cfg)
{
	struct config *old;

	pthread_mutex_lock(&r->config_lock);
	old = r->config;
	r->config = cfg;
	pthread_mutex_unlock(&r->config_lock);
	log_set_level(cfg->log_level);
	if (old)
		config_unref(old);
}

static bool relay_reserve(uint32_t *counter, uint32_t limit)
{
	uint32_t n = __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);

	if (n > limit) {
		__atomic_sub_fetch(counter, 1, __ATOMIC_RELAXED);
		return false;
	}
	return true;
}

/* Sockets beyond max_connections: an eighth more, at least 16. */
static uint32_t relay_socket_limit(uint32_t max_connections)
{
	return max_connections + (max_connections / 8 > 16 ? max_connections / 8 : 16);
}

bool relay_conn_reserve(struct relay *r, uint32_t max_connections)
{
	return relay_reserve(&r->connections, relay_socket_limit(max_connections));
}

void relay_conn_release(struct relay *r)
{
	__atomic_sub_fetch(&r->connections, 1, __ATOMIC_RELAXED);
}

bool relay_session_reserve(struct relay *r, uint32_t max_connections)
{
	return relay_reserve(&r->sessions, max_connections);
}

void relay_session_release(struct relay *r)
{
	__atomic_sub_fetch(&r->sessions, 1, __ATOMIC_RELAXED);
}
