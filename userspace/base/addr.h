/*
 * addr: socket addresses as the operator writes them ("127.0.0.1:5432", "[::1]:6432",
 * "*:6432") and as logs print them. Numeric only: the relay never resolves names, so no
 * worker ever blocks on DNS.
 */
#ifndef PGWARDEN_ADDR_H
#define PGWARDEN_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define ADDR_STRLEN 64 /* "[" INET6_ADDRSTRLEN "]:65535" and a NUL */

/* Big enough for IPv4 and IPv6 (28 bytes, not sockaddr_storage's 128): a session holds
 * several addresses, and idle sessions must stay small. */
union addr_storage {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

struct addr {
	union addr_storage ss; /* pass &a.ss as struct sockaddr * with len = sizeof(a.ss) */
	socklen_t len;
};

/* Parse "host:port" with a numeric IPv4 host, "[v6]:port", or "*:port" (IPv4 any).
 * Returns 0 or -EINVAL. */
int addr_parse(const char *text, struct addr *out);

/* "1.2.3.4:5" or "[::1]:5" into buf (ADDR_STRLEN bytes); returns buf. */
const char *addr_format(const struct sockaddr *sa, char *buf, size_t n);

/* Same family, address and port. */
bool addr_equal(const struct sockaddr *a, const struct sockaddr *b);

#endif
