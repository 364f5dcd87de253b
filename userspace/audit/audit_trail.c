/*
 * audit_trail: the writer thread and its files (see audit_trail.h for the guarantees).
 *
 * The writer keeps two copies of the chain's state: `work`, advanced as records are
 * encoded into the output buffer, and `committed`, what is durably in the file. A
 * successful write (and sync) makes work the committed state; a failed one cuts the file
 * back to committed.file_size and makes committed the work state again, so the chain in
 * memory never runs ahead of the chain on disk.
 */
#include "audit/audit_trail.h"
#include "audit/audit_sign.h"
#include "base/addr.h"
#include "base/clock.h"
#include "base/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_RETRY_NS (1 * NSEC_PER_SEC)
/* After a round that wrote records the writer lingers this long, and records nobody waits
 * for do not wake it meanwhile: they go with the next statement's record, or when the
 * linger ends. A completion per statement then costs no wake-up of its own. */
#define LINGER_NS (2 * NSEC_PER_MSEC)
#define CAPACITY_CHECK_NS (10 * NSEC_PER_SEC)
#define CAPACITY_HYSTERESIS 5       /* percent below the threshold before warning again */
#define OUT_COMMIT_BYTES (1u << 20) /* write a long batch in pieces of about this size */
#define ROTATE_RETRY_NS (60 * NSEC_PER_SEC)
#define TAIL_SCAN_MAX (64u << 20)   /* how far back a start looks for the last checkpoint */
#define SYSLOG_MAX 65000            /* the largest UDP datagram we send */
#define SYSLOG_FACILITY 13          /* RFC 5424 "log audit" */

struct pending {
	struct audit_gate *gate; /* NULL: nobody waits */
	enum audit_event ev;
	size_t off, len;         /* the line in t->out (without its newline) */
	bool counted;            /* a queued record (not one the writer made itself) */
};

struct chain_state {
	uint64_t seq;                 /* of the last record */
	uint8_t prev[AUDIT_HASH_LEN]; /* hash of the last record */
	uint32_t since_checkpoint;    /* records since the last checkpoint */
	uint64_t cp_first_seq;        /* first record after the last checkpoint */
	uint64_t cp_due_mono;         /* the interval checkpoint's deadline; 0: none due */
	uint64_t file_size;
};

struct gap_counts {
	uint64_t lost[AUDIT_EV_COUNT];
	uint64_t refused, unaudited;
};

struct audit_gate {
	struct audit_trail *trail;
	void (*wake)(void *arg); /* NULL once released */
	void *arg;
	unsigned refs;           /* the session's, plus one per queued record */
	unsigned pending;        /* gated records neither written nor failed */
	int err;                 /* first failure among them, reported once */
	bool space_wait;         /* on trail->space_waiters */
	struct audit_gate *next_space;
};

struct audit_trail {
	/* Settings, owned copies. */
	char *path, *dir, *base;
	enum config_audit_fsync fsync;
	enum config_audit_on_failure on_failure;
	uint64_t batch_window_ns, rotate_size, rotate_interval_ns, checkpoint_interval_ns;
	uint64_t retry_ns;
	size_t queue_size;
	uint32_t checkpoint_records, disk_warn;
	mode_t mode;
	gid_t gid; /* (gid_t)-1: keep the owner's */
	EVP_PKEY *key;
	uint8_t pub[AUDIT_PUBKEY_LEN];
	char key_id[AUDIT_KEY_ID_HEXLEN + 1];
	char host[256];

	/* Shared: guarded by lock. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct audit_rec *head, *tail;
	size_t queued_bytes;
	uint64_t head_mono;        /* when the oldest queued record arrived */
	struct audit_gate *space_waiters;
	bool stopping;
	bool writer_sleeping;
	bool writer_lingering;     /* asleep for at most LINGER_NS: unwaited records wait too */
	char stop_reason[128];
	bool gap_active;
	uint64_t gap_since_wall;
	int gap_err;
	struct gap_counts gap;
	struct audit_trail_stats stats;
	int failing; /* atomic mirror of gap_active for lock-free reads */
	/* write mode: a sync failed after records through this seq were already reported
	 * written (their statements ran); the gap record says they may not be durable. */
	uint64_t unsynced_through;
	/* write mode: the syncer thread fdatasyncs behind the writer, so that the next group is
	 * written while the last one syncs. It syncs sync_fd up to sync_wanted (seqs), reports
	 * the first failure in sync_err; the writer drains it before it closes the fd. */
	pthread_cond_t sync_cond;
	pthread_t syncer;
	bool syncer_started, syncer_stop;
	int sync_fd;
	uint64_t sync_wanted, sync_done, sync_err_seq;
	int sync_err;

	/* The writer's alone. */
	int fd, dirfd;
	struct chain_state work, committed;
	uint64_t file_opened_mono;
	uint64_t rotate_retry_mono;
	uint64_t retry_mono;
	uint64_t capacity_mono;
	bool capacity_warned;
	bool torn_pending;
	uint64_t torn_offset;
	char *last_rotated; /* basename of the file rotated last, for a recreated file_start */
	struct audit_out out; /* encoded lines not yet written */
	struct pending *pend;
	size_t npend, pend_cap;
	bool need_sync;
	int sys_unix, sys_udp;
	uint64_t mirror_dropped_reported;
	pthread_t thread;
	bool started;
};

/* ---- small helpers ---------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int pend_push(struct audit_trail *t, const struct pending *p)
{
	if (t->npend == t->pend_cap) {
		size_t cap = t->pend_cap ? t->pend_cap * 2 : 256;
		struct pending *np = realloc(t->pend, cap * sizeof(*np));

		if (!np)
			return -ENOMEM;
		t->pend = np;
		t->pend_cap = cap;
	}
	t->pend[t->npend++] = *p;
	return 0;
}

static void gate_unref_locked(struct audit_gate *g)
{
	if (--g->refs == 0)
		free(g);
}

/* A rotated file's name: PATH.YYYYMMDDTHHMMSS.uuuuuuZ, with -N added if it exists. */
static int rotated_name(const struct audit_trail *t, char *buf, size_t n)
{
	char ts[AUDIT_TS_LEN], stamp[AUDIT_TS_LEN];
	size_t o = 0;

	audit_format_ts(clock_wall_ns(), ts, sizeof(ts));
	for (const char *p = ts; *p; p++)
		if (*p != '-' && *p != ':')
			stamp[o++] = *p;
	stamp[o] = '\0';
	for (int i = 0; i < 1000; i++) {
		int w = i ? snprintf(buf, n, "%s.%s-%d", t->path, stamp, i) :
			    snprintf(buf, n, "%s.%s", t->path, stamp);

		if (w < 0 || (size_t)w >= n)
			return -ENAMETOOLONG;
		if (access(buf, F_OK) != 0)
			return 0;
	}
	return -EEXIST;
}

static const char *basename_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* ---- encoding records into the output buffer --------------------------------------- */

static int emit_checkpoint(struct audit_trail *t, const char *reason, uint64_t recovered_from,
			   uint64_t recovered_to);

/*
 * Encode one record as the next line of the chain: out gets the line, work advances.
 * gate: who waits for it (NULL: nobody); counted: it came from the queue.
 */
static int emit_rec(struct audit_trail *t, const struct audit_rec *r, struct audit_gate *gate,
		    bool counted)
{
	enum audit_event ev = audit_rec_event(r);
	struct pending p = {.gate = gate, .ev = ev, .counted = counted, .off = t->out.len};
	int rc;

	rc = audit_rec_encode(r, t->work.seq + 1, t->work.prev, &t->out);
	if (rc)
		return rc;
	p.len = t->out.len - p.off;
	rc = pend_push(t, &p);
	if (!rc && !audit_out_room(&t->out, 1)) /* the newline */
		rc = -ENOMEM;
	if (rc) {
		t->out.len = p.off;
		return rc;
	}
	t->out.buf[t->out.len++] = '\n';
	audit_hash(t->out.buf + p.off, p.len, t->work.prev);
	t->work.seq++;
	t->work.file_size += p.len + 1;
	if (ev == AUDIT_EV_CHECKPOINT) {
		t->work.since_checkpoint = 0;
		t->work.cp_first_seq = t->work.seq + 1;
		t->work.cp_due_mono = 0;
		t->need_sync = true;
		return 0;
	}
	if (ev == AUDIT_EV_FILE_START || ev == AUDIT_EV_DAEMON_STOP || ev == AUDIT_EV_GAP ||
	    ev == AUDIT_EV_TORN)
		t->need_sync = true;
	if (t->work.since_checkpoint++ == 0)
		t->work.cp_due_mono = clock_mono_ns() + t->checkpoint_interval_ns;
	if (t->work.since_checkpoint >= t->checkpoint_records)
		return emit_checkpoint(t, "records", 0, 0);
	return 0;
}

/* A record built by the writer itself (nobody waits, nothing counted). Frees r. */
static int emit_own(struct audit_trail *t, struct audit_rec *r)
{
	int rc;

	if (!r)
		return -ENOMEM;
	rc = emit_rec(t, r, NULL, false);
	audit_rec_free(r);
	return rc;
}

/*
 * A signed checkpoint. It covers every record before it, because its prev is the hash of
 * the one before, whose prev is ..., and the signature is over its canonical form without
 * "sig". recovered_*: the unsigned tail a crashed run left, signed now (0, 0: none).
 */
static int emit_checkpoint(struct audit_trail *t, const char *reason, uint64_t recovered_from,
			   uint64_t recovered_to)
{
	struct audit_rec *r = audit_rec_new(AUDIT_EV_CHECKPOINT, clock_wall_ns());
	uint8_t sig[AUDIT_SIG_LEN];
	char sig_hex[2 * AUDIT_SIG_LEN + 1];
	struct audit_out unsigned_line = {0};
	uint64_t dropped;
	int rc;

	if (!r)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	dropped = t->stats.mirror_dropped;
	pthread_mutex_unlock(&t->lock);
	audit_rec_str(r, "reason", reason);
	audit_rec_u64(r, "first_seq", t->work.cp_first_seq);
	audit_rec_str(r, "key_id", t->key_id);
	audit_rec_u64(r, "every_records", t->checkpoint_records);
	audit_rec_u64(r, "every_ms", t->checkpoint_interval_ns / NSEC_PER_MSEC);
	if (t->sys_unix >= 0 || t->sys_udp >= 0)
		audit_rec_u64(r, "mirror_dropped", dropped - t->mirror_dropped_reported);
	if (recovered_from) {
		audit_rec_u64(r, "recovered_from_seq", recovered_from);
		audit_rec_u64(r, "recovered_to_seq", recovered_to);
	}
	/* Signed without "sig"; the same record with it is the line. */
	rc = audit_rec_encode(r, t->work.seq + 1, t->work.prev, &unsigned_line);
	if (!rc)
		rc = audit_sign(t->key, unsigned_line.buf, unsigned_line.len, sig);
	free(unsigned_line.buf);
	if (!rc) {
		audit_hex(sig, sizeof(sig), sig_hex);
		audit_rec_str(r, "sig", sig_hex);
		rc = emit_rec(t, r, NULL, false);
	}
	audit_rec_free(r);
	if (!rc)
		t->mirror_dropped_reported = dropped;
	return rc;
}

static int emit_file_start(struct audit_trail *t, const char *previous_file, const char *reason)
{
	struct audit_rec *r = audit_rec_new(AUDIT_EV_FILE_START, clock_wall_ns());

	if (!r)
		return -ENOMEM;
	audit_rec_str(r, "file", t->base);
	audit_rec_str(r, "previous_file", previous_file);
	audit_rec_u64(r, "previous_seq", t->work.seq);
	audit_rec_str(r, "reason", reason);
	return emit_own(t, r);
}

/* ---- the syslog mirror ------------------------------------------------------------- */

static int severity_of(enum audit_event ev)
{
	switch (ev) {
	case AUDIT_EV_GAP:
	case AUDIT_EV_CAPACITY:
	case AUDIT_EV_TORN:
	case AUDIT_EV_STATEMENT_REFUSED:
		return 4; /* warning */
	case AUDIT_EV_CHECKPOINT:
	case AUDIT_EV_DAEMON_START:
	case AUDIT_EV_DAEMON_STOP:
	case AUDIT_EV_KILL:
	case AUDIT_EV_LOCKOUT:
	case AUDIT_EV_DECISION:
		return 5; /* notice */
	default:
		return 6; /* informational */
	}
}

/*
 * One RFC 5424 message per record: "<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG", the
 * record's own time as TIMESTAMP and its event as MSGID, the JSON line as MSG. Non-blocking:
 * a message that cannot go now is counted, never waited for.
 */
static void mirror_one(struct audit_trail *t, const struct pending *p, char *msg, size_t cap)
{
	static const char ts_key[] = "\"ts\":\"";
	const char *line = t->out.buf + p->off;
	/* Within the line: the buffer holds more lines after it, and no terminating NUL. */
	const char *ts = memmem(line, p->len, ts_key, sizeof(ts_key) - 1);
	char stamp[AUDIT_TS_LEN] = "-";
	int hdr;
	size_t n;
	unsigned dropped = 0;

	if (ts && (size_t)(line + p->len - ts) >= sizeof(ts_key) - 1 + AUDIT_TS_LEN - 1) {
		memcpy(stamp, ts + sizeof(ts_key) - 1, AUDIT_TS_LEN - 1);
		stamp[AUDIT_TS_LEN - 1] = '\0';
	}
	hdr = snprintf(msg, cap, "<%d>1 %s %s pgwardend %ld %s - ", SYSLOG_FACILITY * 8 +
		       severity_of(p->ev), stamp, t->host, (long)getpid(), audit_event_name(p->ev));
	if (hdr < 0 || (size_t)hdr >= cap)
		return;
	n = p->len < cap - (size_t)hdr ? p->len : cap - (size_t)hdr;
	memcpy(msg + hdr, line, n);
	n += (size_t)hdr;
	if (t->sys_unix >= 0 && send(t->sys_unix, msg, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		dropped++;
	if (t->sys_udp >= 0 && send(t->sys_udp, msg, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		dropped++;
	if (dropped) {
		pthread_mutex_lock(&t->lock);
		t->stats.mirror_dropped += dropped;
		pthread_mutex_unlock(&t->lock);
	}
}

static void mirror_lines(struct audit_trail *t)
{
	char *msg;

	if (t->sys_unix < 0 && t->sys_udp < 0)
		return;
	msg = malloc(SYSLOG_MAX);
	if (!msg)
		return;
	for (size_t i = 0; i < t->npend; i++)
		mirror_one(t, &t->pend[i], msg, SYSLOG_MAX);
	free(msg);
}

static int syslog_open_unix(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int syslog_open_udp(const char *text)
{
	struct addr a;
	int fd;

	if (addr_parse(text, &a))
		return -EINVAL;
	fd = socket(a.ss.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, &a.ss.sa, a.len)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* ---- committing ---------------------------------------------------------------------- */

static void enter_failing(struct audit_trail *t, int err)
{
	pthread_mutex_lock(&t->lock);
	if (!t->gap_active) {
		t->gap_active = true;
		t->gap_since_wall = clock_wall_ns();
		t->gap_err = err;
		t->stats.failures++;
		__atomic_store_n(&t->failing, 1, __ATOMIC_RELEASE);
		log_error("audit", "the audit trail %s cannot be written (%s): %s until it can; the "
				   "gap will be recorded",
			  t->path, strerror(-err),
			  t->on_failure == CONFIG_AUDIT_REJECT ?
				  "statements fail with 53100" :
				  "statements run UNAUDITED (audit.on_failure: continue)");
	}
	t->stats.failing = true;
	pthread_mutex_unlock(&t->lock);
	t->retry_mono = clock_mono_ns() + t->retry_ns;
}

/* Report what the pending lines came to: written (err 0) or failed. */
static void settle_pending(struct audit_trail *t, int err)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->npend; i++) {
		const struct pending *p = &t->pend[i];
		struct audit_gate *g = p->gate;

		if (err && p->counted) {
			t->gap.lost[p->ev]++;
			t->stats.lost++;
			if (g && t->on_failure == CONFIG_AUDIT_REJECT)
				t->gap.refused++;
			else if (g)
				t->gap.unaudited++;
		}
		if (!err) {
			t->stats.records++;
			t->stats.checkpoints += p->ev == AUDIT_EV_CHECKPOINT;
		}
		if (!g)
			continue;
		if (err && !g->err)
			g->err = err;
		if (--g->pending == 0 && g->wake)
			g->wake(g->arg);
		gate_unref_locked(g);
	}
	if (!err)
		t->stats.seq = t->work.seq;
	pthread_mutex_unlock(&t->lock);
	t->npend = 0;
	t->out.len = 0;
}

/* ---- the syncer (write mode) ------------------------------------------------------- */

static void *syncer_main(void *arg)
{
	struct audit_trail *t = arg;

	pthread_mutex_lock(&t->lock);
	for (;;) {
		uint64_t target;
		int fd, rc;

		while (!t->syncer_stop && t->sync_done >= t->sync_wanted)
			pthread_cond_wait(&t->sync_cond, &t->lock);
		if (t->sync_done >= t->sync_wanted)
			break; /* stopping, and nothing left to sync */
		target = t->sync_wanted;
		fd = t->sync_fd;
		pthread_mutex_unlock(&t->lock);
		rc = fdatasync(fd) ? -errno : 0;
		pthread_mutex_lock(&t->lock);
		if (rc && !t->sync_err) {
			t->sync_err = rc;
			t->sync_err_seq = target;
		}
		t->stats.syncs += !rc;
		t->sync_done = target;
		pthread_cond_broadcast(&t->sync_cond);
		if (rc && t->writer_sleeping)
			pthread_cond_signal(&t->cond);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/* Ask the syncer to make everything committed so far durable. */
static void sync_request(struct audit_trail *t)
{
	pthread_mutex_lock(&t->lock);
	t->sync_fd = t->fd;
	t->sync_wanted = t->committed.seq;
	pthread_cond_signal(&t->sync_cond);
	pthread_mutex_unlock(&t->lock);
}

/* Wait until the syncer has done what was asked (before the fd is closed or replaced, and
 * where durability must be known: the start, the stop). */
static void sync_drain(struct audit_trail *t)
{
	if (!t->syncer_started)
		return;
	pthread_mutex_lock(&t->lock);
	while (t->sync_done < t->sync_wanted)
		pthread_cond_wait(&t->sync_cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
}

/* A sync the syncer could not do: the trail is failing from now on, and the gap record
 * will name the last record whose durability is unknown (its statement already ran).
 * True when it found one. */
static bool sync_check(struct audit_trail *t)
{
	int err;

	if (!t->syncer_started)
		return false;
	pthread_mutex_lock(&t->lock);
	err = t->sync_err;
	if (err) {
		t->unsynced_through = t->sync_err_seq;
		t->sync_err = 0;
	}
	pthread_mutex_unlock(&t->lock);
	if (!err)
		return false;
	enter_failing(t, err);
	return true;
}

/*
 * Write the output buffer; sync it when the mode or a checkpoint (or another record that
 * must not be lost, need_sync) asks. On failure: cut the file back, roll the chain back,
 * fail every pending line, enter the failing state.
 *
 * In write mode the lines are reported written as soon as write(2) has them, and the sync
 * follows: if it then fails, the records stay (their statements ran), the trail enters the
 * failing state, and the gap record names the last record whose durability is unknown.
 */
static int commit(struct audit_trail *t)
{
	bool sync = t->fsync != CONFIG_AUDIT_FSYNC_NONE || t->need_sync;
	bool release_first = t->fsync == CONFIG_AUDIT_FSYNC_WRITE;
	int rc = 0;

	if (sync_check(t)) {
		/* Failing now: what was encoded is not written. */
		t->work = t->committed;
		t->need_sync = false;
		settle_pending(t, -EIO);
		return -EIO;
	}
	if (t->out.len == 0)
		return 0;
	if (t->fd < 0)
		rc = -EBADF;
	if (!rc)
		rc = write_all(t->fd, t->out.buf, t->out.len);
	if (!rc && sync && !release_first && fdatasync(t->fd))
		rc = -errno;
	if (rc) {
		/* Cut the partial write off; if even that fails, the bytes stay and get
		 * marked (an older unmarked region, if any, already reaches the end). */
		if (t->fd >= 0 && ftruncate(t->fd, (off_t)t->committed.file_size) &&
		    !t->torn_pending) {
			t->torn_pending = true;
			t->torn_offset = t->committed.file_size;
		}
		t->work = t->committed;
		t->need_sync = false;
		/* Failing first: whoever hears "failed" must find the trail failing. */
		enter_failing(t, rc);
		settle_pending(t, rc);
		return rc;
	}
	pthread_mutex_lock(&t->lock);
	t->stats.batches++;
	t->stats.syncs += sync && !release_first; /* the syncer counts its own */
	pthread_mutex_unlock(&t->lock);
	t->committed = t->work;
	t->need_sync = false;
	mirror_lines(t);
	settle_pending(t, 0);
	if (release_first && sync)
		sync_request(t);
	return 0;
}

/* ---- torn bytes, recovery ---------------------------------------------------------- */

/*
 * Mark the bytes from t->torn_offset to the end of the file: they are left in place (they
 * are evidence), ended with a newline if they lack one, and described by the next record.
 * The caller commits, and clears torn_pending once that worked.
 */
static int mark_torn(struct audit_trail *t)
{
	struct audit_rec *r;
	struct stat st;
	uint8_t digest[AUDIT_HASH_LEN];
	unsigned int dlen = 0;
	EVP_MD_CTX *md;
	char buf[65536], last = '\n';
	uint64_t off, len;
	int rc = 0;

	if (fstat(t->fd, &st))
		return -errno;
	off = t->torn_offset;
	len = (uint64_t)st.st_size > off ? (uint64_t)st.st_size - off : 0;
	if (len == 0) {
		t->torn_pending = false;
		return 0;
	}
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(md);
		return -ENOMEM;
	}
	for (uint64_t at = off; at < off + len && !rc;) {
		size_t want = off + len - at < sizeof(buf) ? (size_t)(off + len - at) : sizeof(buf);
		ssize_t got = pread(t->fd, buf, want, (off_t)at);

		if (got <= 0) {
			rc = got < 0 ? -errno : -EIO;
			break;
		}
		EVP_DigestUpdate(md, buf, (size_t)got);
		last = buf[got - 1];
		at += (uint64_t)got;
	}
	if (!rc && EVP_DigestFinal_ex(md, digest, &dlen) != 1)
		rc = -EIO;
	EVP_MD_CTX_free(md);
	if (rc)
		return rc;
	/* The bytes are part of the file from now on, whatever happens to what follows. */
	t->committed.file_size = t->work.file_size = (uint64_t)st.st_size;
	if (last != '\n') {
		if (!audit_out_room(&t->out, 1))
			return -ENOMEM;
		t->out.buf[t->out.len++] = '\n';
		t->work.file_size++;
	}
	r = audit_rec_new(AUDIT_EV_TORN, clock_wall_ns());
	if (r) {
		audit_rec_str(r, "file", t->base);
		audit_rec_u64(r, "offset", off);
		audit_rec_u64(r, "length", len);
		audit_rec_hex(r, "sha256", digest, sizeof(digest));
	}
	rc = emit_own(t, r);
	if (!rc)
		log_warn("audit", "%s: %llu bytes at offset %llu were left half-written (a crash or a "
				  "failed write); marked in the trail at seq %llu",
			 t->path, (unsigned long long)len, (unsigned long long)off,
			 (unsigned long long)t->work.seq);
	/* torn_pending stays until the marker is committed. */
	return rc;
}

/* What a start finds at the end of an existing trail file. */
struct tail_info {
	uint64_t seq;                 /* last valid record */
	uint8_t hash[AUDIT_HASH_LEN]; /* its hash */
	uint64_t end;                 /* offset just after its newline */
	bool clean;                   /* it is a "stop" checkpoint */
	uint64_t cp_first_seq;        /* first record after the last checkpoint found */
	uint64_t since_checkpoint;
	bool found_checkpoint;
};

/* Read [size - want, size) of fd into a new buffer. */
static char *read_tail(int fd, uint64_t size, uint64_t want)
{
	char *buf = malloc(want + 1);
	uint64_t got = 0;

	if (!buf)
		return NULL;
	while (got < want) {
		ssize_t r = pread(fd, buf + got, (size_t)(want - got), (off_t)(size - want + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			free(buf);
			return NULL;
		}
		got += (uint64_t)r;
	}
	buf[want] = '\0';
	return buf;
}

/*
 * Find the last valid record of the file (the chain goes on from it), the bytes after it
 * (torn), and the last checkpoint before it. Reads backwards, doubling the window, up to
 * TAIL_SCAN_MAX for the checkpoint. 0, -ENOENT (no record at all), or -errno.
 */
static int scan_tail(int fd, uint64_t size, struct tail_info *ti)
{
	uint64_t want = size < 65536 ? size : 65536;
	bool have_last = false;

	memset(ti, 0, sizeof(*ti));
	for (;;) {
		char *buf = read_tail(fd, size, want);
		uint64_t base = size - want;
		size_t end;
		uint64_t records_after = 0;

		if (!buf)
			return -EIO;
		/* Walk complete lines backwards; the window's first line may be cut off, so it
		 * counts only when the window starts at the file's start. */
		end = (size_t)want;
		while (end > 0 && buf[end - 1] != '\n')
			end--;
		while (end > 0) {
			size_t stop = end - 1, start = stop;
			struct audit_line l;
			char why[64];
			bool parsed;

			while (start > 0 && buf[start - 1] != '\n')
				start--;
			if (start == 0 && base != 0)
				break; /* cut by the window */
			end = start;
			/* A wider pass meets the torn lines after the last record again. */
			if (have_last && base + stop + 1 > ti->end)
				continue;
			buf[stop] = '\0';
			/* Once the last record is known, only a checkpoint needs parsing; in
			 * canonical form its event can only appear as this exact text. */
			parsed = (!have_last || strstr(buf + start, "\"event\":\"checkpoint\"")) &&
				 audit_line_parse(buf + start, stop - start, &l, why, sizeof(why)) == 0;
			buf[stop] = '\n';
			if (!parsed) {
				records_after += have_last;
				continue;
			}
			if (!have_last) {
				const char *reason = json_string_value(json_object_get(l.obj, "reason"));

				have_last = true;
				ti->seq = l.seq;
				audit_hash(buf + start, stop - start, ti->hash);
				ti->end = base + stop + 1;
				ti->clean = l.event == AUDIT_EV_CHECKPOINT && reason &&
					    strcmp(reason, "stop") == 0;
			}
			if (l.event == AUDIT_EV_CHECKPOINT) {
				ti->found_checkpoint = true;
				ti->cp_first_seq = l.seq + 1;
				ti->since_checkpoint = records_after;
				audit_line_release(&l);
				free(buf);
				return 0;
			}
			records_after++;
			audit_line_release(&l);
		}
		free(buf);
		if (want == size || want >= TAIL_SCAN_MAX) {
			if (!have_last)
				return -ENOENT;
			/* No checkpoint within reach: count the whole tail as unsigned. */
			ti->cp_first_seq = ti->seq > records_after ? ti->seq - records_after + 1 : 1;
			ti->since_checkpoint = records_after;
			return 0;
		}
		want = want * 4 > size ? size : want * 4;
		if (want > TAIL_SCAN_MAX)
			want = TAIL_SCAN_MAX > size ? size : TAIL_SCAN_MAX;
	}
}

/* The newest rotated sibling of the trail (PATH.<stamp>), for a trail whose current file
 * is missing: the chain must go on from it, not start again. */
static int newest_rotated(const struct audit_trail *t, char *out, size_t n)
{
	size_t blen = strlen(t->base);
	char best[NAME_MAX + 1] = "";
	int fd = dup(t->dirfd);
	DIR *d;
	struct dirent *e;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, t->base, blen) != 0 || e->d_name[blen] != '.' ||
		    e->d_name[blen + 1] < '0' || e->d_name[blen + 1] > '9')
			continue;
		if (strcmp(e->d_name, best) > 0)
			snprintf(best, sizeof(best), "%s", e->d_name);
	}
	closedir(d);
	if (!best[0])
		return -ENOENT;
	snprintf(out, n, "%s", best);
	return 0;
}

static int set_file_mode(struct audit_trail *t, int fd)
{
	if (fchmod(fd, t->mode))
		return -errno;
	if (t->gid != (gid_t)-1 && fchown(fd, (uid_t)-1, t->gid))
		return -errno;
	return 0;
}

/* Create the trail file (it must not exist) and start it with file_start. */
static int create_file(struct audit_trail *t, const char *previous_file, const char *reason)
{
	int fd = openat(t->dirfd, t->base, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC |
						    O_NOFOLLOW,
			t->mode);
	int rc;

	if (fd < 0)
		return -errno;
	rc = set_file_mode(t, fd);
	if (rc) {
		close(fd);
		unlinkat(t->dirfd, t->base, 0);
		return rc;
	}
	if (t->fd >= 0) {
		sync_drain(t);
		close(t->fd);
	}
	t->fd = fd;
	t->committed.file_size = t->work.file_size = 0;
	if (!t->work.cp_first_seq) /* a new trail */
		t->work.cp_first_seq = t->work.seq + 1;
	t->file_opened_mono = clock_mono_ns();
	rc = emit_file_start(t, previous_file, reason);
	if (!rc)
		rc = commit(t);
	if (!rc && fsync(t->dirfd))
		rc = -errno;
	return rc;
}

/* ---- opening ------------------------------------------------------------------------- */

struct start_state {
	bool existed;
	bool crashed;
	uint64_t recovered_from, recovered_to;
};

/* How long ago the file was started: the time of its first record (file_start). */
static uint64_t file_age_ns(int fd)
{
	char buf[8192], *nl;
	struct audit_line l;
	struct tm tm = {0};
	char why[64];
	ssize_t got = pread(fd, buf, sizeof(buf) - 1, 0);
	uint64_t age = 0;
	time_t then;

	if (got <= 0)
		return 0;
	buf[got] = '\0';
	nl = strchr(buf, '\n');
	if (!nl || audit_line_parse(buf, (size_t)(nl - buf), &l, why, sizeof(why)))
		return 0;
	if (strptime(l.ts, "%Y-%m-%dT%H:%M:%S", &tm)) {
		then = timegm(&tm);
		if (then > 0 && (uint64_t)then * NSEC_PER_SEC < clock_wall_ns())
			age = clock_wall_ns() - (uint64_t)then * NSEC_PER_SEC;
	}
	audit_line_release(&l);
	return age;
}

/* Continue an existing file: its tail gives the chain; torn bytes get marked. current: it
 * is the trail's current file (else the newest rotated one, only read). */
static int continue_file(struct audit_trail *t, int fd, bool current, struct start_state *ss,
			 char *err, size_t n)
{
	struct tail_info ti;
	struct stat st;
	int rc;

	if (fstat(fd, &st)) {
		snprintf(err, n, "%s: %s", t->path, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, n, "%s: not a regular file", t->path);
		return -EINVAL;
	}
	rc = st.st_size ? scan_tail(fd, (uint64_t)st.st_size, &ti) : -ENOENT;
	if (rc) {
		snprintf(err, n,
			 "%s: %s; move it away or point audit.path elsewhere (pgwarden never writes "
			 "into a file it cannot continue)",
			 t->path, rc == -ENOENT ? "exists but holds no pgwarden audit record" :
						  strerror(-rc));
		return rc == -ENOENT ? -EINVAL : rc;
	}
	rc = current ? set_file_mode(t, fd) : 0;
	if (rc) {
		snprintf(err, n, "%s: cannot set its mode or group: %s", t->path, strerror(-rc));
		return rc;
	}
	t->fd = fd;
	t->work.seq = ti.seq;
	memcpy(t->work.prev, ti.hash, sizeof(ti.hash));
	t->work.file_size = ti.end;
	t->work.cp_first_seq = ti.cp_first_seq;
	t->work.since_checkpoint = (uint32_t)ti.since_checkpoint;
	t->committed = t->work;
	t->file_opened_mono = clock_mono_ns() - file_age_ns(fd);
	if ((uint64_t)st.st_size > ti.end) {
		t->torn_pending = true;
		t->torn_offset = ti.end;
	}
	ss->existed = true;
	ss->crashed = !ti.clean;
	if (ss->crashed && ti.since_checkpoint) {
		ss->recovered_from = ti.cp_first_seq;
		ss->recovered_to = ti.seq;
	}
	return 0;
}

/* Open the trail's current file: continue it, or (missing) continue the chain of the
 * newest rotated file in a new one, or start a new trail. */
static int open_current(struct audit_trail *t, struct start_state *ss, char *err, size_t n)
{
	char prev_name[NAME_MAX + 1];
	int fd, rc;

	fd = openat(t->dirfd, t->base, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		rc = continue_file(t, fd, true, ss, err, n);
		if (rc)
			close(fd);
		return rc;
	}
	if (errno != ENOENT) {
		rc = -errno;
		snprintf(err, n, "%s: %s", t->path, strerror(errno));
		return rc;
	}
	if (newest_rotated(t, prev_name, sizeof(prev_name)) == 0) {
		/* The chain goes on from the last file: read its tail. */
		fd = openat(t->dirfd, prev_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			rc = -errno;
			snprintf(err, n, "%s/%s: %s", t->dir, prev_name, strerror(errno));
			return rc;
		}
		rc = continue_file(t, fd, false, ss, err, n);
		close(fd);
		t->fd = -1;
		if (rc)
			return rc;
		if (t->torn_pending) {
			snprintf(err, n, "%s/%s: ends in a torn record and is no longer the current "
				 "file; verify it and move it away", t->dir, prev_name);
			return -EINVAL;
		}
		rc = create_file(t, prev_name, "continued");
	} else {
		rc = create_file(t, NULL, "new");
	}
	if (rc)
		snprintf(err, n, "%s: cannot create it: %s", t->path, strerror(-rc));
	return rc;
}

static int resolve_group(const char *name, gid_t *gid, char *err, size_t n)
{
	struct group gr, *res = NULL;
	char buf[4096];
	int rc = getgrnam_r(name, &gr, buf, sizeof(buf), &res);

	if (rc || !res) {
		snprintf(err, n, "audit.group: no group named %s", name);
		return -ENOENT;
	}
	*gid = gr.gr_gid;
	return 0;
}

void audit_trail_config_from(struct audit_trail_config *tc, const struct config *cfg)
{
	memset(tc, 0, sizeof(*tc));
	tc->path = cfg->audit_path;
	tc->signing_key = cfg->audit_signing_key;
	tc->fsync = (enum config_audit_fsync)cfg->audit_fsync;
	tc->batch_window_ns = cfg->audit_batch_window_ms * NSEC_PER_MSEC;
	tc->queue_size = cfg->audit_queue_size;
	tc->on_failure = (enum config_audit_on_failure)cfg->audit_on_failure;
	tc->rotate_size = cfg->audit_rotate_size;
	tc->rotate_interval_ns = cfg->audit_rotate_interval_ms * NSEC_PER_MSEC;
	tc->checkpoint_records = cfg->audit_checkpoint_records;
	tc->checkpoint_interval_ns = cfg->audit_checkpoint_interval_ms * NSEC_PER_MSEC;
	tc->disk_warn_percent = cfg->audit_disk_warn;
	tc->group = cfg->audit_group;
	tc->syslog_socket = cfg->audit_syslog_socket;
	tc->syslog_address = cfg->audit_syslog_address;
}

static void trail_free(struct audit_trail *t)
{
	if (!t)
		return;
	if (t->syncer_started) {
		pthread_mutex_lock(&t->lock);
		t->syncer_stop = true;
		pthread_cond_signal(&t->sync_cond);
		pthread_mutex_unlock(&t->lock);
		pthread_join(t->syncer, NULL); /* it finishes what was asked first */
	}
	if (t->fd >= 0)
		close(t->fd);
	if (t->dirfd >= 0)
		close(t->dirfd);
	if (t->sys_unix >= 0)
		close(t->sys_unix);
	if (t->sys_udp >= 0)
		close(t->sys_udp);
	while (t->head) {
		struct audit_rec *r = t->head;

		t->head = audit_rec_link(r)->next;
		audit_rec_free(r);
	}
	EVP_PKEY_free(t->key);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	pthread_cond_destroy(&t->sync_cond);
	free(t->path);
	free(t->dir);
	free(t->out.buf);
	free(t->pend);
	free(t->last_rotated);
	free(t);
}

static void *writer_main(void *arg);

static struct audit_rec *daemon_start_record(struct audit_trail *t,
					     const struct audit_trail_config *c,
					     const struct start_state *ss)
{
	static const char *const fsync_names[] = {"always", "batch", "none", "write"};
	struct audit_rec *r = audit_rec_new(AUDIT_EV_DAEMON_START, clock_wall_ns());

	if (!r)
		return NULL;
	audit_rec_str(r, "version", c->version);
	audit_rec_u64(r, "pid", (uint64_t)getpid());
	audit_rec_str(r, "host", t->host);
	audit_rec_hex(r, "public_key", t->pub, sizeof(t->pub));
	audit_rec_str(r, "key_id", t->key_id);
	audit_rec_str(r, "fsync", fsync_names[t->fsync]);
	audit_rec_str(r, "on_failure", t->on_failure == CONFIG_AUDIT_REJECT ? "reject" : "continue");
	audit_rec_str(r, "config_path", c->config_path);
	if (c->config_sha256)
		audit_rec_hex(r, "config_sha256", c->config_sha256, AUDIT_HASH_LEN);
	else
		audit_rec_null(r, "config_sha256");
	audit_rec_str(r, "previous_run", !ss->existed ? "none" : ss->crashed ? "crashed" : "clean");
	return r;
}

int audit_trail_open(const struct audit_trail_config *c, struct audit_trail **out, char *err,
		     size_t n)
{
	struct audit_trail *t = calloc(1, sizeof(*t));
	struct start_state ss = {0};
	pthread_condattr_t ca;
	char *slash;
	int rc;

	if (!t) {
		snprintf(err, n, "out of memory");
		return -ENOMEM;
	}
	t->fd = t->dirfd = t->sys_unix = t->sys_udp = -1;
	pthread_mutex_init(&t->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&t->sync_cond, NULL);
	t->path = strdup(c->path ? c->path : "");
	t->dir = strdup(c->path ? c->path : "");
	if (!t->path || !t->dir) {
		snprintf(err, n, "out of memory");
		rc = -ENOMEM;
		goto err;
	}
	slash = strrchr(t->dir, '/');
	if (!slash || !slash[1]) {
		snprintf(err, n, "audit.path: %s is not an absolute file path", t->path);
		rc = -EINVAL;
		goto err;
	}
	*slash = '\0';
	if (!t->dir[0])
		strcpy(t->dir, "/");
	t->base = t->path + (slash - t->dir) + 1;
	t->fsync = c->fsync;
	t->on_failure = c->on_failure;
	if (t->fsync == CONFIG_AUDIT_FSYNC_WRITE) {
		rc = pthread_create(&t->syncer, NULL, syncer_main, t);
		if (rc) {
			snprintf(err, n, "cannot start the audit syncer: %s", strerror(rc));
			rc = -rc;
			goto err;
		}
		t->syncer_started = true;
	}
	t->batch_window_ns = c->batch_window_ns;
	t->rotate_size = c->rotate_size;
	t->rotate_interval_ns = c->rotate_interval_ns;
	t->checkpoint_records = c->checkpoint_records ? c->checkpoint_records : 1000;
	t->checkpoint_interval_ns = c->checkpoint_interval_ns ? c->checkpoint_interval_ns :
								   60 * NSEC_PER_SEC;
	t->retry_ns = c->retry_interval_ns ? c->retry_interval_ns : DEFAULT_RETRY_NS;
	t->queue_size = c->queue_size ? c->queue_size : 16u << 20;
	t->disk_warn = c->disk_warn_percent;
	t->mode = 0600;
	t->gid = (gid_t)-1;
	if (c->group) {
		rc = resolve_group(c->group, &t->gid, err, n);
		if (rc)
			goto err;
		t->mode = 0640;
	}
	if (gethostname(t->host, sizeof(t->host) - 1) || !t->host[0])
		strcpy(t->host, "-");
	for (char *p = t->host; *p; p++) /* RFC 5424 HOSTNAME: PRINTUSASCII, no spaces */
		if (*p <= ' ' || *p >= 0x7f)
			*p = '_';

	if (!c->signing_key) {
		snprintf(err, n, "audit.signing_key: required with audit.path");
		rc = -EINVAL;
		goto err;
	}
	{
		char kerr[512];

		rc = audit_key_load_private(c->signing_key, &t->key, kerr, sizeof(kerr));
		if (rc) {
			snprintf(err, n, "audit.signing_key: %s", kerr);
			goto err;
		}
	}
	if (audit_key_raw_public(t->key, t->pub)) {
		snprintf(err, n, "audit.signing_key: not an Ed25519 key");
		rc = -EINVAL;
		goto err;
	}
	audit_key_id(t->pub, t->key_id);

	t->dirfd = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t->dirfd < 0) {
		rc = -errno;
		snprintf(err, n, "audit.path: directory %s: %s", t->dir, strerror(errno));
		goto err;
	}
	if (c->syslog_socket) {
		t->sys_unix = syslog_open_unix(c->syslog_socket);
		if (t->sys_unix < 0) {
			rc = t->sys_unix;
			snprintf(err, n, "audit.syslog_socket: %s: %s", c->syslog_socket, strerror(-rc));
			goto err;
		}
	}
	if (c->syslog_address) {
		t->sys_udp = syslog_open_udp(c->syslog_address);
		if (t->sys_udp < 0) {
			rc = t->sys_udp;
			snprintf(err, n, "audit.syslog_address: %s: %s", c->syslog_address,
				 strerror(-rc));
			goto err;
		}
	}
	rc = open_current(t, &ss, err, n);
	if (rc)
		goto err;
	/* The start's records: what a crash left, then who is writing from now on. */
	if (t->torn_pending)
		rc = mark_torn(t);
	if (!rc && ss.recovered_from)
		rc = emit_checkpoint(t, "recovery", ss.recovered_from, ss.recovered_to);
	if (!rc)
		rc = emit_own(t, daemon_start_record(t, c, &ss));
	if (!rc)
		rc = emit_checkpoint(t, "start", 0, 0);
	if (!rc)
		rc = commit(t);
	/* The start is durable before pgwardend goes on, in every mode. */
	sync_drain(t);
	if (!rc && sync_check(t))
		rc = t->gap_err ? t->gap_err : -EIO;
	if (rc || t->gap_active) {
		snprintf(err, n, "%s: cannot write the start of the trail: %s", t->path,
			 strerror(rc ? -rc : -t->gap_err));
		rc = rc ? rc : t->gap_err;
		goto err;
	}
	t->torn_pending = false;
	if (ss.crashed)
		log_warn("audit", "%s: the previous run did not stop cleanly; %s", t->path,
			 ss.recovered_from ? "its unsigned tail is signed now (a recovery checkpoint)" :
					     "its records were all signed");
	rc = pthread_create(&t->thread, NULL, writer_main, t);
	if (rc) {
		snprintf(err, n, "cannot start the audit writer: %s", strerror(rc));
		rc = -rc;
		goto err;
	}
	t->started = true;
	*out = t;
	return 0;
err:
	trail_free(t);
	return rc;
}

/* ---- the writer ---------------------------------------------------------------------- */

static int rotate(struct audit_trail *t)
{
	char name[PATH_MAX];
	const char *why = NULL;
	int rc;

	rc = emit_checkpoint(t, "rotate", 0, 0);
	if (!rc)
		rc = commit(t);
	if (rc)
		return rc;
	rc = rotated_name(t, name, sizeof(name));
	if (!rc && rename(t->path, name))
		rc = -errno;
	if (rc) {
		/* Keep writing where we are: the chain does not care, the operator is told. */
		log_warn("audit", "%s: cannot rotate (%s); trying again in a minute", t->path,
			 strerror(-rc));
		t->rotate_retry_mono = clock_mono_ns() + ROTATE_RETRY_NS;
		return 0;
	}
	(void)fsync(t->dirfd);
	free(t->last_rotated);
	t->last_rotated = strdup(basename_of(name));
	why = t->last_rotated ? t->last_rotated : basename_of(name);
	rc = create_file(t, why, "rotated");
	if (rc) {
		/* No current file now: the failing state's retry makes it. */
		if (t->fd >= 0 && !t->gap_active) {
			close(t->fd);
			t->fd = -1;
		}
		if (!t->gap_active)
			enter_failing(t, rc);
		return rc;
	}
	pthread_mutex_lock(&t->lock);
	t->stats.rotations++;
	pthread_mutex_unlock(&t->lock);
	log_info("audit", "rotated %s to %s", t->path, name);
	return 0;
}

/* Take the gap counters for a gap record (the snapshot is subtracted once it is written). */
static struct audit_rec *gap_record(struct audit_trail *t, struct gap_counts *snap)
{
	struct audit_rec *r = audit_rec_new(AUDIT_EV_GAP, clock_wall_ns());
	char ts[AUDIT_TS_LEN];

	pthread_mutex_lock(&t->lock);
	*snap = t->gap;
	if (r) {
		audit_rec_str(r, "since", audit_format_ts(t->gap_since_wall, ts, sizeof(ts)));
		audit_rec_str(r, "error", strerror(-t->gap_err));
	}
	pthread_mutex_unlock(&t->lock);
	if (!r)
		return NULL;
	audit_rec_str(r, "on_failure", t->on_failure == CONFIG_AUDIT_REJECT ? "reject" : "continue");
	pthread_mutex_lock(&t->lock);
	if (t->unsynced_through)
		audit_rec_u64(r, "not_durable_through_seq", t->unsynced_through);
	pthread_mutex_unlock(&t->lock);
	audit_rec_u64(r, "statements_refused", snap->refused);
	audit_rec_u64(r, "statements_unaudited", snap->unaudited);
	audit_rec_object(r, "records_lost");
	for (int i = 0; i < AUDIT_EV_COUNT; i++)
		if (snap->lost[i])
			audit_rec_u64(r, audit_event_name((enum audit_event)i), snap->lost[i]);
	audit_rec_end(r);
	return r;
}

/* While failing: try to write again (a new file if there is none, the torn bytes marked,
 * then the gap record). 0 once writing works again. */
static int try_recover(struct audit_trail *t)
{
	struct gap_counts snap;
	int rc = 0;

	t->retry_mono = clock_mono_ns() + t->retry_ns;
	if (t->fd < 0)
		rc = create_file(t, t->last_rotated, "recreated");
	if (!rc && t->torn_pending)
		rc = mark_torn(t);
	if (rc)
		goto fail;
	rc = emit_own(t, gap_record(t, &snap));
	if (!rc)
		rc = commit(t);
	if (rc)
		goto fail;
	t->torn_pending = false;
	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < AUDIT_EV_COUNT; i++)
		t->gap.lost[i] -= snap.lost[i];
	t->gap.refused -= snap.refused;
	t->gap.unaudited -= snap.unaudited;
	t->gap_active = false;
	t->unsynced_through = 0;
	t->stats.failing = false;
	__atomic_store_n(&t->failing, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&t->lock);
	log_info("audit", "the audit trail %s is written again; the gap is recorded at seq %llu",
		 t->path, (unsigned long long)t->committed.seq);
	return 0;
fail:
	/* Whatever was encoded is dropped: out holds nothing durable. */
	t->work = t->committed;
	settle_pending(t, rc);
	t->retry_mono = clock_mono_ns() + t->retry_ns;
	return rc;
}

/* Fail a queued record without trying to write it (the trail is failing). */
static void fail_unwritten(struct audit_trail *t, struct audit_rec *r)
{
	struct audit_gate *g = audit_rec_link(r)->gate;

	pthread_mutex_lock(&t->lock);
	t->gap.lost[audit_rec_event(r)]++;
	t->stats.lost++;
	if (g) {
		if (t->on_failure == CONFIG_AUDIT_REJECT)
			t->gap.refused++;
		else
			t->gap.unaudited++;
		if (!g->err)
			g->err = t->gap_err ? t->gap_err : -EIO;
		if (--g->pending == 0 && g->wake)
			g->wake(g->arg);
		gate_unref_locked(g);
	}
	pthread_mutex_unlock(&t->lock);
	audit_rec_free(r);
}

static void process(struct audit_trail *t, struct audit_rec *batch)
{
	while (batch) {
		struct audit_rec *r = batch;
		struct audit_gate *g = audit_rec_link(r)->gate;
		int rc;

		batch = audit_rec_link(r)->next;
		if (t->gap_active && (clock_mono_ns() < t->retry_mono || try_recover(t))) {
			fail_unwritten(t, r);
			continue;
		}
		rc = emit_rec(t, r, g, true);
		if (rc) {
			/* Could not even encode it (no memory): it is lost, like a failed write. */
			log_error("audit", "cannot encode a %s record: %s",
				  audit_event_name(audit_rec_event(r)), strerror(-rc));
			t->work = t->committed;
			enter_failing(t, rc);
			settle_pending(t, rc);
			fail_unwritten(t, r);
			continue;
		}
		audit_rec_free(r);
		if (t->fsync == CONFIG_AUDIT_FSYNC_ALWAYS || t->out.len >= OUT_COMMIT_BYTES)
			(void)commit(t);
	}
	(void)commit(t);
}

static void check_capacity(struct audit_trail *t, uint64_t now)
{
	struct statvfs sv;
	uint64_t used, avail;
	unsigned pct;

	t->capacity_mono = now + CAPACITY_CHECK_NS;
	if (!t->disk_warn || fstatvfs(t->dirfd, &sv) || sv.f_blocks == 0)
		return;
	used = (uint64_t)(sv.f_blocks - sv.f_bfree);
	avail = (uint64_t)sv.f_bavail;
	pct = used + avail ? (unsigned)((used * 100 + used + avail - 1) / (used + avail)) : 100;
	if (pct >= t->disk_warn && !t->capacity_warned) {
		struct audit_rec *r = audit_rec_new(AUDIT_EV_CAPACITY, clock_wall_ns());

		t->capacity_warned = true;
		log_warn("audit", "the file system of %s is %u%% full (audit.disk_warn: %u%%); %llu "
				  "bytes free",
			 t->path, pct, t->disk_warn,
			 (unsigned long long)avail * (unsigned long long)sv.f_frsize);
		if (r) {
			audit_rec_u64(r, "used_percent", pct);
			audit_rec_u64(r, "threshold_percent", t->disk_warn);
			audit_rec_u64(r, "free_bytes", avail * (uint64_t)sv.f_frsize);
		}
		if (!t->gap_active && !emit_own(t, r))
			(void)commit(t);
	} else if (pct + CAPACITY_HYSTERESIS < t->disk_warn) {
		t->capacity_warned = false;
	}
}

/* Checkpoints due by time, rotation, the capacity check, recovery. */
static void run_timers(struct audit_trail *t)
{
	uint64_t now = clock_mono_ns();

	(void)sync_check(t);
	if (t->gap_active) {
		if (now >= t->retry_mono)
			(void)try_recover(t);
		return;
	}
	if (t->work.cp_due_mono && now >= t->work.cp_due_mono) {
		if (!emit_checkpoint(t, "interval", 0, 0))
			(void)commit(t);
	}
	if (!t->gap_active && now >= t->rotate_retry_mono &&
	    ((t->rotate_size && t->committed.file_size >= t->rotate_size) ||
	     (t->rotate_interval_ns && now - t->file_opened_mono >= t->rotate_interval_ns)))
		(void)rotate(t);
	if (now >= t->capacity_mono)
		check_capacity(t, now);
}

static uint64_t next_deadline(const struct audit_trail *t)
{
	uint64_t d = t->capacity_mono;

	if (t->gap_active)
		return t->retry_mono < d ? t->retry_mono : d;
	if (t->work.cp_due_mono && t->work.cp_due_mono < d)
		d = t->work.cp_due_mono;
	if (t->rotate_interval_ns) {
		uint64_t r = t->file_opened_mono + t->rotate_interval_ns;

		if (r < t->rotate_retry_mono)
			r = t->rotate_retry_mono;
		if (r < d)
			d = r;
	}
	return d;
}

static void timed_wait(struct audit_trail *t, uint64_t deadline)
{
	struct timespec ts = {.tv_sec = (time_t)(deadline / NSEC_PER_SEC),
			      .tv_nsec = (long)(deadline % NSEC_PER_SEC)};

	t->writer_sleeping = true;
	pthread_cond_timedwait(&t->cond, &t->lock, &ts);
	t->writer_sleeping = false;
}

static void *writer_main(void *arg)
{
	struct audit_trail *t = arg;
	bool stopping, wrote = false;

	pthread_mutex_lock(&t->lock);
	for (;;) {
		struct audit_rec *batch;
		uint64_t deadline = next_deadline(t);

		if (wrote && clock_mono_ns() + LINGER_NS < deadline)
			deadline = clock_mono_ns() + LINGER_NS;
		t->writer_lingering = wrote;
		while (!t->head && !t->stopping && !t->sync_err && clock_mono_ns() < deadline)
			timed_wait(t, deadline);
		t->writer_lingering = false;
		/* Batch mode with a window: give the first record's company time to arrive. */
		if (t->head && t->fsync == CONFIG_AUDIT_FSYNC_BATCH && t->batch_window_ns &&
		    !t->gap_active)
			while (!t->stopping && clock_mono_ns() < t->head_mono + t->batch_window_ns)
				timed_wait(t, t->head_mono + t->batch_window_ns);
		batch = t->head;
		wrote = batch != NULL;
		t->head = t->tail = NULL;
		t->queued_bytes = 0;
		t->stats.queued_bytes = 0;
		/* Room again: sessions held back by a full queue may try now. */
		while (t->space_waiters) {
			struct audit_gate *g = t->space_waiters;

			t->space_waiters = g->next_space;
			g->space_wait = false;
			if (g->wake)
				g->wake(g->arg);
			gate_unref_locked(g);
		}
		stopping = t->stopping;
		pthread_mutex_unlock(&t->lock);
		process(t, batch);
		run_timers(t);
		pthread_mutex_lock(&t->lock);
		if (stopping && !t->head)
			break;
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/* ---- the API used by other threads ------------------------------------------------- */

void audit_trail_submit(struct audit_trail *t, struct audit_rec *r)
{
	bool wake_writer;

	if (!r)
		return;
	if (!t) {
		audit_rec_free(r);
		return;
	}
	audit_rec_link(r)->next = NULL;
	audit_rec_link(r)->gate = NULL;
	pthread_mutex_lock(&t->lock);
	if (audit_rec_failed(r) || t->stopping) {
		/* Built without memory, or after the stop: lost, and counted as such. */
		t->gap.lost[audit_rec_event(r)]++;
		t->stats.lost++;
		pthread_mutex_unlock(&t->lock);
		audit_rec_free(r);
		return;
	}
	if (!t->head)
		t->head_mono = clock_mono_ns();
	if (t->tail)
		audit_rec_link(t->tail)->next = r;
	else
		t->head = r;
	t->tail = r;
	t->queued_bytes += audit_rec_size(r);
	t->stats.queued_bytes = t->queued_bytes;
	wake_writer = t->writer_sleeping && !t->writer_lingering;
	pthread_mutex_unlock(&t->lock);
	/* After the unlock, so the writer does not wake only to wait for the lock we hold.
	 * No wake is lost: it saw writer_sleeping under the lock, so it is waiting, and it
	 * checks the queue again whatever woke it. */
	if (wake_writer)
		pthread_cond_signal(&t->cond);
}

bool audit_trail_failing(const struct audit_trail *t)
{
	return t && __atomic_load_n(&t->failing, __ATOMIC_ACQUIRE);
}

enum config_audit_on_failure audit_trail_on_failure(const struct audit_trail *t)
{
	return t->on_failure;
}

struct audit_gate *audit_gate_new(struct audit_trail *t, void (*wake)(void *arg), void *arg)
{
	struct audit_gate *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->trail = t;
	g->wake = wake;
	g->arg = arg;
	g->refs = 1;
	return g;
}

void audit_gate_release(struct audit_gate *g)
{
	struct audit_trail *t;

	if (!g)
		return;
	t = g->trail;
	unsigned drop = 1; /* the session's reference */

	pthread_mutex_lock(&t->lock);
	g->wake = NULL;
	if (g->space_wait) {
		for (struct audit_gate **pp = &t->space_waiters; *pp; pp = &(*pp)->next_space) {
			if (*pp == g) {
				*pp = g->next_space;
				break;
			}
		}
		g->space_wait = false;
		drop++; /* and the waiting list's */
	}
	g->refs -= drop;
	if (g->refs == 0)
		free(g);
	pthread_mutex_unlock(&t->lock);
}

int audit_gate_submit(struct audit_gate *g, struct audit_rec **recs, unsigned n)
{
	struct audit_trail *t = g->trail;
	size_t bytes = 0;
	bool wake_writer;
	int err;

	for (unsigned i = 0; i < n; i++)
		bytes += audit_rec_size(recs[i]);
	pthread_mutex_lock(&t->lock);
	if (t->gap_active || t->stopping) {
		err = t->gap_active ? (t->gap_err ? t->gap_err : -EIO) : -ESHUTDOWN;
		if (t->on_failure == CONFIG_AUDIT_REJECT)
			t->gap.refused++;
		else
			t->gap.unaudited++;
		for (unsigned i = 0; i < n; i++) {
			t->gap.lost[audit_rec_event(recs[i])]++;
			t->stats.lost++;
		}
		pthread_mutex_unlock(&t->lock);
		for (unsigned i = 0; i < n; i++)
			audit_rec_free(recs[i]);
		return err;
	}
	/* Full: the session waits for the writer to drain (an empty queue takes anything,
	 * so one oversized statement cannot wait forever). */
	if (t->queued_bytes && t->queued_bytes + bytes > t->queue_size) {
		if (!g->space_wait) {
			g->space_wait = true;
			g->refs++;
			g->next_space = t->space_waiters;
			t->space_waiters = g;
		}
		if (t->writer_sleeping) /* lingering over unwaited records: drain them now */
			pthread_cond_signal(&t->cond);
		pthread_mutex_unlock(&t->lock);
		return -EAGAIN;
	}
	if (!t->head)
		t->head_mono = clock_mono_ns();
	for (unsigned i = 0; i < n; i++) {
		struct audit_rec_link *l = audit_rec_link(recs[i]);

		l->next = NULL;
		l->gate = g;
		g->refs++;
		g->pending++;
		if (t->tail)
			audit_rec_link(t->tail)->next = recs[i];
		else
			t->head = recs[i];
		t->tail = recs[i];
	}
	t->queued_bytes += bytes;
	t->stats.queued_bytes = t->queued_bytes;
	wake_writer = t->writer_sleeping;
	pthread_mutex_unlock(&t->lock);
	if (wake_writer) /* after the unlock: see audit_trail_submit() */
		pthread_cond_signal(&t->cond);
	return 0;
}

int audit_gate_poll(struct audit_gate *g)
{
	struct audit_trail *t = g->trail;
	int rc;

	pthread_mutex_lock(&t->lock);
	if (g->pending)
		rc = 0;
	else if (g->err)
		rc = g->err;
	else
		rc = 1;
	if (!g->pending)
		g->err = 0;
	pthread_mutex_unlock(&t->lock);
	return rc;
}

void audit_trail_stats(struct audit_trail *t, struct audit_trail_stats *out)
{
	pthread_mutex_lock(&t->lock);
	*out = t->stats;
	out->failing = t->gap_active;
	pthread_mutex_unlock(&t->lock);
}

void audit_trail_close(struct audit_trail *t, const char *reason)
{
	struct audit_rec *r;

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	t->stopping = true;
	snprintf(t->stop_reason, sizeof(t->stop_reason), "%s", reason ? reason : "stop");
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	if (t->started)
		pthread_join(t->thread, NULL);
	/* The writer is gone: this thread owns the files now. */
	if (t->gap_active)
		(void)try_recover(t);
	r = audit_rec_new(AUDIT_EV_DAEMON_STOP, clock_wall_ns());
	if (r)
		audit_rec_str(r, "reason", t->stop_reason);
	if (t->gap_active) {
		audit_rec_free(r);
		r = NULL;
	}
	if (!r || emit_own(t, r) || emit_checkpoint(t, "stop", 0, 0) || commit(t) ||
	    (sync_drain(t), sync_check(t)))
		log_error("audit", "%s: could not write the stop of the trail; its last records are "
				   "unsigned until the next start signs them",
			  t->path);
	trail_free(t);
}
