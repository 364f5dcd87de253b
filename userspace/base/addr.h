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
/* "1.2.3.4", as inet_ntop(AF_INET) writes it, cut to n like snprintf. */
void addr_format_ipv4(const struct in_addr *a, char *buf, size_t n);

/* Same family, address and port. */
bool addr_equal(const struct sockaddr *a, const struct sockaddr *b);

/* The port in host order; 0 for a non-IP address. */
unsigned addr_port(const struct addr *a);

/* 0.0.0.0, :: or ::ffff:0.0.0.0: a connect() there reaches this host (the bound source
 * address, else loopback), a bind() there is a wildcard. */
bool addr_is_unspecified(const struct addr *a);

/* 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104. */
bool addr_is_loopback(const struct addr *a);

/*
 * Is a an address of this host in the caller's network namespace (one a socket may bind
 * without IP_FREEBIND/IP_TRANSPARENT): unspecified and loopback addresses included. Asks
 * the kernel with a bind() that takes no port, so it is exactly the kernel's own notion
 * at this moment. A v4-mapped address is asked as IPv4.
 */
bool addr_is_local(const struct addr *a);

/* a with a v4-mapped IPv6 address rewritten as the IPv4 address it names (port kept);
 * anything else copied. */
void addr_unmap(const struct addr *a, struct addr *out);

#endif
