/*
 * session_kill: what an operator's kill (the admin socket, pgwardenctl kill, pgwarden-top)
 * does to a session, on the worker that owns it.
 *
 * Ending only the client's side is not enough: a backend busy with a statement reads
 * nothing from its socket until the statement ends, so it would go on running (and holding
 * its locks) long after the client got 57P01. So both modes first send the server a
 * CancelRequest with the session's real key (backend_cancel.h), which interrupts the
 * statement at once; "terminate" then ends the session as before (57P01 to the client,
 * Terminate to the server, which the backend reads as soon as the cancel has freed it, and
 * exits, releasing its locks). "cancel" stops there: the client gets the server's own
 * "canceling statement due to user request" (57014) and keeps its session.
 */
#ifndef PGWARDEN_SESSION_KILL_H
#define PGWARDEN_SESSION_KILL_H

#include "admin/admin.h"

struct conn;

/* Act on c (owning worker's thread). Logged (trail) with what was done. */
void session_kill(struct conn *c, enum admin_kill_mode mode);

#endif
