/* session: identity of one client session (see session.h). */
#include "stage/session.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdlib.h>

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
