/*
 * worker: one thread, one epoll loop, one SO_REUSEPORT listener per listen address, and the
 * connections it accepted. A connection never changes worker, so the data path takes no
 * locks. Other threads talk to a worker only through worker_post() (a mailbox drained on
 * the worker's own loop).
 */
#ifndef PGWARDEN_WORKER_H
#define PGWARDEN_WORKER_H

#include "admin/admin.h" /* enum admin_kill_mode */
#include "base/buf.h"
#include "config/config.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "relay/track.h"
#include "relay/server_pool.h"
#include "session/session.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct relay;
struct conn;

struct worker_listener {
	struct loop_watch watch;
	struct worker *worker;
	struct addr addr;  /* what it is bound to (not for unix_socket) */
	bool transparent;  /* IP_TRANSPARENT, for nftables TPROXY */
	bool unix_socket;  /* the relay's Unix listener: every worker watches the one socket */
	int fd;            /* owned, except the Unix listener's (struct relay's) */
};

enum worker_cmd {
	WORKER_CMD_DRAIN = 1,  /* stop accepting; close sessions after timeouts.drain */
	WORKER_CMD_DRAIN_NOW,  /* close the remaining sessions now (a second SIGTERM) */
	WORKER_CMD_STOP,       /* end the loop now (start-up failure) */
	WORKER_CMD_KILL,       /* end the sessions in kill_ids (admin socket) */
	WORKER_CMD_WAKE,       /* resume the connections in wakes (stage_wake) */
};

/*
 * A connection's place in its worker, by which another thread names it (stage_wake) without
 * holding a pointer that may have been freed: a wake carries (slot, generation), and a slot
 * whose generation moved on belongs to somebody else.
 */
struct worker_slot {
	struct conn *conn; /* NULL: free */
	uint32_t gen;
	bool wake_queued;  /* in wakes already: one pending wake per connection is enough */
};

#define WORKER_KILL_MAX 64

struct worker {
	unsigned id;
	pthread_t thread;
	int cpu; /* the CPU its thread is bound to, or -1 */
	struct relay *relay;
	struct loop loop;
	/* listen, then tproxy_listen, then the Unix listener */
	struct worker_listener listeners[2 * CONFIG_MAX_LISTEN + 1];
	/* Where steered and TPROXY'd connections were going, and who opened them. The
	 * worker's own handle (not thread-safe), or the process's shared fail-open one. */
	struct steer_origin *steer;
	bool steer_owned;
	bool told_relay_source; /* logged once that local clients reach the server as pgwarden */
	unsigned nlisteners;
	struct buf_pool pool;
	struct buf *scratch; /* shared read buffer: bytes that leave at once never get copied */
	struct track_rings track_rings; /* request rings no session holds (relay/track.h) */
	struct server_pool servers; /* server connections kept between sessions */
	struct conn *conns;  /* intrusive list of live connections */
	uint32_t nconns;
	pthread_mutex_t lock; /* guards conns list membership for readers on other threads */
	struct loop_timer accept_retry; /* re-enable accepting after EMFILE/ENFILE */
	struct loop_timer drain_timer;
	bool draining;
	uint32_t pending_cmds; /* atomic bit set of enum worker_cmd */
	bool finished;         /* atomic: the loop has returned */
	struct metrics_shard *metrics; /* this worker's counters */
	/* Kill mailbox, under lock: ids posted by the admin thread. */
	char kill_ids[WORKER_KILL_MAX][SESSION_ID_HEXLEN + 1];
	uint8_t kill_modes[WORKER_KILL_MAX]; /* enum admin_kill_mode of each */
	unsigned nkills;
	/* Connection slots and the wake mailbox, under lock (written by the worker thread;
	 * wakes posted from any thread). wakes holds at most one entry per slot, so it never
	 * needs to grow when a wake is posted: it grows with the slots. */
	struct worker_slot *slots;
	uint32_t nslots;
	uint32_t *free_slots; /* a stack of free slot numbers */
	uint32_t nfree;
	uint32_t *wakes, *wakes_spare;
	uint32_t nwakes;
};

struct stage_waker;

/* Worker thread: a slot for c; fills the waker that names it. 0 or -ENOMEM. */
int worker_slot_claim(struct worker *w, struct conn *c, struct stage_waker *waker)
	__attribute__((warn_unused_result));
/* Worker thread: c is gone; wakes that name its slot find nobody. */
void worker_slot_release(struct worker *w, uint32_t slot);
/* Worker thread: the connection a wake names, or NULL. */
struct conn *worker_slot_conn(const struct worker *w, uint32_t slot, uint32_t gen);
/* Run the wakes posted so far (the worker's wake handler; tests call it directly). */
void worker_run_wakes(struct worker *w);

/* From any thread: ask w to kill session id (mode: session_kill.h) if it owns it. 0,
 * -ENOENT (not on this worker), -ENOSPC (mailbox full). */
int worker_post_kill(struct worker *w, const char *id, enum admin_kill_mode mode);

/*
 * Create a worker with listeners bound (SO_REUSEPORT) on every listen address of cfg.
 * 0 or -errno with a one-line message logged.
 */
int worker_create(struct worker **out, unsigned id, struct relay *relay,
		  const struct config *cfg) __attribute__((warn_unused_result));
/* Start the worker's thread, bound to cpu when cpu >= 0. 0 or -errno. */
int worker_start(struct worker *w, int cpu) __attribute__((warn_unused_result));
void worker_post(struct worker *w, enum worker_cmd cmd);

/* Connection list membership (worker thread only; takes w->lock for outside readers). */
void worker_conn_link(struct worker *w, struct conn *c);
void worker_conn_unlink(struct worker *w, struct conn *c);
void worker_join(struct worker *w);
/* Has the worker's loop ended? Any thread. */
bool worker_finished(const struct worker *w);
void worker_destroy(struct worker *w);

#endif
