/* Metrics registry and exposition: what a Prometheus server scraping pgwardend would read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "metrics/metrics.h"
#include "metrics/metrics_http.h"
#include "metrics/metrics_steer.h"
#include "metrics/metrics_std.h"
#include "steer/steer_gate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const dirs[] = {"from_client", "from_server", NULL};

static void test_registration_rules(void **state)
{
	struct metrics_registry *r = metrics_registry_new();
	static const char *const none[] = {NULL};
	static const uint64_t bounds_bad[] = {10, 10};
	static const uint64_t bounds[] = {10, 20};
	struct metrics_shard *s;

	assert_non_null(r);
	assert_int_equal(metrics_counter_new(r, "1bad", "h", NULL, NULL), -EINVAL);
	assert_int_equal(metrics_counter_new(r, "bad-name", "h", NULL, NULL), -EINVAL);
	assert_int_equal(metrics_counter_new(r, "", "h", NULL, NULL), -EINVAL);
	assert_int_equal(metrics_counter_new(r, "ok_total", "h", "__reserved", dirs), -EINVAL);
	assert_int_equal(metrics_counter_new(r, "ok_total", "h", "le", dirs), -EINVAL);
	assert_int_equal(metrics_counter_new(r, "ok_total", "h", "dir", none), -EINVAL);
	assert_int_equal(metrics_counter_new(r, "ok_total", "h", "dir", NULL), -EINVAL);
	assert_int_equal(metrics_counter_new(r, "ok_total", "h", NULL, dirs), -EINVAL);
	assert_int_equal(metrics_histogram_new(r, "h_seconds", "h", NULL, NULL, bounds_bad, 2, 1e9),
			 -EINVAL);
	assert_int_equal(metrics_histogram_new(r, "h_seconds", "h", NULL, NULL, bounds, 0, 1e9),
			 -EINVAL);
	assert_int_equal(metrics_counter_new(r, "ns:ok_total", "h", "dir", dirs), 0);
	assert_int_equal(metrics_counter_new(r, "ns:ok_total", "h", NULL, NULL), -EEXIST);
	assert_int_equal(metrics_histogram_new(r, "h_seconds", "h", NULL, NULL, bounds, 2, 1e9), 1);

	s = metrics_shard_new(r);
	assert_non_null(s);
	assert_int_equal(metrics_gauge_new(r, "late", "h", NULL, NULL), -EBUSY);
	metrics_shard_free(s);
	metrics_registry_free(r);
}

static void test_exposition_exact(void **state)
{
	static const uint64_t bounds[] = {1000000, 5000000}; /* 1ms, 5ms in ns */
	static const char *const states[] = {"ready", "busy", NULL};
	struct metrics_registry *r = metrics_registry_new();
	struct metrics_shard *a, *b;
	int c, g, h;
	char *text;

	c = metrics_counter_new(r, "pgw_bytes_total", "Bytes \\ relayed\nby side.", "direction",
				dirs);
	g = metrics_gauge_new(r, "pgw_sessions", "Open sessions.", "state", states);
	h = metrics_histogram_new(r, "pgw_latency_seconds", "Latency.", NULL, NULL, bounds, 2, 1e9);
	assert_true(c >= 0 && g >= 0 && h >= 0);
	a = metrics_shard_new(r);
	b = metrics_shard_new(r);
	assert_non_null(a);
	assert_non_null(b);

	metrics_add(a, c, MDIR_FROM_CLIENT, 100);
	metrics_add(b, c, MDIR_FROM_CLIENT, 23);
	metrics_add(b, c, MDIR_FROM_SERVER, 7);
	metrics_add(b, c, 2, 1000); /* out of range: dropped, not written elsewhere */
	/* A session counted in one shard and closed in another still sums right. */
	metrics_gauge_add(a, g, 0, 3);
	metrics_gauge_add(b, g, 0, -1);
	metrics_gauge_add(b, g, 1, -2);
	metrics_observe(a, h, 0, 500000);   /* 0.5ms → le 0.001 */
	metrics_observe(b, h, 0, 1000000);  /* exactly 1ms → le 0.001 */
	metrics_observe(a, h, 0, 2000000);  /* → le 0.005 */
	metrics_observe(b, h, 0, 60000000); /* → +Inf */
	metrics_observe(a, h, 1, 1);        /* no such label: dropped */
	metrics_inc(a, h, 0);               /* counters API on a histogram: refused */

	text = metrics_render_string(r, NULL);
	assert_non_null(text);
	assert_string_equal(text,
			    "# HELP pgw_bytes_total Bytes \\\\ relayed\\nby side.\n"
			    "# TYPE pgw_bytes_total counter\n"
			    "pgw_bytes_total{direction=\"from_client\"} 123\n"
			    "pgw_bytes_total{direction=\"from_server\"} 7\n"
			    "# HELP pgw_sessions Open sessions.\n"
			    "# TYPE pgw_sessions gauge\n"
			    "pgw_sessions{state=\"ready\"} 2\n"
			    "pgw_sessions{state=\"busy\"} -2\n"
			    "# HELP pgw_latency_seconds Latency.\n"
			    "# TYPE pgw_latency_seconds histogram\n"
			    "pgw_latency_seconds_bucket{le=\"0.001\"} 2\n"
			    "pgw_latency_seconds_bucket{le=\"0.005\"} 3\n"
			    "pgw_latency_seconds_bucket{le=\"+Inf\"} 4\n"
			    "pgw_latency_seconds_sum 0.0635\n"
			    "pgw_latency_seconds_count 4\n");
	free(text);

	/* A worker that exits leaves its counts behind. */
	metrics_shard_free(a);
	assert_int_equal(metrics_value(r, c, MDIR_FROM_CLIENT), 123);
	assert_int_equal((int64_t)metrics_value(r, g, 0), 2);
	assert_int_equal(metrics_value(r, h, 0), 4);
	metrics_shard_free(b);
	assert_int_equal(metrics_value(r, c, MDIR_FROM_SERVER), 7);
	metrics_registry_free(r);
}

static void collect(void *ctx, struct metrics_writer *w)
{
	metrics_writer_family(w, "pgw_steer_redirects_total", METRICS_COUNTER, "Redirects.");
	metrics_writer_sample(w, "hook", "connect4", 5);
	metrics_writer_sample(w, "hook", "we\"ird\\\n", 1);
	metrics_writer_sample(w, "bad-label", "x", 1); /* skipped */
	/* A name the registry owns, and an invalid one: skipped whole. */
	metrics_writer_family(w, "pgw_taken", METRICS_GAUGE, "dup");
	metrics_writer_sample(w, NULL, NULL, 1);
	metrics_writer_family(w, "9nope", METRICS_GAUGE, "bad");
	metrics_writer_sample(w, NULL, NULL, 1);
	metrics_writer_family(w, "pgw_steer_attached", METRICS_GAUGE, "Attached.");
	metrics_writer_sample(w, NULL, NULL, 1);
}

static void test_collectors(void **state)
{
	struct metrics_registry *r = metrics_registry_new();
	char *text;

	assert_true(metrics_gauge_new(r, "pgw_taken", "Registered.", NULL, NULL) >= 0);
	assert_int_equal(metrics_collector_add(r, collect, NULL), 0);
	text = metrics_render_string(r, NULL);
	assert_non_null(text);
	assert_string_equal(text, "# HELP pgw_taken Registered.\n"
				  "# TYPE pgw_taken gauge\n"
				  "pgw_taken 0\n"
				  "# HELP pgw_steer_redirects_total Redirects.\n"
				  "# TYPE pgw_steer_redirects_total counter\n"
				  "pgw_steer_redirects_total{hook=\"connect4\"} 5\n"
				  "pgw_steer_redirects_total{hook=\"we\\\"ird\\\\\\n\"} 1\n"
				  "# HELP pgw_steer_attached Attached.\n"
				  "# TYPE pgw_steer_attached gauge\n"
				  "pgw_steer_attached 1\n");
	free(text);
	metrics_registry_free(r);
}

static void test_format_double(void **state)
{
	char buf[64];

	assert_string_equal(metrics_format_double(0.005, buf, sizeof(buf)), "0.005");
	assert_string_equal(metrics_format_double(0.0001, buf, sizeof(buf)), "0.0001");
	assert_string_equal(metrics_format_double(10, buf, sizeof(buf)), "10");
	assert_string_equal(metrics_format_double(1.0 / 0.0, buf, sizeof(buf)), "+Inf");
	assert_string_equal(metrics_format_double(-1.0 / 0.0, buf, sizeof(buf)), "-Inf");
	assert_string_equal(metrics_format_double(0.0 / 0.0, buf, sizeof(buf)), "NaN");
	assert_string_equal(metrics_format_double(0.1 + 0.2, buf, sizeof(buf)),
			    "0.30000000000000004");
}

static void test_std_families(void **state)
{
	struct metrics_registry *r = metrics_registry_new();
	struct metrics_std m;
	struct metrics_shard *s;
	char *text;

	assert_int_equal(metrics_std_register(r, &m), 0);
	s = metrics_shard_new(r);
	metrics_inc(s, m.accepted, 0);
	metrics_inc(s, m.refused, MREFUSE_MAX_CONNECTIONS);
	metrics_inc(s, m.statements, MSTMT_READ);
	metrics_gauge_add(s, m.sessions, MSTATE_IDLE, 1);
	metrics_observe(s, m.query_duration, 0, 300000);
	text = metrics_render_string(r, NULL);
	assert_non_null(strstr(text, "\npgwarden_connections_accepted_total 1\n"));
	assert_non_null(strstr(text,
		"\npgwarden_connections_refused_total{reason=\"max_connections\"} 1\n"));
	assert_non_null(strstr(text, "\npgwarden_statements_total{type=\"read\"} 1\n"));
	assert_non_null(strstr(text, "\npgwarden_sessions{state=\"idle\"} 1\n"));
	assert_non_null(strstr(text, "\npgwarden_sessions{state=\"active\"} 0\n"));
	assert_non_null(strstr(text,
		"\npgwarden_query_duration_seconds_bucket{le=\"0.00025\"} 0\n"
		"pgwarden_query_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
	assert_non_null(strstr(text, "\npgwarden_query_duration_seconds_sum 0.0003\n"));
	assert_non_null(strstr(text, "# TYPE pgwarden_upstream_duration_seconds histogram\n"));
	assert_non_null(strstr(text, "\npgwarden_bytes_total{direction=\"from_server\"} 0\n"));
	metrics_inc(s, m.tls_sessions, MTLS_SERVER);
	free(text);
	text = metrics_render_string(r, NULL);
	assert_non_null(strstr(text, "\npgwarden_tls_sessions_total{leg=\"client\"} 0\n"));
	assert_non_null(strstr(text, "\npgwarden_tls_sessions_total{leg=\"server\"} 1\n"));
	free(text);
	metrics_shard_free(s);
	metrics_registry_free(r);
}

/* An instance that was never attached: reported as detached, never an error. */
static void test_steer_collector(void **state)
{
	struct metrics_registry *r = metrics_registry_new();
	char *text;

	assert_int_equal(metrics_steer_register(r, "pgwunitnone"), 0);
	text = metrics_render_string(r, NULL);
	assert_non_null(text);
	assert_non_null(strstr(text, "# TYPE pgwarden_steer_attached gauge\npgwarden_steer_attached 0\n"));
	assert_non_null(strstr(text, "# TYPE pgwarden_steer_leftovers gauge\n"));
	free(text);
	metrics_registry_free(r);
}

/* The admission gate's counters as a scrape reads them: by verdict, and the overruns. */
static void test_gate_collector(void **state)
{
	struct steer_gate_opts go = {.rate_per_sec = 1, .burst = 2, .max_sources = 64};
	struct metrics_registry *r = metrics_registry_new();
	struct steer_gate *g;
	uint8_t a[16] = {[10] = 0xff, [11] = 0xff, [12] = 10, [15] = 1};
	uint8_t d[16] = {[10] = 0xff, [11] = 0xff, [12] = 192, [13] = 0, [14] = 2, [15] = 7};
	char *text;

	assert_non_null(r);
	assert_int_equal(cidr_parse("192.0.2.0/24", &go.deny[go.ndeny++]), 0);
	assert_int_equal(steer_gate_new(&go, &g), 0);
	for (int i = 0; i < 5; i++) /* 2 within the burst, 3 over the rate */
		steer_gate_decide(g, a, 1000000000ULL);
	steer_gate_decide(g, d, 1000000000ULL);
	assert_int_equal(metrics_steer_gate_register(r, g), 0);
	text = metrics_render_string(r, NULL);
	assert_non_null(text);
	assert_non_null(strstr(text, "# TYPE pgwarden_gate_syns_total counter\n"
				     "pgwarden_gate_syns_total{verdict=\"accepted\"} 2\n"
				     "pgwarden_gate_syns_total{verdict=\"denied_list\"} 1\n"
				     "pgwarden_gate_syns_total{verdict=\"denied_rate\"} 3\n"));
	assert_non_null(strstr(text, "# TYPE pgwarden_gate_queue_overruns_total counter\n"
				     "pgwarden_gate_queue_overruns_total 0\n"));
	free(text);
	metrics_registry_free(r);
	steer_gate_close(g);
}

/* One HTTP/1.0 request over loopback; returns the whole response (malloc'd). */
static char *http_get(const char *addr_text, const char *request)
{
	char host[64];
	const char *colon = strrchr(addr_text, ':');
	struct sockaddr_in sin = {.sin_family = AF_INET};
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap);
	int fd;
	ssize_t n;

	assert_non_null(colon);
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr_text), addr_text);
	sin.sin_port = htons((uint16_t)atoi(colon + 1));
	assert_int_equal(inet_pton(AF_INET, host, &sin.sin_addr), 1);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(write(fd, request, strlen(request)), (ssize_t)strlen(request));
	while ((n = read(fd, out + len, cap - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(fd);
	return out;
}

static void test_http_endpoint(void **state)
{
	struct metrics_registry *r = metrics_registry_new();
	struct metrics_http *h;
	char err[256], addr[64];
	char *resp;
	int c = metrics_counter_new(r, "pgw_up_total", "Up.", NULL, NULL);
	struct metrics_shard *s = metrics_shard_new(r);

	metrics_add(s, c, 0, 42);
	assert_null(metrics_http_start(r, "0.0.0.0:0", err, sizeof(err)));
	assert_non_null(strstr(err, "not a loopback address"));
	assert_null(metrics_http_start(r, "localhost:9187", err, sizeof(err)));
	assert_non_null(strstr(err, "expected host:port"));

	h = metrics_http_start(r, "127.0.0.1:0", err, sizeof(err));
	assert_non_null(h);
	metrics_http_address(h, addr, sizeof(addr));
	assert_non_null(strstr(addr, "127.0.0.1:"));
	assert_string_not_equal(addr, "127.0.0.1:0");

	resp = http_get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(resp, "HTTP/1.0 200") ? resp : strstr(resp, "HTTP/1.1 200"));
	assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	assert_non_null(strstr(resp, "\r\n\r\n# HELP pgw_up_total Up.\n# TYPE pgw_up_total "
				     "counter\npgw_up_total 42\n"));
	free(resp);
	resp = http_get(addr, "GET /nope HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(resp, " 404 "));
	free(resp);
	resp = http_get(addr, "DELETE /metrics HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(resp, " 405 "));
	free(resp);

	metrics_http_stop(h);
	metrics_shard_free(s);
	metrics_registry_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registration_rules),
		cmocka_unit_test(test_exposition_exact),
		cmocka_unit_test(test_collectors),
		cmocka_unit_test(test_format_double),
		cmocka_unit_test(test_std_families),
		cmocka_unit_test(test_http_endpoint),
		cmocka_unit_test(test_steer_collector),
		cmocka_unit_test(test_gate_collector),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
