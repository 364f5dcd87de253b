/*
 * admin_session: one session as the admin socket lists it (see docs/ADMIN.md, "sessions").
 *
 * Runs on the admin thread while the owning worker may be updating the session: counters
 * are read with relaxed atomic loads (a stale value is fine, a torn one impossible on
 * 64-bit targets), strings are immutable once their pointer is published.
 */
#include "admin/admin.h"

#include "base/clock.h"
#include "base/sanitize.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* n, or less so that a UTF-8 sequence cut at n (text truncated to a cap) is dropped rather
 * than shown as escapes of half a character. */
static size_t whole_chars(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = n, need;

	while (i > 0 && n - i < 3 && (p[i - 1] & 0xc0) == 0x80)
		i--;
	if (i == 0 || p[i - 1] < 0xc0)
		return n;
	need = p[i - 1] >= 0xf0 ? 4 : p[i - 1] >= 0xe0 ? 3 : 2;
	return n - (i - 1) < need ? i - 1 : n;
}

json_t *admin_json_text(const char *s, size_t max)
{
	size_t n, cap;
	char *out;
	json_t *j;

	if (!s)
		return json_null();
	/* Peer bytes become the one sanitised spelling (base/sanitize.h): valid UTF-8 for the
	 * encoder, and no control, C1 or invalid byte for whoever prints the value. */
	n = strnlen(s, max);
	if (n == max)
		n = whole_chars(s, n);
	cap = sanitize_len(s, n, SANITIZE_JSON) + 1;
	out = malloc(cap);
	if (!out)
		return NULL;
	sanitize(out, cap, s, n, SANITIZE_JSON, NULL);
	j = json_string(out);
	free(out);
	return j;
}

/* The listing's statement is a one-line summary: its line breaks and tabs are spaces
 * (SQL means the same), everything else is sanitised like any peer text. */
static json_t *statement_json(const char *sql)
{
	char flat[ADMIN_STATEMENT_MAX + 1];
	size_t n;

	if (!sql)
		return json_null();
	n = strnlen(sql, ADMIN_STATEMENT_MAX);
	memcpy(flat, sql, n);
	flat[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (flat[i] == '\n' || flat[i] == '\r' || flat[i] == '\t')
			flat[i] = ' ';
	return admin_json_text(flat, ADMIN_STATEMENT_MAX);
}

static json_t *addr_json(const struct addr *a)
{
	char buf[ADDR_STRLEN];

	if (a->len == 0)
		return json_null();
	return json_string(addr_format(&a->ss.sa, buf, sizeof(buf)));
}

static uint64_t rd64(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void set(json_t *o, const char *k, json_t *v)
{
	json_object_set_new(o, k, v ? v : json_null());
}

static json_t *rfc3339(uint64_t wall_ns)
{
	char buf[64];
	time_t t = (time_t)(wall_ns / NSEC_PER_SEC);
	struct tm tm;

	if (!gmtime_r(&t, &tm))
		return json_null();
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned)(wall_ns % NSEC_PER_SEC / 1000));
	return json_string(buf);
}

static json_t *process_json(const struct session_process *p)
{
	char comm[sizeof(p->comm) + 1];

	if (!p->known)
		return json_null();
	memcpy(comm, p->comm, sizeof(p->comm));
	comm[sizeof(p->comm)] = '\0';
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:o}", "pid", (json_int_t)p->pid, "tgid",
			 (json_int_t)p->tgid, "uid", (json_int_t)p->uid, "gid", (json_int_t)p->gid,
			 "cgroup_id", (json_int_t)p->cgroup_id, "comm",
			 admin_json_text(comm, sizeof(comm)));
}

static json_t *tls_json(const struct admin_session_view *v)
{
	json_t *t;

	if (!v || !v->tls_version)
		return json_null();
	t = json_object();
	if (!t)
		return NULL;
	set(t, "version", json_string(v->tls_version));
	set(t, "cipher", admin_json_text(v->tls_cipher, 256));
	set(t, "client_subject", admin_json_text(v->tls_client_subject, 1024));
	return t;
}

static json_t *upstream_tls_json(const struct admin_session_view *v)
{
	if (!v || !v->upstream_tls_version)
		return json_null();
	return json_pack("{s:s, s:o}", "version", v->upstream_tls_version, "cipher",
			 admin_json_text(v->upstream_tls_cipher, 256));
}

json_t *admin_session_json(const struct session *s, const struct admin_session_view *v)
{
	uint64_t now = v && v->now_mono_ns ? v->now_mono_ns : clock_mono_ns();
	uint64_t dur = now > s->start_mono_ns ? now - s->start_mono_ns : 0;
	json_t *o = json_object();
	char proto[32];
	char tx[2] = {(char)s->tx_status, '\0'};
	char upstream[SESSION_UPSTREAM_STRLEN];
	const char *end_reason;

	if (!o)
		return NULL;
	set(o, "id", json_string(s->id_hex));
	set(o, "route", json_string(session_route_to_str(s->route)));
	set(o, "client", addr_json(&s->client));
	set(o, "dialled", addr_json(&s->dialled));
	session_upstream_text(s, upstream, sizeof(upstream));
	set(o, "upstream", upstream[0] ? json_string(upstream) : json_null());
	set(o, "process", process_json(session_process(s)));
	set(o, "user", admin_json_text(s->user, ADMIN_STATEMENT_MAX));
	set(o, "database", admin_json_text(s->database, ADMIN_STATEMENT_MAX));
	set(o, "application_name", admin_json_text(s->application_name, ADMIN_STATEMENT_MAX));
	if (s->protocol) {
		snprintf(proto, sizeof(proto), "%u.%u", s->protocol >> 16, s->protocol & 0xffff);
		set(o, "protocol", json_string(proto));
	} else {
		set(o, "protocol", json_null());
	}
	set(o, "replication", json_boolean(s->replication));
	set(o, "backend_pid", s->backend_pid ? json_integer(s->backend_pid) : json_null());
	set(o, "authenticated", json_boolean(s->auth.ok));
	set(o, "auth_method", v && v->auth_method ? json_string(v->auth_method) : json_null());
	set(o, "tx_status", tx[0] == 'I' || tx[0] == 'T' || tx[0] == 'E' ? json_string(tx)
									   : json_null());
	set(o, "state", json_string(v && v->state ? v->state : "unknown"));
	set(o, "tls", tls_json(v));
	set(o, "upstream_tls", upstream_tls_json(v));
	set(o, "started_at", rfc3339(s->start_wall_ns));
	set(o, "duration_seconds", json_real((double)dur / 1e9));
	set(o, "statements", json_integer((json_int_t)rd64(&s->statements)));
	set(o, "rule", v && v->rule ? admin_json_text(v->rule, ADMIN_STATEMENT_MAX) : json_null());
	set(o, "denied", json_integer((json_int_t)rd64(&s->denied)));
	set(o, "errors", json_integer((json_int_t)(v ? v->errors : 0)));
	set(o, "bytes_from_client", json_integer((json_int_t)rd64(&s->bytes_from_client)));
	set(o, "bytes_from_server", json_integer((json_int_t)rd64(&s->bytes_from_server)));
	set(o, "last_statement", statement_json(v ? v->last_statement : NULL));
	set(o, "last_latency_seconds", v && v->last_latency_ns >= 0
					       ? json_real((double)v->last_latency_ns / 1e9)
					       : json_null());
	end_reason = __atomic_load_n(&s->end_reason, __ATOMIC_ACQUIRE);
	if (end_reason)
		set(o, "end_reason", admin_json_text(end_reason, SESSION_END_REASON_MAX));
	return o;
}
