/* admin_client: blocking, deadline-bounded client of the admin socket (see admin_client.h). */
#include "admin/admin_client.h"

#include "base/clock.h"
#include "config/config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct admin_conn {
	int fd;
	char *buf;
	size_t len;
	size_t cap;
};

const char *admin_client_default_path(void)
{
	const char *env = getenv("PGWARDEN_ADMIN_SOCKET");

	return env && *env ? env : CONFIG_DEFAULT_ADMIN_SOCKET;
}

static int remaining_ms(uint64_t deadline)
{
	uint64_t now = clock_mono_ns();

	if (now >= deadline)
		return 0;
	return (int)((deadline - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};

	for (;;) {
		int ms = remaining_ms(deadline);
		int r;

		if (ms == 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, ms);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

int admin_conn_open(const char *path, int timeout_ms, struct admin_conn **out)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct admin_conn *c;
	int fd, err;

	(void)timeout_ms; /* a Unix connect does not wait: kept for a future TCP transport */
	*out = NULL;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A Unix connect either completes or fails at once (EAGAIN: backlog full). */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		err = -errno;
		if (err == -EAGAIN)
			err = -ECONNREFUSED;
		close(fd);
		return err;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->fd = fd;
	*out = c;
	return 0;
}

void admin_conn_close(struct admin_conn *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c->buf);
	free(c);
}

static int send_all(struct admin_conn *c, const char *p, size_t n, uint64_t deadline)
{
	while (n) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		int err;

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		err = wait_fd(c->fd, POLLOUT, deadline);
		if (err)
			return err;
	}
	return 0;
}

/* Take one line out of the buffer, reading as needed. */
static int read_line(struct admin_conn *c, char **line, size_t *len, uint64_t deadline)
{
	for (;;) {
		char *nl = c->buf ? memchr(c->buf, '\n', c->len) : NULL;
		ssize_t r;
		int err;

		if (nl) {
			*len = (size_t)(nl - c->buf);
			*line = malloc(*len + 1);
			if (!*line)
				return -ENOMEM;
			memcpy(*line, c->buf, *len);
			(*line)[*len] = '\0';
			memmove(c->buf, nl + 1, c->len - *len - 1);
			c->len -= *len + 1;
			return 0;
		}
		if (c->len == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 65536;
			char *p;

			if (cap > ADMIN_CLIENT_MAX_LINE)
				return -EPROTO;
			p = realloc(c->buf, cap);
			if (!p)
				return -ENOMEM;
			c->buf = p;
			c->cap = cap;
		}
		r = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
		if (r > 0) {
			c->len += (size_t)r;
			continue;
		}
		if (r == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		err = wait_fd(c->fd, POLLIN, deadline);
		if (err)
			return err;
	}
}

static int next_msg(struct admin_conn *c, json_t **msg, uint64_t deadline)
{
	char *line = NULL;
	size_t len = 0;
	int err = read_line(c, &line, &len, deadline);

	if (err)
		return err;
	*msg = json_loadb(line, len, 0, NULL);
	free(line);
	if (!*msg || !json_is_object(*msg)) {
		json_decref(*msg);
		*msg = NULL;
		return -EPROTO;
	}
	return 0;
}

int admin_conn_next(struct admin_conn *c, json_t **msg, int timeout_ms)
{
	return next_msg(c, msg, clock_mono_ns() + (uint64_t)timeout_ms * NSEC_PER_MSEC);
}

int admin_conn_call(struct admin_conn *c, json_t *req, json_t **reply, int timeout_ms,
		    void (*on_event)(void *ctx, json_t *ev), void *ctx)
{
	uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * NSEC_PER_MSEC;
	char *text = json_dumps(req, JSON_COMPACT);
	size_t n;
	int err;

	*reply = NULL;
	if (!text)
		return -ENOMEM;
	n = strlen(text);
	err = send_all(c, text, n, deadline);
	free(text);
	if (!err)
		err = send_all(c, "\n", 1, deadline);
	/* A daemon that refuses a peer (forbidden, too many clients) says why and closes
	 * before reading: the send fails, the reason is still there to read. */
	if (err && err != -EPIPE && err != -ECONNRESET)
		return err;
	for (;;) {
		json_t *m;

		int rerr = next_msg(c, &m, deadline);

		if (rerr)
			return err ? err : rerr;
		if (json_object_get(m, "event")) {
			if (on_event)
				on_event(ctx, m);
			json_decref(m);
			continue;
		}
		*reply = m;
		return 0;
	}
}

const char *admin_reply_error(json_t *reply, char *buf, size_t n)
{
	json_t *e;
	const char *code, *msg;

	if (!reply || json_is_true(json_object_get(reply, "ok")))
		return NULL;
	e = json_object_get(reply, "error");
	code = json_string_value(json_object_get(e, "code"));
	msg = json_string_value(json_object_get(e, "message"));
	snprintf(buf, n, "%s%s%s", code ? code : "error", msg ? ": " : "", msg ? msg : "");
	return buf;
}
