/* session: identity of one client session (see session.h). */
#include "stage/session.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/un.h>

_Static_assert(SESSION_UPSTREAM_STRLEN >= sizeof("unix:") + sizeof(((struct sockaddr_un *)0)->sun_path),
	       "a Unix upstream's text fits");
_Static_assert(SESSION_UPSTREAM_STRLEN >= ADDR_STRLEN, "an address's text fits");

int session_new_id(struct session *s)
{
	static const char hex[] = "0123456789abcdef";

	if (RAND_bytes(s->id, sizeof(s->id)) != 1)
		return -EIO;
	for (int i = 0; i < SESSION_ID_LEN; i++) {
		s->id_hex[2 * i] = hex[s->id[i] >> 4];
		s->id_hex[2 * i + 1] = hex[s->id[i] & 15];
	}
	s->id_hex[SESSION_ID_HEXLEN] = '\0';
	return 0;
}

void session_release(struct session *s)
{
	free(s->user);
	free(s->database);
	free(s->application_name);
	s->user = s->database = s->application_name = NULL;
}

const char *session_route_to_str(enum session_route r)
{
	switch (r) {
	case SESSION_ROUTE_EXPLICIT:
		return "explicit";
	case SESSION_ROUTE_STEERED:
		return "steered";
	case SESSION_ROUTE_TPROXY:
		return "tproxy";
	}
	return "unknown";
}

const char *session_upstream_text(const struct session *s, char *buf, size_t n)
{
	if (s->upstream_unix)
		snprintf(buf, n, "unix:%s", s->upstream_unix);
	else if (s->upstream.len)
		addr_format(&s->upstream.ss.sa, buf, n);
	else if (n)
		buf[0] = '\0';
	return buf;
}
