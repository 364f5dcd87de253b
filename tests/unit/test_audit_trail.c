/*
 * Unit tests for userspace/audit/audit_trail, the writer: a statement's gate is woken only
 * once its records are durable; each fsync mode syncs as it says; a full queue pushes back
 * (-EAGAIN, then a wake) and never drops; checkpoints by count and by time; rotation by
 * size and by age continuing the chain; a restart continues the chain and signs a crashed
 * run's tail; kill -9 while writing leaves torn bytes that the next start marks; a full
 * file system: statements fail, the gap is recorded, writing resumes by itself; the syslog mirror (RFC 5424, loopback UDP and a Unix socket); the
 * capacity warning; file modes; and what open() refuses.
 *
 * The file-system tests mount a small tmpfs of their own in a private mount namespace
 * (root only; skipped otherwise) and unmount it whatever happens.
 */
#include "audit/audit_record.h"
#include "audit/audit_sign.h"
#include "audit/audit_trail.h"
#include "audit/audit_verify.h"
#include "base/clock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

static char dir[64];
static char key_path[128];
static char trail_path[200];
static EVP_PKEY *pubkey;

/* ---- helpers ------------------------------------------------------------------------- */

static struct audit_trail_config base_config(void)
{
	struct audit_trail_config c = {
		.path = trail_path,
		.signing_key = key_path,
		.fsync = CONFIG_AUDIT_FSYNC_BATCH,
		.checkpoint_records = 1000,
		.checkpoint_interval_ns = 3600 * NSEC_PER_SEC,
		.retry_interval_ns = 50 * NSEC_PER_MSEC,
		.version = "test",
	};

	return c;
}

static struct audit_trail *open_trail(const struct audit_trail_config *c)
{
	struct audit_trail *t;
	char err[512];

	if (audit_trail_open(c, &t, err, sizeof(err)))
		fail_msg("audit_trail_open: %s", err);
	return t;
}

static struct audit_rec *statement(unsigned i, size_t text_len)
{
	struct audit_rec *r = audit_rec_new(AUDIT_EV_STATEMENT, clock_wall_ns());
	char *text = malloc(text_len + 1);

	memset(text, 'x', text_len);
	text[text_len] = '\0';
	audit_rec_u64(r, "request", i);
	audit_rec_str(r, "text", text);
	free(text);
	return r;
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t)n;
	return buf;
}

static unsigned count_of(const char *text, const char *needle)
{
	unsigned n = 0;

	for (const char *p = text; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Verify every trail file in d (the current one last). */
static void verify_dir(const char *d, struct audit_verify_result *res)
{
	struct audit_verify_file files[64];
	char *names[64], *bufs[64];
	EVP_PKEY *keys[1] = {pubkey};
	struct audit_verify_opts o = {.keys = keys, .nkeys = 1};
	unsigned n = 0;
	struct dirent *e;
	DIR *dd = opendir(d);

	assert_non_null(dd);
	while ((e = readdir(dd)))
		if (strncmp(e->d_name, "audit.jsonl", 11) == 0 && n < 64)
			names[n++] = strdup(e->d_name);
	closedir(dd);
	qsort(names, n, sizeof(names[0]), name_cmp);
	for (unsigned i = 0; i < n; i++) {
		char path[512];

		snprintf(path, sizeof(path), "%s/%s", d, names[i]);
		bufs[i] = read_all(path, &files[i].len);
		files[i].data = bufs[i];
		files[i].name = names[i];
	}
	audit_verify(files, n, &o, res);
	for (unsigned i = 0; i < n; i++) {
		free(bufs[i]);
		free(names[i]);
	}
}

static void assert_intact(const char *d)
{
	struct audit_verify_result res;

	verify_dir(d, &res);
	if (res.verdict != AUDIT_VERIFY_INTACT)
		fail_msg("trail in %s: %s", d, res.message);
}

/* A wake that a test can wait for. */
struct waker {
	int efd;
};

static void waker_wake(void *arg)
{
	uint64_t one = 1;

	assert_int_equal(write(((struct waker *)arg)->efd, &one, sizeof(one)), sizeof(one));
}

static bool waker_wait(struct waker *w, int ms)
{
	struct pollfd p = {.fd = w->efd, .events = POLLIN};
	uint64_t v;

	if (poll(&p, 1, ms) != 1)
		return false;
	assert_int_equal(read(w->efd, &v, sizeof(v)), sizeof(v));
	return true;
}

/* Submit through a gate and wait: the outcome audit_gate_poll gives. */
static int gated(struct audit_gate *g, struct waker *w, struct audit_rec *r)
{
	struct audit_rec *recs[1] = {r};
	int rc;

	for (int tries = 0; tries < 1000; tries++) {
		rc = audit_gate_submit(g, recs, 1);
		if (rc == -EAGAIN) {
			assert_true(waker_wait(w, 5000));
			continue;
		}
		if (rc)
			return rc;
		for (;;) {
			rc = audit_gate_poll(g);
			if (rc)
				return rc;
			assert_true(waker_wait(w, 5000));
		}
	}
	fail_msg("the queue never made room");
	return -1;
}

/* ---- fixtures ------------------------------------------------------------------------ */

static int setup(void **state)
{
	char err[512], pub[160];

	snprintf(dir, sizeof(dir), "/tmp/pgw-audit-trail-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(key_path, sizeof(key_path), "%s/sign.key", dir);
	if (audit_keygen(key_path, err, sizeof(err)))
		return -1;
	snprintf(pub, sizeof(pub), "%s.pub", key_path);
	if (audit_key_load_public(pub, &pubkey, err, sizeof(err)))
		return -1;
	snprintf(trail_path, sizeof(trail_path), "%s/t/audit.jsonl", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	EVP_PKEY_free(pubkey);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Each test gets an empty trail directory. */
static char tdir[96]; /* the trail's directory */

static int fresh(void **state)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf %s/t && mkdir %s/t", dir, dir);
	snprintf(trail_path, sizeof(trail_path), "%s/t/audit.jsonl", dir);
	snprintf(tdir, sizeof(tdir), "%s/t", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- the tests ---------------------------------------------------------------------- */

static void test_gate_woken_once_durable(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t = open_trail(&c);
	struct waker w = {.efd = eventfd(0, EFD_CLOEXEC)};
	struct audit_gate *g = audit_gate_new(t, waker_wake, &w);
	struct audit_trail_stats st;
	struct audit_rec *recs[3] = {statement(1, 10), statement(2, 10), statement(3, 10)};
	char *text;

	assert_int_equal(audit_gate_poll(g), 1); /* nothing submitted: nothing to wait for */
	assert_int_equal(audit_gate_submit(g, recs, 3), 0);
	assert_true(waker_wait(&w, 5000));
	assert_int_equal(audit_gate_poll(g), 1);
	/* Reported written means in the file and synced. */
	audit_trail_stats(t, &st);
	assert_true(st.syncs >= 2); /* the start, and this batch */
	text = read_all(trail_path, NULL);
	assert_int_equal(count_of(text, "\"event\":\"statement\""), 3);
	free(text);
	audit_gate_release(g);
	audit_trail_close(t, "test");
	close(w.efd);
	assert_intact(tdir);
}

static void test_fsync_modes(void **state)
{
	static const enum config_audit_fsync modes[] = {
		CONFIG_AUDIT_FSYNC_ALWAYS, CONFIG_AUDIT_FSYNC_BATCH, CONFIG_AUDIT_FSYNC_NONE,
		CONFIG_AUDIT_FSYNC_WRITE};
	uint64_t syncs[4];

	for (int m = 0; m < 4; m++) {
		struct audit_trail_config c = base_config();
		struct audit_trail *t;
		struct audit_trail_stats st;
		struct waker w = {.efd = eventfd(0, EFD_CLOEXEC)};
		struct audit_gate *g;

		assert_int_equal(fresh(NULL), 0);
		c.fsync = modes[m];
		t = open_trail(&c);
		g = audit_gate_new(t, waker_wake, &w);
		for (unsigned i = 0; i < 50; i++)
			assert_int_equal(gated(g, &w, statement(i, 50)), 1);
		audit_trail_stats(t, &st);
		syncs[m] = st.syncs;
		audit_gate_release(g);
		audit_trail_close(t, "test");
		close(w.efd);
		snprintf(tdir, sizeof(tdir), "%s/t", dir);
		assert_intact(tdir);
	}
	/* always: one sync per record (50 statements, after the start's one). */
	assert_true(syncs[0] >= 51);
	/* batch: one per group; these were one at a time, so also about one each. */
	assert_true(syncs[1] >= 51);
	/* none: only the start (file_start, then daemon_start and its checkpoint) is synced;
	 * the statements add no sync at all. */
	assert_int_equal(syncs[2], 2);
	/* write: groups are synced behind the writer (several groups in one sync when the
	 * syncer falls behind), after their statements were let go. */
	assert_true(syncs[3] >= 2); /* the start, and at least one for the statements */
}

/* How long until the file holds needle (ms), or -1 after limit_ms. */
static int ms_until_written(const char *needle, int limit_ms)
{
	for (int ms = 0; ms <= limit_ms; ms++) {
		char *text = read_all(trail_path, NULL);
		bool there = text && strstr(text, needle);

		free(text);
		if (there)
			return ms;
		usleep(1000);
	}
	return -1;
}

/* A record nobody waits for does not wake a writer that has just written (it lingers for
 * the next statement), yet it is never left behind: written within the linger right after
 * a statement, and at once by an idle writer. */
static void test_unwaited_records_written_soon(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	struct waker w = {.efd = eventfd(0, EFD_CLOEXEC)};
	struct audit_gate *g;
	struct audit_rec *done;

	c.fsync = CONFIG_AUDIT_FSYNC_NONE;
	t = open_trail(&c);
	g = audit_gate_new(t, waker_wake, &w);
	assert_int_equal(gated(g, &w, statement(1, 20)), 1);
	done = audit_rec_new(AUDIT_EV_STATEMENT_DONE, clock_wall_ns());
	audit_rec_u64(done, "request", 1);
	audit_trail_submit(t, done); /* the writer is lingering now */
	assert_true(ms_until_written("\"event\":\"statement_done\"", 2000) >= 0);
	usleep(50 * 1000); /* the linger is over: the writer sleeps until woken */
	done = audit_rec_new(AUDIT_EV_SESSION_END, clock_wall_ns());
	audit_rec_str(done, "reason", "test");
	audit_trail_submit(t, done);
	assert_true(ms_until_written("\"event\":\"session_end\"", 2000) >= 0);
	audit_gate_release(g);
	audit_trail_close(t, "test");
	close(w.efd);
	assert_intact(tdir);
}

static void test_full_queue_pushes_back_never_drops(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	struct waker w = {.efd = eventfd(0, EFD_CLOEXEC)};
	struct audit_gate *g;
	unsigned again = 0, n = 400;
	char *text;

	c.fsync = CONFIG_AUDIT_FSYNC_ALWAYS; /* a slow writer: the queue fills */
	c.queue_size = 64 * 1024;
	t = open_trail(&c);
	g = audit_gate_new(t, waker_wake, &w);
	for (unsigned i = 0; i < n; i++) {
		struct audit_rec *r = statement(i, 8000);
		struct audit_rec *recs[1] = {r};
		int rc;

		while ((rc = audit_gate_submit(g, recs, 1)) == -EAGAIN) {
			again++;
			assert_true(waker_wait(&w, 5000)); /* woken when there is room */
		}
		assert_int_equal(rc, 0);
	}
	while (audit_gate_poll(g) == 0)
		assert_true(waker_wait(&w, 5000));
	assert_int_equal(audit_gate_poll(g), 1);
	audit_gate_release(g);
	audit_trail_close(t, "test");
	close(w.efd);
	assert_true(again > 0);
	text = read_all(trail_path, NULL);
	assert_int_equal(count_of(text, "\"event\":\"statement\""), n);
	free(text);
	snprintf(tdir, sizeof(tdir), "%s/t", dir);
	assert_intact(tdir);
}

static void test_checkpoints_by_count_and_time(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	char *text;

	c.checkpoint_records = 7;
	c.checkpoint_interval_ns = 100 * NSEC_PER_MSEC;
	t = open_trail(&c);
	for (unsigned i = 0; i < 20; i++)
		audit_trail_submit(t, statement(i, 10));
	usleep(200 * 1000);
	/* While running: 20 records → two by count (after 7 and 14); then one by time for
	 * the 6 left. */
	text = read_all(trail_path, NULL);
	assert_int_equal(count_of(text, "\"reason\":\"records\""), 2);
	assert_int_equal(count_of(text, "\"reason\":\"interval\""), 1);
	free(text);
	audit_trail_submit(t, statement(99, 10));
	usleep(300 * 1000);
	text = read_all(trail_path, NULL);
	assert_int_equal(count_of(text, "\"reason\":\"interval\""), 2);
	/* Nothing new: no empty checkpoints. */
	usleep(300 * 1000);
	free(text);
	text = read_all(trail_path, NULL);
	assert_int_equal(count_of(text, "\"reason\":\"interval\""), 2);
	free(text);
	audit_trail_close(t, "test");
	snprintf(tdir, sizeof(tdir), "%s/t", dir);
	assert_intact(tdir);
}

static unsigned count_files(const char *d)
{
	unsigned n = 0;
	struct dirent *e;
	DIR *dd = opendir(d);

	while ((e = readdir(dd)))
		n += strncmp(e->d_name, "audit.jsonl", 11) == 0;
	closedir(dd);
	return n;
}

static void test_rotation_by_size_and_age(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;

	snprintf(tdir, sizeof(tdir), "%s/t", dir);
	c.rotate_size = 8192;
	t = open_trail(&c);
	for (unsigned i = 0; i < 30; i++) {
		audit_trail_submit(t, statement(i, 1000));
		usleep(1000);
	}
	audit_trail_close(t, "test");
	assert_true(count_files(tdir) >= 3);
	assert_intact(tdir);

	assert_int_equal(fresh(NULL), 0);
	c = base_config();
	c.rotate_interval_ns = 150 * NSEC_PER_MSEC;
	t = open_trail(&c);
	for (unsigned i = 0; i < 5; i++) {
		audit_trail_submit(t, statement(i, 10));
		usleep(100 * 1000);
	}
	audit_trail_close(t, "test");
	assert_true(count_files(tdir) >= 3);
	assert_intact(tdir);
}

/* A restart after a clean stop, and after a crash between writes. */
static void test_restart_continues_the_chain(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	pid_t pid;
	int status;
	char *text;

	snprintf(tdir, sizeof(tdir), "%s/t", dir);
	t = open_trail(&c);
	audit_trail_submit(t, statement(1, 10));
	audit_trail_close(t, "first run");
	/* A run that dies without its stop (its records were written). */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct waker w = {.efd = eventfd(0, EFD_CLOEXEC)};
		struct audit_trail *ct = open_trail(&c);
		struct audit_gate *g = audit_gate_new(ct, waker_wake, &w);

		for (unsigned i = 0; i < 5; i++)
			if (gated(g, &w, statement(i, 10)) != 1)
				_exit(1);
		_exit(0); /* no close: no daemon_stop, no stop checkpoint */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	t = open_trail(&c);
	audit_trail_close(t, "third run");
	text = read_all(trail_path, NULL);
	assert_int_equal(count_of(text, "\"previous_run\":\"clean\""), 1);
	assert_int_equal(count_of(text, "\"previous_run\":\"crashed\""), 1);
	assert_int_equal(count_of(text, "\"reason\":\"recovery\""), 1);
	assert_non_null(strstr(text, "\"recovered_from_seq\":"));
	assert_int_equal(count_of(text, "\"event\":\"daemon_start\""), 3);
	free(text);
	assert_intact(tdir);
}

/* Bytes left half-written are kept, marked and accounted for: a simulated crash mid-line. */
static void test_torn_tail_marked_at_start(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	const char torn[] = "{\"event\":\"statement\",\"prev\":\"00";
	size_t before, after;
	char *text;
	int fd;

	snprintf(tdir, sizeof(tdir), "%s/t", dir);
	t = open_trail(&c);
	audit_trail_submit(t, statement(1, 10));
	audit_trail_close(t, "test");
	text = read_all(trail_path, &before);
	free(text);
	fd = open(trail_path, O_WRONLY | O_APPEND);
	assert_int_equal(write(fd, torn, strlen(torn)), (ssize_t)strlen(torn));
	close(fd);
	t = open_trail(&c);
	audit_trail_close(t, "test");
	text = read_all(trail_path, &after);
	/* The torn bytes are still where they were, ended by a newline, and described. */
	assert_memory_equal(text + before, torn, strlen(torn));
	assert_int_equal(text[before + strlen(torn)], '\n');
	assert_int_equal(count_of(text, "\"event\":\"torn_record\""), 1);
	char want[64];

	snprintf(want, sizeof(want), "\"length\":%zu,\"offset\":%zu", strlen(torn), before);
	assert_non_null(strstr(text, want));
	free(text);
	assert_intact(tdir);
}

/* The writer thread of process pid (the task that is not the main one). */
static pid_t writer_tid(pid_t pid)
{
	char path[64];
	struct dirent *e;
	pid_t tid = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && atoi(e->d_name) != pid)
			tid = atoi(e->d_name);
	closedir(d);
	return tid;
}

/*
 * Stop the writer thread at the entry of its next large write(2) (ptrace), let it go,
 * and SIGKILL the process delay_us later: the kernel copies a large write page by page
 * and stops at a fatal signal, so the kill lands in the middle of the copy. 0, or -1 when
 * the thread could not be caught (it is then killed anyway).
 */
static int kill_during_write(pid_t pid, unsigned delay_us)
{
	pid_t tid = writer_tid(pid);
	struct __ptrace_syscall_info info;
	int status, rc = -1;

	if (!tid || ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACESYSGOOD))
		goto out;
	if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) || waitpid(tid, &status, __WALL) != tid)
		goto out;
	for (int stops = 0; stops < 100000; stops++) {
		if (ptrace(PTRACE_SYSCALL, tid, 0, 0) || waitpid(tid, &status, __WALL) != tid ||
		    !WIFSTOPPED(status))
			goto out;
		if (WSTOPSIG(status) != (SIGTRAP | 0x80))
			continue;
		if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, sizeof(info), &info) <= 0)
			goto out;
		if (info.op == PTRACE_SYSCALL_INFO_ENTRY && info.entry.nr == SYS_write &&
		    info.entry.args[2] >= (1u << 20)) {
			uint64_t until;

			ptrace(PTRACE_DETACH, tid, 0, 0);
			until = clock_mono_ns() + (uint64_t)delay_us * 1000;
			while (clock_mono_ns() < until)
				;
			rc = 0;
			break;
		}
	}
out:
	kill(pid, SIGKILL);
	return rc;
}

/* kill -9 in the middle of a large write: the torn record is kept and marked at the next
 * start, and the trail verifies; a kill between writes leaves a trail that verifies too. */
static void test_kill9_while_writing(void **state)
{
	static const unsigned delays_us[] = {0, 50, 150, 300, 600, 1000};
	struct audit_trail_config c = base_config();
	int torn_seen = 0, attempts;

	c.fsync = CONFIG_AUDIT_FSYNC_NONE; /* big writes back to back */
	for (attempts = 0; attempts < 24 && torn_seen < 2; attempts++) {
		struct audit_trail *t;
		size_t len;
		char *text, ready;
		pid_t pid;
		int status, p[2];
		bool torn;

		assert_int_equal(fresh(NULL), 0);
		assert_int_equal(pipe(p), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct audit_trail *ct = open_trail(&c);

			close(p[0]);
			if (write(p[1], "r", 1) != 1)
				_exit(1);
			for (unsigned i = 0;; i++)
				audit_trail_submit(ct, statement(i, 4u << 20));
		}
		close(p[1]);
		assert_int_equal(read(p[0], &ready, 1), 1);
		close(p[0]);
		(void)kill_during_write(pid, delays_us[attempts % 6]);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		text = read_all(trail_path, &len);
		assert_non_null(text);
		torn = len && text[len - 1] != '\n';
		torn_seen += torn;
		free(text);
		t = open_trail(&c);
		audit_trail_close(t, "after kill -9");
		text = read_all(trail_path, &len);
		/* A tear is kept and marked, never cut away; no tear, no marker. */
		assert_int_equal(strstr(text, "\"event\":\"torn_record\"") != NULL, torn);
		free(text);
		assert_intact(tdir);
	}
	print_message("kill -9: %d of %d kills tore a record\n", torn_seen, attempts);
	if (torn_seen == 0) {
		/* The race was lost every time (a fast disk finishes the write first): leave the
		 * state a kill mid-write leaves, the last record cut short, and check its repair. */
		struct audit_trail *t;
		size_t len;
		char *text = read_all(trail_path, &len), *last;
		int fd;

		assert_true(len > 2 && text[len - 1] == '\n');
		text[len - 1] = '\0';
		last = strrchr(text, '\n');
		assert_non_null(last);
		fd = open(trail_path, O_WRONLY);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, (off_t)(last + 1 - text) + (off_t)(len - (size_t)(last + 1 - text)) / 2), 0);
		close(fd);
		free(text);
		t = open_trail(&c);
		audit_trail_close(t, "after a cut record");
		text = read_all(trail_path, &len);
		assert_non_null(strstr(text, "\"event\":\"torn_record\""));
		free(text);
		assert_intact(tdir);
	}
}

static void test_mirror_to_syslog(void **state)
{
	struct audit_trail_config c = base_config();
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	socklen_t slen = sizeof(sin);
	int udp = socket(AF_INET, SOCK_DGRAM, 0), ux = socket(AF_UNIX, SOCK_DGRAM, 0);
	char addr[64], msg[70000], *text, *line;
	struct audit_trail *t;
	unsigned got_udp = 0, got_unix = 0;
	ssize_t n;

	assert_int_equal(bind(udp, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(udp, (struct sockaddr *)&sin, &slen), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sin.sin_port));
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/t/log", dir);
	assert_int_equal(bind(ux, (struct sockaddr *)&sun, sizeof(sun)), 0);
	c.syslog_address = addr;
	c.syslog_socket = sun.sun_path;
	t = open_trail(&c);
	audit_trail_submit(t, statement(1, 10));
	audit_trail_close(t, "test");
	text = read_all(trail_path, NULL);
	/* Every record of the file arrives on both, in order, as RFC 5424. */
	line = text;
	for (;;) {
		char *nl = strchr(line, '\n'), *body;

		if (!nl)
			break;
		*nl = '\0';
		n = recv(udp, msg, sizeof(msg) - 1, MSG_DONTWAIT);
		assert_true(n > 0);
		msg[n] = '\0';
		/* <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG */
		assert_true(msg[0] == '<' && strncmp(strchr(msg, '>'), ">1 20", 5) == 0);
		assert_non_null(strstr(msg, " pgwardend "));
		assert_true(atoi(msg + 1) / 8 == 13); /* facility: log audit */
		body = strstr(msg, " - {");
		assert_non_null(body);
		assert_string_equal(body + 3, line);
		got_udp++;
		n = recv(ux, msg, sizeof(msg) - 1, MSG_DONTWAIT);
		assert_true(n > 0);
		msg[n] = '\0';
		assert_string_equal(strstr(msg, " - {") + 3, line);
		got_unix++;
		line = nl + 1;
	}
	assert_true(got_udp >= 6);
	assert_int_equal(got_udp, got_unix);
	free(text);
	close(udp);
	close(ux);
}

static void test_capacity_warning(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	char *text;

	c.disk_warn_percent = 1; /* any file system in use is over 1% */
	t = open_trail(&c);
	usleep(100 * 1000);
	audit_trail_close(t, "test");
	text = read_all(trail_path, NULL);
	assert_int_equal(count_of(text, "\"event\":\"capacity\""), 1);
	assert_non_null(strstr(text, "\"threshold_percent\":1"));
	free(text);
	snprintf(tdir, sizeof(tdir), "%s/t", dir);
	assert_intact(tdir);
}

static void test_file_modes(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	struct group *gr = getgrnam("nogroup");
	struct stat st;

	t = open_trail(&c);
	audit_trail_close(t, "test");
	assert_int_equal(stat(trail_path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	if (!gr || geteuid() != 0)
		return;
	/* With a group: 0640 and that group, for the file it continues too. */
	c.group = "nogroup";
	t = open_trail(&c);
	audit_trail_close(t, "test");
	assert_int_equal(stat(trail_path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_gid, gr->gr_gid);
	c.group = "no-such-group-here";
	{
		char err[512];

		assert_int_equal(audit_trail_open(&c, &t, err, sizeof(err)), -ENOENT);
		assert_string_equal(err, "audit.group: no group named no-such-group-here");
	}
}

static void test_open_refusals(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	char err[512], loose[160];
	int fd;

	/* A file that is not a trail is never written into. */
	fd = open(trail_path, O_WRONLY | O_CREAT, 0600);
	assert_int_equal(write(fd, "hello\n", 6), 6);
	close(fd);
	assert_int_equal(audit_trail_open(&c, &t, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "holds no pgwarden audit record"));
	unlink(trail_path);
	/* A signing key others may read. */
	snprintf(loose, sizeof(loose), "%s/t/loose.key", dir);
	assert_int_equal(audit_keygen(loose, err, sizeof(err)), 0);
	chmod(loose, 0644);
	c.signing_key = loose;
	assert_int_equal(audit_trail_open(&c, &t, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "audit.signing_key: "));
	assert_non_null(strstr(err, "chmod 600"));
	/* A directory that does not exist. */
	c = base_config();
	c.path = "/nonexistent-pgwarden-dir/audit.jsonl";
	assert_true(audit_trail_open(&c, &t, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent-pgwarden-dir"));
	/* An unreachable syslog socket is a configuration error at start. */
	c = base_config();
	c.syslog_socket = "/nonexistent-pgwarden-dir/log";
	assert_true(audit_trail_open(&c, &t, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "audit.syslog_socket"));
	/* Nothing was left behind by the refusals. */
	assert_int_equal(access(trail_path, F_OK), -1);
}

/* The current file is gone (a crash right after a rotation's rename): the chain goes on
 * from the newest rotated file in a new current file. */
static void test_missing_current_file_continues_from_rotated(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	char rotated[256];
	char *text;

	snprintf(tdir, sizeof(tdir), "%s/t", dir);
	t = open_trail(&c);
	audit_trail_submit(t, statement(1, 10));
	audit_trail_close(t, "test");
	snprintf(rotated, sizeof(rotated), "%s.20260101T000000.000000Z", trail_path);
	assert_int_equal(rename(trail_path, rotated), 0);
	t = open_trail(&c);
	audit_trail_close(t, "test");
	text = read_all(trail_path, NULL);
	assert_non_null(strstr(text, "\"previous_file\":\"audit.jsonl.20260101T000000.000000Z\""));
	assert_non_null(strstr(text, "\"reason\":\"continued\""));
	free(text);
	assert_intact(tdir);
}

/* ---- a full, then a read-only, file system ----------------------------------------- */

static char mnt[128];
static bool mounted;

static int mount_small_tmpfs(void **state)
{
	if (geteuid() != 0)
		return 0;
	snprintf(mnt, sizeof(mnt), "%s/tmpfs", dir);
	if (mkdir(mnt, 0700) && errno != EEXIST)
		return -1;
	/* A private mount namespace: the mount is ours alone and dies with the process. */
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		return -1;
	if (mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=256k,mode=0700"))
		return -1;
	mounted = true;
	snprintf(trail_path, sizeof(trail_path), "%s/audit.jsonl", mnt);
	return 0;
}

static int unmount_small_tmpfs(void **state)
{
	if (mounted && umount2(mnt, MNT_DETACH))
		return -1;
	mounted = false;
	return 0;
}

/* Fill the file system up; returns the filler's path. */
static void fill_up(char *filler, size_t n)
{
	char block[4096];
	int fd;

	snprintf(filler, n, "%s/filler", mnt);
	memset(block, 'f', sizeof(block));
	fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	while (write(fd, block, sizeof(block)) > 0)
		;
	/* The last partial block too. */
	while (write(fd, block, 1) > 0)
		;
	assert_int_equal(errno, ENOSPC);
	close(fd);
}

static bool wait_until_writing(struct audit_trail *t, int ms)
{
	struct audit_trail_stats st;

	for (int i = 0; i < ms / 10; i++) {
		audit_trail_stats(t, &st);
		if (!st.failing)
			return true;
		usleep(10 * 1000);
	}
	return false;
}

static void run_failure_case(enum config_audit_on_failure on_failure)
{
	struct audit_trail_config c = base_config();
	struct waker w = {.efd = eventfd(0, EFD_CLOEXEC)};
	struct audit_trail *t;
	struct audit_gate *g;
	struct audit_rec *r;
	char filler[256], *text;
	int rc;

	c.on_failure = on_failure;
	/* Long enough that what follows the failure happens before the first retry (a small
	 * record may fit in the file's last page even on a full tmpfs). */
	c.retry_interval_ns = 500 * NSEC_PER_MSEC;
	t = open_trail(&c);
	g = audit_gate_new(t, waker_wake, &w);
	assert_int_equal(gated(g, &w, statement(1, 100)), 1);
	fill_up(filler, sizeof(filler));
	/* A statement's record cannot be written (larger than a page: it cannot fit in
	 * what is left of the file's last one): its gate says so. */
	rc = gated(g, &w, statement(2, 8000));
	assert_int_equal(rc, -ENOSPC);
	assert_true(audit_trail_failing(t));
	/* Further statements fail at once, without queueing. */
	r = statement(3, 10);
	assert_int_equal(audit_gate_submit(g, &r, 1), -ENOSPC);
	/* Other records are counted as lost. */
	audit_trail_submit(t, audit_rec_new(AUDIT_EV_SESSION_END, clock_wall_ns()));
	/* Room again: the writer notices by itself. */
	assert_int_equal(unlink(filler), 0);
	assert_true(wait_until_writing(t, 5000));
	assert_int_equal(gated(g, &w, statement(4, 100)), 1);
	audit_gate_release(g);
	audit_trail_close(t, "test");
	close(w.efd);
	text = read_all(trail_path, NULL);
	assert_int_equal(count_of(text, "\"event\":\"gap\""), 1);
	assert_non_null(strstr(text, "\"error\":\"No space left on device\""));
	if (on_failure == CONFIG_AUDIT_REJECT) {
		assert_non_null(strstr(text, "\"statements_refused\":2"));
		assert_non_null(strstr(text, "\"statements_unaudited\":0"));
	} else {
		assert_non_null(strstr(text, "\"statements_refused\":0"));
		assert_non_null(strstr(text, "\"statements_unaudited\":2"));
	}
	assert_non_null(strstr(text, "\"records_lost\":{\"session_end\":1,\"statement\":2}"));
	/* Statements 1 and 4 are in the trail, 2 and 3 are not. */
	assert_int_equal(count_of(text, "\"event\":\"statement\""), 2);
	free(text);
	assert_intact(mnt);
	unlink(trail_path);
}

static void test_full_disk_then_recovery(void **state)
{
	if (!mounted)
		skip();
	run_failure_case(CONFIG_AUDIT_REJECT);
	run_failure_case(CONFIG_AUDIT_CONTINUE);
}

/* The start itself cannot be written: open fails, nothing runs (fail closed). */
static void test_full_disk_at_start(void **state)
{
	struct audit_trail_config c = base_config();
	struct audit_trail *t;
	char filler[256], err[512];

	if (!mounted)
		skip();
	fill_up(filler, sizeof(filler));
	assert_true(audit_trail_open(&c, &t, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "No space left on device"));
	unlink(filler);
	unlink(trail_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_gate_woken_once_durable, fresh),
		cmocka_unit_test_setup(test_fsync_modes, fresh),
		cmocka_unit_test_setup(test_unwaited_records_written_soon, fresh),
		cmocka_unit_test_setup(test_full_queue_pushes_back_never_drops, fresh),
		cmocka_unit_test_setup(test_checkpoints_by_count_and_time, fresh),
		cmocka_unit_test_setup(test_rotation_by_size_and_age, fresh),
		cmocka_unit_test_setup(test_restart_continues_the_chain, fresh),
		cmocka_unit_test_setup(test_torn_tail_marked_at_start, fresh),
		cmocka_unit_test_setup(test_kill9_while_writing, fresh),
		cmocka_unit_test_setup(test_mirror_to_syslog, fresh),
		cmocka_unit_test_setup(test_capacity_warning, fresh),
		cmocka_unit_test_setup(test_file_modes, fresh),
		cmocka_unit_test_setup(test_open_refusals, fresh),
		cmocka_unit_test_setup(test_missing_current_file_continues_from_rotated, fresh),
		cmocka_unit_test_setup_teardown(test_full_disk_then_recovery, mount_small_tmpfs,
						unmount_small_tmpfs),
		cmocka_unit_test_setup_teardown(test_full_disk_at_start, mount_small_tmpfs,
						unmount_small_tmpfs),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
