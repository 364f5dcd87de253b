/* session_kill: an operator's kill, server side first (see session_kill.h). */
#include "relay/session_kill.h"

#include "base/log.h"
#include "relay/backend_cancel.h"
#include "relay/conn.h"
#include "relay/relay.h"
#include "relay/worker.h"
#include "steer/steer_origin.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <string.h>

void session_kill(struct conn *c, enum admin_kill_mode mode)
{
	struct worker *w = c->worker;
	struct relay *r = w->relay;
	struct cancel_target t;
	int err;

	/* No key yet (still logging in): there is no statement to stop. */
	if (c->cancel_handle) {
		cancel_map_target(r->cancels, c->cancel_handle, &t);
		err = backend_cancel_start(&w->loop, &t, steer_origin_relay_mark(w->steer),
					   c->config->connect_timeout_ms, c->session.id_hex);
		OPENSSL_cleanse(t.server_key, sizeof(t.server_key));
		if (err)
			log_warn("backend_cancel_failed", "session=%s backend_pid=%u cannot start the "
				 "cancel: %s", c->session.id_hex, c->session.backend_pid,
				 strerror(-err));
	}
	if (mode == ADMIN_KILL_CANCEL)
		return;
	if (w->metrics)
		metrics_inc(w->metrics, r->mstd.sessions_killed, 0);
	conn_terminate(c, "57P01", "terminating connection due to administrator command",
		       "admin_kill");
}
