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
 * Reload contract: listen, tproxy_listen, workers, pin_workers, buffer_size, admin_socket,
 * metrics_listen, steer_instance, log_target, admin_read_group, unix_listen, gate.queue,
 * gate.max_sources, admission.max_sources and tls.fips
 * are bound once at start (config_restart_required() names them); gate.rate, gate.burst
 * and gate.deny apply to the SYNs that arrive after the reload; every other key
 * (transparent_source, unix_upstream and the TLS files included) applies to sessions that
 * start after the reload (log_level at once); the auth.* keys, and the files they name
 * (read again on every reload), apply to logins that start after it, while the lockout's
 * counts and locks survive it.
 */
#ifndef PGWARDEN_CONFIG_H
#define PGWARDEN_CONFIG_H

#include "base/addr.h"
#include "auth/auth_types.h" /* enum auth_mode, AUTH_METHOD_*: one definition */
#include "base/log.h"
#include "base/cidr.h"

/* gate.deny ranges at most; = STEER_GATE_MAX_DENY, which the gate module asserts (config
 * does not depend on steer). */
#define CONFIG_GATE_MAX_DENY 64

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_LISTEN 8
#define CONFIG_ERR_MAX 512

/* TLS settings (docs/TLS.md). The config names the choices as the file spells them; the
 * tls module maps them to OpenSSL. Each enum's order is its choice list's order in the
 * settings table. */
enum config_tls_client_mode {
	CONFIG_TLS_CLIENT_DISABLE = 0, /* answer SSLRequest with 'N', refuse direct TLS */
	CONFIG_TLS_CLIENT_PREFER,      /* offer TLS, accept plaintext */
	CONFIG_TLS_CLIENT_REQUIRE,     /* refuse plaintext sessions (28000) */
};

enum config_tls_verify {
	CONFIG_TLS_VERIFY_NONE = 0, /* ask for no client certificate */
	CONFIG_TLS_VERIFY_OPTIONAL, /* ask; a certificate sent must verify */
	CONFIG_TLS_VERIFY_REQUIRED, /* a client without a valid certificate is refused */
};

enum config_tls_server_mode { /* libpq's sslmode words, for pgwarden's upstream leg */
	CONFIG_TLS_SERVER_DISABLE = 0,
	CONFIG_TLS_SERVER_PREFER,
	CONFIG_TLS_SERVER_REQUIRE,
	CONFIG_TLS_SERVER_VERIFY_CA,
	CONFIG_TLS_SERVER_VERIFY_FULL,
};

enum config_tls_version {
	CONFIG_TLS_V1_2 = 0,
	CONFIG_TLS_V1_3,
};

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
	unsigned workers;           /* 0: one per two CPUs the daemon may run on */
	bool pin_workers;           /* bind worker i to the i-th of those CPUs */
	uint32_t buffer_size;       /* bytes per direction buffer (default 32 KiB) */
	uint32_t max_message_size;  /* largest message body accepted from either side */
	uint32_t max_connections;   /* client connections across all workers */
	/* Per session: requests in flight, and the prepared statements the relay remembers. */
	uint32_t max_pipeline;
	uint32_t max_prepared_statements;
	uint64_t max_prepared_bytes;
	uint64_t startup_timeout_ms;  /* client must finish startup and auth */
	uint64_t message_timeout_ms;  /* a message started must be finished within this */
	uint64_t connect_timeout_ms;  /* upstream TCP connect */
	uint64_t drain_timeout_ms;    /* SIGTERM: sessions get this long to finish */
	enum log_level log_level;
	char *admin_socket;   /* admin Unix socket path */
	char *metrics_listen; /* "127.0.0.1:9187"; NULL: metrics off */
	/* Name of the steering attach (pgwardenctl attach --instance) whose BPF maps are read:
	 * 1..31 of [A-Za-z0-9_-]; never NULL; default INSTANCE_NAME_DEFAULT ("pgwarden", base/instance.h). */
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
	struct cidr gate_deny[CONFIG_GATE_MAX_DENY]; /* host bits clear, none twice */
	unsigned ngate_deny;
	/* Pre-login admission (relay/admission.h): connections that have not finished logging
	 * in, in total and per source (a local client's uid, else its address, IPv6 by /64),
	 * and new connections per source; refusals are 53300. */
	uint32_t admission_prelogin_max;
	uint32_t admission_prelogin_per_source;
	uint64_t admission_rate_per_hour; /* 0: no rate limit */
	uint32_t admission_burst;         /* set exactly when a rate is */
	uint32_t admission_max_sources;   /* sources the limits remember */
	/* TLS (docs/TLS.md). The client leg is the clients' connection to pgwarden, where
	 * pgwarden is the TLS server; the server leg is pgwarden's connection to PostgreSQL,
	 * where it is the TLS client. Paths are absolute and NULL when unset. config_validate()
	 * checks that the settings fit together; tls_snapshot_build() checks the files. */
	enum config_tls_client_mode tls_client_mode;
	char *tls_client_cert_file; /* what pgwarden presents to clients */
	char *tls_client_key_file;
	char *tls_client_ca_file;   /* CAs that sign client certificates (mutual TLS) */
	char *tls_client_crl_file;
	enum config_tls_verify tls_client_verify;
	enum config_tls_server_mode tls_server_mode;
	char *tls_server_ca_file;   /* CAs that sign the server's certificate */
	char *tls_server_crl_file;
	char *tls_server_cert_file; /* pgwarden's client certificate towards the server */
	char *tls_server_key_file;
	char *tls_server_name;      /* SNI and verify-full host; NULL: the upstream address */
	enum config_tls_version tls_min_version;
	char *tls_ciphers;          /* TLS 1.2 cipher list; never NULL */
	char *tls_ciphersuites;     /* TLS 1.3 suites; never NULL */
	char *tls_groups;           /* key exchange groups; never NULL */
	bool tls_session_tickets;
	bool tls_fips;              /* bound at start: providers load before any other crypto */
	/* auth.* (userspace/auth/auth.h, docs/AUTH.md). Paths are NULL when unset. */
	uint32_t auth_mode;           /* enum auth_mode */
	uint32_t auth_server_methods; /* AUTH_METHOD_* bits, never 0 */
	char *auth_users_file;        /* SCRAM verifiers (terminate mode) */
	char *auth_upstream_passwords; /* passwords to log in upstream with (terminate mode) */
	char *auth_cert_map;          /* pg_ident-style certificate map (terminate mode) */
	char *auth_cert_map_name;     /* the map in it that applies; never NULL */
	bool auth_require_cert_and_password;
	char *auth_mock_secret_file;  /* secret for mock SCRAM salts; NULL: random per start */
	uint32_t auth_lockout_failures; /* 0: no lockout */
	uint64_t auth_lockout_window_ms;
	uint64_t auth_lockout_duration_ms;
	uint32_t auth_lockout_max_entries;
	/* server_reuse.* (relay/server_pool.h): terminate mode keeps server connections. */
	uint32_t server_reuse_max_idle; /* per worker; 0: none kept */
	uint64_t server_reuse_idle_ms;
	uint64_t server_reuse_lifetime_ms;
	/* The audit trail (docs/AUDIT.md): off unless audit_path is set, and then a signing
	 * key is required (config_validate). Every audit key is bound at start. */
	char *audit_path;
	char *audit_signing_key;
	unsigned audit_fsync;               /* enum config_audit_fsync */
	uint64_t audit_batch_window_ms;     /* batch: how long a record may wait for company */
	uint32_t audit_queue_size;          /* bytes of records waiting for the writer */
	uint64_t audit_write_timeout_ms;    /* a statement waits this long for its record */
	unsigned audit_on_failure;          /* enum config_audit_on_failure */
	bool audit_parameters;              /* write bind parameter values */
	bool audit_literals;                /* write statement text as sent, server error texts */
	uint32_t audit_max_text;            /* longest statement text in a record */
	uint32_t audit_rotate_size;         /* 0: no rotation by size */
	uint64_t audit_rotate_interval_ms;  /* 0: no rotation by age */
	uint32_t audit_checkpoint_records;
	uint64_t audit_checkpoint_interval_ms;
	uint32_t audit_disk_warn;           /* percent of the trail's file system in use */
	char *audit_group;                  /* files 0640 with this group; NULL: 0600 */
	char *audit_syslog_socket;          /* RFC 5424 mirror to a local datagram socket */
	char *audit_syslog_address;         /* ... and/or to a collector over UDP */
	/* The policy file (docs/POLICY.md); NULL: no policy. Loaded at start and on every
	 * reload by policy_reload(), all or nothing. */
	char *policy;
	/* Masking (docs/MASKING.md): the key file of the hash strategy (NULL: no key, hash
	 * masks as null), and the bytes held per masked session while a DataRow or CopyData
	 * message is rewritten (mask_row.h proves why this bounds memory). */
	char *mask_key_file;
	uint32_t mask_row_lookahead;
	/* pgwarden's own connection that resolves the mask rules against the catalog:
	 * role, database, the role's password (userlist file), and its time budget. */
	char *mask_catalog_user;
	char *mask_catalog_database;
	char *mask_catalog_passwords;
	uint64_t mask_catalog_timeout_ms;
	uint64_t mask_catalog_refresh_ms; /* 0: no periodic refresh */
	/* The list came from config_set(): a further flag appends instead of replacing. */
	bool listen_from_flag;
	bool tproxy_listen_from_flag;
	bool gate_deny_from_flag;
};

/* audit.fsync: when a record is durable enough for its statement to go on. */
enum config_audit_fsync {
	CONFIG_AUDIT_FSYNC_ALWAYS = 0, /* fdatasync after every record */
	CONFIG_AUDIT_FSYNC_BATCH,      /* one fdatasync per group of records (group commit) */
	CONFIG_AUDIT_FSYNC_NONE,       /* write(2) only; the kernel writes back when it likes */
	CONFIG_AUDIT_FSYNC_WRITE,      /* statements go on after write(2); one fdatasync per group
					* follows at once, nobody waiting for it */
	CONFIG_AUDIT_FSYNC_COUNT,
};

/* audit.on_failure: what statements get while the trail cannot be written. */
enum config_audit_on_failure {
	CONFIG_AUDIT_REJECT = 0, /* ERROR 53100, the statement is not run */
	CONFIG_AUDIT_CONTINUE,   /* the statement runs unaudited; an alert is logged */
	CONFIG_AUDIT_ON_FAILURE_COUNT,
};

/* Hard caps on what the loader reads, whatever the file says. The accepted structure is at
 * most three levels deep (the top mapping, a group such as "timeouts" or "gate", a list such
 * as "gate.deny" or a subgroup such as "tls.client"); structure the table does not describe
 * is rejected where it starts. */
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

/* The same, and the SHA-256 of exactly the bytes read (for the audit trail's reload
 * records), set whenever the file could be read, even when its content is refused. */
int config_load_file_sha256(struct config *cfg, const char *path, uint8_t sha256[32],
			    bool *read_ok, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Apply one setting by its flag/key name ("listen", "upstream", "workers",
 * "timeouts.startup", ...). "listen" appends. 0, or -1 with a message in err.
 */
int config_set(struct config *cfg, const char *key, const char *value, char *err,
	       size_t errlen) __attribute__((warn_unused_result));

/* Cross-field checks after all sources are applied (a listen address and an upstream
 * present, sizes consistent, TLS settings that fit together). 0, or -1 with a message in
 * err. */
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
 * tproxy_listen, workers, pin_workers, buffer_size, admin_socket, metrics_listen, steer_instance,
 * gate.queue, gate.max_sources, tls.fips); NULL when a reload can apply new as is. */
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

/*
 * The syntax of tls.server.server_name: a numeric IPv4 or IPv6 address, or a DNS name (labels of
 * 1 to 63 letters, digits and '-', not starting or ending with '-', joined by '.', at most
 * 253 characters, no trailing dot). 0, or -EINVAL.
 */
int config_check_server_name(const char *text) __attribute__((warn_unused_result));

#define CONFIG_DEFAULT_ADMIN_SOCKET "/run/pgwarden/admin.sock"

#endif
