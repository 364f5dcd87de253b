/*
 * admin_server: the admin socket's listener, clients and event fan-out, on one thread with
 * its own loop (see admin.h for the contract, docs/ADMIN.md for the protocol).
 *
 * Each client has a bounded input buffer (one request line at most) and an output buffer.
 * Requests are answered in order; while a client has more than ADMIN_OUT_HIGH bytes
 * unsent, its further requests wait in the input buffer (backpressure instead of growth).
 * Closing is always deferred to the end of the loop iteration.
 */
#include "admin/admin.h"

#include "base/clock.h"
#include "base/log.h"
#include "config/config.h"
#include "loop/loop.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define ADMIN_OUT_HIGH (1024 * 1024) /* stop answering a client with this much unsent */

struct admin_event {
	struct admin_event *next;
	size_t len;
	char text[]; /* one line, newline included */
};

struct admin_client {
	struct admin_client *next;
	struct admin_client **pprev;
	struct admin_server *srv;
	struct loop_watch watch;
	struct loop_timer idle;
	struct loop_deferred close_d;
	char *in;
	size_t in_len;
	char *out;
	size_t out_len; /* bytes in out */
	size_t out_off; /* bytes of out already written */
	size_t out_cap;
	bool subscribed;
	bool closing;     /* close once out is flushed; read nothing more */
	bool dead;        /* close now */
	bool can_write;
	bool eof;         /* the peer shut down its side */
	bool readable;    /* recv has not yet returned EAGAIN since the last edge */
	pid_t pid;
	uid_t uid;
	enum admin_access access;
};

struct admin_server {
	struct loop loop;
	pthread_t thread;
	bool thread_started;
	int stop_requested; /* atomic */
	const struct admin_ops *ops;
	void *ctx;
	char *path;
	dev_t dev;
	ino_t ino;
	struct loop_watch listen_watch;
	struct admin_client *clients;
	unsigned nclients;
	int nsubscribers; /* atomic: read by publishers on any thread */
	unsigned max_clients;
	bool take_over;  /* replace a live predecessor's socket (seamless restart) */
	bool read_group; /* members of read_gid may read */
	gid_t read_gid;
	size_t max_request;
	uint64_t idle_timeout_ns;
	uint64_t start_mono_ns;
	/* Event queue: publishers append under evmu, the admin thread takes the whole list. */
	pthread_mutex_t evmu;
	struct admin_event *ev_head;
	struct admin_event **ev_tail;
	unsigned ev_count;
	uint64_t ev_dropped;
};

/* ---- output ----------------------------------------------------------------------- */

static void client_close(struct admin_client *c);
static void client_arm_idle(struct admin_client *c);

static int out_reserve(struct admin_client *c, size_t n)
{
	size_t need, cap;
	char *p;

	/* Reclaim the written prefix first. */
	if (c->out_off) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	need = c->out_len + n;
	if (need <= c->out_cap)
		return 0;
	cap = c->out_cap ? c->out_cap : 4096;
	while (cap < need)
		cap *= 2;
	p = realloc(c->out, cap);
	if (!p)
		return -ENOMEM;
	c->out = p;
	c->out_cap = cap;
	return 0;
}

static void client_flush(struct admin_client *c)
{
	while (c->out_off < c->out_len && c->can_write) {
		ssize_t n = send(c->watch.fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			c->out_off += (size_t)n;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->can_write = false;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else {
			c->dead = true;
			break;
		}
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		if (c->closing)
			c->dead = true;
	}
	if (c->dead)
		client_close(c);
}

/* Queue text for c (no flush). Bounded: a client that lets its replies or events pile up
 * past the limit is dropped. */
static void client_queue(struct admin_client *c, const char *text, size_t n, size_t limit)
{
	if (c->dead)
		return;
	if (c->out_len - c->out_off + n > limit) {
		log_warn("admin_client_dropped", "pid %d: %zu bytes unsent (limit %zu)", (int)c->pid,
			 c->out_len - c->out_off, limit);
		c->dead = true;
		client_close(c);
		return;
	}
	if (out_reserve(c, n) != 0) {
		c->dead = true;
		client_close(c);
		return;
	}
	memcpy(c->out + c->out_len, text, n);
	c->out_len += n;
}

static void client_send_error(struct admin_client *c, const char *code, const char *msg)
{
	json_t *e = admin_error(code, msg, NULL);
	char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;

	json_decref(e);
	if (!text) {
		c->dead = true;
		return;
	}
	client_queue(c, text, strlen(text), ADMIN_MAX_REPLY);
	client_queue(c, "\n", 1, ADMIN_MAX_REPLY);
	free(text);
}

/* ---- server-side additions to replies -------------------------------------------- */

static void set_subscribed(struct admin_client *c, bool on)
{
	if (c->subscribed == on)
		return;
	c->subscribed = on;
	__atomic_add_fetch(&c->srv->nsubscribers, on ? 1 : -1, __ATOMIC_RELAXED);
}

/* The status reply, with what only the server knows merged into "status". */
static json_t *status_reply(struct admin_server *srv, const struct admin_request *req,
			    enum admin_access access)
{
	json_t *r = admin_execute(srv->ops, srv->ctx, req, access);
	json_t *st = r ? json_object_get(r, "status") : NULL;

	if (st) {
		json_object_set_new(st, "pid", json_integer(getpid()));
		json_object_set_new(st, "uptime_seconds",
				    json_real((double)(clock_mono_ns() - srv->start_mono_ns) / 1e9));
		json_object_set_new(st, "admin_clients", json_integer(srv->nclients));
		json_object_set_new(st, "subscribers",
				    json_integer(__atomic_load_n(&srv->nsubscribers,
								 __ATOMIC_RELAXED)));
		json_object_set_new(st, "admin_socket", json_string(srv->path));
	}
	return r;
}

static void client_handle_line(struct admin_client *c, const char *line, size_t len)
{
	struct admin_server *srv = c->srv;
	struct admin_request req;
	json_t *reply;
	char *text;

	if (admin_request_parse(line, len, &req, &reply) == 0) {
		if (req.cmd == ADMIN_CMD_STATUS)
			reply = status_reply(srv, &req, c->access);
		else
			reply = admin_execute(srv->ops, srv->ctx, &req, c->access);
		if (reply && !admin_cmd_read_only(req.cmd) && c->access != ADMIN_ACCESS_FULL) {
			struct log_line l;

			log_trail_begin(&l, "admin_refused", true);
			log_kv_str(&l, "command", admin_cmd_to_str(req.cmd));
			log_kv_u64(&l, "peer_pid", (uint64_t)c->pid);
			log_kv_u64(&l, "peer_uid", (uint64_t)c->uid);
			log_kv_str(&l, "reason", "read-only admin group");
			log_line_end(&l);
		}
		if (reply && json_is_true(json_object_get(reply, "ok"))) {
			if (req.cmd == ADMIN_CMD_SUBSCRIBE || req.cmd == ADMIN_CMD_UNSUBSCRIBE) {
				set_subscribed(c, req.cmd == ADMIN_CMD_SUBSCRIBE);
				client_arm_idle(c); /* subscribers are never idle */
			}
			if (!admin_cmd_read_only(req.cmd)) {
				struct log_line l;
				char event[32];

				snprintf(event, sizeof(event), "admin_%s", admin_cmd_to_str(req.cmd));
				log_trail_begin(&l, event, false);
				if (req.cmd == ADMIN_CMD_KILL) {
					log_kv_str(&l, "session", req.session);
					log_kv_str(&l, "mode", admin_kill_mode_to_str(req.kill_mode));
				}
				if (req.cmd == ADMIN_CMD_UNLOCK)
					log_kv_str(&l, "name", req.name);
				if (req.cmd == ADMIN_CMD_EXPLAIN) {
					log_kv_str(&l, "user", req.name);
					log_kv_str(&l, "database", req.database);
				}
				log_kv_u64(&l, "peer_pid", (uint64_t)c->pid);
				log_kv_u64(&l, "peer_uid", (uint64_t)c->uid);
				log_line_end(&l);
				if (req.cmd == ADMIN_CMD_KILL)
					admin_server_publish(srv, "session_kill",
							     json_pack("{s:s, s:s}", "session",
								       req.session, "mode",
								       admin_kill_mode_to_str(
									       req.kill_mode)));
				else if (req.cmd != ADMIN_CMD_EXPLAIN) /* changes nothing */
					admin_server_publish(srv, admin_cmd_to_str(req.cmd), NULL);
			}
		}
		admin_request_release(&req);
	}
	text = reply ? json_dumps(reply, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(reply);
	if (!text) {
		client_send_error(c, "internal", "out of memory");
		return;
	}
	client_queue(c, text, strlen(text), ADMIN_MAX_REPLY);
	client_queue(c, "\n", 1, ADMIN_MAX_REPLY);
	free(text);
}

/* Answer every complete line in the input buffer, while output stays under the mark. */
static void client_process(struct admin_client *c)
{
	size_t start = 0;

	while (!c->dead && !c->closing && c->out_len - c->out_off < ADMIN_OUT_HIGH) {
		char *nl = memchr(c->in + start, '\n', c->in_len - start);

		if (!nl)
			break;
		client_handle_line(c, c->in + start, (size_t)(nl - (c->in + start)));
		start = (size_t)(nl - c->in) + 1;
	}
	if (start) {
		memmove(c->in, c->in + start, c->in_len - start);
		c->in_len -= start;
	}
	if (!c->dead && !c->closing && c->in_len >= c->srv->max_request &&
	    !memchr(c->in, '\n', c->in_len)) {
		char msg[128];

		snprintf(msg, sizeof(msg), "request longer than %zu bytes", c->srv->max_request);
		client_send_error(c, "too_large", msg);
		c->closing = true; /* the stream cannot be resynchronised */
	}
}

/* One recv into the input buffer. false when nothing more can be read now. */
static bool client_read_once(struct admin_client *c)
{
	size_t room = c->srv->max_request - c->in_len;
	ssize_t n;

	if (room == 0 || c->closing || c->eof || c->dead || !c->readable)
		return false;
	for (;;) {
		n = recv(c->watch.fd, c->in + c->in_len, room, MSG_DONTWAIT);
		if (n > 0) {
			c->in_len += (size_t)n;
			return true;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->readable = false;
			return false;
		}
		/* EOF or error: answer what is complete, then go. */
		c->readable = false;
		c->eof = true;
		return false;
	}
}

static void client_arm_idle(struct admin_client *c)
{
	if (c->subscribed) {
		loop_timer_cancel(&c->srv->loop, &c->idle);
		return;
	}
	if (loop_timer_arm(&c->srv->loop, &c->idle, c->srv->loop.now + c->srv->idle_timeout_ns))
		c->dead = true;
}

/* Answer, write, read, until the client has nothing ready or we must wait for it. Edge-
 * triggered: whatever is left readable is remembered in c->readable. */
static void client_pump(struct admin_client *c)
{
	while (!c->dead) {
		client_process(c);
		client_flush(c);
		if (c->dead || c->out_len - c->out_off >= ADMIN_OUT_HIGH)
			break;
		if (!client_read_once(c))
			break;
	}
	/* After EOF, lines already received still get their answers before the close. */
	if (!c->dead && c->eof && !memchr(c->in, '\n', c->in_len))
		c->closing = true;
	if (!c->dead && c->closing && c->out_off == c->out_len)
		c->dead = true;
	if (c->dead)
		client_close(c);
}

static void client_io(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	struct admin_client *c = (struct admin_client *)((char *)w -
						 offsetof(struct admin_client, watch));

	if (c->dead)
		return;
	if (events & EPOLLOUT)
		c->can_write = true;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		c->readable = true;
		client_arm_idle(c);
	}
	client_pump(c);
}

static void client_idle(struct loop *loop, struct loop_timer *t)
{
	struct admin_client *c = (struct admin_client *)((char *)t -
						 offsetof(struct admin_client, idle));

	c->dead = true;
	client_close(c);
}

static void client_free(struct loop *loop, struct loop_deferred *d)
{
	struct admin_client *c = (struct admin_client *)((char *)d -
						 offsetof(struct admin_client, close_d));

	free(c->in);
	free(c->out);
	free(c);
}

/* Unlink from the server now (no more events, not counted), free at iteration end. */
static void client_close(struct admin_client *c)
{
	struct admin_server *srv = c->srv;

	if (!c->pprev)
		return; /* already closed */
	set_subscribed(c, false);
	loop_timer_cancel(&srv->loop, &c->idle);
	loop_del(&srv->loop, &c->watch);
	close(c->watch.fd);
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	c->pprev = NULL;
	srv->nclients--;
	c->dead = true;
	loop_defer(&srv->loop, &c->close_d);
}

/* ---- accept ----------------------------------------------------------------------- */

static void refuse(int fd, const char *code, const char *msg)
{
	json_t *e = admin_error(code, msg, NULL);
	char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;

	if (text) {
		size_t n = strlen(text);

		/* Best effort on a fresh socket: its send buffer is empty. */
		if (send(fd, text, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n)
			(void)!send(fd, "\n", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	free(text);
	json_decref(e);
	close(fd);
}

/* Is gid the peer's primary group or one of its supplementary groups, as the kernel
 * recorded them at connect() (SO_PEERGROUPS)? */
static bool peer_in_group(int fd, const struct ucred *cred, gid_t gid)
{
	gid_t groups[256];
	socklen_t len = sizeof(groups);

	if (cred->gid == gid)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false; /* ERANGE: more than 256 groups; refused rather than guessed */
	for (size_t i = 0; i < len / sizeof(groups[0]); i++)
		if (groups[i] == gid)
			return true;
	return false;
}

static void accept_one(struct admin_server *srv, int fd)
{
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	enum admin_access access = ADMIN_ACCESS_FULL;
	struct admin_client *c;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
		close(fd);
		return;
	}
	if (cred.uid != 0 && cred.uid != geteuid()) {
		if (!srv->read_group || !peer_in_group(fd, &cred, srv->read_gid)) {
			struct log_line l;

			log_trail_begin(&l, "admin_refused", true);
			log_kv_u64(&l, "peer_pid", (uint64_t)cred.pid);
			log_kv_u64(&l, "peer_uid", (uint64_t)cred.uid);
			log_kv_str(&l, "reason", srv->read_group ? "not root, pgwardend's user or "
								   "in admin_read_group"
								 : "not root or pgwardend's user");
			log_line_end(&l);
			refuse(fd, "forbidden",
			       srv->read_group ? "only root, the daemon's user and members of "
						 "admin_read_group may use the admin socket"
					       : "only root or the daemon's user may use the admin "
						 "socket");
			return;
		}
		access = ADMIN_ACCESS_READ;
	}
	if (srv->nclients >= srv->max_clients) {
		refuse(fd, "too_many_clients", "too many admin clients; try again later");
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || !(c->in = malloc(srv->max_request))) {
		free(c);
		close(fd);
		return;
	}
	c->srv = srv;
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->access = access;
	c->can_write = true;
	c->watch.cb = client_io;
	c->idle.cb = client_idle;
	c->close_d.cb = client_free;
	if (loop_add(&srv->loop, &c->watch, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP) != 0) {
		free(c->in);
		free(c);
		close(fd);
		return;
	}
	c->next = srv->clients;
	if (c->next)
		c->next->pprev = &c->next;
	c->pprev = &srv->clients;
	srv->clients = c;
	srv->nclients++;
	client_arm_idle(c);
}

static void listen_io(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	struct admin_server *srv = loop->owner;

	for (;;) {
		int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			accept_one(srv, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			log_warn("admin_accept", "accept: %s", strerror(errno));
		return;
	}
}

/* ---- events ----------------------------------------------------------------------- */

bool admin_server_has_subscribers(const struct admin_server *srv)
{
	return srv && __atomic_load_n(&srv->nsubscribers, __ATOMIC_RELAXED) > 0;
}

static json_t *now_json(void)
{
	char buf[64];
	uint64_t ns = clock_wall_ns();
	time_t t = (time_t)(ns / NSEC_PER_SEC);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned)(ns % NSEC_PER_SEC / 1000));
	return json_string(buf);
}

static struct admin_event *event_new(json_t *ev)
{
	char *text = json_dumps(ev, JSON_COMPACT | JSON_ENSURE_ASCII);
	struct admin_event *e;
	size_t n;

	if (!text)
		return NULL;
	n = strlen(text);
	e = malloc(sizeof(*e) + n + 1);
	if (e) {
		memcpy(e->text, text, n);
		e->text[n] = '\n';
		e->len = n + 1;
		e->next = NULL;
	}
	free(text);
	return e;
}

void admin_server_publish(struct admin_server *srv, const char *event, json_t *fields)
{
	struct admin_event *e;
	json_t *ev;

	if (!admin_server_has_subscribers(srv)) {
		json_decref(fields);
		return;
	}
	ev = json_pack("{s:s, s:o}", "event", event, "time", now_json());
	if (ev && json_is_object(fields))
		json_object_update(ev, fields);
	json_decref(fields);
	e = ev ? event_new(ev) : NULL;
	json_decref(ev);
	pthread_mutex_lock(&srv->evmu);
	if (!e || srv->ev_count >= ADMIN_EVENT_QUEUE_MAX) {
		srv->ev_dropped++;
		free(e);
		e = NULL;
	} else {
		*srv->ev_tail = e;
		srv->ev_tail = &e->next;
		srv->ev_count++;
	}
	pthread_mutex_unlock(&srv->evmu);
	if (e)
		loop_wake(&srv->loop);
}

static void fan_out(struct admin_server *srv, const char *text, size_t len)
{
	struct admin_client *c, *next;

	for (c = srv->clients; c; c = next) {
		next = c->next; /* client_queue may close c */
		if (c->subscribed)
			client_queue(c, text, len, ADMIN_MAX_BACKLOG);
	}
}

static void admin_on_wake(struct loop *loop)
{
	struct admin_server *srv = loop->owner;
	struct admin_event *list, *e;
	struct admin_client *c, *next;
	uint64_t dropped;

	if (__atomic_load_n(&srv->stop_requested, __ATOMIC_ACQUIRE)) {
		loop_stop(loop);
		return;
	}
	pthread_mutex_lock(&srv->evmu);
	list = srv->ev_head;
	srv->ev_head = NULL;
	srv->ev_tail = &srv->ev_head;
	srv->ev_count = 0;
	dropped = srv->ev_dropped;
	srv->ev_dropped = 0;
	pthread_mutex_unlock(&srv->evmu);

	if (dropped) {
		char line[96];
		int n = snprintf(line, sizeof(line), "{\"event\":\"overflow\",\"dropped\":%llu}\n",
				 (unsigned long long)dropped);

		fan_out(srv, line, (size_t)n);
	}
	while ((e = list)) {
		list = e->next;
		fan_out(srv, e->text, e->len);
		free(e);
	}
	for (c = srv->clients; c; c = next) {
		next = c->next;
		if (c->subscribed && c->out_len > c->out_off)
			client_flush(c);
	}
}

/* ---- socket setup ----------------------------------------------------------------- */

/* mkdir -p for the socket's directory: components it creates are 0700, the last one 0750
 * and group read_gid when there is a read group (its members must reach the socket). */
static int make_parent(const char *path, bool read_group, gid_t read_gid, char *err,
		       size_t errlen)
{
	char *copy = strdup(path), *dir;
	struct stat st;
	int ret = 0;

	if (!copy)
		return -ENOMEM;
	dir = dirname(copy);
	if (stat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode)) {
			snprintf(err, errlen, "admin socket: %s is not a directory", dir);
			ret = -ENOTDIR;
		} else if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
			/* Anyone could swap our socket for theirs between start and use. */
			snprintf(err, errlen, "admin socket: %s is world-writable", dir);
			ret = -EPERM;
		} else if (read_group && !(st.st_mode & S_IXOTH) &&
			   !(st.st_gid == read_gid && (st.st_mode & S_IXGRP))) {
			log_warn("admin_listen", "admin_read_group: its members cannot reach the "
				 "socket: %s is not searchable by them (mode %03o)",
				 dir, (unsigned)(st.st_mode & 0777));
		}
		goto out;
	}
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			ret = -errno;
			snprintf(err, errlen, "admin socket: mkdir %s: %s", dir, strerror(errno));
			goto out;
		}
		*p = '/';
	}
	if (mkdir(dir, read_group ? 0750 : 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		snprintf(err, errlen, "admin socket: mkdir %s: %s", dir, strerror(errno));
	} else if (read_group && chown(dir, (uid_t)-1, read_gid) < 0) {
		ret = -errno;
		snprintf(err, errlen, "admin socket: chgrp %s: %s", dir, strerror(errno));
	}
out:
	free(copy);
	return ret;
}

static int sun_fill(struct sockaddr_un *sun, const char *path)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	strcpy(sun->sun_path, path);
	return 0;
}

/* An existing path: a socket nobody answers on is stale and removed. */
static int clear_stale(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "admin socket: %s exists and is not a socket", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sun_fill(&sun, path) != 0) {
		close(fd);
		return -ENAMETOOLONG;
	}
	r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	if (r == 0) {
		snprintf(err, errlen, "admin socket: %s is in use by a running pgwardend", path);
		return -EADDRINUSE;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "admin socket: remove stale %s: %s", path, strerror(errno));
		return -errno;
	}
	log_info("admin_stale_socket", "removed stale admin socket %s", path);
	return 0;
}

static int admin_listen(struct admin_server *srv, mode_t mode, gid_t gid, char *err,
			size_t errlen)
{
	struct sockaddr_un sun;
	char tmp[sizeof(sun.sun_path)];
	struct stat st;
	int fd, e;

	if (sun_fill(&sun, srv->path) != 0 ||
	    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", srv->path, (int)getpid()) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "admin socket: path too long (max %zu bytes): %s",
			 sizeof(sun.sun_path) - 16, srv->path);
		return -ENAMETOOLONG;
	}
	e = make_parent(srv->path, srv->read_group, srv->read_gid, err, errlen);
	if (e)
		return e;
	/* A successor (seamless restart) renames its socket over its predecessor's, which
	 * still answers: that one is not stale, and it is meant to be replaced. */
	e = srv->take_over ? 0 : clear_stale(srv->path, err, errlen);
	if (e) {
		if (!err[0])
			snprintf(err, errlen, "admin socket %s: %s", srv->path, strerror(-e));
		return e;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto err_errno;
	/* Bind under a temporary name, tighten it, then rename into place: the final path
	 * never exists with the umask's looser mode. */
	unlink(tmp);
	strcpy(sun.sun_path, tmp);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		goto err_close;
	if (chmod(tmp, mode) < 0 || (gid != (gid_t)-1 && chown(tmp, (uid_t)-1, gid) < 0))
		goto err_unlink;
	if (listen(fd, 16) < 0 || rename(tmp, srv->path) < 0)
		goto err_unlink;
	if (stat(srv->path, &st) == 0) {
		srv->dev = st.st_dev;
		srv->ino = st.st_ino;
	}
	srv->listen_watch.cb = listen_io;
	e = loop_add(&srv->loop, &srv->listen_watch, fd, EPOLLIN);
	if (e) {
		errno = -e;
		unlink(srv->path);
		goto err_close;
	}
	return 0;

err_unlink:
	e = errno;
	unlink(tmp);
	errno = e;
err_close:
	e = errno;
	close(fd);
	errno = e;
err_errno:
	snprintf(err, errlen, "admin socket %s: %s", srv->path, strerror(errno));
	return -errno;
}

static void *admin_thread(void *arg)
{
	struct admin_server *srv = arg;
	int err;

	pthread_setname_np(pthread_self(), "pgw-admin");
	err = loop_run(&srv->loop);
	if (err)
		log_error("admin_loop", "admin loop stopped: %s", strerror(-err));
	return NULL;
}

int admin_server_start(const struct admin_server_config *cfg, const struct admin_ops *ops,
		       void *ctx, struct admin_server **out, char *err, size_t errlen)
{
	struct admin_server *srv;
	sigset_t all, old;
	int e;

	err[0] = '\0';
	*out = NULL;
	srv = calloc(1, sizeof(*srv));
	if (!srv) {
		snprintf(err, errlen, "admin socket: out of memory");
		return -ENOMEM;
	}
	srv->ops = ops;
	srv->ctx = ctx;
	srv->path = strdup(cfg && cfg->path ? cfg->path : CONFIG_DEFAULT_ADMIN_SOCKET);
	srv->max_clients = cfg && cfg->max_clients ? cfg->max_clients : ADMIN_MAX_CLIENTS;
	srv->read_group = cfg && cfg->read_group;
	srv->take_over = cfg && cfg->take_over;
	srv->read_gid = srv->read_group ? cfg->read_gid : (gid_t)-1;
	srv->max_request = cfg && cfg->max_request ? cfg->max_request : ADMIN_MAX_REQUEST;
	srv->idle_timeout_ns = (cfg && cfg->idle_timeout_ms ? cfg->idle_timeout_ms
							    : ADMIN_IDLE_TIMEOUT_MS) *
			       NSEC_PER_MSEC;
	srv->start_mono_ns = clock_mono_ns();
	srv->ev_tail = &srv->ev_head;
	srv->listen_watch.fd = -1;
	pthread_mutex_init(&srv->evmu, NULL);
	if (!srv->path) {
		e = -ENOMEM;
		snprintf(err, errlen, "admin socket: out of memory");
		goto err_free;
	}
	e = loop_init(&srv->loop, admin_on_wake, srv);
	if (e) {
		snprintf(err, errlen, "admin socket: event loop: %s", strerror(-e));
		goto err_free;
	}
	if (srv->read_group)
		e = admin_listen(srv, cfg->mode ? cfg->mode : 0660, srv->read_gid, err, errlen);
	else
		e = admin_listen(srv, cfg && cfg->mode ? cfg->mode : 0600,
				 cfg && cfg->mode ? cfg->gid : (gid_t)-1, err, errlen);
	if (e)
		goto err_loop;
	/* Signals belong to the main thread: the admin thread starts with all blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = -pthread_create(&srv->thread, NULL, admin_thread, srv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e) {
		snprintf(err, errlen, "admin socket: thread: %s", strerror(-e));
		goto err_unlink;
	}
	srv->thread_started = true;
	log_info("admin_listen", "admin socket %s", srv->path);
	*out = srv;
	return 0;

err_unlink:
	loop_del(&srv->loop, &srv->listen_watch);
	close(srv->listen_watch.fd);
	unlink(srv->path);
err_loop:
	loop_destroy(&srv->loop);
err_free:
	pthread_mutex_destroy(&srv->evmu);
	free(srv->path);
	free(srv);
	return e;
}

const char *admin_server_path(const struct admin_server *srv)
{
	return srv->path;
}

void admin_server_stop(struct admin_server *srv)
{
	struct admin_event *e;
	struct stat st;

	if (!srv)
		return;
	if (srv->thread_started) {
		__atomic_store_n(&srv->stop_requested, 1, __ATOMIC_RELEASE);
		loop_wake(&srv->loop);
		pthread_join(srv->thread, NULL);
	}
	/* The thread is gone: tear down on this one. */
	while (srv->clients)
		client_close(srv->clients);
	while (srv->loop.deferred) {
		struct loop_deferred *d = srv->loop.deferred;

		srv->loop.deferred = d->next;
		d->queued = false;
		d->cb(&srv->loop, d);
	}
	loop_del(&srv->loop, &srv->listen_watch);
	close(srv->listen_watch.fd);
	/* Remove the path only if it is still the socket we created. */
	if (stat(srv->path, &st) == 0 && st.st_dev == srv->dev && st.st_ino == srv->ino)
		unlink(srv->path);
	loop_destroy(&srv->loop);
	while ((e = srv->ev_head)) {
		srv->ev_head = e->next;
		free(e);
	}
	pthread_mutex_destroy(&srv->evmu);
	free(srv->path);
	free(srv);
}
