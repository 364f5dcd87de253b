/*
 * gate unit tests: pgwardend's admission gate reader against the kernel (root only, skipped
 * with a reason elsewhere), in a private network namespace that goes away with the child
 * process running the test. An xt NFQUEUE rule queues SYNs to a local port there (on lo,
 * unlike the attach's rule, so that one namespace is enough), and the test plays the main
 * thread: a client connects, the queue turns readable, gate_dispatch() decides. Covered:
 * verdicts by deny range, the limits of a reloaded snapshot, the refusal summary (at most
 * one line per interval, naming the latest source), status, a queue another reader holds.
 *
 * Every client is closed right after its SYN was decided, so no retransmitted SYN can reach
 * the queue later and the counts are exact however slow the host is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/clock.h"
#include "config/config.h"
#include "gate/gate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define QUEUE "4244"
#define PORT 7

/* Failures in the child: the exit status names the step (the parent prints it). */
#define CHECK(cond, step)                                                                        \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			printf("step %d failed: %s (line %d)\n", step, #cond, __LINE__);        \
			fflush(stdout);                                                          \
			_exit(step);                                                             \
		}                                                                                \
	} while (0)

static struct config *gate_config(const char *deny)
{
	struct config *cfg = config_new();
	char err[CONFIG_ERR_MAX];

	if (!cfg || config_set(cfg, "gate.queue", QUEUE, err, sizeof(err)) ||
	    (deny && config_set(cfg, "gate.deny", deny, err, sizeof(err))))
		_exit(90);
	return cfg;
}

/* A non-blocking connect from src to 127.0.0.1:PORT; its SYN is queued when this returns. */
static int client(const char *src)
{
	struct sockaddr_in s = {.sin_family = AF_INET};
	struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	inet_pton(AF_INET, src, &s.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
	if (fd < 0 || bind(fd, (struct sockaddr *)&s, sizeof(s)) ||
	    (connect(fd, (struct sockaddr *)&d, sizeof(d)) && errno != EINPROGRESS))
		_exit(91);
	return fd;
}

/* Wait for the queue, then decide with cfg. */
static int decide(struct gate *g, struct config *cfg)
{
	struct pollfd p = {.fd = gate_fd(g), .events = POLLIN};

	if (poll(&p, 1, 10000) != 1)
		return -ETIMEDOUT;
	return gate_dispatch(g, cfg);
}

/* Whether the client's connection completed (an accepted SYN completes on lo at once; a
 * dropped one never does, since nothing decides its retransmission). */
static bool connected(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int err = 0;
	socklen_t len = sizeof(err);

	return poll(&p, 1, ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
	       err == 0;
}

static int count_lines(const char *log, const char *needle)
{
	int n = 0;

	for (const char *p = log; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static void run_child(const char *logpath)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	struct config *cfg = gate_config("127.0.0.2/31"), *reloaded = gate_config("127.0.0.3");
	struct steer_gate_stats st;
	struct gate *g, *other;
	char err[CONFIG_ERR_MAX], log[16384];
	int lfd, fd, logfd, one = 1;
	uint64_t now;
	ssize_t n;
	json_t *js;

	if (unshare(CLONE_NEWNET) != 0 || system("ip link set lo up") != 0 ||
	    system("iptables-legacy -A INPUT -i lo -p tcp --dport 7 --syn -j NFQUEUE "
		   "--queue-num " QUEUE " 2>/dev/null") != 0)
		_exit(77);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	CHECK(bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(lfd, 16) == 0, 1);
	/* The log is what the test reads back. */
	logfd = open(logpath, O_RDWR | O_TRUNC);
	CHECK(logfd >= 0 && dup2(logfd, STDERR_FILENO) == STDERR_FILENO, 2);

	CHECK(gate_open(cfg, &g, err, sizeof(err)) == 0, 3);
	/* One reader per queue: a second is refused, in one line that says why. */
	CHECK(gate_open(cfg, &other, err, sizeof(err)) == -EPERM, 4);
	CHECK(strcmp(err, "gate.queue: cannot read NFQUEUE " QUEUE ": Operation not permitted "
			  "(another process reads this queue, or no CAP_NET_ADMIN)") == 0, 4);
	CHECK(gate_log_due(g, clock_mono_ns()) == -1, 5); /* nothing refused yet */

	/* Allowed source: through. */
	fd = client("127.0.0.1");
	CHECK(decide(g, cfg) == 0, 6);
	CHECK(connected(fd, 10000), 6);
	close(fd);
	/* Denied source: the SYN is dropped; the first refusal is logged at once. */
	fd = client("127.0.0.2");
	CHECK(decide(g, cfg) == 0, 7);
	CHECK(!connected(fd, 300), 7);
	close(fd);
	now = clock_mono_ns();
	CHECK(gate_log_due(g, now) == -1, 8);
	/* The next refusal within the interval waits for it: no line, a timeout to wake up. */
	fd = client("127.0.0.3");
	CHECK(decide(g, cfg) == 0, 9);
	CHECK(!connected(fd, 300), 9);
	close(fd);
	CHECK(gate_log_due(g, now) > 0, 10);
	CHECK(gate_log_due(g, now + GATE_LOG_INTERVAL_NS - NSEC_PER_MSEC) == 1, 10);
	CHECK(gate_log_due(g, now + GATE_LOG_INTERVAL_NS) == -1, 10);
	CHECK(gate_log_due(g, now + GATE_LOG_INTERVAL_NS) == -1, 10); /* logged once */

	/* A reload: 127.0.0.2 is allowed now, 127.0.0.3 still denied. */
	fd = client("127.0.0.2");
	CHECK(decide(g, reloaded) == 0, 11);
	CHECK(connected(fd, 10000), 11);
	close(fd);
	fd = client("127.0.0.3");
	CHECK(decide(g, reloaded) == 0, 12);
	CHECK(!connected(fd, 300), 12);
	close(fd);

	gate_stats(g, &st);
	CHECK(st.accepted == 2 && st.denied_list == 3 && st.denied_rate == 0, 13);
	js = gate_status_json(g, reloaded);
	CHECK(js, 14);
	CHECK(json_integer_value(json_object_get(js, "queue")) == 4244 &&
	      json_integer_value(json_object_get(js, "accepted")) == 2 &&
	      json_integer_value(json_object_get(js, "denied_list")) == 3 &&
	      json_integer_value(json_object_get(js, "max_sources")) == 65536 &&
	      strcmp(json_string_value(json_object_get(js, "rate")), "0/s") == 0 &&
	      json_array_size(json_object_get(js, "deny")) == 1 &&
	      strcmp(json_string_value(json_array_get(json_object_get(js, "deny"), 0)),
		     "127.0.0.3/32") == 0, 14);
	json_decref(js);
	/* Closing logs the refusal not yet logged. */
	gate_close(g);
	config_unref(cfg);
	config_unref(reloaded);
	close(lfd);

	n = pread(logfd, log, sizeof(log) - 1, 0);
	CHECK(n > 0, 15);
	log[n] = '\0';
	fputs(log, stdout); /* shown by cmocka's output if a check below fails */
	CHECK(count_lines(log, "event=gate queue=4244 rate=\"0/s\" burst=0 deny=\"127.0.0.2/31\"") == 1, 16);
	CHECK(count_lines(log, "event=gate_reload queue=4244 rate=\"0/s\" burst=0 deny=\"127.0.0.3/32\"") == 1, 16);
	CHECK(count_lines(log, "event=gate_denied") == 3, 17);
	CHECK(count_lines(log, "denied_list=1 denied_rate=0 queue_overruns=0 latest_source=\"127.0.0.2\" latest_reason=\"deny_list\"") == 1, 17);
	CHECK(count_lines(log, "denied_list=1 denied_rate=0 queue_overruns=0 latest_source=\"127.0.0.3\" latest_reason=\"deny_list\"") == 2, 17);
	_exit(0);
}

static void test_live_gate_reader(void **state)
{
	char logpath[] = "/tmp/test_gate_log_XXXXXX";
	int logfd, status;
	pid_t pid;

	if (geteuid() != 0)
		skip();
	logfd = mkstemp(logpath);
	assert_true(logfd >= 0);
	close(logfd);
	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		run_child(logpath);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	unlink(logpath);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77) {
		print_message("skip: no private netns or legacy iptables here\n");
		skip();
	}
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_live_gate_reader),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
