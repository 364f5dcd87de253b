/* identity: the names of a session's identity facts (see identity.h). */
#include "session/identity.h"

const char *session_auth_method_to_str(enum session_auth_method m)
{
	static const char *const names[SESSION_AUTH_METHOD_COUNT] = {
		[SESSION_AUTH_PENDING] = "pending",
		[SESSION_AUTH_TRUST] = "trust",
		[SESSION_AUTH_PASSWORD] = "password",
		[SESSION_AUTH_MD5] = "md5",
		[SESSION_AUTH_SCRAM] = "scram-sha-256",
		[SESSION_AUTH_SCRAM_PLUS] = "scram-sha-256-plus",
		[SESSION_AUTH_CERT] = "cert",
		[SESSION_AUTH_CERT_SCRAM] = "cert+scram-sha-256",
		[SESSION_AUTH_GSS] = "gss",
		[SESSION_AUTH_SSPI] = "sspi",
	};

	return (unsigned)m < SESSION_AUTH_METHOD_COUNT ? names[m] : "unknown";
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
