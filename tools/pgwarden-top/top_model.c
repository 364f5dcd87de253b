/* top_model: snapshots → rows with rates, filter, sort, fixed-width formatting (see top.h). */
#include "top.h"

#include "base/sanitize.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const col_names[TOP_COL_COUNT] = {
	[TOP_COL_ID] = "id",       [TOP_COL_WHO] = "proc", [TOP_COL_USER] = "user",
	[TOP_COL_DB] = "db",       [TOP_COL_STATE] = "state", [TOP_COL_TLS] = "tls",
	[TOP_COL_TIME] = "time",   [TOP_COL_QPS] = "qps",  [TOP_COL_BPS] = "bps",
	[TOP_COL_LAST] = "last",
};

static const char *const col_titles[TOP_COL_COUNT] = {
	[TOP_COL_ID] = "ID",         [TOP_COL_WHO] = "PROCESS/CLIENT", [TOP_COL_USER] = "USER",
	[TOP_COL_DB] = "DATABASE",   [TOP_COL_STATE] = "STATE",        [TOP_COL_TLS] = "TLS",
	[TOP_COL_TIME] = "TIME",     [TOP_COL_QPS] = "ST/S",           [TOP_COL_BPS] = "B/S",
	[TOP_COL_LAST] = "LAST STATEMENT",
};

/* Minimum widths at 80 columns; extra width goes to WHO, USER, DB and LAST. */
static const int col_width[TOP_COL_COUNT] = {
	[TOP_COL_ID] = 8,    [TOP_COL_WHO] = 14, [TOP_COL_USER] = 8, [TOP_COL_DB] = 8,
	[TOP_COL_STATE] = 6, [TOP_COL_TLS] = 3,  [TOP_COL_TIME] = 6, [TOP_COL_QPS] = 5,
	[TOP_COL_BPS] = 5,   [TOP_COL_LAST] = 0,
};

const char *top_col_name(enum top_col c)
{
	return (unsigned)c < TOP_COL_COUNT ? col_names[c] : "?";
}

int top_col_parse(const char *name)
{
	for (int i = 0; i < TOP_COL_COUNT; i++)
		if (strcasecmp(name, col_names[i]) == 0)
			return i;
	return -1;
}

void top_model_init(struct top_model *m)
{
	memset(m, 0, sizeof(*m));
	m->sort = TOP_COL_QPS;
}

static void rows_free(struct top_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(rows[i].raw);
	free(rows);
}

void top_model_clear(struct top_model *m)
{
	rows_free(m->rows, m->n);
	free(m->view);
	m->rows = NULL;
	m->view = NULL;
	m->n = m->nview = 0;
	memset(&m->totals, 0, sizeof(m->totals));
}

void top_model_free(struct top_model *m)
{
	top_model_clear(m);
}

/* ---- snapshot → rows --------------------------------------------------------------------- */

const char *top_text(json_t *o, const char *key, const char *dflt, char *buf, size_t n)
{
	const char *s = json_string_value(json_object_get(o, key));

	/* Values from clients arrive sanitised (admin JSON); whatever is left that a terminal
	 * would act on, or a daemon of another version sent raw, is escaped here in the same
	 * spelling. A newline is an escape too, so a row stays one line. */
	sanitize_str(buf, n, s && *s ? s : dflt, SANITIZE_TERMINAL_ESCAPED, NULL);
	return buf;
}

static void copy_str(char *dst, size_t n, json_t *o, const char *key, const char *dflt)
{
	top_text(o, key, dflt, dst, n);
}

static long long int_of(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

static void row_from_json(struct top_row *r, json_t *s)
{
	json_t *p = json_object_get(s, "process"), *tls = json_object_get(s, "tls");

	memset(r, 0, sizeof(*r));
	copy_str(r->id, sizeof(r->id), s, "id", "?");
	copy_str(r->user, sizeof(r->user), s, "user", "-");
	copy_str(r->db, sizeof(r->db), s, "database", "-");
	copy_str(r->state, sizeof(r->state), s, "state", "?");
	copy_str(r->client, sizeof(r->client), s, "client", "-");
	copy_str(r->last, sizeof(r->last), s, "last_statement", "");
	r->pid = -1;
	if (json_is_object(p)) {
		copy_str(r->comm, sizeof(r->comm), p, "comm", "?");
		r->pid = int_of(p, "pid");
		snprintf(r->who, sizeof(r->who), "%s[%lld]", r->comm, r->pid);
	} else {
		snprintf(r->who, sizeof(r->who), "%s", r->client);
	}
	if (json_is_object(tls)) {
		const char *v = json_string_value(json_object_get(tls, "version"));

		/* "TLSv1.3" → "1.3": the column is narrow. */
		snprintf(r->tls, sizeof(r->tls), "%s", v && !strncmp(v, "TLSv", 4) ? v + 4 : "yes");
	} else {
		snprintf(r->tls, sizeof(r->tls), "no");
	}
	r->duration = json_number_value(json_object_get(s, "duration_seconds"));
	r->statements = int_of(s, "statements");
	r->bytes_in = int_of(s, "bytes_from_client");
	r->bytes_out = int_of(s, "bytes_from_server");
	r->errors = int_of(s, "errors");
	r->raw = json_incref(s);
}

static int cmp_id(const void *a, const void *b)
{
	return strcmp(((const struct top_row *)a)->id, ((const struct top_row *)b)->id);
}

int top_model_update(struct top_model *m, json_t *sessions, double t)
{
	size_t n = json_array_size(sessions), k = 0;
	struct top_row *rows = calloc(n ? n : 1, sizeof(*rows));
	double dt = m->snapshot_time > 0 ? t - m->snapshot_time : 0;
	struct top_totals tot = {0};

	if (!rows)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(sessions, i);

		if (json_is_object(s))
			row_from_json(&rows[k++], s);
	}
	/* Previous rows are sorted by id (below), so each lookup is a bsearch. */
	for (size_t i = 0; i < k; i++) {
		struct top_row *r = &rows[i];
		struct top_row *prev = m->n ? bsearch(r, m->rows, m->n, sizeof(*r), cmp_id) : NULL;
		double qps = 0, in = 0, out = 0;

		if (prev && dt > 0.05) {
			qps = (double)(r->statements - prev->statements) / dt;
			in = (double)(r->bytes_in - prev->bytes_in) / dt;
			out = (double)(r->bytes_out - prev->bytes_out) / dt;
		} else if (!prev && r->duration > 0.05 && dt > 0) {
			/* New since the last snapshot: its whole life is the interval. */
			double life = r->duration < dt ? r->duration : dt;

			qps = (double)r->statements / life;
			in = (double)r->bytes_in / life;
			out = (double)r->bytes_out / life;
		}
		r->qps = qps > 0 ? qps : 0;
		r->bps = in + out > 0 ? in + out : 0;
		tot.qps += r->qps;
		tot.bps_in += in > 0 ? in : 0;
		tot.bps_out += out > 0 ? out : 0;
		tot.errors += r->errors;
		if (!strcmp(r->state, "idle"))
			tot.by_state_idle++;
		else if (!strcmp(r->state, "active") || !strncmp(r->state, "copy", 4))
			tot.by_state_active++;
	}
	qsort(rows, k, sizeof(*rows), cmp_id);
	rows_free(m->rows, m->n);
	free(m->view);
	m->rows = rows;
	m->n = k;
	m->view = calloc(k ? k : 1, sizeof(*m->view));
	m->nview = 0;
	if (!m->view) {
		m->n = 0;
		rows_free(rows, k);
		m->rows = NULL;
		return -ENOMEM;
	}
	tot.sessions = (unsigned)k;
	m->totals = tot;
	m->snapshot_time = t;
	top_model_refresh_view(m);
	return 0;
}

/* ---- filter -------------------------------------------------------------------------------- */

static bool contains(const char *hay, const char *needle)
{
	return !*needle || strcasestr(hay, needle) != NULL;
}

static bool row_matches(const struct top_row *r, const struct top_filter *f)
{
	char pid[24];

	snprintf(pid, sizeof(pid), "%lld", r->pid);
	if (!contains(r->user, f->user) || !contains(r->db, f->db))
		return false;
	if (*f->proc && !contains(r->comm, f->proc) && !(r->pid >= 0 && !strcmp(pid, f->proc)) &&
	    !contains(r->client, f->proc))
		return false;
	if (*f->text && !contains(r->user, f->text) && !contains(r->db, f->text) &&
	    !contains(r->who, f->text) && !contains(r->client, f->text) &&
	    !contains(r->last, f->text) && !contains(r->id, f->text))
		return false;
	return true;
}

int top_filter_parse(struct top_filter *f, const char *expr, char *err, size_t n)
{
	struct top_filter nf;
	char buf[256], *save = NULL, *tok;

	memset(&nf, 0, sizeof(nf));

	snprintf(buf, sizeof(buf), "%s", expr);
	for (tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(tok, '=');
		char *dst;

		if (!eq) {
			snprintf(nf.text, sizeof(nf.text), "%s", tok);
			continue;
		}
		*eq = '\0';
		if (!strcmp(tok, "user") || !strcmp(tok, "u"))
			dst = nf.user;
		else if (!strcmp(tok, "db") || !strcmp(tok, "database") || !strcmp(tok, "d"))
			dst = nf.db;
		else if (!strcmp(tok, "proc") || !strcmp(tok, "process") || !strcmp(tok, "pid") ||
			 !strcmp(tok, "p"))
			dst = nf.proc;
		else {
			snprintf(err, n, "unknown filter key \"%s\" (user=, db=, proc=)", tok);
			return -EINVAL;
		}
		snprintf(dst, sizeof(nf.user), "%s", eq + 1);
	}
	*f = nf;
	return 0;
}

const char *top_filter_format(const struct top_filter *f, char *buf, size_t n)
{
	size_t len = 0;

	buf[0] = '\0';
#define ADD(k, v)                                                                        \
	if (*(v) && len < n)                                                             \
		len += (size_t)snprintf(buf + len, n - len, "%s%s%s", len ? " " : "", k, v);
	ADD("user=", f->user);
	ADD("db=", f->db);
	ADD("proc=", f->proc);
	ADD("", f->text);
#undef ADD
	return buf;
}

/* ---- sort ------------------------------------------------------------------------------------ */

static const struct top_model *sort_model; /* qsort has no context argument */

static int cmp_num(double a, double b)
{
	return a < b ? -1 : a > b;
}

static int cmp_rows(const void *pa, const void *pb)
{
	const struct top_row *a = &sort_model->rows[*(const size_t *)pa];
	const struct top_row *b = &sort_model->rows[*(const size_t *)pb];
	int c = 0;

	switch (sort_model->sort) {
	case TOP_COL_ID:
		c = strcmp(a->id, b->id);
		break;
	case TOP_COL_WHO:
		c = strcasecmp(a->who, b->who);
		break;
	case TOP_COL_USER:
		c = strcasecmp(a->user, b->user);
		break;
	case TOP_COL_DB:
		c = strcasecmp(a->db, b->db);
		break;
	case TOP_COL_STATE:
		c = strcmp(a->state, b->state);
		break;
	case TOP_COL_TLS:
		c = strcmp(a->tls, b->tls);
		break;
	case TOP_COL_TIME: /* longest first */
		c = -cmp_num(a->duration, b->duration);
		break;
	case TOP_COL_QPS: /* busiest first */
		c = -cmp_num(a->qps, b->qps);
		break;
	case TOP_COL_BPS:
		c = -cmp_num(a->bps, b->bps);
		break;
	case TOP_COL_LAST:
		c = strcmp(a->last, b->last);
		break;
	case TOP_COL_COUNT:
		break;
	}
	if (sort_model->reverse)
		c = -c;
	/* Ties keep a stable, meaningful order: oldest session first, then id. */
	if (!c)
		c = -cmp_num(a->duration, b->duration);
	if (!c)
		c = strcmp(a->id, b->id);
	return c;
}

void top_model_refresh_view(struct top_model *m)
{
	m->nview = 0;
	for (size_t i = 0; i < m->n; i++)
		if (row_matches(&m->rows[i], &m->filter))
			m->view[m->nview++] = i;
	sort_model = m;
	qsort(m->view, m->nview, sizeof(*m->view), cmp_rows);
	sort_model = NULL;
	m->totals.shown = (unsigned)m->nview;
}

/* ---- formatting ------------------------------------------------------------------------------ */

const char *top_fmt_duration(double s, char *buf, size_t n)
{
	long t = s > 0 ? (long)s : 0;

	if (t < 60)
		snprintf(buf, n, "%lds", t);
	else if (t < 3600)
		snprintf(buf, n, "%ldm%02ld", t / 60, t % 60);
	else if (t < 86400)
		snprintf(buf, n, "%ldh%02ld", t / 3600, t % 3600 / 60);
	else
		snprintf(buf, n, "%ldd%02ld", t / 86400, t % 86400 / 3600);
	return buf;
}

const char *top_fmt_rate(double v, char *buf, size_t n)
{
	static const char units[] = " KMGTP";
	unsigned u = 0;

	if (v < 0.05) {
		snprintf(buf, n, "0");
		return buf;
	}
	if (v < 10) {
		snprintf(buf, n, "%.1f", v);
		return buf;
	}
	while (v >= 1000 && u < 5) {
		v /= 1000;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%.0f", v);
	else if (v < 10)
		snprintf(buf, n, "%.1f%c", v, units[u]);
	else
		snprintf(buf, n, "%.0f%c", v, units[u]);
	return buf;
}

void top_layout_compute(struct top_layout *l, int cols)
{
	int pos = 0, extra, fixed = 0;

	for (int i = 0; i < TOP_COL_COUNT; i++)
		fixed += col_width[i] + 1;
	/* The last statement gets at least 9 columns at 80; beyond that, who/user/db take a
	 * share of the surplus (capped) and the statement the rest. */
	extra = cols - fixed - 9;
	if (extra < 0)
		extra = 0;
	for (int i = 0; i < TOP_COL_COUNT; i++) {
		int w = col_width[i];

		if (i == TOP_COL_WHO)
			w += extra / 3 > 10 ? 10 : extra / 3;
		else if (i == TOP_COL_USER || i == TOP_COL_DB)
			w += extra / 6 > 6 ? 6 : extra / 6;
		l->start[i] = pos;
		l->width[i] = w;
		pos += w + 1;
	}
	l->width[TOP_COL_LAST] = cols - l->start[TOP_COL_LAST];
	if (l->width[TOP_COL_LAST] < 0)
		l->width[TOP_COL_LAST] = 0;
	l->total = cols;
}

/* Write s into line at col for width chars (cut, never past the end); numbers go right. */
static void put_cell(char *line, size_t n, const struct top_layout *l, enum top_col c,
		     const char *s, bool right)
{
	int w = l->width[c], start = l->start[c], len = (int)strlen(s);

	if (start >= l->total || w <= 0)
		return;
	if (start + w > l->total)
		w = l->total - start;
	if (len > w) {
		len = w;
		/* Never cut a UTF-8 character in half. */
		while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
	}
	memcpy(line + start + (right ? w - len : 0), s, (size_t)len);
	(void)n;
}

static void line_init(char *buf, size_t n, int cols)
{
	size_t w = (size_t)cols < n - 1 ? (size_t)cols : n - 1;

	memset(buf, ' ', w);
	buf[w] = '\0';
}

void top_format_header(const struct top_layout *l, enum top_col sort, bool reverse, char *buf,
		       size_t n)
{
	line_init(buf, n, l->total);
	for (int i = 0; i < TOP_COL_COUNT; i++) {
		char title[32];
		bool right = i == TOP_COL_TIME || i == TOP_COL_QPS || i == TOP_COL_BPS;

		/* The sort column is marked: '^' ascending-ish (reversed), 'v' the natural order. */
		if ((int)sort == i)
			snprintf(title, sizeof(title), "%s%c", col_titles[i], reverse ? '^' : 'v');
		else
			snprintf(title, sizeof(title), "%s", col_titles[i]);
		put_cell(buf, n, l, (enum top_col)i, title, right);
	}
}

void top_format_row(const struct top_layout *l, const struct top_row *r, char *buf, size_t n)
{
	char tmp[32];

	line_init(buf, n, l->total);
	put_cell(buf, n, l, TOP_COL_ID, r->id, false);
	put_cell(buf, n, l, TOP_COL_WHO, r->who, false);
	put_cell(buf, n, l, TOP_COL_USER, r->user, false);
	put_cell(buf, n, l, TOP_COL_DB, r->db, false);
	put_cell(buf, n, l, TOP_COL_STATE, r->state, false);
	put_cell(buf, n, l, TOP_COL_TLS, r->tls, false);
	put_cell(buf, n, l, TOP_COL_TIME, top_fmt_duration(r->duration, tmp, sizeof(tmp)), true);
	put_cell(buf, n, l, TOP_COL_QPS, top_fmt_rate(r->qps, tmp, sizeof(tmp)), true);
	put_cell(buf, n, l, TOP_COL_BPS, top_fmt_rate(r->bps, tmp, sizeof(tmp)), true);
	put_cell(buf, n, l, TOP_COL_LAST, r->last, false);
}
