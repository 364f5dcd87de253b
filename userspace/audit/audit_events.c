/* audit_events: the records of events that belong to no session (see audit.h). */
#include "audit/audit.h"
#include "base/clock.h"

#include <arpa/inet.h>
#include <stdio.h>

void audit_rec_addr(struct audit_rec *r, const char *key, const struct addr *a)
{
	char text[INET6_ADDRSTRLEN];
	const void *raw;
	uint16_t port;

	if (!a || !a->len || (a->ss.sa.sa_family != AF_INET && a->ss.sa.sa_family != AF_INET6)) {
		audit_rec_null(r, key);
		return;
	}
	if (a->ss.sa.sa_family == AF_INET) {
		raw = &a->ss.in4.sin_addr;
		port = ntohs(a->ss.in4.sin_port);
	} else {
		raw = &a->ss.in6.sin6_addr;
		port = ntohs(a->ss.in6.sin6_port);
	}
	if (!inet_ntop(a->ss.sa.sa_family, raw, text, sizeof(text))) {
		audit_rec_null(r, key);
		return;
	}
	audit_rec_object(r, key);
	audit_rec_str(r, "address", text);
	audit_rec_u64(r, "port", port);
	audit_rec_end(r);
}

void audit_event_reload(struct audit_trail *t, const char *what, const char *path,
			const uint8_t *sha256, bool accepted, const char *error)
{
	struct audit_rec *r;

	if (!t)
		return;
	r = audit_rec_new(AUDIT_EV_RELOAD, clock_wall_ns());
	if (!r)
		return;
	audit_rec_str(r, "what", what);
	audit_rec_str(r, "path", path);
	if (sha256)
		audit_rec_hex(r, "sha256", sha256, AUDIT_HASH_LEN);
	else
		audit_rec_null(r, "sha256");
	audit_rec_bool(r, "accepted", accepted);
	audit_rec_str(r, "error", accepted ? NULL : error);
	audit_trail_submit(t, r);
}

void audit_event_steer(struct audit_trail *t, const char *action, const char *instance,
		       const char *detail)
{
	struct audit_rec *r;

	if (!t)
		return;
	r = audit_rec_new(AUDIT_EV_STEER, clock_wall_ns());
	if (!r)
		return;
	audit_rec_str(r, "action", action);
	audit_rec_str(r, "instance", instance);
	audit_rec_str(r, "detail", detail);
	audit_trail_submit(t, r);
}

void audit_event_kill(struct audit_trail *t, const char *session_id, const char *requested_by,
		      bool found)
{
	struct audit_rec *r;

	if (!t)
		return;
	r = audit_rec_new(AUDIT_EV_KILL, clock_wall_ns());
	if (!r)
		return;
	audit_rec_str(r, "session", session_id);
	audit_rec_str(r, "requested_by", requested_by);
	audit_rec_bool(r, "found", found);
	audit_trail_submit(t, r);
}

void audit_event_cancel(struct audit_trail *t, const struct addr *client, const char *session_id,
			uint32_t backend_pid, const char *outcome)
{
	struct audit_rec *r;

	if (!t)
		return;
	r = audit_rec_new(AUDIT_EV_CANCEL, clock_wall_ns());
	if (!r)
		return;
	audit_rec_addr(r, "client", client);
	audit_rec_str(r, "session", session_id);
	audit_rec_u64(r, "backend_pid", backend_pid);
	audit_rec_str(r, "outcome", outcome);
	audit_trail_submit(t, r);
}

void audit_event_lockout(struct audit_trail *t, const char *user, const struct addr *client,
			 unsigned failures, uint64_t until_wall_ns)
{
	char until[AUDIT_TS_LEN];
	struct audit_rec *r;

	if (!t)
		return;
	r = audit_rec_new(AUDIT_EV_LOCKOUT, clock_wall_ns());
	if (!r)
		return;
	audit_rec_str(r, "user", user);
	audit_rec_addr(r, "client", client);
	audit_rec_u64(r, "failures", failures);
	audit_rec_str(r, "until", audit_format_ts(until_wall_ns, until, sizeof(until)));
	audit_trail_submit(t, r);
}
