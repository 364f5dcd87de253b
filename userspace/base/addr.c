/* addr: numeric socket address parsing and formatting (see addr.h). */
#include "base/addr.h"
#include "base/decimal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static int addr_parse_port(const char *s, in_port_t *port)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535)
		return -EINVAL;
	*port = htons((in_port_t)v);
	return 0;
}

int addr_parse(const char *text, struct addr *out)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon;
	size_t hlen;
	in_port_t port;

	memset(out, 0, sizeof(*out));
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;

		if (!close || close[1] != ':')
			return -EINVAL;
		hlen = (size_t)(close - text - 1);
		if (hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, text + 1, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1 || addr_parse_port(close + 2, &port))
			return -EINVAL;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = port;
		out->len = sizeof(*s6);
		return 0;
	}
	colon = strrchr(text, ':');
	if (!colon)
		return -EINVAL;
	hlen = (size_t)(colon - text);
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;

	if (strcmp(host, "*") == 0)
		s4->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
		return -EINVAL;
	if (addr_parse_port(colon + 1, &port))
		return -EINVAL;
	s4->sin_family = AF_INET;
	s4->sin_port = port;
	out->len = sizeof(*s4);
	return 0;
}

/* "1.2.3.4" at p, as inet_ntop spells it; returns the end. */
static char *addr_put_ipv4(char *p, const struct in_addr *a)
{
	const uint8_t *b = (const uint8_t *)a;

	for (int i = 0; i < 4; i++) {
		if (i)
			*p++ = '.';
		p = decimal_put_u64(p, b[i]);
	}
	return p;
}

/* text[0..len) into buf, cut to n like snprintf. */
static void addr_put_cut(char *buf, size_t n, const char *text, size_t len)
{
	if (!n)
		return;
	if (len >= n)
		len = n - 1;
	memcpy(buf, text, len);
	buf[len] = '\0';
}

/* The session trail and the login's lockout key format addresses several times per
 * session; inet_ntop and printf were most of that, so IPv4 is spelled here by hand. */
void addr_format_ipv4(const struct in_addr *a, char *buf, size_t n)
{
	char text[INET_ADDRSTRLEN];

	addr_put_cut(buf, n, text, (size_t)(addr_put_ipv4(text, a) - text));
}

static void addr_format4(const struct sockaddr_in *s4, char *buf, size_t n)
{
	char text[sizeof("255.255.255.255:65535")], *p;

	p = addr_put_ipv4(text, &s4->sin_addr);
	*p++ = ':';
	p = decimal_put_u64(p, ntohs(s4->sin_port));
	addr_put_cut(buf, n, text, (size_t)(p - text));
}

const char *addr_format(const struct sockaddr *sa, char *buf, size_t n)
{
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		addr_format4((const struct sockaddr_in *)sa, buf, n);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		snprintf(buf, n, "[%s]:%u", host, ntohs(s6->sin6_port));
	} else if (sa->sa_family == AF_UNIX) {
		snprintf(buf, n, "unix");
	} else {
		snprintf(buf, n, "unknown");
	}
	return buf;
}

bool addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

unsigned addr_port(const struct addr *a)
{
	if (a->ss.sa.sa_family == AF_INET)
		return ntohs(a->ss.in4.sin_port);
	if (a->ss.sa.sa_family == AF_INET6)
		return ntohs(a->ss.in6.sin6_port);
	return 0;
}

void addr_unmap(const struct addr *a, struct addr *out)
{
	const struct in6_addr *in6 = &a->ss.in6.sin6_addr;

	if (a->ss.sa.sa_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(in6)) {
		if (out != a)
			*out = *a;
		return;
	}
	in_port_t port = a->ss.in6.sin6_port;
	struct in_addr v4;

	memcpy(&v4, &in6->s6_addr[12], 4);
	memset(out, 0, sizeof(*out));
	out->ss.in4.sin_family = AF_INET;
	out->ss.in4.sin_addr = v4;
	out->ss.in4.sin_port = port;
	out->len = sizeof(out->ss.in4);
}

bool addr_is_unspecified(const struct addr *a)
{
	struct addr u;

	addr_unmap(a, &u);
	if (u.ss.sa.sa_family == AF_INET)
		return u.ss.in4.sin_addr.s_addr == htonl(INADDR_ANY);
	if (u.ss.sa.sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&u.ss.in6.sin6_addr);
	return false;
}

bool addr_is_loopback(const struct addr *a)
{
	struct addr u;

	addr_unmap(a, &u);
	if (u.ss.sa.sa_family == AF_INET)
		return (ntohl(u.ss.in4.sin_addr.s_addr) >> 24) == 127;
	if (u.ss.sa.sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&u.ss.in6.sin6_addr);
	return false;
}

bool addr_is_local(const struct addr *a)
{
	struct addr u;
	int one = 1, fd;
	bool local;

	addr_unmap(a, &u);
	if (u.ss.sa.sa_family != AF_INET && u.ss.sa.sa_family != AF_INET6)
		return false;
	if (addr_is_unspecified(&u) || addr_is_loopback(&u))
		return true;
	fd = socket(u.ss.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	/* Port 0 without a port: the kernel checks the address and reserves nothing. */
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (u.ss.sa.sa_family == AF_INET)
		u.ss.in4.sin_port = 0;
	else
		u.ss.in6.sin6_port = 0;
	local = bind(fd, &u.ss.sa, u.len) == 0;
	close(fd);
	return local;
}
