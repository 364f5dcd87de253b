/*
 * admin_session: one session as the admin socket lists it (see docs/ADMIN.md, "sessions").
 *
 * Runs on the admin thread while the owning worker may be updating the session: counters
 * are read with relaxed atomic loads (a stale value is fine, a torn one impossible on
 * 64-bit targets), strings are immutable once their pointer is published.
 */
#include "admin/admin.h"

#include "base/clock.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and values past U+10FFFF are invalid. */
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

json_t *admin_json_text(const char *s, size_t max)
{
	static const char repl[] = "\xef\xbf\xbd"; /* U+FFFD */
	const unsigned char *p = (const unsigned char *)s;
	size_t n, out_len = 0;
	char *out;
	json_t *j;

	if (!s)
		return json_null();
	n = strnlen(s, max);
	out = malloc(n * 3 + 1); /* worst case: every byte replaced */
	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_seq(p + i, n - i);

		if (l == 0) {
			/* An incomplete sequence cut by max is dropped, not replaced. */
			if (n == max && n - i < 4 && p[i] >= 0xc0)
				break;
			memcpy(out + out_len, repl, 3);
			out_len += 3;
			i++;
			continue;
		}
		memcpy(out + out_len, p + i, l);
		out_len += l;
		i += l;
	}
	j = json_stringn(out, out_len);
	free(out);
	return j;
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

json_t *admin_session_json(const struct session *s, const struct admin_session_view *v)
{
	uint64_t now = v && v->now_mono_ns ? v->now_mono_ns : clock_mono_ns();
	uint64_t dur = now > s->start_mono_ns ? now - s->start_mono_ns : 0;
	json_t *o = json_object();
	char proto[32];
	char tx[2] = {(char)s->tx_status, '\0'};
	char upstream[SESSION_UPSTREAM_STRLEN];

	if (!o)
		return NULL;
	set(o, "id", json_string(s->id_hex));
	set(o, "route", json_string(session_route_to_str(s->route)));
	set(o, "client", addr_json(&s->client));
	set(o, "dialled", addr_json(&s->dialled));
	session_upstream_text(s, upstream, sizeof(upstream));
	set(o, "upstream", upstream[0] ? json_string(upstream) : json_null());
	set(o, "process", process_json(&s->process));
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
	set(o, "started_at", rfc3339(s->start_wall_ns));
	set(o, "duration_seconds", json_real((double)dur / 1e9));
	set(o, "statements", json_integer((json_int_t)rd64(&s->statements)));
	set(o, "errors", json_integer((json_int_t)(v ? v->errors : 0)));
	set(o, "bytes_from_client", json_integer((json_int_t)rd64(&s->bytes_from_client)));
	set(o, "bytes_from_server", json_integer((json_int_t)rd64(&s->bytes_from_server)));
	set(o, "last_statement",
	    admin_json_text(v ? v->last_statement : NULL, ADMIN_STATEMENT_MAX));
	set(o, "last_latency_seconds", v && v->last_latency_ns >= 0
					       ? json_real((double)v->last_latency_ns / 1e9)
					       : json_null());
	if (s->end_reason[0])
		set(o, "end_reason", admin_json_text(s->end_reason, sizeof(s->end_reason)));
	return o;
}
