/* metrics_http: GET /metrics over libmicrohttpd (see metrics_http.h). */
#include "metrics/metrics_http.h"

#include "base/addr.h"
#include "base/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define METRICS_HTTP_MAX_CONNECTIONS 16
#define METRICS_HTTP_TIMEOUT_S 10
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_http {
	struct MHD_Daemon *daemon;
	struct metrics_registry *reg;
	int fd;
	struct addr bound;
};

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result metrics_http_handle(void *cls, struct MHD_Connection *c, const char *url,
					   const char *method, const char *version,
					   const char *upload_data, size_t *upload_data_size,
					   void **req_cls)
{
	static int first_call;
	struct metrics_http *h = cls;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	size_t len = 0;
	char *text;

	/* The first call only announces the request; answer on the second (no body read). */
	if (*req_cls == NULL) {
		*req_cls = &first_call;
		return MHD_YES;
	}
	if (*upload_data_size != 0)
		return MHD_NO; /* a body on a scrape: drop the connection */
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
	if (strcmp(url, "/metrics") != 0) {
		if (strcmp(url, "/") == 0)
			return reply_text(c, MHD_HTTP_OK, "pgwarden metrics: GET /metrics\n");
		return reply_text(c, MHD_HTTP_NOT_FOUND, "not found; try /metrics\n");
	}
	text = metrics_render_string(h->reg, &len);
	if (!text)
		return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
	ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_warn("metrics_http", "%s", msg);
}

/* Serve on h->fd (a listening socket). ITC so that metrics_http_release() can quiesce.
 * 0, or -1 with a message in err. */
static int metrics_http_serve(struct metrics_http *h, char *err, size_t errlen)
{
	char where[ADDR_STRLEN];

	h->bound.len = sizeof(h->bound.ss);
	if (getsockname(h->fd, (struct sockaddr *)&h->bound.ss, &h->bound.len) < 0) {
		snprintf(err, errlen, "metrics_listen: %s", strerror(errno));
		return -1;
	}
	h->daemon = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG | MHD_USE_ITC |
			(h->bound.ss.sa.sa_family == AF_INET6 ? MHD_USE_IPv6 : 0),
		0, NULL, NULL, metrics_http_handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
		MHD_OPTION_LISTEN_SOCKET, h->fd,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_MAX_CONNECTIONS,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_HTTP_TIMEOUT_S, MHD_OPTION_END);
	if (!h->daemon) {
		snprintf(err, errlen, "metrics_listen %s: could not start the HTTP server",
			 addr_format(&h->bound.ss.sa, where, sizeof(where)));
		return -1;
	}
	return 0;
}

struct metrics_http *metrics_http_start(struct metrics_registry *r, const char *listen_text,
					char *err, size_t errlen)
{
	struct metrics_http *h;
	struct addr a;
	int one = 1;

	if (!listen_text || addr_parse(listen_text, &a) != 0) {
		snprintf(err, errlen, "metrics_listen: expected host:port, got \"%s\"",
			 listen_text ? listen_text : "");
		return NULL;
	}
	if (!addr_is_loopback(&a)) {
		snprintf(err, errlen,
			 "metrics_listen: %s is not a loopback address (the endpoint has no "
			 "authentication; scrape through a local agent)",
			 listen_text);
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, errlen, "metrics_listen: out of memory");
		return NULL;
	}
	h->reg = r;
	h->fd = socket(a.ss.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (h->fd < 0)
		goto err_errno;
	setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(h->fd, (struct sockaddr *)&a.ss, a.len) < 0 || listen(h->fd, 64) < 0)
		goto err_errno;
	if (metrics_http_serve(h, err, errlen))
		goto err_close;
	return h;

err_errno:
	snprintf(err, errlen, "metrics_listen %s: %s", listen_text, strerror(errno));
err_close:
	if (h->fd >= 0)
		close(h->fd);
	free(h);
	return NULL;
}

struct metrics_http *metrics_http_adopt(struct metrics_registry *r, int fd, char *err,
					size_t errlen)
{
	struct metrics_http *h = calloc(1, sizeof(*h));
	int listening = 0;
	socklen_t len = sizeof(listening);

	if (!h) {
		snprintf(err, errlen, "metrics_listen: out of memory");
		return NULL;
	}
	h->reg = r;
	h->fd = fd;
	h->bound.len = sizeof(h->bound.ss);
	/* Only a listening TCP socket on loopback, whoever handed it over. */
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening ||
	    getsockname(fd, (struct sockaddr *)&h->bound.ss, &h->bound.len) < 0 ||
	    !addr_is_loopback(&h->bound)) {
		snprintf(err, errlen, "metrics_listen: the socket handed over is not a loopback "
			 "listener");
		free(h);
		return NULL;
	}
	if (metrics_http_serve(h, err, errlen)) {
		free(h);
		return NULL;
	}
	return h;
}

int metrics_http_release(struct metrics_http *h)
{
	MHD_socket fd;

	if (!h)
		return -EINVAL;
	/* Stop accepting first, so nothing is lost between here and the next owner:
	 * connections wait in the socket's backlog meanwhile. */
	fd = MHD_quiesce_daemon(h->daemon);
	MHD_stop_daemon(h->daemon);
	free(h);
	return fd == MHD_INVALID_SOCKET ? -EIO : fd;
}

const char *metrics_http_address(const struct metrics_http *h, char *buf, size_t n)
{
	return addr_format((const struct sockaddr *)&h->bound.ss, buf, n);
}

void metrics_http_stop(struct metrics_http *h)
{
	if (!h)
		return;
	/* MHD closes a listen socket it was given when it stops. */
	MHD_stop_daemon(h->daemon);
	free(h);
}
