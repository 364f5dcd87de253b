/*
 * mask_catconn: pgwarden's own connection to PostgreSQL that resolves the mask rules
 * against the catalog (mask_catalog.h) and publishes the result.
 *
 * One thread of its own does all of it, so that no session's relay ever waits for it: it
 * connects to the configured upstream (TCP or a Unix socket path), over TCP negotiates TLS
 * as tls.server.* says, with the relay's own server-leg context and transport (SSLRequest,
 * 'S' or, under prefer only, 'N'; verify-ca / verify-full; SNI), logs in as
 * mask.catalog_user to mask.catalog_database with options=-c search_path=pg_catalog
 * (SCRAM-SHA-256 with the password from mask.catalog_passwords, through auth/scram.h's
 * client, or trust; cleartext and md5 are refused so no password crosses in clear or as a
 * replayable hash), runs mask_catalog_query() for the current masking policy
 * (mask_rules_acquire()), feeds every row to the builder, publishes the catalog and says
 * goodbye. Each resolution has mask.catalog_timeout for everything, with every message
 * bounded (MASK_CATCONN_MAX_MESSAGE); a failure is logged and retried with back-off (1 s
 * doubling to 30 s) until one succeeds or a newer request replaces it. After a resolution
 * read from the server, the next comes by itself mask.catalog_refresh later (0: never), so
 * DDL that no masked session ran (a view over a masked column, an ALTER TABLE elsewhere)
 * is seen within that period. A failed resolution publishes nothing: sessions keep the
 * catalog last read, or stay refused (55000) while their policy has none.
 *
 * Requests coalesce: mask_catconn_refresh() during a resolution makes exactly one more
 * afterwards (the policy or the catalog may have changed meanwhile). Sessions whose policy
 * has no catalog yet are refused by the stage (55000), never passed unmasked.
 *
 * The password lives in the userlist (cleansed when released) and in the SCRAM client for
 * the length of one login (scram_client_clear()); it is never logged.
 */
#ifndef PGWARDEN_MASK_CATCONN_H
#define PGWARDEN_MASK_CATCONN_H

#include "base/addr.h"
#include "mask/mask_plan.h"
#include "tls/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MASK_CATCONN_MAX_MESSAGE (1024 * 1024) /* one server message of the resolution */

struct mask_catconn_settings {
	struct addr upstream;      /* TCP address, when unix_path is NULL */
	const char *unix_path;     /* PostgreSQL's socket file, or NULL */
	const char *user;          /* NULL: no catalog connection (masked sessions refused) */
	const char *database;      /* NULL: the user's name */
	const char *passwords;     /* userlist file path, or NULL */
	/* tls.server.*: the snapshot whose server-leg context the connection uses (a reference
	 * is taken); NULL: plaintext. Unused over a Unix socket. */
	struct tls_snapshot *tls;
	uint64_t timeout_ms;
	uint64_t refresh_ms;       /* mask.catalog_refresh; 0: no periodic resolution */
};

/* Start the thread (once). 0 or -errno. */
int mask_catconn_start(void) __attribute__((warn_unused_result));

/*
 * Use these settings from the next resolution on, and ask for one. The password file is
 * loaded here (errors: 0 or -1 with a one-line reason in err, settings unchanged). Main
 * thread.
 */
int mask_catconn_configure(const struct mask_catconn_settings *s, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Ask for a resolution (the policy was reloaded, or a session saw DDL). Any thread; never
 * blocks on the server. */
void mask_catconn_refresh(void);

/* Wait up to timeout_ms for the resolutions asked for so far to end (start-up: a daemon
 * that listens with its catalog read refuses no masked statement for want of it). 0 when
 * the last one succeeded, -EIO when it failed, -ETIMEDOUT. Main thread only. */
int mask_catconn_wait(uint64_t timeout_ms);

/*
 * `pgwardenctl policy explain --online`: describe sql on a connection of its own made as
 * the catalog connection's is (the same upstream, tls.server.*, mask.catalog_user and its
 * password, mask.catalog_database), but with the role's own search_path (so names resolve
 * as they do for a session, not in pg_catalog), default_transaction_read_only=on and
 * application_name pgwarden-mask-explain; send only Parse, Describe and Sync
 * (mask_explain_request(): the statement is analysed, never run), and write
 * mask_explain()'s text for prof, cat and refs into out. Everything, from connect to the
 * description, has mask.catalog_timeout. Blocks the calling thread (the admin thread) that
 * long at most; takes the settings' lock only to copy them, so it never holds up the
 * catalog thread or a session. Returns the text's length, or -errno with a one-line reason
 * in why: -EOPNOTSUPP (no mask.catalog_user), -EINVAL (the server rejected the statement:
 * its SQLSTATE and message, peer text the caller must sanitise), -ETIMEDOUT, other -errno.
 */
int mask_catconn_explain(const char *sql, const struct mask_profile *prof,
			 const struct mask_catalog *cat, enum mask_refs refs, char *out, size_t cap,
			 char *why, size_t n) __attribute__((warn_unused_result));

/* The database the published catalog describes (the configured one), copied into out;
 * "" when there is no catalog connection. Any thread. */
void mask_catconn_database(char *out, size_t n);

/* Resolutions that succeeded and failed so far (tests, metrics). */
void mask_catconn_counts(uint64_t *ok, uint64_t *failed);

/* Stop the thread and release everything. */
void mask_catconn_stop(void);

/* ---- when the thread resolves by itself (a pure function, so tests can drive the clock) */

#define MASK_CATCONN_RETRY_FIRST_MS 1000
#define MASK_CATCONN_RETRY_MAX_MS 30000

enum mask_catconn_outcome {
	MASK_CATCONN_READ,         /* the catalog was read from the server and published */
	MASK_CATCONN_LOCAL,        /* nothing to read (no policy, or it masks nothing) */
	MASK_CATCONN_FAILED,       /* the resolution failed; nothing was published */
	MASK_CATCONN_UNCONFIGURED, /* columns to resolve, but no mask.catalog_user */
};

struct mask_catconn_schedule {
	uint64_t retry_ms; /* the last back-off; 0 after anything but a failure */
	uint64_t due_ms;   /* monotonic ms of the next resolution of its own; 0: none */
};

/*
 * After a resolution with outcome o that ended at now (monotonic ms): a catalog read is
 * read again refresh_ms later (none when 0); a failure is retried after 1 s, doubling to
 * 30 s, whatever refresh_ms says, so a failing server is not asked more often; with
 * nothing to read, or no role to read it as, nothing is due until the next request.
 */
void mask_catconn_schedule_next(struct mask_catconn_schedule *s, enum mask_catconn_outcome o,
				uint64_t now, uint64_t refresh_ms);

#endif
