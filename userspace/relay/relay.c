/* relay: process-wide shared context (see relay.h). */
#include "relay/relay.h"

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
