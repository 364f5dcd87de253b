/* cidr: address ranges (see cidr.h). */
#include "base/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cidr_parse(const char *text, struct cidr *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
	unsigned long bits;
	unsigned max;
	char *end;

	memset(out, 0, sizeof(*out));
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, out->addr + 12) == 1) {
		out->addr[10] = out->addr[11] = 0xff;
		max = 32;
		out->v4 = true;
	} else if (inet_pton(AF_INET6, host, out->addr) == 1) {
		max = 128;
	} else {
		return -EINVAL;
	}
	if (!slash) {
		bits = max;
	} else {
		if (slash[1] < '0' || slash[1] > '9')
			return -EINVAL;
		errno = 0;
		bits = strtoul(slash + 1, &end, 10);
		if (errno || *end || bits > max)
			return -EINVAL;
	}
	out->bits = (uint8_t)(out->v4 ? bits + 96 : bits);
	return 0;
}

/* ::ffff:a.b.c.d: how an IPv4 source is kept. */
static bool addr_is_v4(const uint8_t addr[16])
{
	static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	return memcmp(addr, prefix, sizeof(prefix)) == 0;
}

bool cidr_match(const struct cidr *c, const uint8_t addr[16])
{
	unsigned full = c->bits / 8, rest = c->bits % 8;

	/* An IPv6 range shorter than /96 ("::/0") means IPv6 clients, as in ip6tables; it
	 * would otherwise also cover every IPv4 client through the mapped form. */
	if (!c->v4 && c->bits < 96 && addr_is_v4(addr))
		return false;
	if (memcmp(c->addr, addr, full) != 0)
		return false;
	if (rest) {
		uint8_t m = (uint8_t)(0xff << (8 - rest));

		if ((c->addr[full] & m) != (addr[full] & m))
			return false;
	}
	return true;
}

void cidr_mask(struct cidr *c)
{
	unsigned full = c->bits / 8, rest = c->bits % 8;

	if (full >= sizeof(c->addr))
		return;
	if (rest)
		c->addr[full++] &= (uint8_t)(0xff << (8 - rest));
	memset(c->addr + full, 0, sizeof(c->addr) - full);
}

const char *cidr_format(const struct cidr *c, char *buf, size_t n)
{
	char host[INET6_ADDRSTRLEN];

	if (c->v4)
		inet_ntop(AF_INET, c->addr + 12, host, sizeof(host));
	else
		inet_ntop(AF_INET6, c->addr, host, sizeof(host));
	snprintf(buf, n, "%s/%u", host, c->v4 ? c->bits - 96u : c->bits);
	return buf;
}
