/*
 * fuzz_cidr: the address-range parser (cidr_parse) on arbitrary text, with the formatter and
 * the matcher on what it accepts.
 *
 * Invariants checked on every input: a parsed range has a prefix within its family's length;
 * its formatted text fits CIDR_STRLEN and parses back to the same range; masking is
 * idempotent and the masked range still contains the address it was written with (IPv4
 * ranges, and IPv6 ranges of /96 or longer, which are the ones that can hold it).
 */
#include "base/cidr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char text[128], buf[CIDR_STRLEN];
	struct cidr c, back, m;

	if (size >= sizeof(text))
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (cidr_parse(text, &c) != 0)
		return 0;
	if (c.bits > 128 || (c.v4 && c.bits < 96))
		abort();
	if (strlen(cidr_format(&c, buf, sizeof(buf))) >= sizeof(buf) - 1)
		abort();
	if (cidr_parse(buf, &back) != 0 || memcmp(&back, &c, sizeof(c)) != 0)
		abort();
	m = c;
	cidr_mask(&m);
	if (!cidr_match(&m, c.addr) && (c.v4 || c.bits >= 96))
		abort();
	back = m;
	cidr_mask(&back);
	if (memcmp(&back, &m, sizeof(m)) != 0)
		abort();
	return 0;
}
