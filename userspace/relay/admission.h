/*
 * admission: limits on connections that have not finished logging in, so that sockets which
 * connect and then say nothing (or stall in authentication) can never take the room that
 * authenticated sessions need. 11,300 idle TCP connections once filled max_connections in a
 * third of a second and locked every real client out until the startup timeout.
 *
 *   prelogin_max          connections still logging in, from all sources together
 *   prelogin_per_source   connections still logging in from one source
 *   rate, burst           new connections per source (a token bucket); rate 0: no limit
 *
 * A source is who a limit applies to: for a local client the kernel identified (steered,
 * or a client of the Unix listener) its uid, since every local process shares 127.0.0.1;
 * for anyone else its address, IPv6 by its /64 (one host owns a whole /64). A connection
 * counts as logging in from admission_enter() until admission_leave(), which the relay
 * calls once: when its login completes (AuthenticationOk) or when it closes first.
 *
 * Memory is fixed: sources live in an open-addressing table of max_sources slots (a power of
 * two), keyed by a hash with a per-process random seed, so an attacker cannot aim sources at
 * one probe window. A source with connections logging in is never evicted (its count would
 * be lost); an idle one is, least recently seen first. A new source whose probe window holds
 * only busy sources is refused as if prelogin_max were reached: the table is full of
 * sources mid-login, which is exactly the flood this exists for.
 *
 * Pure (no sockets, no logging) and thread-safe: one mutex, taken at accept, at login and at
 * close of a connection, never per message.
 */
#ifndef PGWARDEN_ADMISSION_H
#define PGWARDEN_ADMISSION_H

#include "base/addr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct admission_limits {
	uint32_t prelogin_max;
	uint32_t prelogin_per_source;
	double rate_per_sec; /* new connections per source; 0: no rate limit */
	uint32_t burst;      /* bucket size; > 0 when rate_per_sec is */
};

enum admission_verdict {
	ADMISSION_ACCEPT = 0,
	ADMISSION_PRELOGIN_TOTAL,  /* prelogin_max reached (or no room for a new source) */
	ADMISSION_PRELOGIN_SOURCE, /* prelogin_per_source reached for this source */
	ADMISSION_SOURCE_RATE,     /* this source is over its rate */
	ADMISSION_VERDICT_COUNT,
};

const char *admission_verdict_to_str(enum admission_verdict v);

enum admission_source_kind {
	ADMISSION_SOURCE_NONE = 0,
	ADMISSION_SOURCE_ADDR, /* addr: IPv4 as ::ffff:a.b.c.d, IPv6 with its last 64 bits zero */
	ADMISSION_SOURCE_UID,  /* uid: a local client the kernel identified */
};

struct admission_source {
	uint8_t kind; /* enum admission_source_kind */
	uint8_t pad[3];
	uint32_t uid;
	uint8_t addr[16];
};

/* The source of a client at a (an IP address), or of a local client with uid. */
void admission_source_addr(struct admission_source *s, const struct addr *a);
void admission_source_uid(struct admission_source *s, uint32_t uid);
/* "uid 1000", "192.0.2.7", "2001:db8:1:2::/64"; returns buf. */
#define ADMISSION_SOURCE_STRLEN 64
const char *admission_source_format(const struct admission_source *s, char *buf, size_t n);

struct admission;

/* max_sources: slots of the source table (rounded up to a power of two, at least 64).
 * 0 or -ENOMEM. */
int admission_new(uint32_t max_sources, struct admission **out)
	__attribute__((warn_unused_result));
void admission_free(struct admission *a);

/*
 * A new connection from src at now_ns (monotonic). ACCEPT counts it as logging in; any
 * other verdict counts nothing (the caller refuses the connection). The checks, in order:
 * the source's rate, the total, the source's count.
 */
enum admission_verdict admission_enter(struct admission *a, const struct admission_limits *l,
				       const struct admission_source *src, uint64_t now_ns)
	__attribute__((warn_unused_result));

/* A connection admission_enter() accepted has logged in, or closed before it did. */
void admission_leave(struct admission *a, const struct admission_source *src);

/* Connections logging in now, in total and from src (any thread, for status and tests). */
uint32_t admission_prelogin(struct admission *a);
uint32_t admission_prelogin_of(struct admission *a, const struct admission_source *src);

#endif
