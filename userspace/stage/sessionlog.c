/*
 * sessionlog: the first inspection stage. One structured line when a session's identity is
 * known (the StartupMessage arrived) and one when it ends, with its traffic and the reason.
 * It asks for no messages, so it costs nothing on the data path.
 *
 * These lines are the session trail: written whatever log_level says (log_trail_begin()),
 * at notice, and the end of a session that failed (the server could not be reached, a
 * protocol violation, a timeout, the server's FATAL) at warning, so `log_level: warn`
 * still keeps every session and a journal filter on priority still finds the failures.
 */
#include "base/clock.h"
#include "base/log.h"
#include "stage/stage.h"

#include <string.h>

/* How sessions end in normal operation; any other reason is a failure. */
static const char *const sessionlog_routine_ends[] = {
	"client terminated", /* Terminate */
	"client closed",     /* the client hung up without one */
	"closed",
	"admin_kill",        /* an operator's decision, logged as such by the admin socket */
	"shutdown",          /* drain */
	NULL,
};

static bool sessionlog_failed(const char *reason)
{
	if (!reason || !reason[0])
		return true;
	for (unsigned i = 0; sessionlog_routine_ends[i]; i++)
		if (strcmp(reason, sessionlog_routine_ends[i]) == 0)
			return false;
	return true;
}

static void sessionlog_addr(struct log_line *l, const char *key, const struct addr *a)
{
	char text[ADDR_STRLEN];

	if (a->len)
		log_kv_str(l, key, addr_format((const struct sockaddr *)&a->ss, text, sizeof(text)));
}

static void sessionlog_start(struct stage_ctx *ctx, struct stage_result *r)
{
	const struct session *s = ctx->session;
	const struct session_process *proc = session_process(s);
	const struct session_tls *tls = session_client_tls(s);
	char upstream[SESSION_UPSTREAM_STRLEN];
	struct log_line l;

	log_trail_begin(&l, "session_start", false);
	log_kv_str(&l, "session", s->id_hex);
	log_kv_str(&l, "route", session_route_to_str(s->route));
	sessionlog_addr(&l, "peer", &s->client);
	sessionlog_addr(&l, "dialled", &s->dialled);
	if (session_upstream_text(s, upstream, sizeof(upstream))[0])
		log_kv_str(&l, "upstream", upstream);
	if (proc->known) {
		log_kv_u64(&l, "pid", proc->tgid);
		log_kv_u64(&l, "uid", proc->uid);
		log_kv_u64(&l, "gid", proc->gid);
		log_kv_str(&l, "comm", proc->comm);
		log_kv_u64(&l, "cgroup_id", proc->cgroup_id);
	}
	log_kv_str(&l, "user", s->user);
	log_kv_str(&l, "database", s->database);
	log_kv_str(&l, "application_name", s->application_name);
	log_kv_str(&l, "protocol", s->protocol == PROTO_VERSION_3_2 ? "3.2" : "3.0");
	if (s->replication)
		log_kv_u64(&l, "replication", 1);
	/* The client leg's TLS is settled before the StartupMessage; the server leg's is not
	 * yet (session_end has it). */
	if (tls->version) {
		log_kv_str(&l, "tls_version", tls->version);
		log_kv_str(&l, "tls_cipher", tls->cipher);
		if (tls->peer_identity)
			log_kv_str(&l, "tls_identity", tls->peer_identity);
	}
	log_line_end(&l);
}

static void sessionlog_end(struct stage_ctx *ctx)
{
	const struct session *s = ctx->session;
	const struct session_tls *tls = session_client_tls(s), *up_tls = session_server_tls(s);
	struct log_line l;

	log_trail_begin(&l, "session_end", sessionlog_failed(s->end_reason));
	log_kv_str(&l, "session", s->id_hex);
	sessionlog_addr(&l, "peer", &s->client);
	log_kv_str(&l, "user", s->user);
	log_kv_str(&l, "database", s->database);
	log_kv_str(&l, "application_name", s->application_name);
	if (s->backend_pid)
		log_kv_u64(&l, "backend_pid", s->backend_pid);
	log_kv_u64(&l, "authenticated", s->auth.ok);
	if (s->auth.method != SESSION_AUTH_PENDING) {
		/* How the login went (or was tried): the method, and who checked it. */
		log_kv_str(&l, "auth_method", session_auth_method_to_str(s->auth.method));
		log_kv_str(&l, "auth_by", s->auth.at_relay ? "pgwarden" : "server");
	}
	log_kv_u64(&l, "statements", s->statements);
	log_kv_u64(&l, "bytes_from_client", s->bytes_from_client);
	log_kv_u64(&l, "bytes_from_server", s->bytes_from_server);
	if (tls->version)
		log_kv_str(&l, "tls_version", tls->version);
	if (up_tls->version) {
		log_kv_str(&l, "upstream_tls_version", up_tls->version);
		log_kv_str(&l, "upstream_tls_cipher", up_tls->cipher);
	}
	log_kv_u64(&l, "duration_ms", (clock_mono_ns() - s->start_mono_ns) / NSEC_PER_MSEC);
	log_kv_str(&l, "reason", s->end_reason ? s->end_reason : "unknown");
	log_line_end(&l);
}

const struct stage_ops sessionlog_stage = {
	.name = "sessionlog",
	.session_start = sessionlog_start,
	.session_end = sessionlog_end,
};
