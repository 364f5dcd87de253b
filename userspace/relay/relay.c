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

bool relay_conn_reserve(struct relay *r, uint32_t max_connections)
{
	uint32_t n = __atomic_add_fetch(&r->connections, 1, __ATOMIC_RELAXED);

	if (n > max_connections) {
		__atomic_sub_fetch(&r->connections, 1, __ATOMIC_RELAXED);
		return false;
	}
	return true;
}

void relay_conn_release(struct relay *r)
{
	__atomic_sub_fetch(&r->connections, 1, __ATOMIC_RELAXED);
}
