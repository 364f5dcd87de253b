/*
 * config: pgwardend settings from a YAML file (libyaml) and from command-line flags.
 *
 * A loaded config is an immutable snapshot. The main thread builds a new one on SIGHUP and
 * publishes it; each connection takes a reference when it starts and drops it when it
 * ends, so a reload never changes the rules under a live session's feet. Every key the
 * file accepts is also a flag (--listen, --upstream, ...): one table describes both.
 *
 * Errors are one line naming the file, line and key ("pgwarden.yaml:7: timeouts.startup:
 * expected a duration like 30s, 500ms or 2m").
 */
#ifndef PGWARDEN_CONFIG_H
#define PGWARDEN_CONFIG_H

#include "base/addr.h"
#include "base/log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_LISTEN 8
#define CONFIG_ERR_MAX 512

struct config {
	int refcount; /* atomic; starts at 1, owned by whoever loaded it */
	struct addr listen[CONFIG_MAX_LISTEN];
	unsigned nlisten;
	struct addr upstream;
	bool has_upstream;
	unsigned workers;           /* 0: one per online CPU */
	uint32_t buffer_size;       /* bytes per direction buffer (default 32 KiB) */
	uint32_t max_message_size;  /* largest message body accepted from either side */
	uint32_t max_connections;   /* client connections across all workers */
	uint64_t startup_timeout_ms;  /* client must finish startup and auth */
	uint64_t message_timeout_ms;  /* a message started must be finished within this */
	uint64_t connect_timeout_ms;  /* upstream TCP connect */
	uint64_t drain_timeout_ms;    /* SIGTERM: sessions get this long to finish */
	enum log_level log_level;
	char *admin_socket;   /* admin Unix socket path */
	char *metrics_listen; /* "127.0.0.1:9187"; NULL: metrics off */
};

/* A config holding every default. NULL on ENOMEM. */
struct config *config_new(void);

/*
 * Read a YAML file into cfg (keys absent from the file keep their current values).
 * 0, or -1 with a one-line message in err.
 */
int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Apply one setting by its flag/key name ("listen", "upstream", "workers",
 * "timeouts.startup", ...). "listen" appends. 0, or -1 with a message in err.
 */
int config_set(struct config *cfg, const char *key, const char *value, char *err,
	       size_t errlen) __attribute__((warn_unused_result));

/* Cross-field checks after all sources are applied (a listen address and an upstream
 * present, sizes consistent). 0, or -1 with a message in err. */
int config_validate(const struct config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The names config_set() accepts, NULL-terminated, for --help and docs. */
extern const char *const config_keys[];

void config_ref(struct config *cfg);
void config_unref(struct config *cfg); /* frees at zero */

#define CONFIG_DEFAULT_ADMIN_SOCKET "/run/pgwarden/admin.sock"

#endif
