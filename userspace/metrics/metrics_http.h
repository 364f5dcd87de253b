/*
 * metrics_http: the Prometheus scrape endpoint (GET /metrics), served by libmicrohttpd on
 * its own internal thread, on a loopback address only.
 *
 * The address comes from config metrics_listen ("127.0.0.1:9187", "[::1]:9187"; port 0
 * asks the kernel for one, metrics_http_address() says which). Non-loopback addresses are
 * refused: the endpoint has no authentication, and a fleet scrapes through a local agent.
 * Bounded: at most 16 concurrent connections, a 10 s idle timeout, GET and HEAD only.
 */
#ifndef PGWARDEN_METRICS_HTTP_H
#define PGWARDEN_METRICS_HTTP_H

#include "metrics/metrics.h"

#include <stddef.h>

struct metrics_http;

/* Bind listen_text and start serving r. NULL with a one-line message in err. */
struct metrics_http *metrics_http_start(struct metrics_registry *r, const char *listen_text,
					char *err, size_t errlen) __attribute__((warn_unused_result));

/* Serve r on fd, a listening socket on loopback that a predecessor handed over (seamless
 * restart; anything else is refused). Takes fd on success. NULL with a message in err. */
struct metrics_http *metrics_http_adopt(struct metrics_registry *r, int fd, char *err,
					size_t errlen) __attribute__((warn_unused_result));

/* Stop accepting and serving, free h, and return the listening socket (the caller owns it
 * now; connections that arrive meanwhile wait in its backlog), or -errno. */
int metrics_http_release(struct metrics_http *h) __attribute__((warn_unused_result));

/* The bound address ("127.0.0.1:40123") into buf; returns buf. */
const char *metrics_http_address(const struct metrics_http *h, char *buf, size_t n);

/* Stop serving and free (joins the server thread). NULL is fine. */
void metrics_http_stop(struct metrics_http *h);

#endif
