/*
 * mask_date: the `date` strategy and the redacted values of date, timestamp and
 * timestamptz, in every DateStyle PostgreSQL writes (ISO, SQL, Postgres, German; MDY or
 * DMY where the style shows the order).
 *
 * `date` keeps the year and moves the value to January 1st, midnight. In text it rewrites
 * the digits in place, so the length never changes: month and day become 01, the time's
 * digits 0, and in the Postgres style the month name becomes "Jan" and the weekday that of
 * January 1st of that year (all three letters, like the originals). Time zone offsets,
 * zone abbreviations and " BC" stay. In binary it computes the same instant.
 */
#include "mask/mask_value_int.h"

#include <stdio.h>

int mask_date2j(int year, int month, int day)
{
	int julian, century;

	if (month > 2) {
		month += 1;
		year += 4800;
	} else {
		month += 13;
		year += 4799;
	}
	century = year / 100;
	julian = year * 365 - 32167;
	julian += year / 4 - century + century / 4;
	julian += 7834 * month / 256 + day;
	return julian;
}

void mask_j2date(int jd, int *year, int *month, int *day)
{
	unsigned julian = (unsigned)jd, quad, extra;
	int y;

	julian += 32044;
	quad = julian / 146097;
	extra = (julian - quad * 146097) * 4 + 3;
	julian += 60 + quad * 3 + extra / 146097;
	quad = julian / 1461;
	julian -= quad * 1461;
	y = (int)(julian * 4 / 1461);
	julian = ((y != 0) ? ((julian + 305) % 365) : ((julian + 306) % 366)) + 123;
	y += (int)(quad * 4);
	*year = y - 4800;
	quad = julian * 2141 / 65536;
	*day = (int)(julian - 7834 * quad / 256);
	*month = (int)((quad + 10) % 12 + 1);
}

/* 0 = Sunday. */
static int j2day(int jd)
{
	int d = (jd + 1) % 7;

	return d < 0 ? d + 7 : d;
}

/* PostgreSQL's date range, in Julian days: 4714-11-24 BC to 5874897-12-31. */
#define JD_MIN 0
#define JD_MAX 2147483494

int32_t mask_date_bin_year_start(int32_t days)
{
	int64_t jd = (int64_t)days + MASK_PG_EPOCH_JDATE;
	int y, m, d;

	if (days == INT32_MIN || days == INT32_MAX)
		return days; /* -infinity, infinity: no date to hide */
	if (jd < JD_MIN || jd > JD_MAX)
		return MASK_UNIX_EPOCH_DAYS; /* out of PostgreSQL's range: a server never sends it */
	mask_j2date((int)jd, &y, &m, &d);
	return mask_date2j(y, 1, 1) - MASK_PG_EPOCH_JDATE;
}

int64_t mask_ts_bin_year_start(int64_t usecs)
{
	int64_t days = usecs / MASK_USECS_PER_DAY;
	int64_t jd;
	int y, m, d;

	if (usecs == INT64_MIN || usecs == INT64_MAX)
		return usecs;
	if (usecs % MASK_USECS_PER_DAY < 0)
		days--; /* floor, not truncation, before the epoch */
	jd = days + MASK_PG_EPOCH_JDATE;
	if (jd < JD_MIN || jd > JD_MAX)
		return (int64_t)MASK_UNIX_EPOCH_DAYS * MASK_USECS_PER_DAY;
	mask_j2date((int)jd, &y, &m, &d);
	return (int64_t)(mask_date2j(y, 1, 1) - MASK_PG_EPOCH_JDATE) * MASK_USECS_PER_DAY;
}

size_t mask_date_redact_text(enum mask_tclass tc, const struct mask_env *e, char *out,
			     size_t cap)
{
	static const char *const date_forms[] = {
		[MASK_DS_ISO] = "1970-01-01", [MASK_DS_SQL] = "01/01/1970",
		[MASK_DS_POSTGRES] = "01-01-1970", [MASK_DS_GERMAN] = "01.01.1970",
	};
	static const char *const ts_forms[] = {
		[MASK_DS_ISO] = "1970-01-01 00:00:00",
		[MASK_DS_SQL] = "01/01/1970 00:00:00",
		[MASK_DS_POSTGRES] = "Thu Jan 01 00:00:00 1970",
		[MASK_DS_GERMAN] = "01.01.1970 00:00:00",
	};
	int n;

	if (tc == MASK_TC_DATE)
		n = snprintf(out, cap, "%s", date_forms[e->ds]);
	else if (tc == MASK_TC_TIMESTAMP)
		n = snprintf(out, cap, "%s", ts_forms[e->ds]);
	else
		n = snprintf(out, cap, "%s%s", ts_forms[e->ds], e->ds == MASK_DS_ISO ? "+00" : " UTC");
	return n < 0 ? 0 : (size_t)n;
}

/* ---- text ------------------------------------------------------------------------------ */

#define RUNS_MAX 24

struct run {
	uint8_t off, len;
	char kind; /* 'd' digits, 'a' letters, 'o' one other byte */
};

static char byte_kind(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return 'd';
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return 'a';
	return 'o';
}

/* Split v into runs of digits, runs of letters and single other bytes. */
static int runs_split(const uint8_t *v, size_t n, struct run *r)
{
	int k = 0;

	for (size_t i = 0; i < n;) {
		char kind = byte_kind(v[i]);
		size_t j = i + 1;

		if (kind != 'o')
			while (j < n && byte_kind(v[j]) == kind)
				j++;
		if (k == RUNS_MAX)
			return -1;
		r[k++] = (struct run){.off = (uint8_t)i, .len = (uint8_t)(j - i), .kind = kind};
		i = j;
	}
	return k;
}

static bool run_is(const uint8_t *v, const struct run *r, char kind, int len)
{
	return r->kind == kind && (len < 0 || r->len == len);
}

static bool run_sep(const uint8_t *v, const struct run *r, char sep)
{
	return (r->kind == 'o' || (r->kind == 'a' && r->len == 1)) && v[r->off] == sep;
}

static void run_fill(uint8_t *v, const struct run *r, char c)
{
	memset(v + r->off, c, r->len);
}

static void run_set(uint8_t *v, const struct run *r, const char *s)
{
	memcpy(v + r->off, s, r->len);
}

/*
 * After the date part, at runs[i]: an optional time "h:m[:s[.f]]" after a blank (or 'T'),
 * zeroed in place. Returns the index after it.
 */
static int zero_time(uint8_t *v, const struct run *r, int k, int i, bool blank_only)
{
	if (i + 2 >= k || !(run_sep(v, &r[i], ' ') || (!blank_only && run_sep(v, &r[i], 'T'))) ||
	    !run_is(v, &r[i + 1], 'd', -1) || !(i + 2 < k && run_sep(v, &r[i + 2], ':')))
		return i;
	i++;
	run_fill(v, &r[i++], '0');
	while (i + 1 < k && run_sep(v, &r[i], ':') && run_is(v, &r[i + 1], 'd', -1)) {
		run_fill(v, &r[i + 1], '0');
		i += 2;
	}
	if (i + 1 < k && run_sep(v, &r[i], '.') && run_is(v, &r[i + 1], 'd', -1)) {
		run_fill(v, &r[i + 1], '0');
		i += 2;
	}
	return i;
}

/* Where zero_time() would stop, without writing. */
static int zero_time_end(const uint8_t *v, const struct run *r, int k, int i, bool blank_only)
{
	if (i + 2 >= k || !(run_sep(v, &r[i], ' ') || (!blank_only && run_sep(v, &r[i], 'T'))) ||
	    !run_is(v, &r[i + 1], 'd', -1) || !(i + 2 < k && run_sep(v, &r[i + 2], ':')))
		return i;
	i += 2;
	while (i + 1 < k && run_sep(v, &r[i], ':') && run_is(v, &r[i + 1], 'd', -1))
		i += 2;
	if (i + 1 < k && run_sep(v, &r[i], '.') && run_is(v, &r[i + 1], 'd', -1))
		i += 2;
	return i;
}

/* Only a time zone from runs[i] on: Z, or +hh[:mm], or -hh[:mm]. */
static bool only_zone(const uint8_t *v, const struct run *r, int k, int i)
{
	if (i == k)
		return true;
	if (i + 1 == k && r[i].kind == 'a' && r[i].len == 1 && v[r[i].off] == 'Z')
		return true;
	if (!(run_sep(v, &r[i], '+') || run_sep(v, &r[i], '-')) || i + 1 >= k ||
	    !run_is(v, &r[i + 1], 'd', -1))
		return false;
	i += 2;
	if (i + 1 < k && run_sep(v, &r[i], ':') && run_is(v, &r[i + 1], 'd', -1))
		i += 2;
	return i == k;
}

/*
 * d sep d sep d with month and day at the given positions (0, 1 or 2). A value the server
 * wrote ends with what its style puts there (zone, BC); free text (strict) must be nothing
 * but a date, a time and a zone, or it is not taken for a date at all.
 */
static bool rewrite_numeric(uint8_t *v, const struct run *r, int k, char sep, int mpos,
			    int dpos, bool blank_only, bool strict)
{
	int end;

	if (k < 5 || !run_is(v, &r[0], 'd', -1) || !run_sep(v, &r[1], sep) ||
	    !run_is(v, &r[2], 'd', -1) || !run_sep(v, &r[3], sep) || !run_is(v, &r[4], 'd', -1))
		return false;
	if (r[2 * mpos].len != 2 || r[2 * dpos].len != 2)
		return false;
	end = zero_time_end(v, r, k, 5, blank_only);
	if (strict && !only_zone(v, r, k, end))
		return false;
	run_set(v, &r[2 * mpos], "01");
	run_set(v, &r[2 * dpos], "01");
	zero_time(v, r, k, 5, blank_only);
	return true;
}

static bool is_bc(const uint8_t *v, const struct run *r, int k)
{
	return k >= 2 && run_is(v, &r[k - 1], 'a', 2) && v[r[k - 1].off] == 'B' &&
	       v[r[k - 1].off + 1] == 'C' && run_sep(v, &r[k - 2], ' ');
}

/* "Www Mmm DD HH:MM:SS[.f] YYYY ..." (MDY) or "Www DD Mmm HH:MM:SS[.f] YYYY ..." (DMY). */
static bool rewrite_postgres_ts(uint8_t *v, const struct run *r, int k, bool dmy)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	const struct run *wd = &r[0], *mon, *day;
	int i, year = 0;

	if (k < 7 || !run_is(v, wd, 'a', 3) || !run_sep(v, &r[1], ' ') || !run_sep(v, &r[3], ' '))
		return false;
	mon = dmy ? &r[4] : &r[2];
	day = dmy ? &r[2] : &r[4];
	if (!run_is(v, mon, 'a', 3) || !run_is(v, day, 'd', 2))
		return false;
	i = zero_time(v, r, k, 5, true);
	if (i == 5 || i + 1 >= k || !run_sep(v, &r[i], ' ') || !run_is(v, &r[i + 1], 'd', -1) ||
	    r[i + 1].len > 9)
		return false;
	for (unsigned j = 0; j < r[i + 1].len; j++)
		year = year * 10 + (v[r[i + 1].off + j] - '0');
	if (is_bc(v, r, k))
		year = 1 - year; /* 1 BC is year 0 */
	if (year < -4713 || year > 5874897)
		return false;
	run_set(v, mon, "Jan");
	run_set(v, day, "01");
	run_set(v, wd, days[j2day(mask_date2j(year, 1, 1))]);
	return true;
}

bool mask_date_text_rewrite(uint8_t *v, size_t n, enum mask_tclass tc, const struct mask_env *e)
{
	struct run r[RUNS_MAX];
	int k;

	if (n > MASK_DATE_TEXT_MAX)
		return false;
	if ((n == 8 && memcmp(v, "infinity", 8) == 0) || (n == 9 && memcmp(v, "-infinity", 9) == 0))
		return true;
	k = runs_split(v, n, r);
	if (k < 0)
		return false;
	if (tc == MASK_TC_TEXT || tc == MASK_TC_BPCHAR)
		return rewrite_numeric(v, r, k, '-', 1, 2, false, true); /* text holds ISO dates */
	switch (e->ds) {
	case MASK_DS_ISO:
		return rewrite_numeric(v, r, k, '-', 1, 2, true, false);
	case MASK_DS_SQL:
		return rewrite_numeric(v, r, k, '/', e->dmy ? 1 : 0, e->dmy ? 0 : 1, true, false);
	case MASK_DS_GERMAN:
		return rewrite_numeric(v, r, k, '.', 1, 0, true, false);
	case MASK_DS_POSTGRES:
		if (tc == MASK_TC_DATE)
			return rewrite_numeric(v, r, k, '-', e->dmy ? 1 : 0, e->dmy ? 0 : 1, true, false);
		return rewrite_postgres_ts(v, r, k, e->dmy);
	}
	return false;
}
