/*
 * auth_types: the names the configuration shares with the authentication module: the
 * mode and the set of methods a server may ask for (auth.server_methods). No
 * dependencies, so config/ can include it without depending on auth/.
 */
#ifndef PGWARDEN_AUTH_TYPES_H
#define PGWARDEN_AUTH_TYPES_H

#include <stddef.h>
#include <stdint.h>

enum auth_mode {
	AUTH_MODE_PASSTHROUGH = 0, /* the server authenticates; pgwarden observes and enforces */
	AUTH_MODE_TERMINATE,       /* pgwarden authenticates the client and logs in upstream */
	AUTH_MODE_COUNT,
};

/* Methods, as bits of auth.server_methods. */
enum auth_method_bit {
	AUTH_METHOD_TRUST = 1u << 0,      /* AuthenticationOk with no exchange (trust, peer,
					   * ident, cert: the wire cannot tell them apart) */
	AUTH_METHOD_PASSWORD = 1u << 1,   /* cleartext password */
	AUTH_METHOD_MD5 = 1u << 2,
	AUTH_METHOD_SCRAM = 1u << 3,      /* SCRAM-SHA-256, with or without channel binding */
	AUTH_METHOD_SCRAM_PLUS = 1u << 4, /* SCRAM-SHA-256-PLUS only (channel binding) */
	AUTH_METHOD_GSS = 1u << 5,
	AUTH_METHOD_SSPI = 1u << 6,
};
#define AUTH_METHODS_ALL 0x7fu
#define AUTH_METHOD_NAMES_COUNT 7

/* "trust", "password", "md5", "scram-sha-256", "scram-sha-256-plus", "gss", "sspi", in bit
 * order (the config table uses it). */
extern const char *const auth_method_names[AUTH_METHOD_NAMES_COUNT + 1];
extern const char *const auth_mode_names[AUTH_MODE_COUNT + 1];

#endif
