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
 * group: gate.deny), and any deeper nesting is an error at its first event.
 */
#include "config/config.h"
#include "steer/steer.h" /* STEER_DEFAULT_INSTANCE, STEER_INSTANCE_MAX: one definition */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
/* How much of a peer-supplied key or value an error message quotes. */
#define QUOTE_MAX 64
/* Room for one formatted value: the longest list, STEER_GATE_MAX_DENY ranges, joined by
 * ", " (the assert below keeps the address lists shorter). */
#define VALUE_MAX (STEER_GATE_MAX_DENY * (STEER_CIDR_STRLEN + 2) + 1)
/* Problem text before the "FILE:LINE: KEY: " prefix is added. */
#define PROBLEM_MAX 256

_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "workers is stored as 32 bits");
_Static_assert(CONFIG_MAX_LISTEN * (ADDR_STRLEN + 2) + 1 <= VALUE_MAX,
	       "an address list must fit in VALUE_MAX");
_Static_assert(sizeof(STEER_DEFAULT_INSTANCE) > 1 && sizeof(STEER_DEFAULT_INSTANCE) <= STEER_INSTANCE_MAX,
	       "the default steer_instance must pass the steer_instance check");

enum setting_type {
	ST_ADDR_LIST, /* struct addr X[CONFIG_MAX_LISTEN] + unsigned nX + bool X_from_flag */
	ST_CIDR_LIST, /* struct steer_cidr X[STEER_GATE_MAX_DENY], nX, X_from_flag likewise */
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
	ST_INSTANCE,  /* owned steering instance name: 1..STEER_INSTANCE_MAX-1 of [A-Za-z0-9_-] */
	ST_LOG_TARGET, /* enum log_target */
	ST_OPT_NAME,  /* owned user or group name ([A-Za-z_][A-Za-z0-9_.-]*, < 33); NULL: off */
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
	const char *def_str; /* ST_PATH, ST_LOG_LEVEL, ST_LOG_TARGET, ST_INSTANCE: the default
			      * as text */
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
	[ST_LOG_TARGET] = {"a log target", "expected one of auto, stderr, journal, syslog"},
	[ST_OPT_NAME] = {"a group name", "expected a group name (letters, digits, _ . -; at most "
					 "32, not starting with a digit, - or .), or off"},
};

#define FIELD(f) .offset = offsetof(struct config, f), .width = sizeof(((struct config *)0)->f)
/* A list f of type t: its array, its count nf and its bool f_from_flag. */
#define LIST(t, f)                                                                               \
	.type = t, FIELD(f), .count_offset = offsetof(struct config, n##f),                      \
	.flag_offset = offsetof(struct config, f##_from_flag)
#define RATE_PER_S UINT64_C(3600) /* ST_RATE counts per hour */
#define RATE_PER_M UINT64_C(60)

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
	  .restart = true, .arg = "N", .help = "worker threads; 0 means one per online CPU")     \
	S("buffer_size", .type = ST_SIZE, FIELD(buffer_size), .min = 4 * KIB, .max = MIB,        \
	  .def = 32 * KIB, .restart = true, .arg = "SIZE",                                       \
	  .help = "bytes buffered per direction per connection")                                 \
	S("max_message_size", .type = ST_SIZE, FIELD(max_message_size), .min = 8 * KIB,          \
	  .max = CONFIG_PG_MAX_MESSAGE_SIZE, .def = CONFIG_PG_MAX_MESSAGE_SIZE, .arg = "SIZE",   \
	  .help = "largest protocol message body accepted from either side")                     \
	S("max_connections", .type = ST_COUNT, FIELD(max_connections), .min = 1,                 \
	  .max = 1000000, .def = 10000, .arg = "N",                                              \
	  .help = "client connections across all workers")                                       \
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
	  .def_str = STEER_DEFAULT_INSTANCE, .arg = "NAME",                                      \
	  .help = "name of the steering attach (pgwardenctl attach --instance) whose BPF maps "  \
		  "pgwardend reads")                                                             \
	S("log_target", .type = ST_LOG_TARGET, FIELD(log_target), .def = LOG_TARGET_AUTO,        \
	  .def_str = "auto", .restart = true, .arg = "TARGET",                                   \
	  .help = "where log lines go: auto (the journal under systemd, syslog when stderr "     \
		  "goes nowhere, else stderr), stderr, journal or syslog")                       \
	S("admin_read_group", .type = ST_OPT_NAME, FIELD(admin_read_group), .restart = true,     \
	  .arg = "GROUP",                                                                        \
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
	  .help = "source address range whose new connections are dropped; repeat for several")

#define AS_SETTING(name, ...) {.key = name, __VA_ARGS__},
#define AS_KEY(name, ...) name,

static const struct setting settings[] = {CONFIG_SETTINGS(AS_SETTING)};
const char *const config_keys[] = {CONFIG_SETTINGS(AS_KEY) NULL};

#define NSETTINGS ARRAY_SIZE(settings)

/* ---- small helpers ------------------------------------------------------------------ */

static void errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

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
	       t == ST_OPT_NAME;
}

/* Types that may be unset, written "off", "~" or left empty (value_is_off()). */
static bool type_is_optional(enum setting_type t)
{
	return t == ST_OPT_ADDR || t == ST_OPT_PATH || t == ST_OPT_COUNT || t == ST_OPT_NAME;
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
_Static_assert(STEER_CIDR_STRLEN <= ITEM_STRLEN, "a range must fit where an address fits");

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

	while (*p) {
		unsigned c = *p, extra;
		uint32_t cp;

		if (c < 0x20 || c == 0x7f)
			return false;
		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			extra = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			extra = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			extra = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		for (unsigned i = 1; i <= extra; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
			return false;
		p += extra + 1;
	}
	return true;
}

/* ---- applying one value ------------------------------------------------------------- */

/* 127.0.0.0/8 or ::1: the only places an unauthenticated endpoint may listen. */
static bool addr_is_loopback(const struct addr *a)
{
	if (a->ss.sa.sa_family == AF_INET)
		return (ntohl(a->ss.in4.sin_addr.s_addr) >> 24) == 127;
	if (a->ss.sa.sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&a->ss.in6.sin6_addr);
	return false;
}

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
	errf(problem, n, "%s, got \"%s\"", type_infos[ST_ADDR_LIST].expected,
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
	struct steer_cidr *c = item, net;
	char q[QUOTE_MAX], range[STEER_CIDR_STRLEN];

	if (steer_cidr_parse(text, c)) {
		errf(problem, n, "%s, got \"%s\"", type_infos[ST_CIDR_LIST].expected,
		     quote(text, strlen(text), q, sizeof(q)));
		return -1;
	}
	net = *c;
	steer_cidr_mask(&net);
	if (memcmp(net.addr, c->addr, sizeof(net.addr)) != 0) {
		errf(problem, n, "\"%s\" has host bits set (the range is %s)",
		     quote(text, strlen(text), q, sizeof(q)),
		     steer_cidr_format(&net, range, sizeof(range)));
		return -1;
	}
	return 0;
}

static const char *format_cidr_item(const void *item, char *buf, size_t n)
{
	return steer_cidr_format(item, buf, n);
}

/* Room for one item of any list, parsed before it is stored. */
union list_item_buf {
	struct addr addr;
	struct steer_cidr cidr;
};

static const struct list_kind addr_list_kind = {
	.item_size = sizeof(struct addr), .max = CONFIG_MAX_LISTEN, .item = "an address",
	.items = "addresses", .parse = parse_addr_item, .format = format_addr_item,
};
static const struct list_kind cidr_list_kind = {
	.item_size = sizeof(struct steer_cidr), .max = STEER_GATE_MAX_DENY,
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
		errf(problem, n, "more than %u %s", k->max, k->items);
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

/* What steer_attach accepts as an instance name (it names a bpffs dir and an nft table). */
static bool instance_name_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len >= STEER_INSTANCE_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

/* A user or group name as Debian's adduser accepts them by default, and no longer than the
 * 32 bytes useradd allows. */
static bool account_name_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > 32 || (s[0] >= '0' && s[0] <= '9') || s[0] == '-' || s[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-' || s[i] == '.'))
			return false;
	return true;
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
		errf(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
		     quote(text, strlen(text), q, sizeof(q)));
		return -1;
	}
	if (rc == -ERANGE || v < st->min || v > st->max) {
		errf(problem, n, "\"%s\" is out of range (%s to %s)",
		     quote(text, strlen(text), q, sizeof(q)), format_uint(st, st->min, lo, sizeof(lo)),
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
		errf(problem, n, "missing value (%s)", type_infos[st->type].expected);
		return -1;
	}
	switch (st->type) {
	case ST_ADDR_LIST:
	case ST_CIDR_LIST:
		return apply_list(cfg, st, text, src, problem, n);
	case ST_ADDR:
		if (addr_parse(text, &a)) {
			errf(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
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
			errf(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
			     quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		*(enum log_level *)field(cfg, st) = (enum log_level)level;
		return 0;
	case ST_LOG_TARGET:
		level = log_target_parse(text);
		if (level < 0) {
			errf(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
			     quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		*(enum log_target *)field(cfg, st) = (enum log_target)level;
		return 0;
	case ST_OPT_NAME:
		if (!account_name_valid(text)) {
			errf(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
			     quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		if (set_owned_str(cfg, st, text))
			goto err_nomem;
		return 0;
	case ST_PATH:
	case ST_OPT_PATH:
		if (text[0] != '/' || !printable_utf8(text)) {
			errf(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
			     quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		/* A Unix socket path must fit sun_path with its NUL. */
		if (strlen(text) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			errf(problem, n, "path is longer than %zu bytes",
			     sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return -1;
		}
		if (set_owned_str(cfg, st, text))
			goto err_nomem;
		return 0;
	case ST_OPT_ADDR:
		if (addr_parse(text, &a)) {
			errf(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
			     quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		/* Stored in canonical form so that equal addresses compare equal as text. */
		char canon[ADDR_STRLEN];

		addr_format(&a.ss.sa, canon, sizeof(canon));
		/* Same rule as metrics_http_start(), checked here so --check-config and a
		 * reload report it with its line instead of failing later. */
		if (!addr_is_loopback(&a)) {
			errf(problem, n,
			     "%s is not a loopback address (the endpoint has no authentication; "
			     "scrape through a local agent)",
			     canon);
			return -1;
		}
		if (set_owned_str(cfg, st, canon))
			goto err_nomem;
		return 0;
	case ST_BOOL: {
		int truth = parse_bool(text);

		if (truth < 0) {
			errf(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
			     quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		*(bool *)field(cfg, st) = truth == 1;
		return 0;
	}
	case ST_INSTANCE:
		if (!instance_name_valid(text)) {
			errf(problem, n, "%s, got \"%s\"", type_infos[st->type].expected,
			     quote(text, strlen(text), q, sizeof(q)));
			return -1;
		}
		if (set_owned_str(cfg, st, text))
			goto err_nomem;
		return 0;
	case ST_TYPE_COUNT:
		break;
	}
	errf(problem, n, "internal error: unknown setting type");
	return -1;
err_nomem:
	errf(problem, n, "out of memory");
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

/* Length of the group prefix of key ("timeouts" in "timeouts.drain"); 0 when none. */
static size_t group_len(const char *key)
{
	const char *dot = strchr(key, '.');

	return dot ? (size_t)(dot - key) : 0;
}

/* Index of the first setting in group name[0, len), or -1 when no such group. */
static int group_by_name(const char *name, size_t len)
{
	if (len == 0)
		return -1;
	for (size_t i = 0; i < NSETTINGS; i++)
		if (group_len(settings[i].key) == len && memcmp(settings[i].key, name, len) == 0)
			return (int)i;
	return -1;
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
			put_uint(cfg, st, st->def);
			break;
		case ST_LOG_LEVEL:
			*(enum log_level *)field(cfg, st) = (enum log_level)st->def;
			break;
		case ST_LOG_TARGET:
			*(enum log_target *)field(cfg, st) = (enum log_target)st->def;
			break;
		case ST_BOOL:
			*(bool *)field(cfg, st) = st->def != 0;
			break;
		case ST_PATH:
		case ST_INSTANCE:
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
		case ST_OPT_NAME:
		case ST_TYPE_COUNT:
			break; /* no default: calloc's zero is "not set" */
		}
	}
	return cfg;
}

static struct config *config_clone(const struct config *src);

struct config *config_dup(const struct config *cfg)
{
	return config_clone(cfg);
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
		errf(err, errlen, "missing key");
		return -1;
	}
	st = setting_by_name(key);
	if (!st) {
		errf(err, errlen, "%s: unknown key", quote(key, strlen(key), q, sizeof(q)));
		return -1;
	}
	if (!value) {
		errf(err, errlen, "%s: missing value", quote(key, strlen(key), q, sizeof(q)));
		return -1;
	}
	if (apply_value(cfg, st, value, false, FROM_FLAG, problem, sizeof(problem))) {
		errf(err, errlen, "%s: %s", quote(key, strlen(key), q, sizeof(q)), problem);
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
	unsigned group_line[NSETTINGS]; /* by the index of the group's first key */
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
		errf(ld->err, ld->errlen, "%s:%u: %s: %s", ld->name, line, key, problem);
	else
		errf(ld->err, ld->errlen, "%s:%u: %s", ld->name, line, problem);
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
		errf(ld->err, ld->errlen, "%s: out of memory", ld->name);
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
	} else if (ev.type == YAML_ALIAS_EVENT) {
		rc = loader_fail(ld, key_line, st->key, "aliases (*name) are not supported");
	} else {
		rc = loader_fail(ld, key_line, st->key, "expected %s, got %s",
				 type_infos[st->type].what, event_kind(&ev));
	}
	yaml_event_delete(&ev);
	return rc;
}

/* "startup, message, connect, drain" for the group whose first setting is at index g. */
static const char *group_members(size_t g, char *buf, size_t n)
{
	size_t glen = group_len(settings[g].key), o = 0;

	buf[0] = '\0';
	for (size_t i = g; i < NSETTINGS && group_len(settings[i].key) == glen &&
			   memcmp(settings[i].key, settings[g].key, glen) == 0;
	     i++) {
		int w = snprintf(buf + o, n - o, "%s%s", o ? ", " : "", settings[i].key + glen + 1);

		if (w < 0 || (size_t)w >= n - o)
			break;
		o += (size_t)w;
	}
	return buf;
}

static int loader_mapping(struct loader *ld, int group);

/*
 * One key of a mapping: ev is its (already parsed) key event, group the index of the
 * enclosing group's first setting or -1 at the top level. Consumes the value.
 */
static int loader_key(struct loader *ld, const yaml_event_t *ev, int group)
{
	char full[CONFIG_KEY_MAX], q[QUOTE_MAX];
	const char *key = (const char *)ev->data.scalar.value;
	size_t klen = ev->data.scalar.length, plen = 0;
	unsigned line = mark_line(&ev->start_mark);
	const struct setting *st = NULL;
	int g = -1;

	if (group >= 0) {
		plen = group_len(settings[group].key) + 1;
		memcpy(full, settings[group].key, plen); /* "timeouts." */
	}
	/* Keys longer than any the table holds, or holding a NUL, are simply unknown. */
	if (plen + klen < sizeof(full) && !memchr(key, '\0', klen)) {
		memcpy(full + plen, key, klen);
		full[plen + klen] = '\0';
		st = setting_by_key(full, plen + klen);
		/* The file nests groups; "timeouts.startup" at the top is a flag's idea of a key. */
		if (st && group < 0 && group_len(st->key)) {
			return loader_fail(ld, line, st->key, "unknown key (nest it: %.*s: {%s: ...})",
					   (int)group_len(st->key), st->key,
					   st->key + group_len(st->key) + 1);
		}
		if (!st && group < 0)
			g = group_by_name(key, klen);
	}
	if (st) {
		size_t i = (size_t)(st - settings);

		if (ld->key_line[i])
			return loader_fail(ld, line, st->key, "duplicate key (first set on line %u)",
					   ld->key_line[i]);
		ld->key_line[i] = line;
		return loader_value(ld, st, line);
	}
	if (g >= 0) {
		char members[128], gname[CONFIG_KEY_MAX];
		yaml_event_t val;
		int rc;

		memcpy(gname, key, klen);
		gname[klen] = '\0';
		if (ld->group_line[g])
			return loader_fail(ld, line, gname, "duplicate key (first set on line %u)",
					   ld->group_line[g]);
		ld->group_line[g] = line;
		if (loader_next(ld, &val))
			return -1;
		if (val.type != YAML_MAPPING_START_EVENT) {
			rc = loader_fail(ld, line, gname,
					 "expected a mapping of %s, got %s",
					 group_members((size_t)g, members, sizeof(members)),
					 val.type == YAML_SCALAR_EVENT && scalar_is_null(&val) ?
						 "nothing" :
						 event_kind(&val));
			yaml_event_delete(&val);
			return rc;
		}
		yaml_event_delete(&val);
		return loader_mapping(ld, g);
	}
	if (group >= 0) {
		char gq[QUOTE_MAX];

		return loader_fail(ld, line, NULL, "%.*s.%s: unknown key", (int)(plen - 1),
				   settings[group].key, quote(key, klen, gq, sizeof(gq)));
	}
	return loader_fail(ld, line, quote(key, klen, q, sizeof(q)), "unknown key");
}

/* The entries of a mapping whose start event was consumed, up to its end event. */
static int loader_mapping(struct loader *ld, int group)
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
			rc = loader_key(ld, &ev, group);
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
		errf(ld->err, ld->errlen, "%s: file is empty (no settings)", ld->name);
		return -1;
	}
	yaml_event_delete(&ev); /* DOCUMENT-START */
	if (loader_next(ld, &ev))
		return -1;
	if (ev.type == YAML_SCALAR_EVENT && scalar_is_null(&ev)) {
		rc = -1;
		errf(ld->err, ld->errlen, "%s: file is empty (no settings)", ld->name);
	} else if (ev.type != YAML_MAPPING_START_EVENT) {
		rc = loader_fail(ld, mark_line(&ev.start_mark), NULL,
				 "expected a mapping of settings at the top level, got %s",
				 event_kind(&ev));
	} else {
		rc = loader_mapping(ld, -1);
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
		errf(ld->err, ld->errlen, "%s: out of memory", ld->name);
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
		errf(err, errlen, "%s: larger than %d MiB, the limit for a config file", name,
		     CONFIG_MAX_FILE_SIZE / (1024 * 1024));
		return -1;
	}
	nul = memchr(data, '\0', len);
	if (nul) {
		errf(err, errlen, "%s:%u: contains a NUL byte (not a text file?)", name,
		     line_at(data, len, (size_t)(nul - data)));
		return -1;
	}
	bad = utf8_invalid_at((const unsigned char *)data, len);
	if (bad < len) {
		errf(err, errlen, "%s:%u: invalid UTF-8 (byte 0x%02x at offset %zu)", name,
		     line_at(data, len, bad), (unsigned char)data[bad], bad);
		return -1;
	}
	ld.cfg = config_clone(cfg);
	if (!ld.cfg) {
		errf(err, errlen, "%s: out of memory", name);
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
		errf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &stbuf)) {
		errf(err, errlen, "%s: %s", path, strerror(errno));
		goto err_close;
	}
	if (S_ISDIR(stbuf.st_mode)) {
		errf(err, errlen, "%s: is a directory", path);
		goto err_close;
	}
	if (S_ISREG(stbuf.st_mode) && stbuf.st_size > CONFIG_MAX_FILE_SIZE) {
		errf(err, errlen, "%s: larger than %d MiB, the limit for a config file", path,
		     CONFIG_MAX_FILE_SIZE / (1024 * 1024));
		goto err_close;
	}
	buf = malloc(cap);
	if (!buf) {
		errf(err, errlen, "%s: out of memory", path);
		goto err_close;
	}
	while (len < cap) {
		ssize_t n = read(fd, buf + len, cap - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			errf(err, errlen, "%s: %s", path, strerror(errno));
			goto err_free;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > CONFIG_MAX_FILE_SIZE) {
		errf(err, errlen, "%s: larger than %d MiB, the limit for a config file", path,
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

/* Checks shared by the address lists (listen, tproxy_listen): no address twice, and none
 * the upstream connection would reach. */
static int validate_addr_list(const char *key, const struct addr *list, unsigned n,
			      const struct config *cfg, char *err, size_t errlen)
{
	char a[ADDR_STRLEN];

	for (unsigned i = 0; i < n; i++) {
		for (unsigned j = 0; j < i; j++) {
			if (addr_equal(&list[i].ss.sa, &list[j].ss.sa)) {
				errf(err, errlen, "%s: %s is listed twice", key,
				     addr_format(&list[i].ss.sa, a, sizeof(a)));
				return -1;
			}
		}
		/* The relay would accept its own upstream connections, forever. */
		if (addr_overlaps(&list[i], &cfg->upstream)) {
			errf(err, errlen,
			     "upstream: %s is also a %s address; the relay would connect to itself",
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
	char a[STEER_CIDR_STRLEN];

	if (!cfg->gate_enabled && (cfg->gate_rate_per_hour || cfg->ngate_deny)) {
		errf(err, errlen,
		     "%s: the admission gate is off; set gate.queue to the queue of "
		     "pgwardenctl attach --gate-queue",
		     cfg->gate_rate_per_hour ? "gate.rate" : "gate.deny");
		return -1;
	}
	if (cfg->gate_rate_per_hour && !cfg->gate_burst) {
		errf(err, errlen, "gate.burst: required with gate.rate (how many new connections a "
				  "source may make at once)");
		return -1;
	}
	if (!cfg->gate_rate_per_hour && cfg->gate_burst) {
		errf(err, errlen, "gate.burst: set without gate.rate (a burst limits nothing alone)");
		return -1;
	}
	for (unsigned i = 0; i < cfg->ngate_deny; i++) {
		for (unsigned j = 0; j < i; j++) {
			if (cfg->gate_deny[i].bits == cfg->gate_deny[j].bits &&
			    memcmp(cfg->gate_deny[i].addr, cfg->gate_deny[j].addr, 16) == 0) {
				errf(err, errlen, "gate.deny: %s is listed twice",
				     steer_cidr_format(&cfg->gate_deny[i], a, sizeof(a)));
				return -1;
			}
		}
	}
	return 0;
}

int config_validate(const struct config *cfg, char *err, size_t errlen)
{
	char a[ADDR_STRLEN], b[32], c[32];

	if (cfg->nlisten == 0) {
		errf(err, errlen, "listen: at least one listen address is required");
		return -1;
	}
	if (!cfg->has_upstream) {
		errf(err, errlen, "upstream: an upstream address is required");
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
				errf(err, errlen, "tproxy_listen: %s is also a listen address",
				     addr_format(&cfg->tproxy_listen[i].ss.sa, a, sizeof(a)));
				return -1;
			}
		}
	}
	/* Smaller than one buffer is never deliberate: it is 8KiB written for 8MiB. */
	if (cfg->max_message_size < cfg->buffer_size) {
		errf(err, errlen, "max_message_size: %s is smaller than buffer_size (%s)",
		     format_size(cfg->max_message_size, b, sizeof(b)),
		     format_size(cfg->buffer_size, c, sizeof(c)));
		return -1;
	}
	if (cfg->unix_upstream && !cfg->unix_listen) {
		errf(err, errlen, "unix_upstream: set, but unix_listen is not (only clients of the "
		     "relay's Unix listener go to unix_upstream)");
		return -1;
	}
	if (cfg->unix_listen) {
		/* Either would have the relay accept its own connections, or take the admin
		 * socket's place. */
		if (cfg->unix_upstream && strcmp(cfg->unix_listen, cfg->unix_upstream) == 0) {
			errf(err, errlen, "unix_upstream: %s is also unix_listen; the relay would "
			     "connect to itself", cfg->unix_upstream);
			return -1;
		}
		if (strcmp(cfg->unix_listen, cfg->admin_socket) == 0) {
			errf(err, errlen, "unix_listen: %s is also admin_socket", cfg->unix_listen);
			return -1;
		}
	}
	if (cfg->metrics_listen) {
		struct addr m;

		if (addr_parse(cfg->metrics_listen, &m)) {
			errf(err, errlen, "metrics_listen: \"%s\" is not an address", cfg->metrics_listen);
			return -1;
		}
		for (unsigned i = 0; i < cfg->nlisten; i++) {
			if (addr_overlaps(&cfg->listen[i], &m) || addr_overlaps(&m, &cfg->listen[i])) {
				errf(err, errlen, "metrics_listen: %s is also a listen address",
				     cfg->metrics_listen);
				return -1;
			}
		}
		for (unsigned i = 0; i < cfg->ntproxy_listen; i++) {
			if (addr_overlaps(&cfg->tproxy_listen[i], &m) ||
			    addr_overlaps(&m, &cfg->tproxy_listen[i])) {
				errf(err, errlen, "metrics_listen: %s is also a tproxy_listen address",
				     cfg->metrics_listen);
				return -1;
			}
		}
	}
	return validate_gate(cfg, err, errlen);
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
	case ST_LOG_TARGET:
		s = log_target_to_str(*(const enum log_target *)cfield(cfg, st));
		break;
	case ST_BOOL:
		s = *(const bool *)cfield(cfg, st) ? "true" : "false";
		break;
	case ST_PATH:
	case ST_OPT_ADDR:
	case ST_OPT_PATH:
	case ST_INSTANCE:
	case ST_OPT_NAME:
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

int config_write_yaml(const struct config *cfg, FILE *out)
{
	char val[VALUE_MAX], a[ITEM_STRLEN];
	const char *group = NULL;
	size_t glen = 0;

	fputs("# pgwardend configuration (written by pgwardend; see pgwardend(8))\n", out);
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *st = &settings[i];
		size_t gl = group_len(st->key);
		const char *name = st->key, *indent = "";

		if (gl && (!group || glen != gl || memcmp(group, st->key, gl) != 0)) {
			fprintf(out, "%.*s:\n", (int)gl, st->key);
			group = st->key;
			glen = gl;
		}
		if (gl) {
			name = st->key + gl + 1;
			indent = "  ";
		}
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
		case ST_INSTANCE: /* quoted: "null" or "true" is a name too */
		case ST_OPT_NAME:
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
		case ST_LOG_TARGET:
		case ST_BOOL:
			if (config_get(cfg, st->key, val, sizeof(val)))
				return -EIO;
			fprintf(out, "%s%s: %s\n", indent, name, val);
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
	case ST_LOG_TARGET:
	case ST_PATH:
	case ST_INSTANCE:
		return st->def_str;
	case ST_BOOL:
		return st->def ? "true" : "false";
	case ST_OPT_ADDR:
	case ST_OPT_PATH:
	case ST_OPT_COUNT:
	case ST_OPT_NAME:
		return "off";
	default:
		return "none";
	}
}

void config_usage(FILE *out)
{
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *st = &settings[i];
		char flag[CONFIG_KEY_MAX + 16], name[CONFIG_KEY_MAX], def[64];

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
