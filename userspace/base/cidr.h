/*
 * cidr: an address range ("10.0.0.0/8", "2001:db8::/32"), as the gate's deny list and the
 * policy's source rules write them. IPv4 is kept as ::ffff:a.b.c.d with the prefix counted
 * from the front of the 16 bytes, so one comparison serves both families. No project
 * dependencies: config, policy and the gate all parse ranges here.
 */
#ifndef PGWARDEN_CIDR_H
#define PGWARDEN_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cidr {
	uint8_t addr[16];
	uint8_t bits;
	bool v4;
};

/* Room for a formatted range: the longest IPv6 text, "/128" and the NUL. */
#define CIDR_STRLEN (46 + 4)

/* "10.0.0.0/8", "192.0.2.7", "fd00::/8". 0 or -EINVAL. Host bits are kept as written:
 * cidr_mask() says what the range really is. */
int cidr_parse(const char *text, struct cidr *out) __attribute__((warn_unused_result));
/* Whether addr (16 bytes, IPv4 mapped) is in c. An IPv6 range shorter than /96 never
 * matches an IPv4 address ("::/0" is every IPv6 client); ::ffff:a.b.c.d/N (N >= 96) is the
 * IPv4 range a.b.c.d/(N-96). */
bool cidr_match(const struct cidr *c, const uint8_t addr[16]);
/* Clear the bits after the prefix ("10.1.2.3/8" becomes "10.0.0.0/8"). */
void cidr_mask(struct cidr *c);
/* "10.0.0.0/8", "fd00::/8": always with the prefix length, IPv4 ranges as IPv4. Returns buf
 * (CIDR_STRLEN bytes are always enough). */
const char *cidr_format(const struct cidr *c, char *buf, size_t n);

#endif
