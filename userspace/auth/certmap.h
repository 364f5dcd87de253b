/*
 * certmap: auth.cert_map, which client-certificate identities may log in as which roles,
 * in pg_ident.conf's format so an existing file can be reused:
 *
 *     # MAPNAME   CERTIFICATE-IDENTITY          ROLE
 *     pgwarden    alice@example.com             alice
 *     pgwarden    /^(.*)@example\.com$          \1
 *
 * Lines hold exactly three tokens separated by blanks; '#' starts a comment; a token may
 * be double-quoted (then it may hold blanks and '#', and "" is one quote). Only lines whose
 * map is auth.cert_map_name apply. An identity starting with '/' is a regular expression
 * (the rest of the token) matched against the certificate identity (the TLS layer's
 * peer_identity: first DNS/email/URI SAN, else the single CN); the role may then hold "\1",
 * replaced by what the first parenthesised group matched, as pg_ident does (PostgreSQL 15:
 * the first "\1" only). Otherwise the identity must be equal, byte for byte. The role
 * must equal the role the client asks for (its StartupMessage "user"), case-sensitively.
 *
 * Differences from pg_ident, deliberate: regular expressions are POSIX extended (regcomp
 * REG_EXTENDED), not PostgreSQL's ARE flavour (no \d, \w; use [0-9], [[:alnum:]_]); a
 * "\1" with no group in the expression is an error when the file loads, not at login; the
 * keywords "all" and "+group" of later PostgreSQL versions are not supported and are read
 * as plain names.
 *
 * A loaded map is immutable; matching is safe from any thread (glibc's regexec is).
 */
#ifndef PGWARDEN_CERTMAP_H
#define PGWARDEN_CERTMAP_H

#include <stdbool.h>
#include <stddef.h>

#define CERTMAP_MAX_FILE_SIZE (1024 * 1024)
#define CERTMAP_MAX_LINES 10000
#define CERTMAP_IDENTITY_MAX 1024 /* longest certificate identity matched */
#define CERTMAP_ERR_MAX 512

struct certmap;

/* Check (not writable by others; owner root or the daemon's user) and load path. 0, or -1
 * with "path:line: problem" in err. */
int certmap_load(const char *path, struct certmap **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The same for a document in memory; name is what errors call it. */
int certmap_parse(const char *name, const char *data, size_t len, struct certmap **out,
		  char *err, size_t errlen) __attribute__((warn_unused_result));

void certmap_free(struct certmap *m);

/* Number of lines (of any map) loaded. */
size_t certmap_count(const struct certmap *m);

/* May the certificate identity log in as role under map? identity NULL or too long: no. */
bool certmap_allows(const struct certmap *m, const char *map, const char *identity,
		    const char *role);

#endif
