/*
 * config: pgwardend settings from YAML and flags (see config.h).
 *
 * One table, settings[], describes every key: its name in the file (dots for nesting), its
 * type, where it lives in struct config, its bounds, its default and its help text. The
 * YAML loader, config_set() (flags), config_keys[], config_get(), config_write_yaml(),
 * config_usage() and config_restart_required() all walk that table, so a key added there is
 * a key everywhere, and docs/CONFIG.md is checked against it by the unit tests.
 *
 * The loader uses libyaml's event API rather than its document API: it never builds a tree,
 * it stops at the first error, and it refuses aliases, so a hostile file cannot make it
 * expand or recurse. The accepted structure is at most three levels deep (a list inside a
 * group: gate.deny; a group inside a group: tls.client.mode), and any deeper nesting is an
 * error at its first event.
 */
#include "config/config.h"
#include "base/errbuf.h"
#include "base/instance.h"
#include "base/utf8.h"


#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define KIB UINT64_C(1024)
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define MS_PER_S UINT64_C(1000)
#define MS_PER_M (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_M)

/* Longest key the table holds, with its group prefix ("timeouts.connect"), plus room. */
#define CONFIG_KEY_MAX 64
/* Groups nest at most this deep ("tls" holds "tls.client", which holds keys). */
#define CONFIG_GROUP_DEPTH_MAX 2
/* Longest file path a TLS setting accepts (PATH_MAX with its NUL). */
#define CONFIG_FILE_PATH_MAX 4095
/* Longest OpenSSL list (tls.ciphers, tls.ciphersuites, tls.groups). */
#define CONFIG_OPENSSL_LIST_MAX 1024
/* How much of a peer-supplied key or value an error message quotes. */
#define QUOTE_MAX 64
/* Room for one formatted value: the longest list, CONFIG_GATE_MAX_DENY ranges, joined by
 * ", " (the assert below keeps the address lists shorter). */
#define VALUE_MAX (CONFIG_GATE_MAX_DENY * (CIDR_STRLEN + 2) + 1 > CONFIG_FILE_PATH_MAX + 1 ?     \
			   CONFIG_GATE_MAX_DENY * (CIDR_STRLEN + 2) + 1 :                      \
			   CONFIG_FILE_PATH_MAX + 1)
/* Problem text before the "FILE:LINE: KEY: " prefix is added. */
#define PROBLEM_MAX 256

_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "workers is stored as 32 bits");
_Static_assert(CONFIG_MAX_LISTEN * (ADDR_STRLEN + 2) + 1 <= VALUE_MAX,
	       "an address list must fit in VALUE_MAX");
_Static_assert(sizeof(INSTANCE_NAME_DEFAULT) > 1 && sizeof(INSTANCE_NAME_DEFAULT) <= INSTANCE_NAME_MAX,
	       "the default steer_instance must pass the steer_instance check");

enum setting_type {
	ST_ADDR_LIST, /* struct addr X[CONFIG_MAX_LISTEN] + unsigned nX + bool X_from_flag */
	ST_CIDR_LIST, /* struct cidr X[CONFIG_GATE_MAX_DENY], nX, X_from_flag likewise */
	ST_ADDR,      /* struct addr, with a bool at set_offset saying it is present */
	ST_COUNT,     /* unsigned 32-bit integer */
	ST_OPT_COUNT, /* unsigned 32-bit integer, with a bool at set_offset; unset: off */
	ST_RATE,      /* events per hour per source, 64-bit (written per second, minute or hour) */
	ST_SIZE,      /* bytes, 32-bit */
	ST_DURATION,  /* milliseconds, 64-bit */
	ST_LOG_LEVEL, /* enum log_level */
	ST_PATH,      /* owned absolute path; never NULL */
	ST_OPT_ADDR,  /* owned "host:port" text in canonical form; NULL: off */
	ST_OPT_PATH,  /* owned absolute path; NULL: off */
	ST_BOOL,      /* bool */
	ST_INSTANCE,  /* owned steering instance name: 1..INSTANCE_NAME_MAX-1 of [A-Za-z0-9_-] */
	ST_CHOICE,    /* an enum: the index of one of the words in choices[] */
	ST_OPT_FILE,  /* owned absolute path of a file, up to CONFIG_FILE_PATH_MAX; NULL: off */
	ST_TEXT,      /* owned text that check() accepts; never NULL */
	ST_OPT_TEXT,  /* owned text that check() accepts; NULL: off */
	ST_SET,       /* uint32_t bits, bit i for choices[i]; never empty */
	ST_TYPE_COUNT,
};

struct setting {
	const char *key;     /* as written in the file; '.' separates a group from its key */
	enum setting_type type;
	size_t offset;       /* of the field in struct config */
	size_t width;        /* sizeof the field, for the integer types */
	size_t set_offset;   /* ST_ADDR, ST_OPT_COUNT: the bool that says the value was given */
	size_t count_offset; /* lists: the unsigned count of items */
	size_t flag_offset;  /* lists: the bool "the list came from config_set()" */
	uint64_t min, max;   /* integer types: accepted range, inclusive */
	uint64_t def;        /* integer types, ST_BOOL: the default */
	const char *def_str; /* ST_PATH, ST_LOG_LEVEL, ST_INSTANCE, ST_TEXT: the default */
	const char *const *choices; /* ST_CHOICE, ST_SET: the words, NULL-terminated, in order */
	bool remote_ok;      /* ST_OPT_ADDR: any address (a syslog collector), not loopback only */
	size_t path_max;     /* ST_PATH, ST_OPT_PATH: longest path; 0: a Unix socket's sun_path */
	/* ST_TEXT, ST_OPT_TEXT: 0, or -1 with what is wrong (no key prefix) in problem. */
	int (*check)(const char *text, char *problem, size_t n);
	bool restart;        /* bound once at start; a reload cannot change it */
	const char *arg;     /* metavariable in --help */
	const char *help;
};

struct type_info {
	const char *what;     /* "a duration": for "expected a duration, got a list" */
	const char *expected; /* what a malformed value is told */
};

static const struct type_info type_infos[ST_TYPE_COUNT] = {
	[ST_ADDR_LIST] = {"an address or a list of addresses",
		       "expected an address like 127.0.0.1:6432, [::1]:6432 or *:6432"},
	[ST_CIDR_LIST] = {"an address range or a list of them",
		       "expected an address range like 10.0.0.0/8, 192.0.2.7 or fd00::/8"},
	[ST_ADDR] = {"an address", "expected an address like 127.0.0.1:5432 or [::1]:5432"},
	[ST_COUNT] = {"a whole number", "expected a whole number"},
	[ST_OPT_COUNT] = {"a whole number", "expected a whole number, or off"},
	[ST_RATE] = {"a rate", "expected a rate like 10/s, 30/m or 100/h"},
	[ST_SIZE] = {"a size", "expected a size like 32KiB, 1MiB or a number of bytes"},
	[ST_DURATION] = {"a duration", "expected a duration like 30s, 500ms or 2m"},
	[ST_LOG_LEVEL] = {"a log level", "expected one of error, warn, info, debug"},
	[ST_PATH] = {"a path", "expected an absolute path"},
	[ST_OPT_ADDR] = {"an address", "expected a loopback address like 127.0.0.1:9187, or off"},
	[ST_OPT_PATH] = {"a path", "expected an absolute path, or off"},
	[ST_BOOL] = {"true or false", "expected true or false (or yes/no, on/off, 1/0)"},
	[ST_INSTANCE] = {"a name", "expected 1 to 31 letters, digits, _ or -"},
	[ST_CHOICE] = {"a word", "expected one of"}, /* followed by the choices */
	[ST_OPT_FILE] = {"a path", "expected an absolute path, or off"},
	[ST_TEXT] = {"a text", "expected a text"},
	[ST_OPT_TEXT] = {"a text", "expected a text, or off"},
	[ST_SET] = {"a list of words", "expected one or more of"}, /* followed by the choices */
};

#define FIELD(f) .offset = offsetof(struct config, f), .width = sizeof(((struct config *)0)->f)
/* A list f of type t: its array, its count nf and its bool f_from_flag. */
#define LIST(t, f)                                                                               \
	.type = t, FIELD(f), .count_offset = offsetof(struct config, n##f),                      \
	.flag_offset = offsetof(struct config, f##_from_flag)
#define RATE_PER_S UINT64_C(3600) /* ST_RATE counts per hour */
#define RATE_PER_M UINT64_C(60)

/* log_target's words, in enum log_target order. */
static const char *const log_target_names[] = {"auto", "stderr", "journal", "syslog", NULL};
_Static_assert(LOG_TARGET_COUNT == 4, "log_target_names follows enum log_target");
static int check_system_name(const char *text, char *problem, size_t n);
static int check_pg_name(const char *text, char *problem, size_t n);

/*
 * THE table. Order is the order of --help, config_keys[] and config_write_yaml(); keys of
 * one group must be adjacent. Bounds and defaults are justified in docs/CONFIG.md.
 */
#define CONFIG_SETTINGS(S)                                                                       \
	S("listen", LIST(ST_ADDR_LIST, listen), .restart = true, .arg = "ADDR",                  \
	  .help = "address the relay accepts clients on; repeat for several")                    \
	S("tproxy_listen", LIST(ST_ADDR_LIST, tproxy_listen), .restart = true, .arg = "ADDR",    \
	  .help = "IP_TRANSPARENT listener for remote clients diverted by nftables TPROXY "     \
		  "(pgwardenctl attach --tproxy-port); repeat for several")                      \
	S("transparent_source", .type = ST_BOOL, FIELD(transparent_source), .def = true,         \
	  .arg = "BOOL",                                                                         \
	  .help = "connect upstream as the client: from its own address for TPROXY'd remote "   \
		  "clients (IP_TRANSPARENT), with its uid and gid on unix_upstream; so "          \
		  "pg_hba.conf and pg_stat_activity see the real client")                         \
	S("upstream", .type = ST_ADDR, FIELD(upstream),                                          \
	  .set_offset = offsetof(struct config, has_upstream), .arg = "ADDR",                    \
	  .help = "PostgreSQL server for connections that carry no original destination")        \
	S("workers", .type = ST_COUNT, FIELD(workers), .min = 0, .max = 1024, .def = 0,          \
	  .restart = true, .arg = "N",                                                           \
	  .help = "worker threads; 0 means one per two CPUs the daemon may run on")              \
	S("pin_workers", .type = ST_BOOL, FIELD(pin_workers), .def = true, .restart = true,      \
	  .arg = "BOOL",                                                                         \
	  .help = "bind each worker thread to one CPU the daemon may run on, in turn; false "   \
		  "leaves placement to the scheduler")                                           \
	S("buffer_size", .type = ST_SIZE, FIELD(buffer_size), .min = 4 * KIB, .max = MIB,        \
	  .def = 32 * KIB, .restart = true, .arg = "SIZE",                                       \
	  .help = "bytes buffered per direction per connection")                                 \
	S("max_message_size", .type = ST_SIZE, FIELD(max_message_size), .min = 8 * KIB,          \
	  .max = CONFIG_PG_MAX_MESSAGE_SIZE, .def = CONFIG_PG_MAX_MESSAGE_SIZE, .arg = "SIZE",   \
	  .help = "largest protocol message body accepted from either side")                     \
	S("max_connections", .type = ST_COUNT, FIELD(max_connections), .min = 1,                 \
	  .max = 1000000, .def = 10000, .arg = "N",                                              \
	  .help = "client connections across all workers")                                       \
	S("session.max_pipeline", .type = ST_COUNT, FIELD(max_pipeline), .min = 16,             \
	  .max = 1000000, .def = 4096, .arg = "N",                                               \
	  .help = "client requests a session may have in flight before pgwarden stops reading "  \
		  "it until some are answered")                                                  \
	S("session.max_prepared_statements", .type = ST_COUNT, FIELD(max_prepared_statements),   \
	  .min = 1, .max = 10000000, .def = 10000, .arg = "N",                                   \
	  .help = "prepared statements a session may hold; one more is refused with 53400")      \
	S("session.max_prepared_bytes", .type = ST_SIZE, FIELD(max_prepared_bytes), .min = KIB,  \
	  .max = GIB, .def = 16 * MIB, .arg = "SIZE",                                            \
	  .help = "bytes of prepared statement names and texts a session may hold; more is "     \
		  "refused with 53400")                                                          \
	S("timeouts.startup", .type = ST_DURATION, FIELD(startup_timeout_ms), .min = MS_PER_S,   \
	  .max = 10 * MS_PER_M, .def = 60 * MS_PER_S, .arg = "DURATION",                         \
	  .help = "a client must finish startup and authentication within this")                 \
	S("timeouts.message", .type = ST_DURATION, FIELD(message_timeout_ms), .min = 100,        \
	  .max = MS_PER_H, .def = 30 * MS_PER_S, .arg = "DURATION",                              \
	  .help = "a message that has started to arrive must be complete within this")           \
	S("timeouts.connect", .type = ST_DURATION, FIELD(connect_timeout_ms), .min = 100,        \
	  .max = 10 * MS_PER_M, .def = 10 * MS_PER_S, .arg = "DURATION",                         \
	  .help = "TCP connect to the upstream server")                                          \
	S("timeouts.drain", .type = ST_DURATION, FIELD(drain_timeout_ms), .min = 0,              \
	  .max = MS_PER_H, .def = 30 * MS_PER_S, .arg = "DURATION",                              \
	  .help = "on SIGTERM, how long sessions may finish before they are closed")             \
	S("log_level", .type = ST_LOG_LEVEL, FIELD(log_level), .def = LOG_INFO,                  \
	  .def_str = "info", .arg = "LEVEL", .help = "error, warn, info or debug")               \
	S("admin_socket", .type = ST_PATH, FIELD(admin_socket), .restart = true,                 \
	  .def_str = CONFIG_DEFAULT_ADMIN_SOCKET, .arg = "PATH",                                 \
	  .help = "admin Unix socket (pgwardenctl)")                                             \
	S("metrics_listen", .type = ST_OPT_ADDR, FIELD(metrics_listen), .restart = true,         \
	  .arg = "ADDR", .help = "Prometheus metrics HTTP endpoint; off when unset")             \
	S("steer_instance", .type = ST_INSTANCE, FIELD(steer_instance), .restart = true,         \
	  .def_str = INSTANCE_NAME_DEFAULT, .arg = "NAME",                                      \
	  .help = "name of the steering attach (pgwardenctl attach --instance) whose BPF maps "  \
		  "pgwardend reads")                                                             \
	S("log_target", .type = ST_CHOICE, FIELD(log_target), .choices = log_target_names,       \
	  .def = LOG_TARGET_AUTO, .restart = true, .arg = "TARGET",                              \
	  .help = "where log lines go: auto (the journal under systemd, syslog when stderr "     \
		  "goes nowhere, else stderr), stderr, journal or syslog")                       \
	S("admin_read_group", .type = ST_OPT_TEXT, FIELD(admin_read_group),                      \
	  .check = check_system_name, .restart = true, .arg = "GROUP",                           \
	  .help = "members of this group may use the admin socket read-only (status, sessions, " \
		  "metrics, events); off: root and pgwardend's user only")                       \
	S("restart_drain", .type = ST_DURATION, FIELD(restart_drain_ms), .min = MS_PER_S,        \
	  .max = 24 * MS_PER_H, .def = MS_PER_H, .arg = "DURATION",                              \
	  .help = "after a seamless restart, how long the old process lets its sessions "        \
		  "finish before it ends them with 57P01")                                       \
	S("unix_listen", .type = ST_OPT_PATH, FIELD(unix_listen), .restart = true,               \
	  .arg = "PATH",                                                                         \
	  .help = "Unix socket the relay accepts clients on (pgwardenctl attach --unix-relay); " \
		  "off when unset")                                                              \
	S("unix_upstream", .type = ST_OPT_PATH, FIELD(unix_upstream), .arg = "PATH",             \
	  .help = "PostgreSQL's Unix socket, for clients that came in on unix_listen; unset: "  \
		  "they go to upstream")                                                         \
	S("gate.queue", .type = ST_OPT_COUNT, FIELD(gate_queue),                                 \
	  .set_offset = offsetof(struct config, gate_enabled), .min = 0, .max = 65535,           \
	  .restart = true, .arg = "N",                                                           \
	  .help = "admission gate: the NFQUEUE pgwardend reads, as given to pgwardenctl attach " \
		  "--gate-queue; off: no gate")                                                  \
	S("gate.rate", .type = ST_RATE, FIELD(gate_rate_per_hour), .min = 0,                     \
	  .max = 1000000 * RATE_PER_S, .def = 0, .arg = "RATE",                                  \
	  .help = "new connections per source address, like 10/s, 30/m or 100/h; 0: no limit")  \
	S("gate.burst", .type = ST_COUNT, FIELD(gate_burst), .min = 0, .max = 1000000,           \
	  .def = 0, .arg = "N",                                                                  \
	  .help = "new connections a source may make at once before gate.rate holds it back; "   \
		  "required with gate.rate")                                                     \
	S("gate.max_sources", .type = ST_COUNT, FIELD(gate_max_sources), .min = 64,              \
	  .max = 1048576, .def = 65536, .restart = true, .arg = "N",                             \
	  .help = "source addresses the rate limit remembers (32 bytes each); the least "        \
		  "recently seen is forgotten first")                                            \
	S("gate.deny", LIST(ST_CIDR_LIST, gate_deny), .arg = "CIDR",                             \
	  .help = "source address range whose new connections are dropped; repeat for several")  \
	S("admission.prelogin_max", .type = ST_COUNT, FIELD(admission_prelogin_max), .min = 1,   \
	  .max = 1000000, .def = 1024, .arg = "N",                                               \
	  .help = "connections that have not finished logging in, from all sources together; "  \
		  "more are refused with 53300")                                                 \
	S("admission.prelogin_per_source", .type = ST_COUNT,                                     \
	  FIELD(admission_prelogin_per_source), .min = 1, .max = 1000000, .def = 128, .arg = "N", \
	  .help = "connections that have not finished logging in from one source (a local "      \
		  "client's uid, else its address; IPv6 by /64)")                                \
	S("admission.rate", .type = ST_RATE, FIELD(admission_rate_per_hour), .min = 0,           \
	  .max = 1000000 * RATE_PER_S, .def = 0, .arg = "RATE",                                  \
	  .help = "new connections per source, like 50/s or 600/m; 0: no limit")                 \
	S("admission.burst", .type = ST_COUNT, FIELD(admission_burst), .min = 0, .max = 1000000, \
	  .def = 0, .arg = "N",                                                                  \
	  .help = "new connections a source may open at once before admission.rate holds it "   \
		  "back; required with admission.rate")                                          \
	S("admission.max_sources", .type = ST_COUNT, FIELD(admission_max_sources), .min = 64,    \
	  .max = 1048576, .def = 65536, .restart = true, .arg = "N",                             \
	  .help = "sources the admission limits remember (48 bytes each); a source with "        \
		  "connections still logging in is never forgotten")                             \
	S("policy", .type = ST_OPT_PATH, FIELD(policy), .arg = "PATH",                           \
	  .help = "policy file (docs/POLICY.md): connection and statement rules, reloaded "      \
		  "with the configuration; off when unset (no statement checks)")                \
	S("mask.key_file", .type = ST_OPT_PATH, FIELD(mask_key_file), .arg = "PATH",             \
	  .help = "key of the hash masking strategy: a file of 32 to 4096 bytes, mode 0600, "    \
		  "owned by pgwarden's user or root; unset: hash masks as null")                 \
	S("mask.row_lookahead", .type = ST_SIZE, FIELD(mask_row_lookahead), .min = KIB,          \
	  .max = 64 * MIB, .def = 64 * KIB, .arg = "SIZE",                                       \
	  .help = "bytes held per masked session while a row is rewritten; a row whose masked "  \
		  "columns lie further in ends the session (54000)")                             \
	S("mask.catalog_user", .type = ST_OPT_TEXT, FIELD(mask_catalog_user),                    \
	  .check = check_pg_name, .arg = "ROLE",                                                 \
	  .help = "role of pgwarden's own connection that reads which columns are masked "       \
		  "(catalog resolution); off: masked sessions are refused (55000)")              \
	S("mask.catalog_database", .type = ST_OPT_TEXT, FIELD(mask_catalog_database),            \
	  .check = check_pg_name, .arg = "NAME",                                                 \
	  .help = "the database whose tables the mask rules name; masked sessions to another "   \
		  "database are refused (55000); off: the catalog role's name")                  \
	S("mask.catalog_passwords", .type = ST_OPT_PATH, FIELD(mask_catalog_passwords),          \
	  .arg = "PATH",                                                                         \
	  .help = "the catalog role's password, in a userlist file like auth.upstream_passwords "\
		  "(mode 0600); off: the server must not ask for one")                           \
	S("mask.catalog_timeout", .type = ST_DURATION, FIELD(mask_catalog_timeout_ms),           \
	  .min = 100, .max = 10 * 60 * MS_PER_S, .def = 10 * MS_PER_S, .arg = "DURATION",       \
	  .help = "how long one catalog resolution (connect, login, query) may take")           \
	S("mask.catalog_refresh", .type = ST_DURATION, FIELD(mask_catalog_refresh_ms), .min = 0, \
	  .max = 24 * MS_PER_H, .def = 60 * MS_PER_S, .arg = "DURATION",                         \
	  .help = "read the catalog again this long after the last resolution, so DDL made "     \
		  "outside masked sessions is seen; 0: only at start, reload and masked DDL")    \
	TLS_SETTINGS(S)                                                                          \
	AUTH_SETTINGS(S)                                                                         \
	CONFIG_AUDIT_SETTINGS(S)

/* TLS (docs/TLS.md), one block: the client leg, the server leg, then what both share. */
#define TLS_SETTINGS(S)                                                                          \
	S("tls.client.mode", .type = ST_CHOICE, FIELD(tls_client_mode),                          \
	  .choices = tls_client_modes, .def = CONFIG_TLS_CLIENT_DISABLE, .arg = "MODE",          \
	  .help = "TLS towards clients: disable (answer SSLRequest with N), prefer (offer TLS) "  \
		  "or require (refuse plaintext sessions)")                                       \
	S("tls.client.cert_file", .type = ST_OPT_FILE, FIELD(tls_client_cert_file),              \
	  .arg = "PATH",                                                                         \
	  .help = "certificate chain pgwarden presents to clients (PEM); the server's own keeps " \
		  "verify-full and channel binding working")                                     \
	S("tls.client.key_file", .type = ST_OPT_FILE, FIELD(tls_client_key_file), .arg = "PATH", \
	  .help = "private key of tls.client.cert_file (PEM)")                                   \
	S("tls.client.ca_file", .type = ST_OPT_FILE, FIELD(tls_client_ca_file), .arg = "PATH",   \
	  .help = "CAs whose client certificates are accepted (PEM); needed by tls.client.verify") \
	S("tls.client.crl_file", .type = ST_OPT_FILE, FIELD(tls_client_crl_file), .arg = "PATH", \
	  .help = "revocation lists (PEM) for every CA of tls.client.ca_file")                   \
	S("tls.client.verify", .type = ST_CHOICE, FIELD(tls_client_verify),                      \
	  .choices = tls_verify_modes, .def = CONFIG_TLS_VERIFY_NONE, .arg = "MODE",             \
	  .help = "client certificates: none, optional (one sent must verify) or required")      \
	S("tls.server.mode", .type = ST_CHOICE, FIELD(tls_server_mode),                          \
	  .choices = tls_server_modes, .def = CONFIG_TLS_SERVER_PREFER, .arg = "MODE",           \
	  .help = "TLS towards PostgreSQL, as libpq's sslmode: disable, prefer, require, "       \
		  "verify-ca or verify-full")                                                     \
	S("tls.server.ca_file", .type = ST_OPT_FILE, FIELD(tls_server_ca_file), .arg = "PATH",   \
	  .help = "CAs that sign the server's certificate (PEM); needed by verify-ca and "       \
		  "verify-full")                                                                  \
	S("tls.server.crl_file", .type = ST_OPT_FILE, FIELD(tls_server_crl_file), .arg = "PATH", \
	  .help = "revocation lists (PEM) for every CA of tls.server.ca_file")                   \
	S("tls.server.cert_file", .type = ST_OPT_FILE, FIELD(tls_server_cert_file),              \
	  .arg = "PATH", .help = "client certificate pgwarden presents to the server (PEM)")     \
	S("tls.server.key_file", .type = ST_OPT_FILE, FIELD(tls_server_key_file), .arg = "PATH", \
	  .help = "private key of tls.server.cert_file (PEM)")                                   \
	S("tls.server.server_name", .type = ST_OPT_TEXT, FIELD(tls_server_name),                 \
	  .check = check_server_name_setting, .arg = "NAME",                                     \
	  .help = "name sent as SNI and checked by verify-full; off: the upstream address")      \
	S("tls.min_version", .type = ST_CHOICE, FIELD(tls_min_version), .choices = tls_versions, \
	  .def = CONFIG_TLS_V1_2, .arg = "VERSION", .help = "TLSv1.2 or TLSv1.3, on both legs")  \
	S("tls.ciphers", .type = ST_TEXT, FIELD(tls_ciphers), .check = check_openssl_list,       \
	  .def_str = "ECDHE+AESGCM:ECDHE+CHACHA20", .arg = "LIST",                               \
	  .help = "TLS 1.2 ciphers (OpenSSL syntax); each must be ECDHE with an AEAD cipher")    \
	S("tls.ciphersuites", .type = ST_TEXT, FIELD(tls_ciphersuites),                          \
	  .check = check_openssl_list,                                                           \
	  .def_str = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", \
	  .arg = "LIST", .help = "TLS 1.3 cipher suites (OpenSSL syntax)")                       \
	S("tls.groups", .type = ST_TEXT, FIELD(tls_groups), .check = check_openssl_list,         \
	  .def_str = "X25519:P-256:P-384", .arg = "LIST",                                        \
	  .help = "key exchange groups (OpenSSL syntax)")                                        \
	S("tls.session_tickets", .type = ST_BOOL, FIELD(tls_session_tickets), .def = false,      \
	  .arg = "BOOL",                                                                         \
	  .help = "let clients resume TLS sessions with tickets (keys in memory, new on reload)") \
	S("tls.fips", .type = ST_BOOL, FIELD(tls_fips), .def = false, .restart = true,           \
	  .arg = "BOOL",                                                                         \
	  .help = "load OpenSSL's FIPS provider before any other crypto; refuse to start "      \
		  "without one")

#define AUTH_SETTINGS(S)                                                                         \
	S("auth.mode", .type = ST_CHOICE, FIELD(auth_mode), .choices = auth_mode_names,              \
	  .def = AUTH_MODE_PASSTHROUGH, .arg = "MODE",                                           \
	  .help = "passthrough: the server authenticates, pgwarden observes and enforces "      \
		  "auth.server_methods; terminate: pgwarden authenticates clients itself and "    \
		  "logs in upstream")                                                            \
	S("auth.server_methods", .type = ST_SET, FIELD(auth_server_methods),                     \
	  .choices = auth_method_names, .def = AUTH_METHODS_ALL, .arg = "METHODS",                 \
	  .help = "methods a server may ask for (comma-separated); any other is refused before " \
		  "the client sends a secret")                                                   \
	S("auth.users_file", .type = ST_OPT_PATH, FIELD(auth_users_file), .arg = "PATH",         \
	  .help = "terminate mode: SCRAM-SHA-256 verifiers, PgBouncer's userlist format; off "  \
		  "when unset")                                                                  \
	S("auth.upstream_passwords", .type = ST_OPT_PATH, FIELD(auth_upstream_passwords),        \
	  .arg = "PATH",                                                                         \
	  .help = "terminate mode: passwords to log in upstream with, userlist format; users "   \
		  "not in it log in with the ClientKey from their own proof")                    \
	S("auth.cert_map", .type = ST_OPT_PATH, FIELD(auth_cert_map), .arg = "PATH",             \
	  .help = "terminate mode: client-certificate identities to roles, pg_ident.conf's "     \
		  "format; off when unset")                                                      \
	S("auth.cert_map_name", .type = ST_INSTANCE, FIELD(auth_cert_map_name),                  \
	  .def_str = "pgwarden", .arg = "NAME", .help = "the map of auth.cert_map that applies")  \
	S("auth.require_cert_and_password", .type = ST_BOOL,                                     \
	  FIELD(auth_require_cert_and_password), .def = false, .arg = "BOOL",                    \
	  .help = "terminate mode: a mapped client certificate and the SCRAM password, both "    \
		  "(two factors)")                                                               \
	S("auth.mock_secret_file", .type = ST_OPT_PATH, FIELD(auth_mock_secret_file),            \
	  .arg = "PATH",                                                                         \
	  .help = "at least 32 secret bytes that make unknown users' SCRAM salts look real and "  \
		  "stay the same across restarts; unset: random at each start")                  \
	S("auth.lockout.failures", .type = ST_COUNT, FIELD(auth_lockout_failures), .min = 0,     \
	  .max = 1000, .def = 10, .arg = "N",                                                    \
	  .help = "failed logins of one user, or from one source, that lock it; 0: no lockout")  \
	S("auth.lockout.window", .type = ST_DURATION, FIELD(auth_lockout_window_ms),             \
	  .min = MS_PER_S, .max = 24 * MS_PER_H, .def = 15 * MS_PER_M, .arg = "DURATION",        \
	  .help = "the failures must fall within this, counted from the first")                  \
	S("auth.lockout.duration", .type = ST_DURATION, FIELD(auth_lockout_duration_ms),         \
	  .min = MS_PER_S, .max = 7 * 24 * MS_PER_H, .def = 30 * MS_PER_M, .arg = "DURATION",    \
	  .help = "how long a lock lasts (pgwardenctl unlock ends it sooner)")                   \
	S("auth.lockout.max_entries", .type = ST_COUNT, FIELD(auth_lockout_max_entries),         \
	  .min = 64, .max = 1048576, .def = 65536, .arg = "N",                                   \
	  .help = "users and sources the lockout remembers (about 160 bytes each); the least "   \
		  "recently failed unlocked one is forgotten first")                             \
	S("server_reuse.max_idle", .type = ST_COUNT, FIELD(server_reuse_max_idle), .min = 0,     \
	  .max = 100000, .def = 0, .arg = "N",                                                   \
	  .help = "terminate mode: server connections each worker keeps, reset with DISCARD "    \
		  "ALL, for the next client of the same user, database and options; 0: none")   \
	S("server_reuse.idle_timeout", .type = ST_DURATION, FIELD(server_reuse_idle_ms),         \
	  .min = MS_PER_S, .max = 24 * MS_PER_H, .def = 60 * MS_PER_S, .arg = "DURATION",        \
	  .help = "a kept server connection unused this long is closed")                         \
	S("server_reuse.lifetime", .type = ST_DURATION, FIELD(server_reuse_lifetime_ms),         \
	  .min = MS_PER_S, .max = 7 * 24 * MS_PER_H, .def = MS_PER_H, .arg = "DURATION",         \
	  .help = "a server connection older than this is closed instead of kept")

/* The audit trail's block (docs/AUDIT.md). All bound at start: the writer owns the files. */
static const char *const audit_fsync_choices[] = {"always", "batch", "none", "write", NULL};
static const char *const audit_on_failure_choices[] = {"reject", "continue", NULL};
_Static_assert(CONFIG_AUDIT_FSYNC_COUNT == 4 && CONFIG_AUDIT_ON_FAILURE_COUNT == 2,
	       "the choice words follow the enums");
#define AUDIT_PATH_MAX 1024 /* leaves room for a rotated file's suffix under PATH_MAX */

#define CONFIG_AUDIT_SETTINGS(S)                                                                 \
	S("audit.path", .type = ST_OPT_PATH, FIELD(audit_path), .path_max = AUDIT_PATH_MAX,      \
	  .restart = true, .arg = "PATH",                                                        \
	  .help = "the audit trail (JSON lines, chained and signed); rotated files go beside "   \
		  "it; off when unset")                                                          \
	S("audit.signing_key", .type = ST_OPT_PATH, FIELD(audit_signing_key),                    \
	  .path_max = AUDIT_PATH_MAX, .restart = true, .arg = "PATH",                            \
	  .help = "Ed25519 private key (PEM, mode 0600) that signs checkpoints; required with "  \
		  "audit.path (pgwardenctl audit keygen)")                                       \
	S("audit.fsync", .type = ST_CHOICE, FIELD(audit_fsync), .choices = audit_fsync_choices,  \
	  .def = CONFIG_AUDIT_FSYNC_BATCH, .restart = true, .arg = "MODE",                       \
	  .help = "when a statement's record is durable enough for it to run: always (fsync "    \
		  "each record), batch (one fsync per group), write (written; the group's fsync " \
		  "follows), none (write only)")                                                 \
	S("audit.batch_window", .type = ST_DURATION, FIELD(audit_batch_window_ms), .min = 0,     \
	  .max = 100, .def = 0, .restart = true, .arg = "DURATION",                              \
	  .help = "batch: how long the writer waits for more records before a write and fsync; " \
		  "0: records that arrive during an fsync share the next one")                   \
	S("audit.queue_size", .type = ST_SIZE, FIELD(audit_queue_size), .min = 64 * KIB,         \
	  .max = GIB, .def = 16 * MIB, .restart = true, .arg = "SIZE",                           \
	  .help = "records waiting for the writer; when full, statements wait (never dropped)")  \
	S("audit.write_timeout", .type = ST_DURATION, FIELD(audit_write_timeout_ms),             \
	  .min = 100, .max = MS_PER_H, .def = 10 * MS_PER_S, .restart = true,                    \
	  .arg = "DURATION",                                                                     \
	  .help = "a statement waits this long for its record to be written, then fails with "   \
		  "53100")                                                                       \
	S("audit.on_failure", .type = ST_CHOICE, FIELD(audit_on_failure),                        \
	  .choices = audit_on_failure_choices, .def = CONFIG_AUDIT_REJECT, .restart = true,      \
	  .arg = "ACTION",                                                                       \
	  .help = "while the trail cannot be written: reject (statements fail with 53100) or "   \
		  "continue (they run unaudited, with an alert); the gap is recorded either way") \
	S("audit.parameters", .type = ST_BOOL, FIELD(audit_parameters), .def = false,            \
	  .restart = true, .arg = "BOOL",                                                        \
	  .help = "write bind parameter values (never for statements that set a password)")      \
	S("audit.literals", .type = ST_BOOL, FIELD(audit_literals), .def = false,                \
	  .restart = true, .arg = "BOOL",                                                        \
	  .help = "write statement text as sent and server error texts; false: literals become " \
		  "$n")                                                                          \
	S("audit.max_text", .type = ST_SIZE, FIELD(audit_max_text), .min = 256, .max = MIB,      \
	  .def = 16 * KIB, .restart = true, .arg = "SIZE",                                       \
	  .help = "statement text longer than this is cut in the record (and marked)")           \
	S("audit.rotate_size", .type = ST_SIZE, FIELD(audit_rotate_size), .min = 0, .max = GIB,  \
	  .def = 256 * MIB, .restart = true, .arg = "SIZE",                                      \
	  .help = "start a new file once the trail reaches this size; 0: never by size")         \
	S("audit.rotate_interval", .type = ST_DURATION, FIELD(audit_rotate_interval_ms),         \
	  .min = 0, .max = 168 * MS_PER_H, .def = 24 * MS_PER_H, .restart = true,                \
	  .arg = "DURATION", .help = "start a new file after this long; 0: never by age")        \
	S("audit.checkpoint.records", .type = ST_COUNT, FIELD(audit_checkpoint_records),         \
	  .min = 1, .max = 1000000, .def = 1000, .restart = true, .arg = "N",                    \
	  .help = "sign a checkpoint after this many records")                                   \
	S("audit.checkpoint.interval", .type = ST_DURATION,                                      \
	  FIELD(audit_checkpoint_interval_ms), .min = MS_PER_S, .max = 24 * MS_PER_H,            \
	  .def = MS_PER_M, .restart = true, .arg = "DURATION",                                   \
	  .help = "sign a checkpoint at least this often while records arrive")                  \
	S("audit.disk_warn", .type = ST_COUNT, FIELD(audit_disk_warn), .min = 1, .max = 100,     \
	  .def = 90, .restart = true, .arg = "PERCENT",                                          \
	  .help = "warn (log and record) when the trail's file system is this full")             \
	S("audit.group", .type = ST_OPT_TEXT, FIELD(audit_group), .check = check_system_name,    \
	  .restart = true, .arg = "GROUP",                                                       \
	  .help = "trail files are 0640 and owned by this group; off: 0600")                     \
	S("audit.syslog_socket", .type = ST_OPT_PATH, FIELD(audit_syslog_socket),                \
	  .restart = true, .arg = "PATH",                                                        \
	  .help = "mirror every record to this local syslog datagram socket (RFC 5424), e.g. "   \
		  "/dev/log; off when unset")                                                    \
	S("audit.syslog_address", .type = ST_OPT_ADDR, FIELD(audit_syslog_address),              \
	  .remote_ok = true, .restart = true, .arg = "ADDR",                                     \
	  .help = "mirror every record to this syslog collector over UDP (RFC 5424/5426); off "  \
		  "when unset")

static int check_system_name(const char *text, char *problem, size_t n);

static const char *const tls_client_modes[] = {"disable", "prefer", "require", NULL};
static const char *const tls_verify_modes[] = {"none", "optional", "required", NULL};
static const char *const tls_server_modes[] = {"disable", "prefer", "require", "verify-ca",
					       "verify-full", NULL};
static const char *const tls_versions[] = {"TLSv1.2", "TLSv1.3", NULL};
_Static_assert(sizeof(enum config_tls_client_mode) == sizeof(uint32_t) &&
		       sizeof(enum config_tls_verify) == sizeof(uint32_t) &&
		       sizeof(enum config_tls_server_mode) == sizeof(uint32_t) &&
		       sizeof(enum config_tls_version) == sizeof(uint32_t),
	       "a choice is stored as 32 bits");

static int check_server_name_setting(const char *text, char *problem, size_t n);
static int check_openssl_list(const char *text, char *problem, size_t n);

#define AS_SETTING(name, ...) {.key = name, __VA_ARGS__},
#define AS_KEY(name, ...) name,

static const struct setting settings[] = {CONFIG_SETTINGS(AS_SETTING)};
const char *const config_keys[] = {CONFIG_SETTINGS(AS_KEY) NULL};

#define NSETTINGS ARRAY_SIZE(settings)

/* ---- small helpers ------------------------------------------------------------------ */

/*
 * Text from the file or a flag, made safe to print inside double quotes on one line:
 * quotes, backslashes and anything outside printable ASCII are escaped, and long text is
 * cut with "..." so one error stays one short line. Returns out.
 */
static const char *quote(const char *s, size_t len, char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (n < 4) { /* no room for even "..." */
		if (n)
			out[0] = '\0';
		return out;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		size_t need = (c == '"' || c == '\\') ? 2 : (c < 0x20 || c >= 0x7f) ? 4 : 1;

		if (o + need + 4 > n) { /* keep room for "..." and the NUL */
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (need == 2) {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (need == 4) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	return out;
}

static void *field(struct config *cfg, const struct setting *st)
{
	return (char *)cfg + st->offset;
}

static const void *cfield(const struct config *cfg, const struct setting *st)
{
	return (const char *)cfg + st->offset;
}

static uint64_t get_uint(const struct config *cfg, const struct setting *st)
{
	if (st->width == sizeof(uint64_t)) {
		uint64_t v;

		memcpy(&v, cfield(cfg, st), sizeof(v));
		return v;
	}
	uint32_t v;

	memcpy(&v, cfield(cfg, st), sizeof(v));
	return v;
}

static void put_uint(struct config *cfg, const struct setting *st, uint64_t value)
{
	if (st->width == sizeof(uint64_t)) {
		memcpy(field(cfg, st), &value, sizeof(value));
	} else {
		uint32_t v = (uint32_t)value; /* bounds checked against st->max <= UINT32_MAX */

		memcpy(field(cfg, st), &v, sizeof(v));
	}
}

static char **str_field(struct config *cfg, const struct setting *st)
{
	return (char **)field(cfg, st);
}

/* Replace an owned string field with a copy of text. 0 or -ENOMEM (field unchanged). */
static int set_owned_str(struct config *cfg, const struct setting *st, const char *text)
{
	char *copy = strdup(text);

	if (!copy)
		return -ENOMEM;
	free(*str_field(cfg, st));
	*str_field(cfg, st) = copy;
	return 0;
}

static char *const *cstr_field(const struct config *cfg, const struct setting *st)
{
	return (char *const *)cfield(cfg, st);
}

/* Types whose field is an owned char * (freed, cloned and adopted with the config). */
static bool type_is_owned_str(enum setting_type t)
{
	return t == ST_PATH || t == ST_OPT_ADDR || t == ST_OPT_PATH || t == ST_INSTANCE ||
	       t == ST_OPT_FILE || t == ST_TEXT || t == ST_OPT_TEXT;
}

/* Types that may be unset, written "off", "~" or left empty (value_is_off()). */
static bool type_is_optional(enum setting_type t)
{
	return t == ST_OPT_ADDR || t == ST_OPT_PATH || t == ST_OPT_COUNT || t == ST_OPT_FILE ||
	       t == ST_OPT_TEXT;
}

/* "disable, prefer, require": the words of a choice setting, for its messages. */
static const char *choices_text(const struct setting *st, char *buf, size_t n)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; st->choices[i]; i++) {
		int w = snprintf(buf + o, n - o, "%s%s", i ? ", " : "", st->choices[i]);

		if (w < 0 || (size_t)w >= n - o)
			break;
		o += (size_t)w;
	}
	return buf;
}

/* What a malformed value of st is told: "expected a duration like 30s, ...". */
static const char *setting_expected(const struct setting *st, char *buf, size_t n)
{
	char words[128];

	if (st->type != ST_CHOICE && st->type != ST_SET)
		return type_infos[st->type].expected;
	snprintf(buf, n, "%s %s", type_infos[st->type].expected,
		 choices_text(st, words, sizeof(words)));
	return buf;
}

/* What st holds, for "expected X, got a list". */
static const char *setting_what(const struct setting *st, char *buf, size_t n)
{
	char words[128];

	if (st->type != ST_CHOICE && st->type != ST_SET)
		return type_infos[st->type].what;
	snprintf(buf, n, "%s of %s", st->type == ST_SET ? "some" : "one",
		 choices_text(st, words, sizeof(words)));
	return buf;
}

/* The words of st whose bit is set in bits, joined by ", ". */
static const char *set_text(const struct setting *st, uint32_t bits, char *buf, size_t n)
{
	size_t o = 0;

	buf[0] = '\0';
	for (unsigned i = 0; st->choices[i]; i++) {
		int w;

		if (!(bits & (1u << i)))
			continue;
		w = snprintf(buf + o, n - o, "%s%s", o ? ", " : "", st->choices[i]);
		if (w < 0 || (size_t)w >= n - o)
			break;
		o += (size_t)w;
	}
	return buf;
}

/* Index of word[0..len) among st's choices, or -1. */
static int choice_index(const struct setting *st, const char *word, size_t len)
{
	for (unsigned i = 0; st->choices[i]; i++)
		if (strlen(st->choices[i]) == len && memcmp(st->choices[i], word, len) == 0)
			return (int)i;
	return -1;
}

/* "a, b" or "a,b" into bits. 0, or -EINVAL (an unknown or empty item). */
static int parse_set(const struct setting *st, const char *text, uint32_t *bits)
{
	const char *p = text;
	uint32_t v = 0;

	for (;;) {
		const char *start, *end;
		int i;

		while (*p == ' ')
			p++;
		start = p;
		while (*p && *p != ',' && *p != ' ')
			p++;
		end = p;
		while (*p == ' ')
			p++;
		i = choice_index(st, start, (size_t)(end - start));
		if (i < 0)
			return -EINVAL;
		v |= 1u << i;
		if (!*p)
			break;
		if (*p++ != ',')
			return -EINVAL;
	}
	*bits = v;
	return 0;
}

/*
 * What a list setting holds. The lists share everything else: a single value or a YAML list
 * in the file, the first flag replacing the file's items and later flags adding to them, a
 * fixed capacity, and one canonical spelling per item.
 */
struct list_kind {
	size_t item_size;
	unsigned max;
	const char *item;  /* "an address": for "expected an address, got a mapping" */
	const char *items; /* "addresses": for "more than 8 addresses" */
	/* text into *item: 0, or -1 with the problem (no key prefix) in problem. */
	int (*parse)(const char *text, void *item, char *problem, size_t n);
	/* *item as the file spells it, in ITEM_STRLEN bytes; returns buf. */
	const char *(*format)(const void *item, char *buf, size_t n);
};

/* Room for one formatted list item. */
#define ITEM_STRLEN ADDR_STRLEN
_Static_assert(CIDR_STRLEN <= ITEM_STRLEN, "a range must fit where an address fits");

static const struct list_kind *list_kind_of(enum setting_type t);

/* A list setting's item i, count and from-flag bool. */
static void *list_item(struct config *cfg, const struct setting *st, unsigned i)
{
	return (char *)field(cfg, st) + (size_t)i * list_kind_of(st->type)->item_size;
}

static const void *clist_item(const struct config *cfg, const struct setting *st, unsigned i)
{
	return (const char *)cfield(cfg, st) + (size_t)i * list_kind_of(st->type)->item_size;
}

static unsigned *list_count(struct config *cfg, const struct setting *st)
{
	return (unsigned *)((char *)cfg + st->count_offset);
}

static unsigned clist_count(const struct config *cfg, const struct setting *st)
{
	return *(const unsigned *)((const char *)cfg + st->count_offset);
}

static bool *list_from_flag(struct config *cfg, const struct setting *st)
{
	return (bool *)((char *)cfg + st->flag_offset);
}

/* ---- value parsers ------------------------------------------------------------------ */

/* Leading decimal digits of s into *v; *end after them (also on -ERANGE, so the caller
 * can still judge the suffix). -EINVAL without digits, -ERANGE past UINT64_MAX. */
static int parse_digits(const char *s, uint64_t *v, const char **end)
{
	uint64_t n = 0;
	const char *p = s;
	bool overflow = false;

	*end = s;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (n > (UINT64_MAX - d) / 10)
			overflow = true;
		else
			n = n * 10 + d;
	}
	*end = p;
	if (overflow)
		return -ERANGE;
	*v = n;
	return 0;
}

struct unit {
	const char *suffix;
	uint64_t mult;
};

static int parse_with_units(const char *text, const struct unit *units, size_t nunits,
			    uint64_t *out)
{
	const char *end;
	uint64_t n;
	int rc = parse_digits(text, &n, &end);

	if (rc == -EINVAL)
		return rc;
	/* A malformed suffix is the more useful report even when the digits overflowed. */
	for (size_t i = 0; i < nunits; i++) {
		if (strcmp(end, units[i].suffix) != 0)
			continue;
		if (rc)
			return rc;
		if (n > UINT64_MAX / units[i].mult)
			return -ERANGE;
		*out = n * units[i].mult;
		return 0;
	}
	return -EINVAL;
}

int config_parse_duration(const char *text, uint64_t *ms)
{
	static const struct unit units[] = {
		{"", MS_PER_S}, {"ms", 1}, {"s", MS_PER_S}, {"m", MS_PER_M}, {"h", MS_PER_H},
	};

	return parse_with_units(text, units, ARRAY_SIZE(units), ms);
}

int config_parse_size(const char *text, uint64_t *bytes)
{
	static const struct unit units[] = {
		{"", 1}, {"B", 1}, {"KiB", KIB}, {"MiB", MIB}, {"GiB", GIB},
	};

	return parse_with_units(text, units, ARRAY_SIZE(units), bytes);
}

int config_parse_rate(const char *text, uint64_t *per_hour)
{
	static const struct unit units[] = {
		{"", RATE_PER_S}, {"/s", RATE_PER_S}, {"/m", RATE_PER_M}, {"/h", 1},
	};

	return parse_with_units(text, units, ARRAY_SIZE(units), per_hour);
}

static bool ascii_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int config_check_server_name(const char *text)
{
	struct in6_addr a6;
	struct in_addr a4;
	size_t len = strlen(text), label = 0;
	bool label_numeric = true;

	if (inet_pton(AF_INET, text, &a4) == 1 || inet_pton(AF_INET6, text, &a6) == 1)
		return 0;
	if (len == 0 || len > 253)
		return -EINVAL;
	for (size_t i = 0; i <= len; i++) {
		char c = text[i];

		if (c == '.' || c == '\0') {
			if (label == 0 || text[i - 1] == '-')
				return -EINVAL;
			/* A numeric last label makes "10.0.0.256" a host name: refuse it, as
			 * RFC 1123 does for top-level labels, so a mistyped address is caught. */
			if (c == '\0' && label_numeric)
				return -EINVAL;
			label = 0;
			label_numeric = true;
			continue;
		}
		if (!ascii_alnum(c) && c != '-')
			return -EINVAL;
		if (label == 0 && c == '-')
			return -EINVAL;
		if (c < '0' || c > '9')
			label_numeric = false;
		if (++label > 63)
			return -EINVAL;
	}
	return 0;
}

static const char *format_rate(uint64_t per_hour, char *buf, size_t n)
{
	if (per_hour % RATE_PER_S == 0)
		snprintf(buf, n, "%" PRIu64 "/s", per_hour / RATE_PER_S);
	else if (per_hour % RATE_PER_M == 0)
		snprintf(buf, n, "%" PRIu64 "/m", per_hour / RATE_PER_M);
	else
		snprintf(buf, n, "%" PRIu64 "/h", per_hour);
	return buf;
}

static const char *format_duration(uint64_t ms, char *buf, size_t n)
{
	if (ms != 0 && ms % MS_PER_H == 0)
		snprintf(buf, n, "%" PRIu64 "h", ms / MS_PER_H);
	else if (ms != 0 && ms % MS_PER_M == 0)
		snprintf(buf, n, "%" PRIu64 "m", ms / MS_PER_M);
	else if (ms % MS_PER_S == 0)
		snprintf(buf, n, "%" PRIu64 "s", ms / MS_PER_S);
	else
		snprintf(buf, n, "%" PRIu64 "ms", ms);
	return buf;
}

static const char *format_size(uint64_t bytes, char *buf, size_t n)
{
	if (bytes != 0 && bytes % GIB == 0)
		snprintf(buf, n, "%" PRIu64 "GiB", bytes / GIB);
	else if (bytes != 0 && bytes % MIB == 0)
		snprintf(buf, n, "%" PRIu64 "MiB", bytes / MIB);
	else if (bytes != 0 && bytes % KIB == 0)
		snprintf(buf, n, "%" PRIu64 "KiB", bytes / KIB);
	else
		snprintf(buf, n, "%" PRIu64, bytes);
	return buf;
}

static const char *format_uint(const struct setting *st, uint64_t v, char *buf, size_t n)
{
	if (st->type == ST_DURATION)
		return format_duration(v, buf, n);
	if (st->type == ST_SIZE)
		return format_size(v, buf, n);
	if (st->type == ST_RATE)
		return format_rate(v, buf, n);
	snprintf(buf, n, "%" PRIu64, v);
	return buf;
}

/* Valid UTF-8 with no C0 control character and no DEL: what a path may hold so that the
 * config can be written back out as YAML and printed in a log line. */
static bool printable_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s);

	while (left) {
		uint32_t cp;
		size_t k = utf8_decode(p, left, &cp);

		if (!k || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
			return false;
		p += k;
		left -= k;
	}
	return true;
}

/* ---- applying one value ------------------------------------------------------------- */

/* A user or group name as Debian's adduser accepts them by default, no longer than the 32
 * bytes useradd allows: portable characters only, so it prints and reads back as YAML
 * unchanged, and nothing option-like or numeric at its start. */
static int check_system_name(const char *text, char *problem, size_t n)
{
	size_t len = strlen(text);
	bool ok = len > 0 && len <= 32 && !(text[0] >= '0' && text[0] <= '9') && text[0] != '-' &&
		  text[0] != '.';
	char q[QUOTE_MAX];

	for (size_t i = 0; ok && i < len; i++)
		ok = (text[i] >= 'a' && text[i] <= 'z') || (text[i] >= 'A' && text[i] <= 'Z') ||
		     (text[i] >= '0' && text[i] <= '9') || text[i] == '_' || text[i] == '-' ||
		     text[i] == '.';
	if (ok)
		return 0;
	errbuf_set(problem, n,
		   "expected a group name (letters, digits, _ . -; at most 32, not starting with "
		   "a digit, - or .), or off, got \"%s\"",
		   quote(text, len, q, sizeof(q)));
	return -1;
}

/* A PostgreSQL role or database name: 1 to 63 bytes (NAMEDATALEN - 1), no control byte. */
static int check_pg_name(const char *text, char *problem, size_t n)
{
	size_t len = strlen(text);
	bool ok = len > 0 && len <= 63;
	char q[QUOTE_MAX];

	for (size_t i = 0; ok && i < len; i++)
		ok = (unsigned char)text[i] >= 0x20 && text[i] != 0x7f;
	if (ok)
		return 0;
	errbuf_set(problem, n, "expected a PostgreSQL name (1 to 63 bytes, no control characters), "
			       "or off, got \"%s\"", quote(text, len, q, sizeof(q)));
	return -1;
}

static int check_server_name_setting(const char *text, char *problem, size_t n)
{
	char q[QUOTE_MAX];

	if (config_check_server_name(text) == 0)
		return 0;
	errbuf_set(problem, n,
		   "expected a host name like db.example.com or an IP address, got \"%s\"",
		   quote(text, strlen(text), q, sizeof(q)));
	return -1;
}

/* The syntax OpenSSL's cipher, suite and group lists share; whether the names exist is
 * OpenSSL's to say, when tls_snapshot_build() applies them. */
static int check_openssl_list(const char *text, char *problem, size_t n)
{
	static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				      "0123456789:+-!@=_.,";
	size_t len = strlen(text);
	char q[QUOTE_MAX];

	if (len > CONFIG_OPENSSL_LIST_MAX) {
		errbuf_set(problem, n, "longer than %d characters", CONFIG_OPENSSL_LIST_MAX);
		return -1;
	}
	if (len == 0 || strspn(text, allowed) != len) {
		errbuf_set(problem, n,
			   "expected an OpenSSL list of names joined by ':' (letters, digits and "
			   "+-!@=_.,), got \"%s\"",
			   quote(text, len, q, sizeof(q)));
		return -1;
	}
	return 0;
}

/* 127.0.0.0/8 or ::1: the only places an unauthenticated endpoint may listen. */

/* How a value reaches apply_value(): from a flag, or from the file as a whole value or as
 * one item of a list ("listen", "tproxy_listen", "gate.deny"). */
enum value_source {
	FROM_FLAG,
	FROM_FILE,
	FROM_FILE_ITEM,
};

static int parse_addr_item(const char *text, void *item, char *problem, size_t n)
{
	char q[QUOTE_MAX];

	if (addr_parse(text, item) == 0)
		return 0;
	errbuf_set(problem, n, "%s, got \"%s\"", type_infos[ST_ADDR_LIST].expected,
		   quote(text, strlen(text), q, sizeof(q)));
	return -1;
}

static const char *format_addr_item(const void *item, char *buf, size_t n)
{
	return addr_format(&((const struct addr *)item)->ss.sa, buf, n);
}

/* A range with host bits set ("10.1.2.3/8") is refused: it is far more often a slip for /24
 * or /32 than a way to write 10.0.0.0/8, and a deny list must say plainly what it denies. */
static int parse_cidr_item(const char *text, void *item, char *problem, size_t n)
{
	struct cidr *c = item, net;
	char q[QUOTE_MAX], range[CIDR_STRLEN];

	if (cidr_parse(text, c)) {
		errbuf_set(problem, n, "%s, got \"%s\"", type_infos[ST_CIDR_LIST].expected,
			   quote(text, strlen(text), q, sizeof(q)));
		return -1;
	}
	net = *c;
	cidr_mask(&net);
	if (memcmp(net.addr, c->addr, sizeof(net.addr)) != 0) {
		errbuf_set(problem, n, "\"%s\" has host bits set (the range is %s)",
			   quote(text, strlen(text), q, sizeof(q)),
			   cidr_format(&net, range, sizeof(range)));
		return -1;
	}
	return 0;
}

static const char *format_cidr_item(const void *item, char *buf, size_t n)
{
	return cidr_format(item, buf, n);
}

/* Room for one item of any list, parsed before it is stored. */
union list_item_buf {
	struct addr addr;
	struct cidr cidr;
};

static const struct list_kind addr_list_kind = {
	.item_size = sizeof(struct addr), .max = CONFIG_MAX_LISTEN, .item = "an address",
	.items = "addresses", .parse = parse_addr_item, .format = format_addr_item,
};
static const struct list_kind cidr_list_kind = {
	.item_size = sizeof(struct cidr), .max = CONFIG_GATE_MAX_DENY,
	.item = "an address range", .items = "ranges", .parse = parse_cidr_item,
	.format = format_cidr_item,
};

/* The kind of a list type; NULL for every other type. */
static const struct list_kind *list_kind_of(enum setting_type t)
{
	switch (t) {
	case ST_ADDR_LIST:
		return &addr_list_kind;
	case ST_CIDR_LIST:
		return &cidr_list_kind;
	default:
		return NULL;
	}
}

static int apply_list(struct config *cfg, const struct setting *st, const char *text,
		      enum value_source src, char *problem, size_t n)
{
	const struct list_kind *k = list_kind_of(st->type);
	unsigned *count = list_count(cfg, st);
	bool *from_flag = list_from_flag(cfg, st);
	union list_item_buf item;

	if (k->parse(text, &item, problem, n))
		return -1;
	/* Flags override the file: the first --listen replaces the file's list. A whole value
	 * in the file replaces everything before it; list items were cleared by the loader. */
	if ((src == FROM_FLAG && !*from_flag) || src == FROM_FILE)
		*count = 0;
	if (*count >= k->max) {
		errbuf_set(problem, n, "more than %u %s", k->max, k->items);
		return -1;
	}
	memcpy(list_item(cfg, st, (*count)++), &item, k->item_size);
	*from_flag = src == FROM_FLAG;
	return 0;
}

/* PostgreSQL's and YAML 1.1's spellings of a boolean, in any case. 1, 0, or -1. */
static int parse_bool(const char *text)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(text, yes[i]) == 0)
			return 1;
		if (strcasecmp(text, no[i]) == 0)
			return 0;
	}
	return -1;
}

static int apply_uint(struct config *cfg, const struct setting *st, const char *text,
		      char *problem, size_t n)
{
	char q[QUOTE_MAX], lo[32], hi[32];
	uint64_t v;
	const char *end;
	int rc;

	if (st->type == ST_DURATION) {
		rc = config_parse_duration(text, &v);
	} else if (st->type == ST_SIZE) {
		rc = config_parse_size(text, &v);
	} else if (st->type == ST_RATE) {
		rc = config_parse_rate(text, &v);
	} else {
		rc = parse_digits(text, &v, &end);
		if (rc != -EINVAL && *end)
			rc = -EINVAL;
	}
	if (rc == -EINVAL) {
		errbuf_set(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
			   quote(text, strlen(text), q, sizeof(q)));
		return -1;
	}
	if (rc == -ERANGE || v < st->min || v > st->max) {
		errbuf_set(problem, n, "\"%s\" is out of range (%s to %s)",
			   quote(text, strlen(text), q, sizeof(q)),
			   format_uint(st, st->min, lo, sizeof(lo)),
			   format_uint(st, st->max, hi, sizeof(hi)));
		return -1;
	}
	put_uint(cfg, st, v);
	return 0;
}

/* The optional settings' (ST_OPT_*) spellings of "not set": null, empty or "off". */
static bool value_is_off(const char *text, bool is_null)
{
	return is_null || text[0] == '\0' || strcmp(text, "off") == 0;
}

/*
 * Parse text as the setting st and store it in cfg. is_null: the file said "~", "null" or
 * nothing at all. Either the value is stored whole or cfg is left as it was and a problem
 * (without the "FILE:LINE: KEY: " prefix) is written. 0 or -1.
 */
static int apply_value(struct config *cfg, const struct setting *st, const char *text,
		       bool is_null, enum value_source src, char *problem, size_t n)
{
	char q[QUOTE_MAX];
	struct addr a;
	int level;

	/* An optional text setting turned off (ST_OPT_COUNT has its own "set" flag). */
	if (type_is_optional(st->type) && type_is_owned_str(st->type) && value_is_off(text, is_null)) {
		free(*str_field(cfg, st));
		*str_field(cfg, st) = NULL;
		return 0;
	}
	if (is_null && !type_is_optional(st->type)) {
		char what[160];

		errbuf_set(problem, n, "missing value (%s)",
			   setting_expected(st, what, sizeof(what)));
		return -1;
	}
	switch (st->type) {
	case ST_ADDR_LIST:
	case ST_CIDR_LIST:
		return apply_list(cfg, st, text, src, problem, n);
	case ST_ADDR:
		if (addr_parse(text, &a)) {
			errbuf_set(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
				   quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		memcpy(field(cfg, st), &a, sizeof(a));
		*(bool *)((char *)cfg + st->set_offset) = true;
		return 0;
	case ST_COUNT:
	case ST_SIZE:
	case ST_DURATION:
	case ST_RATE:
		return apply_uint(cfg, st, text, problem, n);
	case ST_OPT_COUNT: {
		bool *set = (bool *)((char *)cfg + st->set_offset);

		if (value_is_off(text, is_null)) {
			put_uint(cfg, st, 0);
			*set = false;
			return 0;
		}
		if (apply_uint(cfg, st, text, problem, n))
			return -1;
		*set = true;
		return 0;
	}
	case ST_LOG_LEVEL:
		level = log_level_parse(text);
		if (level < 0) {
			errbuf_set(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
				   quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		*(enum log_level *)field(cfg, st) = (enum log_level)level;
		return 0;
	case ST_PATH:
	case ST_OPT_PATH:
		if (text[0] != '/' || !printable_utf8(text)) {
			errbuf_set(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
				   quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		/* A Unix socket path must fit sun_path with its NUL; a file path, its own cap. */
		if (strlen(text) > (st->path_max ? st->path_max :
				    sizeof(((struct sockaddr_un *)0)->sun_path) - 1)) {
			errbuf_set(problem, n, "path is longer than %zu bytes",
				   st->path_max ? st->path_max :
						  sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return -1;
		}
		if (set_owned_str(cfg, st, text))
			goto err_nomem;
		return 0;
	case ST_OPT_ADDR:
		if (addr_parse(text, &a)) {
			errbuf_set(problem, n, "%s, got \"%s\"",
				   st->remote_ok ? "expected an address like 192.0.2.10:514, or off" :
						   type_infos[st->type].expected,
				   quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		/* Stored in canonical form so that equal addresses compare equal as text. */
		char canon[ADDR_STRLEN];

		addr_format(&a.ss.sa, canon, sizeof(canon));
		/* Same rule as metrics_http_start(), checked here so --check-config and a
		 * reload report it with its line instead of failing later. */
		if (!st->remote_ok && !addr_is_loopback(&a)) {
			errbuf_set(problem, n,
				   "%s is not a loopback address (the endpoint has no "
				   "authentication; scrape through a local agent)",
				   canon);
			return -1;
		}
		if (set_owned_str(cfg, st, canon))
			goto err_nomem;
		return 0;
	case ST_BOOL: {
		int truth = parse_bool(text);

		if (truth < 0) {
			errbuf_set(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
				   quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		*(bool *)field(cfg, st) = truth == 1;
		return 0;
	}
	case ST_INSTANCE:
		if (!instance_name_valid(text)) {
			errbuf_set(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
				   quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		if (set_owned_str(cfg, st, text))
			goto err_nomem;
		return 0;
	case ST_CHOICE: {
		char what[160];

		for (size_t i = 0; st->choices[i]; i++) {
			if (strcmp(text, st->choices[i]) == 0) {
				put_uint(cfg, st, i);
				return 0;
			}
		}
		errbuf_set(problem, n, "%s, got \"%s\"", setting_expected(st, what, sizeof(what)),
			   quote(text, strlen(text), q, sizeof(q)));
		return -1;
	}
	case ST_SET: {
		char what[160];
		uint32_t bits;

		if (parse_set(st, text, &bits)) {
			errbuf_set(problem, n, "%s, got \"%s\"",
				   setting_expected(st, what, sizeof(what)),
				   quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		/* Items of a list in the file add up; a whole value replaces. */
		if (src == FROM_FILE_ITEM)
			bits |= (uint32_t)get_uint(cfg, st);
		put_uint(cfg, st, bits);
		return 0;
	}
	case ST_OPT_FILE:
		if (text[0] != '/' || !printable_utf8(text)) {
			errbuf_set(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
				   quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		if (strlen(text) > CONFIG_FILE_PATH_MAX) {
			errbuf_set(problem, n, "path is longer than %d bytes",
				   CONFIG_FILE_PATH_MAX);
			return -1;
		}
		if (set_owned_str(cfg, st, text))
			goto err_nomem;
		return 0;
	case ST_TEXT:
	case ST_OPT_TEXT:
		if (st->check(text, problem, n))
			return -1;
		if (set_owned_str(cfg, st, text))
			goto err_nomem;
		return 0;
	case ST_TYPE_COUNT:
		break;
	}
	errbuf_set(problem, n, "internal error: unknown setting type");
	return -1;
err_nomem:
	errbuf_set(problem, n, "out of memory");
	return -1;
}

/* ---- lookup ------------------------------------------------------------------------- */

static const struct setting *setting_by_key(const char *key, size_t len)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (strlen(settings[i].key) == len && memcmp(settings[i].key, key, len) == 0)
			return &settings[i];
	return NULL;
}

/* name is key's flag spelling: every '.' and '_' of key written as '-'. */
static bool is_flag_of(const char *name, const char *key)
{
	for (; *key; key++, name++) {
		char want = (*key == '.' || *key == '_') ? '-' : *key;

		if (*name != want)
			return false;
	}
	return *name == '\0';
}

static const struct setting *setting_by_name(const char *name)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (strcmp(settings[i].key, name) == 0 || is_flag_of(name, settings[i].key))
			return &settings[i];
	return NULL;
}

const char *config_key_lookup(const char *name)
{
	const struct setting *st = name ? setting_by_name(name) : NULL;

	return st ? st->key : NULL;
}

const char *config_flag_name(const char *key, char *buf, size_t n)
{
	const struct setting *st = key ? setting_by_name(key) : NULL;
	size_t len;

	if (!st)
		return NULL;
	len = strlen(st->key);
	if (len >= n)
		return NULL;
	for (size_t i = 0; i <= len; i++)
		buf[i] = (st->key[i] == '.' || st->key[i] == '_') ? '-' : st->key[i];
	return buf;
}

/* Length of the group path of key: "timeouts" in "timeouts.drain", "tls.client" in
 * "tls.client.mode"; 0 at the top level. */
static size_t group_len(const char *key)
{
	const char *dot = strrchr(key, '.');

	return dot ? (size_t)(dot - key) : 0;
}

/* Does key lie inside the group g[0, glen), at any depth? */
static bool key_in_group(const char *key, const char *g, size_t glen)
{
	return strncmp(key, g, glen) == 0 && key[glen] == '.';
}

/* Index of the first setting inside group name[0, len), or -1 when no such group. */
static int group_by_name(const char *name, size_t len)
{
	if (len == 0)
		return -1;
	for (size_t i = 0; i < NSETTINGS; i++)
		if (key_in_group(settings[i].key, name, len))
			return (int)i;
	return -1;
}

/* How many groups deep path[0, len) is: 0 for "tls", 1 for "tls.client". */
static size_t group_depth(const char *path, size_t len)
{
	size_t d = 0;

	for (size_t i = 0; i < len; i++)
		d += path[i] == '.';
	return d;
}

/* ---- lifetime ----------------------------------------------------------------------- */

static void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < NSETTINGS; i++)
		if (type_is_owned_str(settings[i].type))
			free(*str_field(cfg, &settings[i]));
	free(cfg);
}

struct config *config_new(void)
{
	struct config *cfg = calloc(1, sizeof(*cfg));

	if (!cfg)
		return NULL;
	cfg->refcount = 1;
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *st = &settings[i];

		switch (st->type) {
		case ST_COUNT:
		case ST_SIZE:
		case ST_DURATION:
		case ST_RATE:
		case ST_CHOICE:
		case ST_SET:
			put_uint(cfg, st, st->def);
			break;
		case ST_LOG_LEVEL:
			*(enum log_level *)field(cfg, st) = (enum log_level)st->def;
			break;
		case ST_BOOL:
			*(bool *)field(cfg, st) = st->def != 0;
			break;
		case ST_PATH:
		case ST_INSTANCE:
		case ST_TEXT:
			*str_field(cfg, st) = strdup(st->def_str);
			if (!*str_field(cfg, st)) {
				config_free(cfg);
				return NULL;
			}
			break;
		case ST_ADDR_LIST:
		case ST_CIDR_LIST:
		case ST_ADDR:
		case ST_OPT_ADDR:
		case ST_OPT_PATH:
		case ST_OPT_COUNT:
		case ST_OPT_FILE:
		case ST_OPT_TEXT:
		case ST_TYPE_COUNT:
			break; /* no default: calloc's zero is "not set" */
		}
	}
	return cfg;
}

/* A deep copy with a fresh refcount; NULL on ENOMEM. */
static struct config *config_clone(const struct config *src)
{
	struct config *cfg = malloc(sizeof(*cfg));

	if (!cfg)
		return NULL;
	memcpy(cfg, src, sizeof(*cfg));
	cfg->refcount = 1;
	for (size_t i = 0; i < NSETTINGS; i++)
		if (type_is_owned_str(settings[i].type))
			*str_field(cfg, &settings[i]) = NULL;
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *st = &settings[i];
		const char *s;

		if (!type_is_owned_str(st->type))
			continue;
		s = *cstr_field(src, st);
		if (s && !(*str_field(cfg, st) = strdup(s))) {
			config_free(cfg);
			return NULL;
		}
	}
	return cfg;
}

struct config *config_dup(const struct config *cfg)
{
	return config_clone(cfg);
}

/* Move every value of from into to (keeping to's refcount) and free from. */
static void config_adopt(struct config *to, struct config *from)
{
	int refcount = to->refcount;

	for (size_t i = 0; i < NSETTINGS; i++)
		if (type_is_owned_str(settings[i].type))
			free(*str_field(to, &settings[i]));
	memcpy(to, from, sizeof(*to));
	to->refcount = refcount;
	free(from);
}

void config_ref(struct config *cfg)
{
	__atomic_add_fetch(&cfg->refcount, 1, __ATOMIC_RELAXED);
}

void config_unref(struct config *cfg)
{
	if (!cfg)
		return;
	/* Release so every holder's reads happen before the free; acquire so the freeing
	 * thread sees them. */
	if (__atomic_sub_fetch(&cfg->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		config_free(cfg);
}

/* ---- flags -------------------------------------------------------------------------- */

int config_set(struct config *cfg, const char *key, const char *value, char *err,
	       size_t errlen)
{
	char problem[PROBLEM_MAX], q[QUOTE_MAX];
	const struct setting *st;

	if (!key) {
		errbuf_set(err, errlen, "missing key");
		return -1;
	}
	st = setting_by_name(key);
	if (!st) {
		errbuf_set(err, errlen, "%s: unknown key", quote(key, strlen(key), q, sizeof(q)));
		return -1;
	}
	if (!value) {
		errbuf_set(err, errlen, "%s: missing value", quote(key, strlen(key), q, sizeof(q)));
		return -1;
	}
	if (apply_value(cfg, st, value, false, FROM_FLAG, problem, sizeof(problem))) {
		errbuf_set(err, errlen, "%s: %s", quote(key, strlen(key), q, sizeof(q)), problem);
		return -1;
	}
	return 0;
}

/* ---- YAML loader -------------------------------------------------------------------- */

struct loader {
	yaml_parser_t parser;
	const char *name;  /* for messages */
	const char *data;  /* the whole document, for reader-error line numbers */
	size_t len;
	struct config *cfg; /* the working copy; adopted by the caller only on success */
	char *err;
	size_t errlen;
	unsigned key_line[NSETTINGS];   /* line a key was first set on; 0: not yet */
	/* Line a group was opened on, by the index of its first key and its depth ("tls" and
	 * "tls.client" share a first key). */
	unsigned group_line[NSETTINGS][CONFIG_GROUP_DEPTH_MAX];
};

/* 1-based line of byte offset off; "\n", "\r\n" and a lone "\r" each end a line. */
static unsigned line_at(const char *data, size_t len, size_t off)
{
	unsigned line = 1;

	for (size_t i = 0; i < off && i < len; i++)
		if (data[i] == '\n' || (data[i] == '\r' && (i + 1 >= len || data[i + 1] != '\n')))
			line++;
	return line;
}

static unsigned mark_line(const yaml_mark_t *m)
{
	return (unsigned)m->line + 1;
}

/*
 * Whether 1-based line holds an address YAML cannot read unquoted: "[::1]:6432" starts a
 * flow list, "*:6432" an alias, and a range such as "::/0" inside a flow list ("[::/0]",
 * "[a, ::/0]") reads as a key indicator; libyaml's own message for each ("did not find
 * expected node content") does not lead an operator to the fix.
 */
static bool line_has_bare_address(const char *data, size_t len, unsigned line)
{
	size_t i = 0, end;
	unsigned at = 1;

	while (at < line && i < len) {
		if (data[i] == '\n' || (data[i] == '\r' && (i + 1 >= len || data[i + 1] != '\n')))
			at++;
		i++;
	}
	for (end = i; end < len && data[end] != '\n' && data[end] != '\r'; end++)
		;
	for (; i < end; i++) {
		if (data[i] == '*' && i + 2 < end && data[i + 1] == ':' && data[i + 2] >= '0' &&
		    data[i + 2] <= '9')
			return true;
		if (data[i] == '[' || data[i] == ',') {
			size_t k = i + 1;

			while (k < end && data[k] == ' ')
				k++;
			if (k + 1 < end && data[k] == ':' && data[k + 1] == ':')
				return true;
		}
		if (data[i] == '[') {
			size_t k = i + 1;

			while (k < end && (strchr("0123456789abcdefABCDEF:.", data[k]) != NULL))
				k++;
			if (k > i + 1 && k + 1 < end && data[k] == ']' && data[k + 1] == ':')
				return true;
		}
	}
	return false;
}

static const char *event_kind(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		return "a scalar";
	case YAML_SEQUENCE_START_EVENT:
		return "a list";
	case YAML_MAPPING_START_EVENT:
		return "a mapping";
	case YAML_ALIAS_EVENT:
		return "an alias";
	default:
		return "nothing";
	}
}

/* A plain scalar YAML reads as null: empty, "~" or a spelling of "null". */
static bool scalar_is_null(const yaml_event_t *ev)
{
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
	const char *v = (const char *)ev->data.scalar.value;

	if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(nulls); i++)
		if (ev->data.scalar.length == strlen(nulls[i]) && strcmp(v, nulls[i]) == 0)
			return true;
	return false;
}

static int loader_fail(struct loader *ld, unsigned line, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int loader_fail(struct loader *ld, unsigned line, const char *key, const char *fmt, ...)
{
	char problem[PROBLEM_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(problem, sizeof(problem), fmt, ap);
	va_end(ap);
	if (key)
		errbuf_set(ld->err, ld->errlen, "%s:%u: %s: %s", ld->name, line, key, problem);
	else
		errbuf_set(ld->err, ld->errlen, "%s:%u: %s", ld->name, line, problem);
	return -1;
}

static int loader_next(struct loader *ld, yaml_event_t *ev)
{
	const yaml_parser_t *p = &ld->parser;
	const char *hint;

	if (yaml_parser_parse(&ld->parser, ev))
		return 0;
	switch (p->error) {
	case YAML_MEMORY_ERROR:
		errbuf_set(ld->err, ld->errlen, "%s: out of memory", ld->name);
		return -1;
	case YAML_READER_ERROR:
		return loader_fail(ld, line_at(ld->data, ld->len, p->problem_offset), NULL,
				   "invalid input: %s", p->problem ? p->problem : "unreadable");
	default:
		break;
	}
	hint = line_has_bare_address(ld->data, ld->len, mark_line(&p->problem_mark)) ||
			       (p->context &&
				line_has_bare_address(ld->data, ld->len, mark_line(&p->context_mark))) ?
		       "; quote IPv6 and * addresses, e.g. \"[::1]:6432\"" :
		       "";
	if (p->context)
		return loader_fail(ld, mark_line(&p->problem_mark), NULL,
				   "YAML syntax error: %s (%s on line %u)%s",
				   p->problem ? p->problem : "invalid", p->context,
				   mark_line(&p->context_mark), hint);
	return loader_fail(ld, mark_line(&p->problem_mark), NULL, "YAML syntax error: %s%s",
			   p->problem ? p->problem : "invalid", hint);
}

/* Apply one scalar event to setting st. */
static int loader_scalar(struct loader *ld, const struct setting *st, const yaml_event_t *ev,
			 enum value_source src)
{
	char problem[PROBLEM_MAX];
	const char *text = (const char *)ev->data.scalar.value;

	/* A "\0" escape in a quoted scalar would cut the C string short without a word. */
	if (memchr(text, '\0', ev->data.scalar.length))
		return loader_fail(ld, mark_line(&ev->start_mark), st->key,
				   "value contains a NUL character");
	if (apply_value(ld->cfg, st, text, scalar_is_null(ev), src, problem, sizeof(problem)))
		return loader_fail(ld, mark_line(&ev->start_mark), st->key, "%s", problem);
	return 0;
}

/* The value of setting st, whose key is on key_line: one scalar, or for a list setting also a
 * list of scalars. A value of the wrong shape is reported on the key's line, where the
 * operator will look; a bad scalar on its own line (list items have their own). */
static int loader_value(struct loader *ld, const struct setting *st, unsigned key_line)
{
	yaml_event_t ev;
	int rc = -1;

	if (loader_next(ld, &ev))
		return -1;
	if (ev.type == YAML_SCALAR_EVENT) {
		rc = loader_scalar(ld, st, &ev, FROM_FILE);
	} else if (ev.type == YAML_SEQUENCE_START_EVENT && list_kind_of(st->type)) {
		/* The file's list replaces whatever was there, even when it is empty. */
		*list_count(ld->cfg, st) = 0;
		*list_from_flag(ld->cfg, st) = false;
		for (;;) {
			yaml_event_delete(&ev);
			if (loader_next(ld, &ev))
				return -1;
			if (ev.type == YAML_SEQUENCE_END_EVENT) {
				rc = 0;
				break;
			}
			if (ev.type != YAML_SCALAR_EVENT) {
				rc = loader_fail(ld, mark_line(&ev.start_mark), st->key,
						 "expected %s, got %s", list_kind_of(st->type)->item,
						 event_kind(&ev));
				break;
			}
			if (loader_scalar(ld, st, &ev, FROM_FILE_ITEM))
				break;
		}
	} else if (ev.type == YAML_SEQUENCE_START_EVENT && st->type == ST_SET) {
		/* A list of words replaces the value; its items add up. */
		put_uint(ld->cfg, st, 0);
		for (;;) {
			yaml_event_delete(&ev);
			if (loader_next(ld, &ev))
				return -1;
			if (ev.type == YAML_SEQUENCE_END_EVENT) {
				char what[160];

				rc = get_uint(ld->cfg, st) ?
					     0 :
					     loader_fail(ld, key_line, st->key, "%s, got an empty list",
							 setting_expected(st, what, sizeof(what)));
				break;
			}
			if (ev.type != YAML_SCALAR_EVENT) {
				rc = loader_fail(ld, mark_line(&ev.start_mark), st->key,
						 "expected a word, got %s", event_kind(&ev));
				break;
			}
			if (loader_scalar(ld, st, &ev, FROM_FILE_ITEM))
				break;
		}
	} else if (ev.type == YAML_ALIAS_EVENT) {
		rc = loader_fail(ld, key_line, st->key, "aliases (*name) are not supported");
	} else {
		char what[160];

		rc = loader_fail(ld, key_line, st->key, "expected %s, got %s",
				 setting_what(st, what, sizeof(what)), event_kind(&ev));
	}
	yaml_event_delete(&ev);
	return rc;
}

/* "startup, message, connect, drain": the names directly inside group g[0, glen) (keys and
 * subgroups, each once; a subgroup's keys are adjacent in the table). */
static const char *group_members(const char *g, size_t glen, char *buf, size_t n)
{
	const char *last = NULL;
	size_t last_len = 0, o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < NSETTINGS; i++) {
		const char *child;
		size_t clen;
		int w;

		if (!key_in_group(settings[i].key, g, glen))
			continue;
		child = settings[i].key + glen + 1;
		clen = strcspn(child, ".");
		if (last && clen == last_len && memcmp(child, last, clen) == 0)
			continue;
		w = snprintf(buf + o, n - o, "%s%.*s", o ? ", " : "", (int)clen, child);
		if (w < 0 || (size_t)w >= n - o)
			break;
		o += (size_t)w;
		last = child;
		last_len = clen;
	}
	return buf;
}

/* "timeouts: {startup: ...}" for the dotted name "timeouts.startup": how to nest it. */
static const char *nest_hint(const char *dotted, size_t len, char *buf, size_t n)
{
	size_t o = 0, opened = 0, start = 0;
	int w;

	buf[0] = '\0';
	for (size_t i = 0; i <= len; i++) {
		if (i < len && dotted[i] != '.')
			continue;
		w = snprintf(buf + o, n - o, "%s%.*s%s", opened ? "{" : "", (int)(i - start),
			     dotted + start, i < len ? ": " : ": ...");
		if (w < 0 || (size_t)w >= n - o)
			return buf;
		o += (size_t)w;
		opened += i < len;
		start = i + 1;
	}
	for (size_t i = 0; i < opened && o + 1 < n; i++) {
		buf[o++] = '}';
		buf[o] = '\0';
	}
	return buf;
}

static int loader_mapping(struct loader *ld, const char *group, size_t glen);

/*
 * One key of a mapping: ev is its (already parsed) key event, group[0, glen) the path of the
 * enclosing group ("", "timeouts", "tls.client"). Consumes the value.
 */
static int loader_key(struct loader *ld, const yaml_event_t *ev, const char *group, size_t glen)
{
	char full[CONFIG_KEY_MAX], q[QUOTE_MAX], hint[2 * CONFIG_KEY_MAX];
	const char *key = (const char *)ev->data.scalar.value;
	size_t klen = ev->data.scalar.length, flen = 0;
	unsigned line = mark_line(&ev->start_mark);
	const struct setting *st = NULL;
	int g = -1;

	/* Keys longer than any the table holds, or holding a NUL, are simply unknown. */
	if (glen + 1 + klen < sizeof(full) && !memchr(key, '\0', klen)) {
		if (glen) {
			memcpy(full, group, glen); /* "timeouts." */
			full[glen] = '.';
			flen = glen + 1;
		}
		memcpy(full + flen, key, klen);
		flen += klen;
		full[flen] = '\0';
		st = setting_by_key(full, flen);
		if (!st)
			g = group_by_name(full, flen);
		/* The file nests groups; "timeouts.startup" at the top is a flag's idea of a key. */
		if ((st || g >= 0) && memchr(key, '.', klen))
			return loader_fail(ld, line, st ? st->key : full, "unknown key (nest it: %s)",
					   nest_hint(key, klen, hint, sizeof(hint)));
	}
	if (st) {
		size_t i = (size_t)(st - settings);

		if (ld->key_line[i])
			return loader_fail(ld, line, st->key, "duplicate key (first set on line %u)",
					   ld->key_line[i]);
		ld->key_line[i] = line;
		return loader_value(ld, st, line);
	}
	if (g >= 0 && group_depth(full, flen) < CONFIG_GROUP_DEPTH_MAX) {
		char members[256];
		unsigned *opened = &ld->group_line[g][group_depth(full, flen)];
		yaml_event_t val;
		int rc;

		if (*opened)
			return loader_fail(ld, line, full, "duplicate key (first set on line %u)",
					   *opened);
		*opened = line;
		if (loader_next(ld, &val))
			return -1;
		if (val.type != YAML_MAPPING_START_EVENT) {
			rc = loader_fail(ld, line, full, "expected a mapping of %s, got %s",
					 group_members(full, flen, members, sizeof(members)),
					 val.type == YAML_SCALAR_EVENT && scalar_is_null(&val) ?
						 "nothing" :
						 event_kind(&val));
			yaml_event_delete(&val);
			return rc;
		}
		yaml_event_delete(&val);
		return loader_mapping(ld, full, flen);
	}
	if (glen) {
		char gq[QUOTE_MAX];

		return loader_fail(ld, line, NULL, "%.*s.%s: unknown key", (int)glen, group,
				   quote(key, klen, gq, sizeof(gq)));
	}
	return loader_fail(ld, line, quote(key, klen, q, sizeof(q)), "unknown key");
}

/* The entries of a mapping whose start event was consumed, up to its end event. */
static int loader_mapping(struct loader *ld, const char *group, size_t glen)
{
	for (;;) {
		yaml_event_t ev;
		int rc;

		if (loader_next(ld, &ev))
			return -1;
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (ev.type != YAML_SCALAR_EVENT)
			rc = loader_fail(ld, mark_line(&ev.start_mark), NULL,
					 "keys must be plain strings, got %s", event_kind(&ev));
		else
			rc = loader_key(ld, &ev, group, glen);
		yaml_event_delete(&ev);
		if (rc)
			return rc;
	}
}

/*
 * First pass: the whole stream must be well-formed YAML, one document, no aliases, and
 * nested no deeper than CONFIG_MAX_DEPTH, before any key is judged, so that a file with a
 * syntax error on line 40 is reported as that and not as whatever key comes first. The
 * depth cap bounds libyaml's own state stacks, which otherwise grow with the input.
 */
#define CONFIG_MAX_DEPTH 8

static int loader_check_syntax(struct loader *ld)
{
	unsigned depth = 0, documents = 0;
	yaml_event_t ev;
	int rc = 0;

	for (;;) {
		if (loader_next(ld, &ev))
			return -1;
		switch (ev.type) {
		case YAML_DOCUMENT_START_EVENT:
			if (++documents > 1)
				rc = loader_fail(ld, mark_line(&ev.start_mark), NULL,
						 "more than one YAML document (one file holds one config)");
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > CONFIG_MAX_DEPTH)
				rc = loader_fail(ld, mark_line(&ev.start_mark), NULL,
						 "nested more than %d levels deep", CONFIG_MAX_DEPTH);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_ALIAS_EVENT:
			rc = loader_fail(ld, mark_line(&ev.start_mark), NULL,
					 "aliases (*name) are not supported");
			break;
		case YAML_STREAM_END_EVENT:
			yaml_event_delete(&ev);
			return 0;
		default:
			break;
		}
		yaml_event_delete(&ev);
		if (rc)
			return rc;
	}
}

/* The stream: exactly one document whose root is a mapping of settings. */
static int loader_stream(struct loader *ld)
{
	yaml_event_t ev;
	int rc;

	if (loader_next(ld, &ev)) /* STREAM-START */
		return -1;
	yaml_event_delete(&ev);
	if (loader_next(ld, &ev))
		return -1;
	if (ev.type == YAML_STREAM_END_EVENT) {
		yaml_event_delete(&ev);
		errbuf_set(ld->err, ld->errlen, "%s: file is empty (no settings)", ld->name);
		return -1;
	}
	yaml_event_delete(&ev); /* DOCUMENT-START */
	if (loader_next(ld, &ev))
		return -1;
	if (ev.type == YAML_SCALAR_EVENT && scalar_is_null(&ev)) {
		rc = -1;
		errbuf_set(ld->err, ld->errlen, "%s: file is empty (no settings)", ld->name);
	} else if (ev.type != YAML_MAPPING_START_EVENT) {
		rc = loader_fail(ld, mark_line(&ev.start_mark), NULL,
				 "expected a mapping of settings at the top level, got %s",
				 event_kind(&ev));
	} else {
		rc = loader_mapping(ld, "", 0);
	}
	yaml_event_delete(&ev);
	if (rc)
		return rc;
	if (loader_next(ld, &ev)) /* DOCUMENT-END */
		return -1;
	yaml_event_delete(&ev);
	if (loader_next(ld, &ev))
		return -1;
	rc = 0;
	if (ev.type != YAML_STREAM_END_EVENT)
		rc = loader_fail(ld, mark_line(&ev.start_mark), NULL,
				 "more than one YAML document (one file holds one config)");
	yaml_event_delete(&ev);
	return rc;
}

/*
 * Offset of the first byte that is not valid UTF-8 (overlong forms and surrogates
 * included), or len. libyaml checks this too, but its message carries a byte offset; ours
 * carries the line the operator has to look at.
 */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i], extra;
		uint32_t cp, min;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			extra = 1;
			cp = c & 0x1f;
			min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			extra = 2;
			cp = c & 0x0f;
			min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			extra = 3;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			return i;
		}
		if (len - i <= extra)
			return i;
		for (unsigned k = 1; k <= extra; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += extra + 1;
	}
	return len;
}

/* Run one pass over ld's document with a fresh parser. */
static int loader_parse(struct loader *ld, int (*pass)(struct loader *))
{
	int rc;

	if (!yaml_parser_initialize(&ld->parser)) {
		errbuf_set(ld->err, ld->errlen, "%s: out of memory", ld->name);
		return -1;
	}
	yaml_parser_set_encoding(&ld->parser, YAML_UTF8_ENCODING);
	yaml_parser_set_input_string(&ld->parser, (const unsigned char *)ld->data, ld->len);
	rc = pass(ld);
	yaml_parser_delete(&ld->parser);
	return rc;
}

int config_load_buffer(struct config *cfg, const char *name, const char *data, size_t len,
		       char *err, size_t errlen)
{
	struct loader ld = {.name = name, .data = data, .len = len, .err = err, .errlen = errlen};
	const char *nul;
	size_t bad;
	int rc;

	if (len > CONFIG_MAX_FILE_SIZE) {
		errbuf_set(err, errlen, "%s: larger than %d MiB, the limit for a config file", name,
			   CONFIG_MAX_FILE_SIZE / (1024 * 1024));
		return -1;
	}
	nul = memchr(data, '\0', len);
	if (nul) {
		errbuf_set(err, errlen, "%s:%u: contains a NUL byte (not a text file?)", name,
			   line_at(data, len, (size_t)(nul - data)));
		return -1;
	}
	bad = utf8_invalid_at((const unsigned char *)data, len);
	if (bad < len) {
		errbuf_set(err, errlen, "%s:%u: invalid UTF-8 (byte 0x%02x at offset %zu)", name,
			   line_at(data, len, bad), (unsigned char)data[bad], bad);
		return -1;
	}
	ld.cfg = config_clone(cfg);
	if (!ld.cfg) {
		errbuf_set(err, errlen, "%s: out of memory", name);
		return -1;
	}
	rc = loader_parse(&ld, loader_check_syntax);
	if (rc == 0)
		rc = loader_parse(&ld, loader_stream);
	if (rc) {
		config_free(ld.cfg);
		return -1;
	}
	config_adopt(cfg, ld.cfg);
	return 0;
}

/* The whole file into a malloc'd buffer, refusing more than CONFIG_MAX_FILE_SIZE bytes.
 * Reads past the size fstat reports so that pipes and /proc files are capped too. */
static int read_file(const char *path, char **out, size_t *out_len, char *err, size_t errlen)
{
	size_t cap = CONFIG_MAX_FILE_SIZE + 1, len = 0;
	struct stat stbuf;
	char *buf;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &stbuf)) {
		errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
		goto err_close;
	}
	if (S_ISDIR(stbuf.st_mode)) {
		errbuf_set(err, errlen, "%s: is a directory", path);
		goto err_close;
	}
	if (S_ISREG(stbuf.st_mode) && stbuf.st_size > CONFIG_MAX_FILE_SIZE) {
		errbuf_set(err, errlen, "%s: larger than %d MiB, the limit for a config file", path,
			   CONFIG_MAX_FILE_SIZE / (1024 * 1024));
		goto err_close;
	}
	buf = malloc(cap);
	if (!buf) {
		errbuf_set(err, errlen, "%s: out of memory", path);
		goto err_close;
	}
	while (len < cap) {
		ssize_t n = read(fd, buf + len, cap - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
			goto err_free;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > CONFIG_MAX_FILE_SIZE) {
		errbuf_set(err, errlen, "%s: larger than %d MiB, the limit for a config file", path,
			   CONFIG_MAX_FILE_SIZE / (1024 * 1024));
		goto err_free;
	}
	close(fd);
	*out = buf;
	*out_len = len;
	return 0;
err_free:
	free(buf);
err_close:
	close(fd);
	return -1;
}

int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
	size_t len;
	char *data;
	int rc;

	if (read_file(path, &data, &len, err, errlen))
		return -1;
	rc = config_load_buffer(cfg, path, data, len, err, errlen);
	free(data);
	return rc;
}

int config_load_file_sha256(struct config *cfg, const char *path, uint8_t sha256[32],
			    bool *read_ok, char *err, size_t errlen)
{
	size_t len;
	char *data;
	int rc;

	*read_ok = false;
	if (read_file(path, &data, &len, err, errlen))
		return -1;
	SHA256((const unsigned char *)data, len, sha256);
	*read_ok = true;
	rc = config_load_buffer(cfg, path, data, len, err, errlen);
	free(data);
	return rc;
}

/* ---- checks, output ----------------------------------------------------------------- */

/* a and b are the same port and a listener on a would accept a connection made to b. */
static bool addr_overlaps(const struct addr *a, const struct addr *b)
{
	if (addr_equal(&a->ss.sa, &b->ss.sa))
		return true;
	if (a->ss.sa.sa_family != b->ss.sa.sa_family)
		return false;
	if (a->ss.sa.sa_family == AF_INET)
		return a->ss.in4.sin_port == b->ss.in4.sin_port &&
		       a->ss.in4.sin_addr.s_addr == htonl(INADDR_ANY);
	if (a->ss.sa.sa_family == AF_INET6)
		return a->ss.in6.sin6_port == b->ss.in6.sin6_port &&
		       memcmp(&a->ss.in6.sin6_addr, &in6addr_any, sizeof(in6addr_any)) == 0;
	return false;
}

/*
 * Would a connect() to upstream arrive at a socket listening on l? As the kernel routes it,
 * whatever the spelling: a v4-mapped address is the IPv4 address it names, 0.0.0.0 and ::
 * reach this host's loopback (an unbound socket's connect to them goes to 127.0.0.1 or
 * ::1), and a wildcard listener on the upstream's port is refused whatever the upstream's
 * address (it takes every address of this host, and addresses come and go).
 */
static bool upstream_reaches(const struct addr *l, const struct addr *upstream)
{
	struct addr L, U;

	addr_unmap(l, &L);
	addr_unmap(upstream, &U);
	if (L.ss.sa.sa_family != U.ss.sa.sa_family || addr_port(&L) != addr_port(&U))
		return false;
	if (addr_is_unspecified(&L))
		return true;
	if (addr_is_unspecified(&U)) {
		if (U.ss.sa.sa_family == AF_INET)
			U.ss.in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		else
			U.ss.in6.sin6_addr = in6addr_loopback;
	}
	return addr_equal(&L.ss.sa, &U.ss.sa);
}

/* A path's directory resolved (symlinks, "..", "//") with its last component kept: what a
 * socket bound or connected there is called once the kernel has looked it up. A path that
 * exists (a symlink to a socket, say) is resolved whole. */
static void unix_path_canonical(const char *path, char *out, size_t n)
{
	char dir[PATH_MAX], real[PATH_MAX];
	const char *base;
	char *slash;

	if (realpath(path, real)) {
		snprintf(out, n, "%s", real);
		return;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	base = slash ? path + (slash - dir) + 1 : path;
	if (slash == dir)
		snprintf(dir, sizeof(dir), "/");
	else if (slash)
		*slash = '\0';
	if (slash && realpath(dir, real)) {
		int w = snprintf(out, n, "%s/%s", strcmp(real, "/") ? real : "", base);

		if (w >= 0 && (size_t)w < n)
			return;
	}
	snprintf(out, n, "%s", path);
}

/* Do two Unix socket paths name the same socket, however spelled? */
static bool unix_paths_same(const char *a, const char *b)
{
	char ca[PATH_MAX], cb[PATH_MAX];
	struct stat sa, sb;

	if (strcmp(a, b) == 0)
		return true;
	if (stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino)
		return true;
	unix_path_canonical(a, ca, sizeof(ca));
	unix_path_canonical(b, cb, sizeof(cb));
	return strcmp(ca, cb) == 0;
}

/* Checks shared by the address lists (listen, tproxy_listen): no address twice, and none
 * the upstream connection would reach. */
static int validate_addr_list(const char *key, const struct addr *list, unsigned n,
			      const struct config *cfg, char *err, size_t errlen)
{
	char a[ADDR_STRLEN];

	for (unsigned i = 0; i < n; i++) {
		for (unsigned j = 0; j < i; j++) {
			if (addr_equal(&list[i].ss.sa, &list[j].ss.sa)) {
				errbuf_set(err, errlen, "%s: %s is listed twice", key,
					   addr_format(&list[i].ss.sa, a, sizeof(a)));
				return -1;
			}
		}
		/* The relay would accept its own upstream connections, forever. */
		if (upstream_reaches(&list[i], &cfg->upstream)) {
			errbuf_set(err, errlen,
				   "upstream: %s is also a %s address; the relay would connect to "
				   "itself",
				   addr_format(&cfg->upstream.ss.sa, a, sizeof(a)), key);
			return -1;
		}
	}
	return 0;
}

/* The admission gate's settings make sense together: limits only with a queue to read
 * (otherwise they would look enforced and not be), a burst with a rate and only then, no
 * range twice. */
static int validate_gate(const struct config *cfg, char *err, size_t errlen)
{
	char a[CIDR_STRLEN];

	if (!cfg->gate_enabled && (cfg->gate_rate_per_hour || cfg->ngate_deny)) {
		errbuf_set(err, errlen,
			   "%s: the admission gate is off; set gate.queue to the queue of "
			   "pgwardenctl attach --gate-queue",
			   cfg->gate_rate_per_hour ? "gate.rate" : "gate.deny");
		return -1;
	}
	if (cfg->gate_rate_per_hour && !cfg->gate_burst) {
		errbuf_set(err, errlen,
			   "gate.burst: required with gate.rate (how many new connections a "
			   "source may make at once)");
		return -1;
	}
	if (!cfg->gate_rate_per_hour && cfg->gate_burst) {
		errbuf_set(err, errlen,
			   "gate.burst: set without gate.rate (a burst limits nothing alone)");
		return -1;
	}
	for (unsigned i = 0; i < cfg->ngate_deny; i++) {
		for (unsigned j = 0; j < i; j++) {
			if (cfg->gate_deny[i].bits == cfg->gate_deny[j].bits &&
			    memcmp(cfg->gate_deny[i].addr, cfg->gate_deny[j].addr, 16) == 0) {
				errbuf_set(err, errlen, "gate.deny: %s is listed twice",
					   cidr_format(&cfg->gate_deny[i], a, sizeof(a)));
				return -1;
			}
		}
	}
	return 0;
}

/* A certificate and its key come together: one without the other is a slip. */
static int validate_cert_pair(const char *leg, const char *cert, const char *key, char *err,
			      size_t errlen)
{
	if (cert && !key) {
		errbuf_set(err, errlen, "tls.%s.cert_file: set, but tls.%s.key_file is not",
			   leg, leg);
		return -1;
	}
	if (key && !cert) {
		errbuf_set(err, errlen, "tls.%s.key_file: set, but tls.%s.cert_file is not",
			   leg, leg);
		return -1;
	}
	return 0;
}

/*
 * The TLS settings fit together. Like the gate's, a setting that would look enforced and not
 * be is an error: a CA file with nothing verified against it, a client certificate check on
 * a leg without TLS. Whether the files exist and match is tls_snapshot_build()'s to check.
 */
static int validate_tls(const struct config *cfg, char *err, size_t errlen)
{
	static const char *const client_modes[] = {"disable", "prefer", "require"};
	static const char *const verify_modes[] = {"none", "optional", "required"};
	static const char *const server_modes[] = {"disable", "prefer", "require", "verify-ca",
						   "verify-full"};
	bool client_on = cfg->tls_client_mode != CONFIG_TLS_CLIENT_DISABLE;
	bool server_on = cfg->tls_server_mode != CONFIG_TLS_SERVER_DISABLE;
	bool server_verifies = cfg->tls_server_mode >= CONFIG_TLS_SERVER_VERIFY_CA;

	if (validate_cert_pair("client", cfg->tls_client_cert_file, cfg->tls_client_key_file, err,
			       errlen) ||
	    validate_cert_pair("server", cfg->tls_server_cert_file, cfg->tls_server_key_file, err,
			       errlen))
		return -1;
	if (client_on && !cfg->tls_client_cert_file) {
		errbuf_set(err, errlen,
			   "tls.client.mode: %s needs tls.client.cert_file and "
			   "tls.client.key_file (the certificate pgwarden presents to clients)",
			   client_modes[cfg->tls_client_mode]);
		return -1;
	}
	if (!client_on && cfg->tls_client_verify != CONFIG_TLS_VERIFY_NONE) {
		errbuf_set(err, errlen,
			   "tls.client.verify: %s, but tls.client.mode is disable (no client "
			   "certificate could be checked)",
			   verify_modes[cfg->tls_client_verify]);
		return -1;
	}
	if (cfg->tls_client_verify != CONFIG_TLS_VERIFY_NONE && !cfg->tls_client_ca_file) {
		errbuf_set(err, errlen,
			   "tls.client.verify: %s needs tls.client.ca_file (the CAs that sign "
			   "client certificates)",
			   verify_modes[cfg->tls_client_verify]);
		return -1;
	}
	if (cfg->tls_client_verify == CONFIG_TLS_VERIFY_NONE && cfg->tls_client_ca_file) {
		errbuf_set(err, errlen,
			   "tls.client.ca_file: set, but tls.client.verify is none (client "
			   "certificates would not be checked)");
		return -1;
	}
	if (cfg->tls_client_crl_file && !cfg->tls_client_ca_file) {
		errbuf_set(err, errlen, "tls.client.crl_file: set, but tls.client.ca_file is not");
		return -1;
	}
	if (server_verifies && !cfg->tls_server_ca_file) {
		errbuf_set(err, errlen,
			   "tls.server.mode: %s needs tls.server.ca_file (the CAs that sign the "
			   "server's certificate)",
			   server_modes[cfg->tls_server_mode]);
		return -1;
	}
	if (!server_verifies && cfg->tls_server_ca_file) {
		errbuf_set(err, errlen,
			   "tls.server.ca_file: set, but tls.server.mode %s does not verify the "
			   "server (use verify-ca or verify-full)",
			   server_modes[cfg->tls_server_mode]);
		return -1;
	}
	if (cfg->tls_server_crl_file && !cfg->tls_server_ca_file) {
		errbuf_set(err, errlen, "tls.server.crl_file: set, but tls.server.ca_file is not");
		return -1;
	}
	if (!server_on && cfg->tls_server_cert_file) {
		errbuf_set(err, errlen,
			   "tls.server.cert_file: set, but tls.server.mode is disable");
		return -1;
	}
	if (!server_on && cfg->tls_server_name) {
		errbuf_set(err, errlen,
			   "tls.server.server_name: set, but tls.server.mode is disable");
		return -1;
	}
	return 0;
}

/* The auth.* settings make sense together: the terminate-mode files only with terminate
 * mode (otherwise they would look enforced and not be), terminate mode with a way to
 * authenticate, two factors with both. */
static int validate_auth(const struct config *cfg, char *err, size_t errlen)
{
	static const struct {
		const char *key;
		size_t offset;
	} terminate_only[] = {
		{"auth.users_file", offsetof(struct config, auth_users_file)},
		{"auth.upstream_passwords", offsetof(struct config, auth_upstream_passwords)},
		{"auth.cert_map", offsetof(struct config, auth_cert_map)},
	};

	if (cfg->auth_mode != AUTH_MODE_TERMINATE) {
		for (size_t i = 0; i < ARRAY_SIZE(terminate_only); i++) {
			if (*(char *const *)((const char *)cfg + terminate_only[i].offset)) {
				errbuf_set(err, errlen, "%s: only used with auth.mode: terminate",
					   terminate_only[i].key);
				return -1;
			}
		}
		if (cfg->auth_require_cert_and_password) {
			errbuf_set(err, errlen,
				   "auth.require_cert_and_password: only used with auth.mode: "
				   "terminate");
			return -1;
		}
		if (cfg->server_reuse_max_idle) {
			errbuf_set(err, errlen,
				   "server_reuse.max_idle: only with auth.mode: terminate (in "
				   "passthrough the server authenticates each client: its backend is "
				   "that client's)");
			return -1;
		}
		return 0;
	}
	if (!cfg->auth_users_file && !cfg->auth_cert_map) {
		errbuf_set(err, errlen, "auth.mode: terminate needs auth.users_file (SCRAM) or "
					"auth.cert_map (client certificates)");
		return -1;
	}
	if (cfg->auth_require_cert_and_password && (!cfg->auth_users_file || !cfg->auth_cert_map)) {
		errbuf_set(err, errlen,
			   "auth.require_cert_and_password: needs both auth.users_file and "
			   "auth.cert_map");
		return -1;
	}
	return 0;
}

/* The audit settings make sense together: the trail's companions need a trail, and a trail
 * needs its signing key (unsigned, a chain proves nothing against whoever can rewrite it). */
static int validate_audit(const struct config *cfg, char *err, size_t errlen)
{
	static const struct {
		const char *key;
		size_t offset;
	} needs_path[] = {
		{"audit.signing_key", offsetof(struct config, audit_signing_key)},
		{"audit.group", offsetof(struct config, audit_group)},
		{"audit.syslog_socket", offsetof(struct config, audit_syslog_socket)},
		{"audit.syslog_address", offsetof(struct config, audit_syslog_address)},
	};

	if (!cfg->audit_path) {
		for (size_t i = 0; i < ARRAY_SIZE(needs_path); i++) {
			if (*(char *const *)((const char *)cfg + needs_path[i].offset)) {
				errbuf_set(err, errlen,
					   "%s: set, but audit.path is not (no audit trail)",
					   needs_path[i].key);
				return -1;
			}
		}
		return 0;
	}
	if (!cfg->audit_signing_key) {
		errbuf_set(err, errlen,
			   "audit.signing_key: required with audit.path (checkpoints are signed; "
			   "pgwardenctl audit keygen makes a key pair)");
		return -1;
	}
	if (strcmp(cfg->audit_path, cfg->audit_signing_key) == 0) {
		errbuf_set(err, errlen, "audit.signing_key: %s is also audit.path",
			   cfg->audit_path);
		return -1;
	}
	return 0;
}

int config_validate(const struct config *cfg, char *err, size_t errlen)
{
	char a[ADDR_STRLEN], b[32], c[32];

	if (cfg->nlisten == 0) {
		errbuf_set(err, errlen, "listen: at least one listen address is required");
		return -1;
	}
	if (!cfg->has_upstream) {
		errbuf_set(err, errlen, "upstream: an upstream address is required");
		return -1;
	}
	if (validate_addr_list("listen", cfg->listen, cfg->nlisten, cfg, err, errlen) ||
	    validate_addr_list("tproxy_listen", cfg->tproxy_listen, cfg->ntproxy_listen, cfg, err,
			       errlen))
		return -1;
	/* Two sockets on one address: the second bind fails at start, or, with a wildcard, one
	 * listener takes connections meant for the other. */
	for (unsigned i = 0; i < cfg->ntproxy_listen; i++) {
		for (unsigned j = 0; j < cfg->nlisten; j++) {
			if (addr_overlaps(&cfg->tproxy_listen[i], &cfg->listen[j]) ||
			    addr_overlaps(&cfg->listen[j], &cfg->tproxy_listen[i])) {
				errbuf_set(err, errlen,
					   "tproxy_listen: %s is also a listen address",
					   addr_format(&cfg->tproxy_listen[i].ss.sa, a, sizeof(a)));
				return -1;
			}
		}
	}
	/* Smaller than one buffer is never deliberate: it is 8KiB written for 8MiB. */
	if (cfg->max_message_size < cfg->buffer_size) {
		errbuf_set(err, errlen, "max_message_size: %s is smaller than buffer_size (%s)",
			   format_size(cfg->max_message_size, b, sizeof(b)),
			   format_size(cfg->buffer_size, c, sizeof(c)));
		return -1;
	}
	if (cfg->unix_upstream && !cfg->unix_listen) {
		errbuf_set(err, errlen,
			   "unix_upstream: set, but unix_listen is not (only clients of the "
			   "relay's Unix listener go to unix_upstream)");
		return -1;
	}
	if (cfg->unix_listen) {
		/* Either would have the relay accept its own connections, or take the admin
		 * socket's place. */
		if (cfg->unix_upstream && unix_paths_same(cfg->unix_listen, cfg->unix_upstream)) {
			errbuf_set(err, errlen,
				   "unix_upstream: %s is also unix_listen; the relay would "
				   "connect to itself",
				   cfg->unix_upstream);
			return -1;
		}
		if (unix_paths_same(cfg->unix_listen, cfg->admin_socket)) {
			errbuf_set(err, errlen, "unix_listen: %s is also admin_socket",
				   cfg->unix_listen);
			return -1;
		}
	}
	if (cfg->metrics_listen) {
		struct addr m;

		if (addr_parse(cfg->metrics_listen, &m)) {
			errbuf_set(err, errlen, "metrics_listen: \"%s\" is not an address",
				   cfg->metrics_listen);
			return -1;
		}
		for (unsigned i = 0; i < cfg->nlisten; i++) {
			if (addr_overlaps(&cfg->listen[i], &m) || addr_overlaps(&m, &cfg->listen[i])) {
				errbuf_set(err, errlen,
					   "metrics_listen: %s is also a listen address",
					   cfg->metrics_listen);
				return -1;
			}
		}
		for (unsigned i = 0; i < cfg->ntproxy_listen; i++) {
			if (addr_overlaps(&cfg->tproxy_listen[i], &m) ||
			    addr_overlaps(&m, &cfg->tproxy_listen[i])) {
				errbuf_set(err, errlen,
					   "metrics_listen: %s is also a tproxy_listen address",
					   cfg->metrics_listen);
				return -1;
			}
		}
	}
	if (cfg->admission_rate_per_hour && !cfg->admission_burst) {
		errbuf_set(err, errlen,
			   "admission.burst: required with admission.rate (how many new "
			   "connections a source may open at once)");
		return -1;
	}
	if (!cfg->admission_rate_per_hour && cfg->admission_burst) {
		errbuf_set(err, errlen,
			   "admission.burst: set without admission.rate (a burst limits nothing "
			   "alone)");
		return -1;
	}
	/* Each refresh is a login and a catalog query on the server: more often than once a
	 * second is a typo, not a policy. */
	if (cfg->mask_catalog_refresh_ms && cfg->mask_catalog_refresh_ms < MS_PER_S) {
		errbuf_set(err, errlen, "mask.catalog_refresh: %" PRIu64 "ms is below 1s (0 turns the "
					"periodic refresh off)", cfg->mask_catalog_refresh_ms);
		return -1;
	}
	if (validate_gate(cfg, err, errlen) || validate_tls(cfg, err, errlen) ||
	    validate_audit(cfg, err, errlen))
		return -1;
	return validate_auth(cfg, err, errlen);
}

int config_get(const struct config *cfg, const char *key, char *buf, size_t n)
{
	const struct setting *st = key ? setting_by_name(key) : NULL;
	char a[ITEM_STRLEN], num[32];
	const char *s = NULL;
	int w = 0;

	if (!st)
		return -ENOENT;
	if (n == 0)
		return -ENOSPC;
	buf[0] = '\0';
	switch (st->type) {
	case ST_ADDR_LIST:
	case ST_CIDR_LIST: {
		const struct list_kind *k = list_kind_of(st->type);
		size_t o = 0;

		for (unsigned i = 0; i < clist_count(cfg, st); i++) {
			w = snprintf(buf + o, n - o, "%s%s", i ? ", " : "",
				     k->format(clist_item(cfg, st, i), a, sizeof(a)));
			if (w < 0 || (size_t)w >= n - o)
				return -ENOSPC;
			o += (size_t)w;
		}
		return 0;
	}
	case ST_ADDR:
		if (*(const bool *)((const char *)cfg + st->set_offset))
			s = addr_format((const struct sockaddr *)&((const struct addr *)cfield(cfg, st))->ss,
					a, sizeof(a));
		break;
	case ST_COUNT:
	case ST_SIZE:
	case ST_DURATION:
	case ST_RATE:
		s = format_uint(st, get_uint(cfg, st), num, sizeof(num));
		break;
	case ST_OPT_COUNT:
		s = *(const bool *)((const char *)cfg + st->set_offset) ?
			    format_uint(st, get_uint(cfg, st), num, sizeof(num)) :
			    "off";
		break;
	case ST_LOG_LEVEL:
		s = log_level_to_str(*(const enum log_level *)cfield(cfg, st));
		break;
	case ST_CHOICE:
		s = st->choices[get_uint(cfg, st)];
		break;
	case ST_SET: {
		char all[VALUE_MAX];

		/* A cut list would read back as another value. */
		if (strlen(set_text(st, (uint32_t)get_uint(cfg, st), all, sizeof(all))) >= n)
			return -ENOSPC;
		memcpy(buf, all, strlen(all) + 1);
		return 0;
	}
	case ST_BOOL:
		s = *(const bool *)cfield(cfg, st) ? "true" : "false";
		break;
	case ST_PATH:
	case ST_OPT_ADDR:
	case ST_OPT_PATH:
	case ST_INSTANCE:
	case ST_OPT_FILE:
	case ST_TEXT:
	case ST_OPT_TEXT:
		s = *cstr_field(cfg, st);
		break;
	case ST_TYPE_COUNT:
		return -ENOENT;
	}
	w = snprintf(buf, n, "%s", s ? s : "");
	return w < 0 || (size_t)w >= n ? -ENOSPC : 0;
}

/* s as a YAML double-quoted scalar. Values reaching here are printable UTF-8 (paths are
 * checked on the way in; addresses are formatted by us), so only '"' and '\' need escapes. */
static void write_quoted(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', out);
		fputc(*s, out);
	}
	fputc('"', out);
}

/* Length of the longest group path a[0, alen) and b[0, blen) share, in whole groups. */
static size_t common_groups(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t i = 0, common = 0;

	while (i < alen && i < blen && a[i] == b[i]) {
		i++;
		if ((i == alen || a[i] == '.') && (i == blen || b[i] == '.'))
			common = i;
	}
	return common;
}

int config_write_yaml(const struct config *cfg, FILE *out)
{
	static const char spaces[] = "        ";
	char val[VALUE_MAX], a[ITEM_STRLEN];
	const char *group = "";
	size_t glen = 0;

	fputs("# pgwardend configuration (written by pgwardend; see pgwardend(8))\n", out);
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *st = &settings[i];
		size_t gl = group_len(st->key), depth = group_depth(st->key, gl) + (gl ? 1 : 0);
		size_t from = common_groups(group, glen, st->key, gl);
		const char *name = st->key + (gl ? gl + 1 : 0);
		const char *indent = spaces + sizeof(spaces) - 1 - 2 * depth;

		_Static_assert(sizeof(spaces) - 1 >= 2 * (CONFIG_GROUP_DEPTH_MAX + 1),
			       "indentation for the deepest key");
		/* Open the groups of this key that the previous key was not in. */
		for (size_t start = from ? from + 1 : 0, k = start; from < gl && k <= gl; k++) {
			if (k < gl && st->key[k] != '.')
				continue;
			fprintf(out, "%s%.*s:\n",
				spaces + sizeof(spaces) - 1 - 2 * group_depth(st->key, start),
				(int)(k - start), st->key + start);
			start = k + 1;
		}
		group = st->key;
		glen = gl;
		switch (st->type) {
		case ST_ADDR_LIST:
		case ST_CIDR_LIST: {
			const struct list_kind *kind = list_kind_of(st->type);
			unsigned count = clist_count(cfg, st);

			if (count == 0)
				fprintf(out, "%s%s: []\n", indent, name);
			else
				fprintf(out, "%s%s:\n", indent, name);
			for (unsigned k = 0; k < count; k++) {
				fprintf(out, "%s  - ", indent);
				write_quoted(out, kind->format(clist_item(cfg, st, k), a, sizeof(a)));
				fputc('\n', out);
			}
			break;
		}
		case ST_ADDR:
		case ST_PATH:
		case ST_OPT_ADDR:
		case ST_OPT_PATH:
		case ST_OPT_FILE:
		case ST_TEXT:
		case ST_OPT_TEXT:
		case ST_INSTANCE: /* quoted: "null" or "true" is a name too */
			if (config_get(cfg, st->key, val, sizeof(val)))
				return -EIO;
			if (!val[0]) {
				/* Unset: null reads back as "off" for an optional setting; a
				 * required one is left out so that loading keeps it unset. */
				if (type_is_optional(st->type))
					fprintf(out, "%s%s: ~\n", indent, name);
				else
					fprintf(out, "%s# %s: (not set)\n", indent, name);
				break;
			}
			fprintf(out, "%s%s: ", indent, name);
			write_quoted(out, val);
			fputc('\n', out);
			break;
		case ST_COUNT:
		case ST_OPT_COUNT: /* "off" reads back as off */
		case ST_SIZE:
		case ST_DURATION:
		case ST_RATE:
		case ST_LOG_LEVEL:
		case ST_CHOICE:
		case ST_BOOL:
			if (config_get(cfg, st->key, val, sizeof(val)))
				return -EIO;
			fprintf(out, "%s%s: %s\n", indent, name, val);
			break;
		case ST_SET:
			if (config_get(cfg, st->key, val, sizeof(val)))
				return -EIO;
			fprintf(out, "%s%s: [%s]\n", indent, name, val);
			break;
		case ST_TYPE_COUNT:
			break;
		}
	}
	if (fflush(out) || ferror(out))
		return -EIO;
	return 0;
}

/* The default of st as text for --help; "none" where there is no default. */
static const char *default_text(const struct setting *st, char *buf, size_t n)
{
	switch (st->type) {
	case ST_COUNT:
	case ST_SIZE:
	case ST_DURATION:
	case ST_RATE:
		return format_uint(st, st->def, buf, n);
	case ST_LOG_LEVEL:
	case ST_PATH:
	case ST_INSTANCE:
	case ST_TEXT:
		return st->def_str;
	case ST_CHOICE:
		return st->choices[st->def];
	case ST_SET:
		return set_text(st, (uint32_t)st->def, buf, n);
	case ST_BOOL:
		return st->def ? "true" : "false";
	case ST_OPT_ADDR:
	case ST_OPT_PATH:
	case ST_OPT_COUNT:
	case ST_OPT_FILE:
	case ST_OPT_TEXT:
		return "off";
	default:
		return "none";
	}
}

void config_usage(FILE *out)
{
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *st = &settings[i];
		char flag[CONFIG_KEY_MAX + 16], name[CONFIG_KEY_MAX], def[128];

		if (!config_flag_name(st->key, name, sizeof(name)))
			continue;
		snprintf(flag, sizeof(flag), "--%s %s", name, st->arg);
		fprintf(out, "  %-30s %s (default: %s)\n", flag, st->help,
			default_text(st, def, sizeof(def)));
	}
}

const char *config_restart_required(const struct config *old, const struct config *new_cfg)
{
	for (size_t i = 0; i < NSETTINGS; i++) {
		char a[VALUE_MAX], b[VALUE_MAX];
		const struct setting *st = &settings[i];

		if (!st->restart)
			continue;
		/* Formatted values compare exactly: every type has one canonical spelling. A
		 * value too long to format is reported as a change, the safe answer. */
		if (config_get(old, st->key, a, sizeof(a)) || config_get(new_cfg, st->key, b, sizeof(b)) ||
		    strcmp(a, b) != 0)
			return st->key;
	}
	return NULL;
}
