/*
 * pgwarden-top: a live, top-like view of pgwardend's sessions over the admin socket.
 *
 * One persistent admin connection; every refresh asks for "status" and "sessions" and
 * turns the difference between two snapshots into rates (top_model.c). When the daemon is
 * gone the table empties, the header says so, and every refresh tries to reconnect, so the
 * view comes back by itself when pgwardend does. Works in 80x24; wider terminals get wider
 * columns. Batch mode (-b) prints the same lines without curses, for scripts.
 */
#include "top.h"

#include "admin/admin.h"
#include "admin/admin_client.h"
#include "base/clock.h"
#include "base/version.h"
#include "steer/steer.h"

#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOP_MIN_DELAY 0.2
#define TOP_MAX_DELAY 3600.0
#define TOP_DETAIL_LINES 11
#define TOP_STEER_EVERY 5.0 /* seconds between local steering probes */

enum top_mode { MODE_NORMAL, MODE_PROMPT, MODE_CONFIRM, MODE_HELP };
enum prompt_kind { PROMPT_FILTER, PROMPT_USER, PROMPT_DB, PROMPT_PROC, PROMPT_DELAY };

struct top_app {
	const char *socket;
	double delay;
	bool batch;
	long iterations;
	int width; /* batch mode line width */
	struct admin_conn *conn;
	bool down;
	char down_msg[256];
	json_t *status; /* last "status" object, NULL when down */
	char steering[96];
	double steering_time;
	struct top_model m;
	char selected[33];
	size_t scroll;
	bool detail;
	enum top_mode mode;
	enum prompt_kind prompt;
	char prompt_buf[128];
	char message[256];
	bool message_error;
	double message_until;
	char kill_id[33];
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	stop_requested = 1;
}

static double now_s(void)
{
	return (double)clock_mono_ns() / 1e9;
}

static void set_message(struct top_app *a, bool error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_message(struct top_app *a, bool error, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(a->message, sizeof(a->message), fmt, ap);
	va_end(ap);
	a->message_error = error;
	a->message_until = now_s() + 5;
}

/* ---- data ------------------------------------------------------------------------------ */

static void go_down(struct top_app *a, int err)
{
	const char *why;

	admin_conn_close(a->conn);
	a->conn = NULL;
	json_decref(a->status);
	a->status = NULL;
	top_model_clear(&a->m);
	a->m.snapshot_time = 0;
	a->down = true;
	switch (-err) {
	case ENOENT:
	case ECONNREFUSED:
		why = "not running";
		break;
	case EACCES:
	case EPERM:
		why = "permission denied (the admin socket is root-only)";
		break;
	case EPIPE:
	case ECONNRESET:
		why = "connection lost";
		break;
	case ETIMEDOUT:
		why = "not answering";
		break;
	default:
		why = strerror(-err);
	}
	snprintf(a->down_msg, sizeof(a->down_msg), "pgwardend unreachable at %s: %s; retrying",
		 a->socket, why);
}

/* One request on the persistent connection. 0 with *reply ({"ok":...}), or -errno after
 * which the connection is gone. */
static int call(struct top_app *a, json_t *req, json_t **reply)
{
	int timeout = (int)(a->delay * 1000) + 2000;
	int err;

	*reply = NULL;
	for (int attempt = 0; attempt < 2; attempt++) {
		bool fresh = !a->conn;

		if (!a->conn) {
			err = admin_conn_open(a->socket, timeout, &a->conn);
			if (err)
				break;
		}
		err = admin_conn_call(a->conn, req, reply, timeout, NULL, NULL);
		if (!err || fresh || err == -ETIMEDOUT)
			break;
		/* A kept connection the daemon closed meanwhile (idle timeout, restart): one
		 * retry on a new one before calling the daemon down. */
		admin_conn_close(a->conn);
		a->conn = NULL;
	}
	json_decref(req);
	if (err)
		go_down(a, err);
	return err;
}

static void probe_steering(struct top_app *a)
{
	json_t *st = a->status ? json_object_get(a->status, "steering") : NULL;
	json_t *local = NULL;
	const char *inst;

	if (!json_is_object(st)) {
		if (now_s() - a->steering_time < TOP_STEER_EVERY && a->steering[0])
			return;
		inst = getenv("PGWARDEN_INSTANCE");
		local = steer_status_json(inst && *inst ? inst : STEER_DEFAULT_INSTANCE);
		a->steering_time = now_s();
		st = local;
	}
	if (!json_is_object(st))
		snprintf(a->steering, sizeof(a->steering), "unknown");
	else if (json_is_true(json_object_get(st, "attached")))
		snprintf(a->steering, sizeof(a->steering), "attached (%s)",
			 json_string_value(json_object_get(st, "mode"))
				 ? json_string_value(json_object_get(st, "mode"))
				 : "?");
	else
		snprintf(a->steering, sizeof(a->steering), "not attached");
	json_decref(local);
}

static void fetch(struct top_app *a)
{
	json_t *reply, *sessions;
	char buf[256];

	if (call(a, json_pack("{s:s}", "cmd", "status"), &reply) == 0) {
		json_decref(a->status);
		a->status = json_incref(json_object_get(reply, "status"));
		json_decref(reply);
	}
	if (a->conn && call(a, json_pack("{s:s}", "cmd", "sessions"), &reply) == 0) {
		sessions = json_object_get(reply, "sessions");
		if (json_is_array(sessions)) {
			if (top_model_update(&a->m, sessions, now_s()) != 0)
				set_message(a, true, "out of memory");
			if (a->down)
				set_message(a, false, "connected to pgwardend at %s", a->socket);
			a->down = false;
		} else {
			set_message(a, true, "sessions: %s",
				    admin_reply_error(reply, buf, sizeof(buf))
					    ? buf
					    : "reply without a session list");
		}
		json_decref(reply);
	}
	probe_steering(a);
}

static void kill_session(struct top_app *a, const char *id)
{
	json_t *reply;
	char buf[256];

	if (call(a, json_pack("{s:s, s:s}", "cmd", "kill", "session", id), &reply) != 0) {
		set_message(a, true, "kill %.8s: pgwardend unreachable", id);
		return;
	}
	if (admin_reply_error(reply, buf, sizeof(buf)))
		set_message(a, true, "kill %.8s: %s", id, buf);
	else
		set_message(a, false, "session %.8s terminating (client gets 57P01)", id);
	json_decref(reply);
}

/* ---- header lines (shared by curses and batch) ----------------------------------------- */

static void header_lines(struct top_app *a, char l[3][512])
{
	char t[16], up[32], r1[16], r2[16], r3[16], filt[200];
	time_t now = time(NULL);
	struct tm tm;
	json_t *st = a->status;
	long long errors = a->m.totals.errors;

	localtime_r(&now, &tm);
	strftime(t, sizeof(t), "%H:%M:%S", &tm);
	if (a->down || !st) {
		snprintf(l[0], 512, "pgwarden-top %s  pgwardend: DOWN  refresh %.1fs", t, a->delay);
	} else {
		char ver[64];

		snprintf(l[0], 512, "pgwarden-top %s  pgwardend pid %lld, up %s%s%s  refresh %.1fs",
			 t, (long long)json_integer_value(json_object_get(st, "pid")),
			 top_fmt_duration(json_number_value(json_object_get(st, "uptime_seconds")),
					  up, sizeof(up)),
			 json_is_string(json_object_get(st, "version")) ? ", v" : "",
			 top_text(st, "version", "", ver, sizeof(ver)), a->delay);
		if (json_is_integer(json_object_get(st, "errors")))
			errors = json_integer_value(json_object_get(st, "errors"));
	}
	snprintf(l[1], 512, "Sessions: %u (%u idle, %u active), %u shown  St/s %s  In %s/s  Out %s/s  Errors %lld",
		 a->m.totals.sessions, a->m.totals.by_state_idle, a->m.totals.by_state_active,
		 a->m.totals.shown, top_fmt_rate(a->m.totals.qps, r1, sizeof(r1)),
		 top_fmt_rate(a->m.totals.bps_in, r2, sizeof(r2)),
		 top_fmt_rate(a->m.totals.bps_out, r3, sizeof(r3)), errors);
	top_filter_format(&a->m.filter, filt, sizeof(filt));
	snprintf(l[2], 512, "Steering: %s  Sort: %s%s  Filter: %s", a->steering[0] ? a->steering : "?",
		 top_col_name(a->m.sort), a->m.reverse ? " (reversed)" : "",
		 filt[0] ? filt : "none");
}

/* ---- batch ------------------------------------------------------------------------------ */

static int run_batch(struct top_app *a)
{
	struct top_layout lay;
	char hl[3][512], line[1024];

	top_layout_compute(&lay, a->width);
	for (long i = 0; !a->iterations || i < a->iterations; i++) {
		if (i)
			usleep((useconds_t)(a->delay * 1e6));
		if (stop_requested)
			break;
		fetch(a);
		header_lines(a, hl);
		for (int k = 0; k < 3; k++)
			printf("%.*s\n", a->width, hl[k]);
		if (a->down)
			printf("%.*s\n", a->width, a->down_msg);
		top_format_header(&lay, a->m.sort, a->m.reverse, line, sizeof(line));
		printf("%s\n", line);
		for (size_t k = 0; k < a->m.nview; k++) {
			top_format_row(&lay, &a->m.rows[a->m.view[k]], line, sizeof(line));
			printf("%s\n", line);
		}
		printf("\n");
		fflush(stdout);
	}
	return a->down ? 3 : 0;
}

/* ---- curses view ------------------------------------------------------------------------ */

static long selected_index(struct top_app *a)
{
	for (size_t i = 0; i < a->m.nview; i++)
		if (!strcmp(a->m.rows[a->m.view[i]].id, a->selected))
			return (long)i;
	return -1;
}

static void select_index(struct top_app *a, long i)
{
	if (a->m.nview == 0) {
		a->selected[0] = '\0';
		return;
	}
	if (i < 0)
		i = 0;
	if (i >= (long)a->m.nview)
		i = (long)a->m.nview - 1;
	snprintf(a->selected, sizeof(a->selected), "%s", a->m.rows[a->m.view[i]].id);
}

static void put_line(int y, const char *s, attr_t attr)
{
	if (y < 0 || y >= LINES)
		return;
	attrset(attr);
	mvaddnstr(y, 0, s, COLS);
	attrset(A_NORMAL);
}

static void draw_detail(struct top_app *a, int y0, int h)
{
	long i = selected_index(a);
	json_t *s, *p, *tls;
	char buf[1024];
	int y = y0;

	put_line(y++, "--- session detail (Enter closes) ", A_BOLD);
	if (i < 0) {
		put_line(y, "no session selected", A_NORMAL);
		return;
	}
	s = a->m.rows[a->m.view[i]].raw;
	p = json_object_get(s, "process");
	tls = json_object_get(s, "tls");
	/* Every value through top_text(): it may have come from the client. */
	char t1[160], t2[160], t3[160], t4[160];
#define S(k, b) top_text(s, k, "-", b, sizeof(b))
	snprintf(buf, sizeof(buf), "id %s  route %s  state %s  tx %s", S("id", t1),
		 S("route", t2), S("state", t3), S("tx_status", t4));
	put_line(y++, buf, A_NORMAL);
	snprintf(buf, sizeof(buf), "client %s  dialled %s  upstream %s", S("client", t1),
		 S("dialled", t2), S("upstream", t3));
	put_line(y++, buf, A_NORMAL);
	if (json_is_object(p))
		snprintf(buf, sizeof(buf), "process %s pid %lld uid %lld gid %lld cgroup %lld",
			 top_text(p, "comm", "?", t1, sizeof(t1)),
			 (long long)json_integer_value(json_object_get(p, "pid")),
			 (long long)json_integer_value(json_object_get(p, "uid")),
			 (long long)json_integer_value(json_object_get(p, "gid")),
			 (long long)json_integer_value(json_object_get(p, "cgroup_id")));
	else
		snprintf(buf, sizeof(buf), "process: not a steered local client");
	put_line(y++, buf, A_NORMAL);
	snprintf(buf, sizeof(buf), "user %s  database %s  application %s  auth %s",
		 S("user", t1), S("database", t2), S("application_name", t3),
		 S("auth_method", t4));
	put_line(y++, buf, A_NORMAL);
	snprintf(buf, sizeof(buf), "policy rule %s  denied %lld", S("rule", t1),
		 (long long)json_integer_value(json_object_get(s, "denied")));
	put_line(y++, buf, A_NORMAL);
	if (json_is_object(tls))
		snprintf(buf, sizeof(buf), "tls %s %s  client cert %s",
			 top_text(tls, "version", "?", t1, sizeof(t1)),
			 top_text(tls, "cipher", "", t2, sizeof(t2)),
			 top_text(tls, "client_subject", "none", t3, sizeof(t3)));
	else
		snprintf(buf, sizeof(buf), "tls: none (plaintext)");
	put_line(y++, buf, A_NORMAL);
	tls = json_object_get(s, "upstream_tls");
	if (json_is_object(tls))
		snprintf(buf, sizeof(buf), "upstream tls %s %s",
			 top_text(tls, "version", "?", t1, sizeof(t1)),
			 top_text(tls, "cipher", "", t2, sizeof(t2)));
	else
		snprintf(buf, sizeof(buf), "upstream tls: none (plaintext)");
	put_line(y++, buf, A_NORMAL);
	snprintf(buf, sizeof(buf), "started %s  stmts %lld  errors %lld  in %lld B  out %lld B",
		 S("started_at", t1), (long long)json_integer_value(json_object_get(s, "statements")),
		 (long long)json_integer_value(json_object_get(s, "errors")),
		 (long long)json_integer_value(json_object_get(s, "bytes_from_client")),
		 (long long)json_integer_value(json_object_get(s, "bytes_from_server")));
	put_line(y++, buf, A_NORMAL);
	/* The statement, wrapped over what is left of the pane. */
	{
		const char *st = a->m.rows[a->m.view[i]].last;
		size_t len = strlen(st), off = 0;

		if (json_is_number(json_object_get(s, "last_latency_seconds")))
			snprintf(buf, sizeof(buf), "last statement (latency %.3f ms):",
				 json_number_value(json_object_get(s, "last_latency_seconds")) *
					 1000);
		else
			snprintf(buf, sizeof(buf), "last statement:");
		put_line(y++, buf, A_BOLD);
		while (off < len && y < y0 + h && COLS > 0) {
			put_line(y++, st + off, A_NORMAL);
			off += (size_t)COLS;
		}
	}
#undef S
}

static void draw_help(void)
{
	static const char *const lines[] = {
		"pgwarden-top keys",
		"",
		"  Up/Down PgUp/PgDn Home/End   move the selection",
		"  Enter or i                   show/hide the detail pane",
		"  k                            kill the selected session (asks y/n)",
		"  /                            filter: user=NAME db=NAME proc=COMM|PID|ADDR TEXT",
		"  u  d  p                      filter by user / database / process",
		"  c                            clear filters",
		"  < >                          sort by the column to the left / right",
		"  r                            reverse the sort order",
		"  s  + -                       set / lengthen / shorten the refresh interval",
		"  space                        refresh now",
		"  q                            quit",
		"",
		"press any key to return",
	};

	erase();
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		put_line((int)i, lines[i], i == 0 ? A_BOLD : A_NORMAL);
	refresh();
}

static const char *prompt_label(enum prompt_kind k)
{
	switch (k) {
	case PROMPT_FILTER:
		return "filter (user= db= proc= text): ";
	case PROMPT_USER:
		return "user: ";
	case PROMPT_DB:
		return "database: ";
	case PROMPT_PROC:
		return "process (comm, pid or address): ";
	case PROMPT_DELAY:
		return "refresh interval in seconds: ";
	}
	return "";
}

static void draw(struct top_app *a)
{
	char hl[3][512], line[1024], msg[512];
	struct top_layout lay;
	int table_y = 5, bottom = LINES - 1, rows_h;
	long sel;

	if (a->mode == MODE_HELP) {
		draw_help();
		return;
	}
	erase();
	if (COLS < 40 || LINES < 10) {
		put_line(0, "too small: need 40x10", A_BOLD);
		refresh();
		return;
	}
	header_lines(a, hl);
	put_line(0, hl[0], A_BOLD);
	put_line(1, hl[1], A_NORMAL);
	put_line(2, hl[2], A_NORMAL);
	/* Line 3: prompt, confirmation, daemon state or the last message. */
	if (a->mode == MODE_PROMPT) {
		snprintf(msg, sizeof(msg), "%s%s", prompt_label(a->prompt), a->prompt_buf);
		put_line(3, msg, A_BOLD);
	} else if (a->mode == MODE_CONFIRM) {
		snprintf(msg, sizeof(msg), "Kill session %.8s? The client gets 57P01. [y/N]",
			 a->kill_id);
		put_line(3, msg, A_BOLD | A_REVERSE);
	} else if (a->down) {
		put_line(3, a->down_msg, A_BOLD | A_REVERSE);
	} else if (a->message[0] && now_s() < a->message_until) {
		put_line(3, a->message, a->message_error ? A_BOLD | A_REVERSE : A_NORMAL);
	}
	top_layout_compute(&lay, COLS);
	top_format_header(&lay, a->m.sort, a->m.reverse, line, sizeof(line));
	put_line(4, line, A_REVERSE);

	if (a->detail)
		bottom -= TOP_DETAIL_LINES;
	rows_h = bottom - table_y;
	if (rows_h < 1)
		rows_h = 1;
	sel = selected_index(a);
	if (sel < 0 && a->m.nview) {
		select_index(a, 0);
		sel = 0;
	}
	if (sel >= 0) {
		if ((size_t)sel < a->scroll)
			a->scroll = (size_t)sel;
		if ((size_t)sel >= a->scroll + (size_t)rows_h)
			a->scroll = (size_t)sel - (size_t)rows_h + 1;
	}
	if (a->scroll > a->m.nview)
		a->scroll = 0;
	for (int r = 0; r < rows_h && a->scroll + (size_t)r < a->m.nview; r++) {
		size_t vi = a->scroll + (size_t)r;

		top_format_row(&lay, &a->m.rows[a->m.view[vi]], line, sizeof(line));
		put_line(table_y + r, line, (long)vi == sel ? A_REVERSE : A_NORMAL);
	}
	if (a->m.nview == 0)
		put_line(table_y, a->down ? "(no data: pgwardend is down)"
					  : a->m.n ? "(no session matches the filter; c clears it)"
						   : "(no sessions)",
			 A_DIM);
	if (a->detail)
		draw_detail(a, bottom, TOP_DETAIL_LINES);
	put_line(LINES - 1, "q quit Enter detail k kill / filter u d p c clear <> sort r rev s delay h help",
		 A_DIM);
	refresh();
}

static void apply_prompt(struct top_app *a)
{
	char err[128];
	double d;
	char *end;

	switch (a->prompt) {
	case PROMPT_FILTER:
		if (top_filter_parse(&a->m.filter, a->prompt_buf, err, sizeof(err)) != 0)
			set_message(a, true, "%s", err);
		break;
	case PROMPT_USER:
		snprintf(a->m.filter.user, sizeof(a->m.filter.user), "%.*s", (int)sizeof(a->m.filter.user) - 1,
			 a->prompt_buf);
		break;
	case PROMPT_DB:
		snprintf(a->m.filter.db, sizeof(a->m.filter.db), "%.*s", (int)sizeof(a->m.filter.db) - 1,
			 a->prompt_buf);
		break;
	case PROMPT_PROC:
		snprintf(a->m.filter.proc, sizeof(a->m.filter.proc), "%.*s", (int)sizeof(a->m.filter.proc) - 1,
			 a->prompt_buf);
		break;
	case PROMPT_DELAY:
		d = strtod(a->prompt_buf, &end);
		if (end == a->prompt_buf || *end || d < TOP_MIN_DELAY || d > TOP_MAX_DELAY)
			set_message(a, true, "refresh interval: expected %.1f to %.0f seconds",
				    TOP_MIN_DELAY, TOP_MAX_DELAY);
		else
			a->delay = d;
		break;
	}
	top_model_refresh_view(&a->m);
}

static void start_prompt(struct top_app *a, enum prompt_kind k)
{
	a->mode = MODE_PROMPT;
	a->prompt = k;
	switch (k) {
	case PROMPT_FILTER:
		top_filter_format(&a->m.filter, a->prompt_buf, sizeof(a->prompt_buf));
		break;
	case PROMPT_USER:
		snprintf(a->prompt_buf, sizeof(a->prompt_buf), "%s", a->m.filter.user);
		break;
	case PROMPT_DB:
		snprintf(a->prompt_buf, sizeof(a->prompt_buf), "%s", a->m.filter.db);
		break;
	case PROMPT_PROC:
		snprintf(a->prompt_buf, sizeof(a->prompt_buf), "%s", a->m.filter.proc);
		break;
	case PROMPT_DELAY:
		snprintf(a->prompt_buf, sizeof(a->prompt_buf), "%g", a->delay);
		break;
	}
}

/* Returns true to force a data refresh. */
static bool handle_key(struct top_app *a, int ch, bool *quit)
{
	long sel = selected_index(a);
	int page = LINES - 7 - (a->detail ? TOP_DETAIL_LINES : 0);

	if (a->mode == MODE_HELP) {
		a->mode = MODE_NORMAL;
		return false;
	}
	if (a->mode == MODE_CONFIRM) {
		a->mode = MODE_NORMAL;
		if (ch == 'y' || ch == 'Y') {
			kill_session(a, a->kill_id);
			return true;
		}
		set_message(a, false, "kill cancelled");
		return false;
	}
	if (a->mode == MODE_PROMPT) {
		size_t n = strlen(a->prompt_buf);

		if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
			a->mode = MODE_NORMAL;
			apply_prompt(a);
		} else if (ch == 27) {
			a->mode = MODE_NORMAL;
		} else if (ch == KEY_BACKSPACE || ch == 127 || ch == 8) {
			if (n)
				a->prompt_buf[n - 1] = '\0';
		} else if (ch >= 0x20 && ch < 0x7f && n + 1 < sizeof(a->prompt_buf)) {
			a->prompt_buf[n] = (char)ch;
			a->prompt_buf[n + 1] = '\0';
		}
		return false;
	}
	if (page < 1)
		page = 1;
	switch (ch) {
	case 'q':
	case 'Q':
		*quit = true;
		break;
	case KEY_UP:
		select_index(a, sel - 1);
		break;
	case KEY_DOWN:
		select_index(a, sel + 1);
		break;
	case KEY_PPAGE:
		select_index(a, sel - page);
		break;
	case KEY_NPAGE:
		select_index(a, sel + page);
		break;
	case KEY_HOME:
		select_index(a, 0);
		break;
	case KEY_END:
		select_index(a, (long)a->m.nview - 1);
		break;
	case '\n':
	case '\r':
	case KEY_ENTER:
	case 'i':
		a->detail = !a->detail;
		break;
	case 'k':
	case 'K':
		if (sel < 0) {
			set_message(a, true, "no session selected");
			break;
		}
		snprintf(a->kill_id, sizeof(a->kill_id), "%s", a->selected);
		a->mode = MODE_CONFIRM;
		break;
	case '/':
		start_prompt(a, PROMPT_FILTER);
		break;
	case 'u':
		start_prompt(a, PROMPT_USER);
		break;
	case 'd':
		start_prompt(a, PROMPT_DB);
		break;
	case 'p':
		start_prompt(a, PROMPT_PROC);
		break;
	case 's':
		start_prompt(a, PROMPT_DELAY);
		break;
	case 'c':
		memset(&a->m.filter, 0, sizeof(a->m.filter));
		top_model_refresh_view(&a->m);
		break;
	case '<':
		a->m.sort = (enum top_col)((a->m.sort + TOP_COL_COUNT - 1) % TOP_COL_COUNT);
		top_model_refresh_view(&a->m);
		break;
	case '>':
		a->m.sort = (enum top_col)((a->m.sort + 1) % TOP_COL_COUNT);
		top_model_refresh_view(&a->m);
		break;
	case 'r':
		a->m.reverse = !a->m.reverse;
		top_model_refresh_view(&a->m);
		break;
	case '+':
		a->delay = a->delay * 2 > TOP_MAX_DELAY ? TOP_MAX_DELAY : a->delay * 2;
		break;
	case '-':
		a->delay = a->delay / 2 < TOP_MIN_DELAY ? TOP_MIN_DELAY : a->delay / 2;
		break;
	case ' ':
		return true;
	case 'h':
	case '?':
		a->mode = MODE_HELP;
		break;
	default:
		break;
	}
	return false;
}

static int run_curses(struct top_app *a)
{
	double next = 0;
	bool quit = false;
	int devnull, saved_err;

	SCREEN *scr = newterm(NULL, stdout, stdin);

	if (!scr) {
		fprintf(stderr, "pgwarden-top: cannot use this terminal (TERM=%s); try -b for batch "
				"output\n", getenv("TERM") ? getenv("TERM") : "unset");
		return 1;
	}
	/* Library chatter (libbpf, the logger) on stderr would tear the screen: silence it while
	 * curses owns the terminal; problems show on the message line instead. */
	saved_err = dup(STDERR_FILENO);
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, STDERR_FILENO);
		close(devnull);
	}
	set_escdelay(25);
	cbreak();
	noecho();
	keypad(stdscr, TRUE);
	curs_set(0);
	while (!quit && !stop_requested) {
		double t = now_s();
		int ch, wait_ms;

		if (t >= next) {
			fetch(a);
			next = now_s() + a->delay;
		}
		draw(a);
		wait_ms = (int)((next - now_s()) * 1000);
		timeout(wait_ms < 10 ? 10 : wait_ms > 250 ? 250 : wait_ms);
		ch = getch();
		if (ch == ERR)
			continue;
		if (ch == KEY_RESIZE)
			continue; /* curses already knows the new size: the next draw uses it */
		if (handle_key(a, ch, &quit))
			next = 0;
	}
	endwin();
	delscreen(scr);
	if (saved_err >= 0) {
		dup2(saved_err, STDERR_FILENO);
		close(saved_err);
	}
	return 0;
}

/* ---- main ------------------------------------------------------------------------------- */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: pgwarden-top [--socket PATH] [-d SECONDS] [--sort COLUMN] [--reverse]\n"
		"                    [--filter EXPR] [-b [-n N] [--width COLS]]\n"
		"  --socket PATH   admin socket (default $PGWARDEN_ADMIN_SOCKET or %s)\n"
		"  -d SECONDS      refresh interval (default 1, minimum %.1f)\n"
		"  --sort COLUMN   id, proc, user, db, state, tls, time, qps (default), bps, last\n"
		"  --filter EXPR   user=NAME db=NAME proc=COMM|PID|ADDR and/or free text\n"
		"  -b, --batch     print snapshots as text instead of the live screen\n"
		"  -n N            batch: stop after N snapshots (default: until interrupted)\n",
		admin_client_default_path(), TOP_MIN_DELAY);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 'S'}, {"delay", required_argument, NULL, 'd'},
		{"sort", required_argument, NULL, 'o'},   {"reverse", no_argument, NULL, 'r'},
		{"filter", required_argument, NULL, 'f'}, {"batch", no_argument, NULL, 'b'},
		{"iterations", required_argument, NULL, 'n'},
		{"width", required_argument, NULL, 'w'},  {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
	};
	struct top_app a = {.delay = 1.0, .width = 132};
	struct sigaction sa = {.sa_handler = on_signal};
	char err[160], *end;
	int c, col, rc;

	setlocale(LC_ALL, "");
	top_model_init(&a.m);
	a.socket = admin_client_default_path();
	while ((c = getopt_long(argc, argv, "S:d:o:rf:bn:w:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'S':
			a.socket = optarg;
			break;
		case 'd':
			a.delay = strtod(optarg, &end);
			if (end == optarg || *end || a.delay < TOP_MIN_DELAY || a.delay > TOP_MAX_DELAY) {
				fprintf(stderr, "pgwarden-top: -d: expected %.1f to %.0f seconds, got \"%s\"\n",
					TOP_MIN_DELAY, TOP_MAX_DELAY, optarg);
				return 2;
			}
			break;
		case 'o':
			col = top_col_parse(optarg);
			if (col < 0) {
				fprintf(stderr, "pgwarden-top: --sort: unknown column \"%s\"\n", optarg);
				return 2;
			}
			a.m.sort = (enum top_col)col;
			break;
		case 'r':
			a.m.reverse = true;
			break;
		case 'f':
			if (top_filter_parse(&a.m.filter, optarg, err, sizeof(err)) != 0) {
				fprintf(stderr, "pgwarden-top: --filter: %s\n", err);
				return 2;
			}
			break;
		case 'b':
			a.batch = true;
			break;
		case 'n':
			a.iterations = strtol(optarg, &end, 10);
			if (end == optarg || *end || a.iterations < 1) {
				fprintf(stderr, "pgwarden-top: -n: expected a positive count\n");
				return 2;
			}
			break;
		case 'w':
			a.width = (int)strtol(optarg, &end, 10);
			if (end == optarg || *end || a.width < 40 || a.width > 1000) {
				fprintf(stderr, "pgwarden-top: --width: expected 40 to 1000\n");
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("pgwarden-top %s (commit %s, admin protocol %d)\n", pgwarden_version,
			       pgwarden_commit, ADMIN_PROTOCOL_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pgwarden-top: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	rc = a.batch ? run_batch(&a) : run_curses(&a);
	admin_conn_close(a.conn);
	json_decref(a.status);
	top_model_free(&a.m);
	return rc;
}
