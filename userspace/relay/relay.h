/*
 * relay: the process-wide context every worker shares: the published config snapshot, the
 * inspection pipeline, the cancel-key map, the connection budget and the drain flag.
 *
 * Written by the main thread (config publication, drain), read by workers. Nothing here is
 * touched per message.
 */
#ifndef PGWARDEN_RELAY_H
#define PGWARDEN_RELAY_H

#include "config/config.h"
#include "relay/cancel.h"
#include "stage/stage.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct worker;

struct relay {
	pthread_mutex_t config_lock;
	struct config *config; /* current snapshot; guarded by config_lock */
	struct stage_pipeline pipeline;
	struct cancel_map *cancels;
	uint32_t connections; /* atomic: client connections open across workers */
	bool draining;        /* atomic */
	struct worker **workers;
	unsigned nworkers;
};

/* Take a reference to the current config snapshot; release with config_unref(). */
struct config *relay_config_acquire(struct relay *r);

/* Publish a new snapshot (takes over the caller's reference). */
void relay_config_publish(struct relay *r, struct config *cfg);

/* Reserve a connection slot under max_connections; false when full. */
bool relay_conn_reserve(struct relay *r, uint32_t max_connections);
void relay_conn_release(struct relay *r);

#endif
