/* handover: listening sockets from a running pgwardend to its successor (see handover.h). */
#include "relay/handover.h"

#include "base/clock.h"
#include "base/log.h"
#include "relay/backend_cancel.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- the wire ------------------------------------------------------------------------ */

/* Both ends may be different builds (that is the point of an upgrade): a fixed layout, a
 * version, and a successor that refuses a version it does not know. */
#define HANDOVER_MAGIC 0x48574750u /* "PGWH" */
#define HANDOVER_VERSION 1
#define HANDOVER_BATCH 64 /* sockets per message; SCM_MAX_FD is 253 */
#define HANDOVER_RECEIVE_TIMEOUT_MS 10000

enum msg_type {
	MSG_SOCKETS = 1, /* predecessor → successor: wire_socket[count] + count fds */
	MSG_END,         /* predecessor → successor: that was all */
	MSG_READY,       /* successor → predecessor: up and accepting */
	MSG_CANCEL,      /* successor → predecessor: wire_cancel */
	MSG_KILL,        /* successor → predecessor: wire_kill */
};

struct msg_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t count;
	int32_t pid; /* the sender */
};

struct wire_socket {
	uint8_t kind;
	uint8_t pad;
	uint16_t index;
	uint32_t addr_len;
	uint8_t addr[128];
	char path[108];
	uint8_t pad2[4];
};

struct wire_cancel {
	uint32_t pid;
	uint32_t key_len;
	uint8_t key[PROTO_CANCEL_KEY_MAX];
};

struct wire_kill {
	char session[SESSION_ID_HEXLEN + 1];
	uint8_t mode;
	uint8_t pad[2];
};

_Static_assert(sizeof(struct msg_hdr) == 16, "handover header layout");
_Static_assert(sizeof(struct wire_socket) == 248, "handover socket layout");
_Static_assert(sizeof(((struct wire_socket *)0)->addr) >= sizeof(struct sockaddr_storage),
	       "an address fits");
_Static_assert(sizeof(((struct wire_socket *)0)->path) ==
		       sizeof(((struct sockaddr_un *)0)->sun_path),
	       "a Unix path fits");
_Static_assert(PROTO_CANCEL_KEY_MAX == 256, "handover cancel layout");
_Static_assert(sizeof(struct wire_kill) == 36, "handover kill layout");

/* ---- process-wide state -------------------------------------------------------------- */

struct received {
	struct wire_socket w;
	int fd; /* -1 once taken */
};

static struct {
	int pred_fd;     /* atomic; channel to our predecessor (we are its successor) */
	int succ_fd;     /* atomic; channel to our successor (we handed over) */
	bool pred_gone;  /* atomic: the predecessor closed its end */
	bool succ_gone;  /* atomic */
	pid_t pred_pid;
	pid_t succ_pid;
	struct received *socks;
	unsigned nsocks;
} ho = {.pred_fd = -1, .succ_fd = -1};

bool handover_is_successor(void)
{
	return __atomic_load_n(&ho.pred_fd, __ATOMIC_ACQUIRE) >= 0;
}

pid_t handover_predecessor_pid(void)
{
	return ho.pred_pid;
}

int handover_predecessor_fd(void)
{
	return __atomic_load_n(&ho.pred_gone, __ATOMIC_ACQUIRE) ? -1 : ho.pred_fd;
}

int handover_successor_fd(void)
{
	return __atomic_load_n(&ho.succ_gone, __ATOMIC_ACQUIRE) ? -1 : ho.succ_fd;
}

static void hdr_fill(struct msg_hdr *h, enum msg_type type, uint32_t count)
{
	memset(h, 0, sizeof(*h));
	h->magic = HANDOVER_MAGIC;
	h->version = HANDOVER_VERSION;
	h->type = (uint16_t)type;
	h->count = count;
	h->pid = (int32_t)getpid();
}

/* One message: header + payload, optionally with fds. 0 or -errno. */
static int msg_send(int fd, enum msg_type type, uint32_t count, const void *payload,
		    size_t len, const int *fds, unsigned nfds, int flags)
{
	struct msg_hdr h;
	struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)payload, len}};
	union {
		char buf[CMSG_SPACE(sizeof(int) * HANDOVER_BATCH)];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};

	hdr_fill(&h, type, count);
	if (nfds) {
		struct cmsghdr *cm;

		if (nfds > HANDOVER_BATCH)
			return -EINVAL;
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	for (;;) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | flags);

		if (n >= 0)
			return (size_t)n == sizeof(h) + len ? 0 : -EIO;
		if (errno != EINTR)
			return -errno;
	}
}

/* ---- the successor ------------------------------------------------------------------- */

static void received_free(void)
{
	for (unsigned i = 0; i < ho.nsocks; i++)
		if (ho.socks[i].fd >= 0)
			close(ho.socks[i].fd);
	free(ho.socks);
	ho.socks = NULL;
	ho.nsocks = 0;
}

static const char *kind_name(unsigned kind)
{
	switch (kind) {
	case HANDOVER_LISTEN:
		return "listen";
	case HANDOVER_TPROXY:
		return "tproxy_listen";
	case HANDOVER_UNIX:
		return "unix_listen";
	case HANDOVER_METRICS:
		return "metrics_listen";
	default:
		return "unknown";
	}
}

/* Is fd the listening socket w says it is? A hostile or confused sender gets nothing
 * adopted: the successor refuses to start instead. */
static bool socket_matches(int fd, const struct wire_socket *w)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss), ilen = sizeof(int);
	int type = 0, listening = 0, transparent = 0;
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ilen) < 0 || type != SOCK_STREAM ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) < 0 || !listening ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return false;
	if (w->kind == HANDOVER_UNIX) {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;
		size_t plen = strnlen(w->path, sizeof(w->path));

		return ss.ss_family == AF_UNIX && plen > 0 && plen < sizeof(w->path) &&
		       len > offsetof(struct sockaddr_un, sun_path) &&
		       strncmp(sun->sun_path, w->path, sizeof(sun->sun_path)) == 0;
	}
	if ((ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
	    w->addr_len > sizeof(w->addr) || w->addr_len < sizeof(sa_family_t) ||
	    !addr_equal((const struct sockaddr *)&ss, (const struct sockaddr *)w->addr))
		return false;
	if (w->kind == HANDOVER_TPROXY) {
		ilen = sizeof(transparent);
		if (getsockopt(fd, ss.ss_family == AF_INET6 ? SOL_IPV6 : SOL_IP,
			       ss.ss_family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT,
			       &transparent, &ilen) < 0 || !transparent)
			return false;
	}
	return true;
}

/* Receive one message into h/payload (at most cap bytes) and its fds; -errno on anything
 * malformed (received fds are closed then). Returns the payload length. */
static ssize_t msg_recv(int fd, struct msg_hdr *h, void *payload, size_t cap, int *fds,
			unsigned *nfds, int flags)
{
	struct iovec iov[2] = {{h, sizeof(*h)}, {payload, cap}};
	union {
		char buf[CMSG_SPACE(sizeof(int) * HANDOVER_BATCH)];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf)};
	ssize_t n;

	*nfds = 0;
	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			unsigned k = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			for (unsigned i = 0; i < k; i++) {
				int got;

				memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				if (*nfds < HANDOVER_BATCH)
					fds[(*nfds)++] = got;
				else
					close(got);
			}
		}
	}
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || (size_t)n < sizeof(*h) ||
	    h->magic != HANDOVER_MAGIC || h->version != HANDOVER_VERSION) {
		for (unsigned i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
		return -EPROTO;
	}
	return n - (ssize_t)sizeof(*h);
}

/* The channel named by the environment, if it really is a private line from our parent. */
static int channel_from_env(const char *text, char *err, size_t errlen)
{
	struct ucred cred;
	socklen_t len = sizeof(cred), ilen = sizeof(int);
	int type = 0, domain = 0;
	char *end;
	long fd;

	errno = 0;
	fd = strtol(text, &end, 10);
	if (errno || end == text || *end || fd < 3 || fd > 65535 ||
	    fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0) {
		snprintf(err, errlen, "handover: %s=\"%.32s\" is not an open descriptor",
			 HANDOVER_ENV, text);
		return -EBADF;
	}
	if (getsockopt((int)fd, SOL_SOCKET, SO_DOMAIN, &domain, &ilen) < 0 || domain != AF_UNIX ||
	    getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &ilen) < 0 || type != SOCK_SEQPACKET ||
	    getsockopt((int)fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		snprintf(err, errlen, "handover: descriptor %ld is not a handover channel", fd);
		return -ENOTSOCK;
	}
	if (cred.pid != getppid() || cred.uid != getuid()) {
		snprintf(err, errlen, "handover: the channel's other end (pid %d, uid %u) is not "
			 "this process's parent running as the same user; refused",
			 (int)cred.pid, (unsigned)cred.uid);
		return -EPERM;
	}
	return (int)fd;
}

int handover_receive(char *err, size_t errlen)
{
	const char *text = getenv(HANDOVER_ENV);
	uint64_t deadline = clock_mono_ns() + HANDOVER_RECEIVE_TIMEOUT_MS * NSEC_PER_MSEC;
	struct wire_socket batch[HANDOVER_BATCH];
	int fd, rc;

	if (!text)
		return 0;
	fd = channel_from_env(text, err, errlen);
	unsetenv(HANDOVER_ENV); /* our own children are nobody's successors */
	if (fd < 0)
		return fd;
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int fds[HANDOVER_BATCH];
		unsigned nfds, count;
		struct msg_hdr h;
		uint64_t now = clock_mono_ns();
		ssize_t n;

		if (now >= deadline) {
			snprintf(err, errlen, "handover: the predecessor sent no sockets within %d s",
				 HANDOVER_RECEIVE_TIMEOUT_MS / 1000);
			rc = -ETIMEDOUT;
			goto err;
		}
		if (poll(&pfd, 1, (int)((deadline - now) / NSEC_PER_MSEC) + 1) <= 0)
			continue;
		n = msg_recv(fd, &h, batch, sizeof(batch), fds, &nfds, 0);
		if (n < 0) {
			snprintf(err, errlen, "handover: bad message from the predecessor: %s",
				 n == -EPROTO ? "wrong magic, version or size" : strerror((int)-n));
			rc = (int)n;
			goto err;
		}
		if (h.type == MSG_END && n == 0 && nfds == 0)
			break;
		count = h.count;
		if (h.type != MSG_SOCKETS || count == 0 || count > HANDOVER_BATCH ||
		    (size_t)n != count * sizeof(struct wire_socket) || nfds != count) {
			for (unsigned i = 0; i < nfds; i++)
				close(fds[i]);
			snprintf(err, errlen, "handover: malformed message (type %u, %u sockets, "
				 "%u descriptors)", h.type, count, nfds);
			rc = -EPROTO;
			goto err;
		}
		struct received *more = realloc(ho.socks, (ho.nsocks + count) * sizeof(*more));

		if (!more) {
			for (unsigned i = 0; i < nfds; i++)
				close(fds[i]);
			snprintf(err, errlen, "handover: out of memory");
			rc = -ENOMEM;
			goto err;
		}
		ho.socks = more;
		for (unsigned i = 0; i < count; i++) {
			struct received *r = &ho.socks[ho.nsocks++];

			r->w = batch[i];
			r->w.path[sizeof(r->w.path) - 1] = '\0';
			r->fd = fds[i];
			if (!socket_matches(r->fd, &r->w)) {
				for (unsigned k = i + 1; k < count; k++)
					close(fds[k]);
				snprintf(err, errlen, "handover: socket %u (%s, worker %u) is not the "
					 "listener its entry describes; refused", ho.nsocks - 1,
					 kind_name(r->w.kind), r->w.index);
				rc = -EPROTO;
				goto err;
			}
		}
		ho.pred_pid = h.pid;
	}
	__atomic_store_n(&ho.pred_fd, fd, __ATOMIC_RELEASE);
	log_info("handover", "took over %u listening sockets from pid %d", ho.nsocks,
		 (int)ho.pred_pid);
	return 0;

err:
	received_free();
	close(fd);
	return rc;
}

static bool wire_addr_is(const struct wire_socket *w, const struct addr *a)
{
	return addr_equal((const struct sockaddr *)w->addr, &a->ss.sa);
}

int handover_take_listener(const struct addr *a, bool transparent, unsigned index)
{
	uint8_t kind = transparent ? HANDOVER_TPROXY : HANDOVER_LISTEN;

	for (unsigned i = 0; i < ho.nsocks; i++) {
		struct received *r = &ho.socks[i];

		if (r->fd >= 0 && r->w.kind == kind && r->w.index == index && wire_addr_is(&r->w, a)) {
			int fd = r->fd;

			r->fd = -1;
			return fd;
		}
	}
	return -ENOENT;
}

bool handover_has_listener(const struct addr *a, bool transparent)
{
	uint8_t kind = transparent ? HANDOVER_TPROXY : HANDOVER_LISTEN;

	for (unsigned i = 0; i < ho.nsocks; i++)
		if (ho.socks[i].w.kind == kind && wire_addr_is(&ho.socks[i].w, a))
			return true;
	return false;
}

unsigned handover_listeners_per_address(void)
{
	unsigned most = 0;

	for (unsigned i = 0; i < ho.nsocks; i++) {
		const struct wire_socket *w = &ho.socks[i].w;
		unsigned n = 0;

		if (w->kind != HANDOVER_LISTEN && w->kind != HANDOVER_TPROXY)
			continue;
		for (unsigned k = 0; k < ho.nsocks; k++)
			if (ho.socks[k].w.kind == w->kind &&
			    addr_equal((const struct sockaddr *)ho.socks[k].w.addr,
				       (const struct sockaddr *)w->addr))
				n++;
		if (n > most)
			most = n;
	}
	return most;
}

static int take_kind(enum handover_kind kind, const char *path)
{
	for (unsigned i = 0; i < ho.nsocks; i++) {
		struct received *r = &ho.socks[i];

		if (r->fd >= 0 && r->w.kind == kind &&
		    (!path || strncmp(r->w.path, path, sizeof(r->w.path)) == 0)) {
			int fd = r->fd;

			r->fd = -1;
			return fd;
		}
	}
	return -ENOENT;
}

int handover_take_unix(const char *path)
{
	return take_kind(HANDOVER_UNIX, path);
}

int handover_take_metrics(void)
{
	return take_kind(HANDOVER_METRICS, NULL);
}

int handover_send_ready(void)
{
	int fd = __atomic_load_n(&ho.pred_fd, __ATOMIC_ACQUIRE);
	int rc;

	if (fd < 0)
		return -ENOTCONN;
	/* A socket the new configuration no longer listens on: closed only now, after every
	 * wanted one is served, and it was the operator's choice to drop that address. */
	for (unsigned i = 0; i < ho.nsocks; i++) {
		struct received *r = &ho.socks[i];

		if (r->fd < 0)
			continue;
		log_warn("handover", "not taking over the %s socket of worker %u: the new "
			 "configuration does not use it", kind_name(r->w.kind), r->w.index);
		close(r->fd);
		r->fd = -1;
	}
	rc = msg_send(fd, MSG_READY, 0, NULL, 0, NULL, 0, 0);
	free(ho.socks);
	ho.socks = NULL;
	ho.nsocks = 0;
	return rc;
}

static bool forward(enum msg_type type, const void *payload, size_t len)
{
	int fd = handover_predecessor_fd();

	return fd >= 0 && msg_send(fd, type, 1, payload, len, NULL, 0, MSG_DONTWAIT) == 0;
}

bool handover_forward_cancel(uint32_t pid, const uint8_t *key, uint32_t key_len)
{
	struct wire_cancel c = {.pid = pid, .key_len = key_len};
	bool sent;

	if (key_len == 0 || key_len > sizeof(c.key))
		return false;
	memcpy(c.key, key, key_len);
	sent = forward(MSG_CANCEL, &c, sizeof(c));
	OPENSSL_cleanse(&c, sizeof(c));
	return sent;
}

bool handover_forward_kill(const char *session, enum admin_kill_mode mode)
{
	struct wire_kill k = {.mode = (uint8_t)mode};

	snprintf(k.session, sizeof(k.session), "%s", session);
	return forward(MSG_KILL, &k, sizeof(k));
}

/* ---- the predecessor ----------------------------------------------------------------- */

/* "A=B" entries of environ with name replaced by name=value; NULL on ENOMEM. The strings
 * other than the new one are environ's own. */
static char **env_with(const char *name, const char *value, char **storage)
{
	size_t n = 0, k = 0, nlen = strlen(name);
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + 2, sizeof(*env));
	*storage = malloc(nlen + strlen(value) + 2);
	if (!env || !*storage) {
		free(env);
		free(*storage);
		return NULL;
	}
	sprintf(*storage, "%s=%s", name, value);
	for (size_t i = 0; i < n; i++)
		if (!(strncmp(environ[i], name, nlen) == 0 && environ[i][nlen] == '='))
			env[k++] = environ[i];
	env[k++] = *storage;
	env[k] = NULL;
	return env;
}

/* "3,4,5" into fds (at most max); the count, or -EINVAL. */
static int parse_fd_list(const char *text, int *fds, int max)
{
	int n = 0;

	while (text && *text) {
		char *end;
		long fd = strtol(text, &end, 10);

		if (end == text || fd < 0 || fd > 65535 || (*end && *end != ',') || n >= max)
			return -EINVAL;
		fds[n++] = (int)fd;
		text = *end ? end + 1 : end;
	}
	return n;
}

/* The successor after a failure: asked to go, then made to. */
static void stop_child(pid_t child)
{
	int status;

	if (waitpid(child, &status, WNOHANG) == child)
		return;
	kill(child, SIGTERM);
	for (int i = 0; i < 50; i++) {
		if (waitpid(child, &status, WNOHANG) == child)
			return;
		usleep(100 * 1000);
	}
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
}

static int send_sockets(int fd, const struct handover_plan *p)
{
	struct wire_socket batch[HANDOVER_BATCH];
	int fds[HANDOVER_BATCH];
	unsigned n = 0;
	int rc;

	for (unsigned i = 0; i <= p->nsockets; i++) {
		if (n == HANDOVER_BATCH || (i == p->nsockets && n)) {
			rc = msg_send(fd, MSG_SOCKETS, n, batch, n * sizeof(batch[0]), fds, n, 0);
			if (rc)
				return rc;
			n = 0;
		}
		if (i == p->nsockets)
			break;
		const struct handover_socket *s = &p->sockets[i];
		struct wire_socket *w = &batch[n];

		memset(w, 0, sizeof(*w));
		w->kind = (uint8_t)s->kind;
		w->index = s->index;
		if (s->kind == HANDOVER_UNIX) {
			snprintf(w->path, sizeof(w->path), "%s", s->path);
		} else {
			w->addr_len = s->addr.len;
			memcpy(w->addr, &s->addr.ss, sizeof(s->addr.ss));
		}
		fds[n++] = s->fd;
	}
	return msg_send(fd, MSG_END, 0, NULL, 0, NULL, 0, 0);
}

/* Wait for READY, or the successor's end, until deadline. 0 or -errno (err set). */
static int wait_ready(int fd, pid_t child, uint64_t deadline, char *err, size_t errlen)
{
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		uint64_t now = clock_mono_ns();
		struct msg_hdr h;
		int fds[HANDOVER_BATCH], status;
		unsigned nfds;
		char payload[64];
		ssize_t n;

		if (waitpid(child, &status, WNOHANG) == child) {
			snprintf(err, errlen, "the new pgwardend (pid %d) %s %d before it was ready; "
				 "its log says why", (int)child,
				 WIFEXITED(status) ? "exited with status" : "died of signal",
				 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			return -ECHILD;
		}
		if (now >= deadline) {
			snprintf(err, errlen, "the new pgwardend (pid %d) was not ready in time",
				 (int)child);
			return -ETIMEDOUT;
		}
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = msg_recv(fd, &h, payload, sizeof(payload), fds, &nfds, MSG_DONTWAIT);
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		if (n == -EAGAIN)
			continue;
		if (n == -EPIPE)
			continue; /* it closed the channel: waitpid() tells the rest */
		if (n < 0 || h.type != MSG_READY || h.pid != child) {
			snprintf(err, errlen, "the new pgwardend (pid %d) answered with something "
				 "other than READY", (int)child);
			return -EPROTO;
		}
		return 0;
	}
}

int handover_start(const struct handover_plan *p, pid_t *child, char *err, size_t errlen)
{
	uint64_t deadline = clock_mono_ns() + p->timeout_ms * NSEC_PER_MSEC;
	struct timeval tv = {.tv_sec = (time_t)(p->timeout_ms / 1000),
			     .tv_usec = (suseconds_t)(p->timeout_ms % 1000 * 1000)};
	int sv[2], keep[64], nkeep, rc;
	char fdtext[16], *envstr = NULL, **env;
	sigset_t none;
	pid_t pid;

	*child = -1;
	if (__atomic_load_n(&ho.succ_fd, __ATOMIC_ACQUIRE) >= 0) {
		snprintf(err, errlen, "this pgwardend has already handed over to pid %d",
			 (int)ho.succ_pid);
		return -EALREADY;
	}
	nkeep = parse_fd_list(p->keep_fds, keep, (int)(sizeof(keep) / sizeof(keep[0])));
	if (nkeep < 0) {
		snprintf(err, errlen, "cannot read the descriptors to pass on (\"%s\")", p->keep_fds);
		return -EINVAL;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		rc = -errno;
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		return rc;
	}
	setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	snprintf(fdtext, sizeof(fdtext), "%d", sv[1]);
	env = env_with(HANDOVER_ENV, fdtext, &envstr);
	if (!env) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto err_close;
	}
	sigemptyset(&none);
	pid = fork();
	if (pid == 0) {
		/* Async-signal-safe calls only: this process has other threads. */
		fcntl(sv[1], F_SETFD, 0);
		for (int i = 0; i < nkeep; i++)
			fcntl(keep[i], F_SETFD, 0);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execve(p->exe, p->argv, env);
		_exit(127);
	}
	rc = pid < 0 ? -errno : 0;
	free(env);
	free(envstr);
	close(sv[1]);
	if (rc) {
		snprintf(err, errlen, "fork: %s", strerror(-rc));
		close(sv[0]);
		return rc;
	}
	rc = send_sockets(sv[0], p);
	if (rc) {
		snprintf(err, errlen, "cannot hand the sockets to pid %d: %s", (int)pid,
			 strerror(-rc));
		goto err_child;
	}
	rc = wait_ready(sv[0], pid, deadline, err, errlen);
	if (rc)
		goto err_child;
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	ho.succ_pid = pid;
	__atomic_store_n(&ho.succ_fd, sv[0], __ATOMIC_RELEASE);
	*child = pid;
	return 0;

err_child:
	stop_child(pid);
	close(sv[0]);
	return rc;
err_close:
	close(sv[0]);
	close(sv[1]);
	return rc;
}

/* ---- both ---------------------------------------------------------------------------- */

static void cancel_forwarded(const struct wire_cancel *wc, struct cancel_map *m, uint32_t mark,
			     uint64_t timeout_ms)
{
	struct cancel_target t;
	int rc;

	if (wc->key_len == 0 || wc->key_len > sizeof(wc->key))
		return;
	if (!m || !cancel_map_lookup(m, wc->pid, wc->key, wc->key_len, &t)) {
		if (handover_forward_cancel(wc->pid, wc->key, wc->key_len))
			return;
		log_info("cancel_refused", "pid=%u no session holds this cancel key (here or in "
			 "an earlier pgwardend)", wc->pid);
		return;
	}
	rc = backend_cancel_send(&t, mark, timeout_ms);
	OPENSSL_cleanse(&t, sizeof(t));
	if (rc)
		log_warn("cancel_failed", "pid=%u could not reach the server: %s", wc->pid,
			 strerror(-rc));
	else
		log_info("cancel_forwarded", "pid=%u (passed on by pid %d)", wc->pid,
			 (int)ho.succ_pid);
}

void handover_channel_event(int fd, struct cancel_map *m, uint32_t mark, uint64_t timeout_ms,
			    handover_kill_fn kill_fn, void *ctx)
{
	bool from_successor = fd == ho.succ_fd;

	for (;;) {
		union {
			struct wire_cancel cancel;
			struct wire_kill kill;
		} u;
		struct msg_hdr h;
		int fds[HANDOVER_BATCH];
		unsigned nfds;
		ssize_t n = msg_recv(fd, &h, &u, sizeof(u), fds, &nfds, MSG_DONTWAIT);

		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]); /* nobody sends descriptors after the start */
		if (n == -EAGAIN || n == -EWOULDBLOCK)
			return;
		if (n == -EPIPE || (n < 0 && n != -EPROTO)) {
			if (from_successor) {
				log_warn("handover", "the new pgwardend (pid %d) closed its channel: "
					 "cancels and kills for this daemon's sessions can no longer "
					 "reach it", (int)ho.succ_pid);
				__atomic_store_n(&ho.succ_gone, true, __ATOMIC_RELEASE);
			} else {
				log_info("handover", "the previous pgwardend (pid %d) has exited",
					 (int)ho.pred_pid);
				__atomic_store_n(&ho.pred_gone, true, __ATOMIC_RELEASE);
			}
			return;
		}
		if (n < 0 || !from_successor)
			continue; /* malformed, or the predecessor talking: nothing to do */
		if (h.type == MSG_CANCEL && (size_t)n == sizeof(u.cancel)) {
			cancel_forwarded(&u.cancel, m, mark, timeout_ms);
		} else if (h.type == MSG_KILL && (size_t)n == sizeof(u.kill) &&
			   u.kill.mode < ADMIN_KILL_MODE_COUNT) {
			u.kill.session[SESSION_ID_HEXLEN] = '\0';
			if (!kill_fn || kill_fn(ctx, u.kill.session,
						(enum admin_kill_mode)u.kill.mode) == -ENOENT)
				(void)handover_forward_kill(u.kill.session,
							    (enum admin_kill_mode)u.kill.mode);
		}
		OPENSSL_cleanse(&u, sizeof(u));
	}
}

void handover_close(void)
{
	received_free();
	if (ho.pred_fd >= 0)
		close(ho.pred_fd);
	if (ho.succ_fd >= 0)
		close(ho.succ_fd);
	ho.pred_fd = ho.succ_fd = -1;
}
