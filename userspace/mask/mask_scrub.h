/*
 * mask_scrub: server messages that can echo data, rewritten for masked identities.
 *
 * What can be scrubbed reliably, and what is done (docs/MASKING.md has the full table):
 *
 * ErrorResponse, NoticeResponse. Message texts are localised (lc_messages) and quote
 * values in whatever quotes the language uses, so no pattern can find "the value" in them.
 * The decision is therefore by SQLSTATE class, which is not localised:
 *   - classes whose messages the server builds from names and the client's own query
 *     only (08 connection, 0A unsupported, 25 transaction state, 28 authorization, 3D/3F
 *     unknown database/schema, 40 rollback, 42 syntax and access, 53 resources, 54 limits,
 *     55 object state, 57 operator intervention, 58 system, and the like): kept, except
 *     DETAIL (a deadlock's DETAIL names other sessions' statements);
 *   - every other class (22 data exceptions such as invalid input syntax "123-45-6789",
 *     23 integrity violations with "Key (ssn)=(...)", 00/01 notices and warnings, P0
 *     RAISE, XX, 2F/38/39 routine exceptions, and any class not listed): the message
 *     becomes a fixed text naming the class and the SQLSTATE; DETAIL, HINT, CONTEXT,
 *     internal query and position are dropped. Severity, SQLSTATE, schema, table, column,
 *     data type and constraint names, the position in the client's own query, and the
 *     source location stay, so a client can still act on the error.
 *   RAISE with a SQLSTATE the caller chooses can put any text in a "kept" class; only a
 *   policy that denies DO blocks and user functions to masked identities closes that.
 * NotificationResponse: the payload is whatever a NOTIFY (or a trigger) put there; it is
 *   emptied. Process ID and channel stay.
 * ParameterStatus: parameters the server controls or that take enumerated values keep
 *   their value; a free-text parameter (application_name, search_path, anything else)
 *   keeps it only when it equals what the client itself sent in its StartupMessage, and
 *   is emptied otherwise (set_config() can copy a value into it).
 *
 * Each function writes the replacement message into out[0..cap) and returns its length,
 * 0 when the message may pass unchanged, -EPROTO for a malformed message, -ENOSPC when cap
 * is too small (a replacement is never longer than the original plus 128 bytes).
 */
#ifndef PGWARDEN_MASK_SCRUB_H
#define PGWARDEN_MASK_SCRUB_H

#include "proto/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MASK_SCRUB_SLACK 128

/* Is this SQLSTATE's class one whose messages carry no data values? */
bool mask_scrub_class_safe(const char *sqlstate);

int mask_scrub_error(const struct proto_msg *m, uint8_t *out, size_t cap);
int mask_scrub_notification(const struct proto_msg *m, uint8_t *out, size_t cap);
/* client_value: what the client sent for this parameter at startup (NULL: nothing). */
int mask_scrub_parameter(const struct proto_msg *m, const char *client_value, uint8_t *out,
			 size_t cap);

#endif
