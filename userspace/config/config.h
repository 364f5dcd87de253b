/*
 * config: pgwardend settings from a YAML file (libyaml) and from command-line flags.
 *
 * A loaded config is an immutable snapshot. The main thread builds a new one on SIGHUP and
 * publishes it; each connection takes a reference when it starts and drops it when it
 * ends, so a reload never changes the rules under a live session's feet. Hence
 * config_load_*() and config_set() are for a config no other thread can see yet; the
 * readers (config_get, config_validate, config_write_yaml, config_restart_required) are
 * safe on a published one. Every key the
 * file accepts is also a flag (--listen, --upstream, ...): one table describes both.
 *
 * Errors are one line naming the file, line and key ("pgwarden.yaml:7: timeouts.startup:
 * expected a duration like 30s, 500ms or 2m, got \"10x\""). A load either applies the
 * whole file or, on any error, leaves the config exactly as it was.
 *
 * Flags: every key is also the flag "--" + key with '.' and '_' turned into '-'
 * (timeouts.startup → --timeouts-startup, buffer_size → --buffer-size). config_set() takes
 * either spelling, without the leading dashes. Sources apply in this order: defaults
 * (config_new), the file (config_load_file), then flags (config_set), so flags win. For
 * the lists "listen", "tproxy_listen" and "gate.deny", the first flag replaces the file's
 * items and repeated flags add to them.
 *
 * Reload contract: listen, tproxy_listen, workers, buffer_size, admin_socket,
 * metrics_listen, steer_instance, log_target, admin_read_group, unix_listen, gate.queue and
 * gate.max_sources are bound once at start (config_restart_required() names them); gate.rate, gate.burst and
 * gate.deny apply to the SYNs that arrive after the reload; every other key
 * (transparent_source and unix_upstream included) applies to sessions that start after
 * the reload (log_level at once).
 */
#ifndef PGWARDEN_CONFIG_H
#define PGWARDEN_CONFIG_H

#include "base/addr.h"
#include "base/log.h"
#include "steer/steer.h" /* struct steer_cidr, STEER_GATE_MAX_DENY */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_LISTEN 8
#define CONFIG_ERR_MAX 512

struct config {
	int refcount; /* atomic; starts at 1, owned by whoever loaded it */
	struct addr listen[CONFIG_MAX_LISTEN];
	unsigned nlisten;
	/* IP_TRANSPARENT listeners for remote clients diverted by nftables TPROXY
	 * (pgwardenctl attach --tproxy-port); none by default. Never equal to a listen
	 * address or the upstream (config_validate). */
	struct addr tproxy_listen[CONFIG_MAX_LISTEN];
	unsigned ntproxy_listen;
	/* For TPROXY'd remote clients, connect upstream from the client's own address
	 * (IP_TRANSPARENT) so the server sees the real client. Default true. */
	bool transparent_source;
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
	/* Name of the steering attach (pgwardenctl attach --instance) whose BPF maps are read:
	 * 1..31 of [A-Za-z0-9_-]; never NULL; default STEER_DEFAULT_INSTANCE ("pgwarden"). */
	char *steer_instance;
	/* Operations (docs/ADMIN.md, docs/CONFIG.md): where log lines go; the group whose
	 * members may use the admin socket read-only (NULL: none; pgwardend resolves it at
	 * start); how long a daemon that handed its listeners to a successor lets its sessions
	 * finish. */
	enum log_target log_target;
	char *admin_read_group;
	uint64_t restart_drain_ms;
	/* The relay's Unix-socket listener (connect_unix steering delivers local clients of
	 * PostgreSQL's socket here, pgwardenctl attach --unix-relay); NULL: off. Its clients
	 * go to unix_upstream, PostgreSQL's own socket, or to upstream when that is unset. */
	char *unix_listen;
	char *unix_upstream;
	/* The admission gate (docs/STEERING.md): pgwardend reads NFQUEUE gate_queue, the queue
	 * pgwardenctl attach --gate-queue sends new connections from the network to, and drops
	 * a SYN whose source is in gate_deny or over its rate. Off unless gate_enabled. */
	bool gate_enabled;
	uint32_t gate_queue;          /* 0..65535 */
	uint64_t gate_rate_per_hour;  /* new connections per source; 0: no rate limit */
	uint32_t gate_burst;          /* token bucket size; set exactly when a rate is */
	uint32_t gate_max_sources;    /* sources the rate limit remembers */
	struct steer_cidr gate_deny[STEER_GATE_MAX_DENY]; /* host bits clear, none twice */
	unsigned ngate_deny;
	/* The list came from config_set(): a further flag appends instead of replacing. */
	bool listen_from_flag;
	bool tproxy_listen_from_flag;
	bool gate_deny_from_flag;
};

/* Hard caps on what the loader reads, whatever the file says. The accepted structure is at
 * most three levels deep (the top mapping, a group such as "timeouts" or "gate", a list such
 * as "listen" or "gate.deny"); structure the table does not describe is rejected where it
 * starts. */
#define CONFIG_MAX_FILE_SIZE (1024 * 1024)

/* PostgreSQL's own cap on a message body (PQ_LARGE_MESSAGE_LIMIT = MaxAllocSize - 1): no
 * server accepts more, so the relay never needs to. */
#define CONFIG_PG_MAX_MESSAGE_SIZE 0x3fffffffu

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

/* A private deep copy of cfg (refcount 1) that the caller may change before publishing it
 * (a retiring daemon's drain timeout). NULL on ENOMEM. */
struct config *config_dup(const struct config *cfg) __attribute__((warn_unused_result));

void config_ref(struct config *cfg);
void config_unref(struct config *cfg); /* frees at zero */

/*
 * Same as config_load_file() for a document already in memory (len bytes, no NUL needed);
 * name is what error messages call it. For tests, fuzzing, and the admin socket.
 */
int config_load_buffer(struct config *cfg, const char *name, const char *data, size_t len,
		       char *err, size_t errlen) __attribute__((warn_unused_result));

/* The canonical key ("timeouts.startup") for a key or flag name ("timeouts-startup",
 * without dashes); NULL when there is no such setting. */
const char *config_key_lookup(const char *name);

/* Write the flag spelling of key ("timeouts-startup") into buf; returns buf, or NULL when
 * the key is unknown or buf too small. */
const char *config_flag_name(const char *key, char *buf, size_t n);

/*
 * The current value of one setting as the file would spell it ("60s", "32KiB", "10/s",
 * "127.0.0.1:6432, [::1]:6432", "" for an unset address, "off" for an unset gate.queue).
 * 0, or -ENOENT for an unknown key, -ENOSPC when buf is too small.
 */
int config_get(const struct config *cfg, const char *key, char *buf, size_t n)
	__attribute__((warn_unused_result));

/* The whole config as a YAML document that config_load_file() reads back to the same
 * values (for --check-config and the admin socket). 0, or -EIO on a write error. */
int config_write_yaml(const struct config *cfg, FILE *out)
	__attribute__((warn_unused_result));

/* Every flag with its argument, default and a line of help, for --help. */
void config_usage(FILE *out);

/* The first key that differs between old and new and is bound only at start (listen,
 * tproxy_listen, workers, buffer_size, admin_socket, metrics_listen, steer_instance,
 * gate.queue, gate.max_sources); NULL when a reload can apply new as is. */
const char *config_restart_required(const struct config *old, const struct config *new_cfg);

/*
 * Value parsers shared by the loader, the flags and the tests. Durations: digits with an
 * optional unit ms, s, m or h (no unit: seconds). Sizes: digits with an optional unit B,
 * KiB, MiB or GiB (no unit: bytes). No sign, spaces or fractions.
 * 0, -EINVAL when the text is malformed, -ERANGE when it does not fit in 64 bits.
 */
int config_parse_duration(const char *text, uint64_t *ms) __attribute__((warn_unused_result));
int config_parse_size(const char *text, uint64_t *bytes) __attribute__((warn_unused_result));
/* Rates: digits with an optional unit /s, /m or /h (no unit: per second), into events per
 * hour, so that 1/h and 1000000/s are both whole numbers. Same rules and returns. */
int config_parse_rate(const char *text, uint64_t *per_hour) __attribute__((warn_unused_result));

#define CONFIG_DEFAULT_ADMIN_SOCKET "/run/pgwarden/admin.sock"

#endif
