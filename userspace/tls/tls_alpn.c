/*
 * tls_alpn: the ALPN protocol list of a ClientHello (RFC 7301), read to find "postgresql".
 * The bytes are the peer's: every length is checked against what is left before it is
 * used.
 */
#include "tls/tls.h"

#include <errno.h>
#include <string.h>

int tls_alpn_find(const uint8_t *list, size_t len, const char *proto, const uint8_t **at)
{
	size_t plen = strlen(proto), off = 0;
	const uint8_t *found = NULL;

	/* RFC 7301 3.1: the list holds at least one name, and names are never empty. */
	if (len == 0)
		return -EBADMSG;
	while (off < len) {
		size_t n = list[off];

		if (n == 0 || n > len - off - 1)
			return -EBADMSG;
		if (!found && n == plen && memcmp(list + off + 1, proto, plen) == 0)
			found = list + off + 1;
		off += 1 + n;
	}
	/* The whole list is judged before an answer: a good name does not excuse a
	 * malformed tail. */
	if (!found)
		return -ENOENT;
	*at = found;
	return 0;
}
