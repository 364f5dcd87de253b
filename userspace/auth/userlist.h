/*
 * userlist: auth.users_file (SCRAM-SHA-256 verifiers) and auth.upstream_passwords
 * (passwords the relay logs in upstream with), both in PgBouncer's userlist format:
 *
 *     "username" "secret"
 *
 * one entry per line; a double quote inside a field is written twice (""); blank lines and
 * lines whose first non-blank character is ';' or '#' are comments; blanks are spaces and
 * tabs; CRLF line ends are accepted. Stricter than PgBouncer, on purpose: nothing but
 * blanks may follow the second field (PgBouncer ignores the rest of the line, which hides
 * typos), a user may appear once, names are 1..63 bytes without control characters, and
 * the secret must be what the file is for: a verifier in PostgreSQL's format
 * (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, as pg_authid.rolpassword
 * holds it) in a users file, where a plaintext password or an md5 hash is refused (SCRAM
 * cannot use an md5 hash, and the relay does not keep plaintext to verify clients); a
 * password in an upstream-passwords file, where a verifier or md5 hash is refused (neither
 * can log in). Errors are one line, "FILE:LINE: what", and never quote a secret.
 *
 * Loading checks the file first: a regular file owned by the daemon's user or root, with no
 * access for others and, unless root owns it, none for its group (PostgreSQL's rule for
 * its key file). The file is read into secret memory (secret.h) and every entry lives
 * there; a snapshot is immutable and reference-counted, so a reload swaps in a new one
 * while sessions keep the one they started with.
 */
#ifndef PGWARDEN_USERLIST_H
#define PGWARDEN_USERLIST_H

#include "auth/scram.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define USERLIST_MAX_FILE_SIZE (16 * 1024 * 1024)
#define USERLIST_MAX_ENTRIES 100000
#define USERLIST_NAME_MAX 63 /* PostgreSQL's NAMEDATALEN - 1 */
#define USERLIST_ERR_MAX 512

enum userlist_kind {
	USERLIST_VERIFIERS = 0, /* auth.users_file */
	USERLIST_PASSWORDS,     /* auth.upstream_passwords */
};

struct userlist;

/* Check and load path. 0, or -1 with "path:line: problem" (or "path: problem") in err. */
int userlist_load(const char *path, enum userlist_kind kind, struct userlist **out, char *err,
		  size_t errlen) __attribute__((warn_unused_result));

/* The same for a document in memory (no file checks); name is what errors call it. */
int userlist_parse(const char *name, const char *data, size_t len, enum userlist_kind kind,
		   struct userlist **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

void userlist_ref(struct userlist *u);
void userlist_unref(struct userlist *u); /* cleanses and frees at zero; NULL is fine */

size_t userlist_count(const struct userlist *u);

/* The verifier of user in a USERLIST_VERIFIERS list, or NULL. Valid while u is held. */
const struct scram_verifier *userlist_verifier(const struct userlist *u, const char *user);

/* The password of user in a USERLIST_PASSWORDS list, or NULL. Valid while u is held. */
const char *userlist_password(const struct userlist *u, const char *user);

/* The iteration count and salt length most verifiers in the list use (4096 and 16 when
 * it is empty): what a mock exchange announces, so that it looks like the real ones. */
uint32_t userlist_common_iterations(const struct userlist *u);
size_t userlist_common_salt_len(const struct userlist *u);

/* The entries' names in order (for tests and `pgwardenctl`-side listings; no secrets). */
const char *userlist_name_at(const struct userlist *u, size_t i);

/*
 * The file-permission rule shared by every auth file: fd is an open regular file owned by
 * the daemon's euid or root, with no access for others, and group access only read and
 * only when root owns it. 0, or -1 with a reason (no path) in err.
 */
int userlist_check_file(int fd, bool secret, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Read a whole auth file that passes userlist_check_file() and is at most max bytes.
 * *out gets its bytes (a secret buffer to secret_free() when secret, else one to free()),
 * *outlen their count. A file that grows while it is read is refused. 0, or -1 with
 * "path: reason" in err.
 */
int userlist_read_file(const char *path, bool secret, size_t max, char **out, size_t *outlen,
		       char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
