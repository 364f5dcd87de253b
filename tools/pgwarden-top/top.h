/*
 * pgwarden-top: the live session table. This header is the model: snapshots from the admin
 * socket turned into rows with rates, sorted and filtered, and formatted into fixed-width
 * text lines. No curses here, so batch mode and the curses view share every line of
 * formatting, and the model can be reasoned about without a terminal.
 */
#ifndef PGWARDEN_TOP_H
#define PGWARDEN_TOP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum top_col {
	TOP_COL_ID = 0,
	TOP_COL_WHO,   /* process[pid] for steered clients, else the client address */
	TOP_COL_USER,
	TOP_COL_DB,
	TOP_COL_STATE,
	TOP_COL_TLS,
	TOP_COL_TIME,  /* session duration */
	TOP_COL_QPS,   /* statements per second over the last interval */
	TOP_COL_BPS,   /* bytes per second, both directions */
	TOP_COL_LAST,  /* last statement */
	TOP_COL_COUNT,
};

/* Names for --sort and the status line ("id", "proc", "user", "db", "state", "tls",
 * "time", "qps", "bps", "last"). */
const char *top_col_name(enum top_col c);
int top_col_parse(const char *name); /* -1 when unknown */

struct top_row {
	char id[33];
	char who[96];
	char user[64];
	char db[64];
	char state[16];
	char tls[16];
	char client[64];
	char comm[64];
	long long pid; /* -1 when the process is unknown */
	double duration;
	double qps;
	double bps;
	long long statements;
	long long bytes_in;
	long long bytes_out;
	long long errors;
	char last[256];
	json_t *raw; /* the session object as listed, for the detail pane */
};

struct top_filter {
	char user[64];
	char db[64];
	char proc[64]; /* matches comm, pid or client address */
	char text[64]; /* matches any of user, db, process, client, statement */
};

struct top_totals {
	unsigned sessions;
	unsigned shown;
	unsigned by_state_idle;   /* conn state "idle": waiting for the client */
	unsigned by_state_active; /* "active" or copying */
	double qps;
	double bps_in;
	double bps_out;
	long long errors;
};

struct top_model {
	struct top_row *rows; /* all sessions of the last snapshot */
	size_t n;
	size_t *view; /* indexes into rows after filter and sort */
	size_t nview;
	struct top_filter filter;
	enum top_col sort;
	bool reverse; /* false: the natural order of the column (rates, time: high first) */
	struct top_totals totals;
	double snapshot_time; /* monotonic seconds of the last snapshot */
};

void top_model_init(struct top_model *m);
void top_model_free(struct top_model *m);

/* Take a new "sessions" array (borrowed) observed at monotonic time t (seconds); rates
 * come from the previous snapshot's counters for the same session ids. 0 or -ENOMEM. */
int top_model_update(struct top_model *m, json_t *sessions, double t);

/* Re-apply filter and sort (after changing m->filter, m->sort or m->reverse). */
void top_model_refresh_view(struct top_model *m);

/* Clear all rows (daemon gone). */
void top_model_clear(struct top_model *m);

/* Parse "user=alice db=shop proc=psql word" into f (replacing it). Unknown keys are an
 * error: -EINVAL with a message in err. */
int top_filter_parse(struct top_filter *f, const char *expr, char *err, size_t n);
/* The filter as the status line shows it ("user=alice db=shop"), "" when empty. */
const char *top_filter_format(const struct top_filter *f, char *buf, size_t n);

/* Column layout for a terminal width: the start and width of every column; the last
 * statement column takes the rest. */
struct top_layout {
	int start[TOP_COL_COUNT];
	int width[TOP_COL_COUNT];
	int total;
};
void top_layout_compute(struct top_layout *l, int cols);

/* One table line into buf (exactly cols characters, space-padded, NUL-terminated): the
 * header (row == NULL) or a session row. */
void top_format_header(const struct top_layout *l, enum top_col sort, bool reverse, char *buf,
		       size_t n);
void top_format_row(const struct top_layout *l, const struct top_row *r, char *buf, size_t n);

/* The string at key of o (dflt when absent or empty) made safe for a terminal into buf
 * (base/sanitize.h): every value the screen or batch mode shows goes through it. */
const char *top_text(json_t *o, const char *key, const char *dflt, char *buf, size_t n);

/* Short human forms: "59s", "12m03s", "3h04m", "2d01h"; "512", "1.2K", "3.4M". */
const char *top_fmt_duration(double s, char *buf, size_t n);
const char *top_fmt_rate(double v, char *buf, size_t n);

#endif
