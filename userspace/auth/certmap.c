/*
 * certmap: the pg_ident-style certificate map (see certmap.h).
 */
#include "auth/certmap.h"

#include "auth/userlist.h" /* userlist_read_file: one file-permission rule */
#include "base/errbuf.h"
#include "base/sanitize.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_MAX 1024
#define ROLE_MAX 63

struct certmap_line {
	char *map;
	char *identity; /* exact identity, or the expression's source (without its '/') */
	char *role;
	bool is_regex;
	regex_t re;
};

struct certmap {
	struct certmap_line *lines;
	size_t count, cap;
};

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * The next token of [*p, end) into out (NUL-terminated): 1 and *p advanced, 0 at the end of
 * the line (or a comment), -1 for an unterminated quote, -2 when too long.
 */
static int next_token(const char **p, const char *end, char *out, size_t cap)
{
	const char *s = *p;
	bool quoted = false, any = false;
	size_t n = 0;

	while (s < end && is_blank(*s))
		s++;
	if (s >= end || *s == '#') {
		*p = end;
		return 0;
	}
	while (s < end && (quoted || (!is_blank(*s) && *s != '#'))) {
		if (*s == '"') {
			if (quoted && s + 1 < end && s[1] == '"') {
				s++; /* "" inside quotes: one quote */
			} else {
				quoted = !quoted;
				any = true;
				s++;
				continue;
			}
		}
		if (n + 1 >= cap)
			return -2;
		out[n++] = *s++;
	}
	if (quoted)
		return -1;
	out[n] = '\0';
	*p = s;
	return n || any ? 1 : 0;
}

static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/*
 * Patterns glibc's regcomp would blow up on (memory exponential in stacked repetitions,
 * "a+++...", or large nested counts): a repetition applied to a repetition, which POSIX
 * leaves undefined anyway, or an interval count above REGEX_COUNT_MAX. The pattern comes
 * from the operator's file, but a typo must not take the daemon's memory.
 */
#define REGEX_COUNT_MAX 100

static bool regex_too_complex(const char *re)
{
	bool after_repeat = false;

	for (const char *p = re; *p; p++) {
		switch (*p) {
		case '\\':
			if (p[1])
				p++;
			after_repeat = false;
			break;
		case '[':
			/* A bracket expression: ']' first (or after '^') is a member. */
			p++;
			if (*p == '^')
				p++;
			if (*p == ']')
				p++;
			while (*p && *p != ']')
				p++;
			if (!*p)
				return false; /* regcomp reports it */
			after_repeat = false;
			break;
		case '*':
		case '+':
		case '?':
			if (after_repeat)
				return true;
			after_repeat = true;
			break;
		case '{': {
			unsigned long n = 0;

			if (after_repeat)
				return true;
			for (p++; *p && *p != '}'; p++) {
				if (*p >= '0' && *p <= '9') {
					n = n * 10 + (unsigned long)(*p - '0');
					if (n > REGEX_COUNT_MAX)
						return true;
				} else if (*p == ',') {
					n = 0;
				} else {
					return false; /* not an interval; regcomp decides */
				}
			}
			if (!*p)
				return false;
			after_repeat = true;
			break;
		}
		default:
			after_repeat = false;
		}
	}
	return false;
}

void certmap_free(struct certmap *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->count; i++) {
		if (m->lines[i].is_regex)
			regfree(&m->lines[i].re);
		free(m->lines[i].map);
		free(m->lines[i].identity);
		free(m->lines[i].role);
	}
	free(m->lines);
	free(m);
}

static int parse_line(struct certmap *m, const char *name, unsigned lineno, const char *p,
		      const char *end, char *err, size_t errlen)
{
	char tok[3][TOKEN_MAX], extra[TOKEN_MAX], shown[128];
	struct certmap_line *l;
	int n = 0, r;

	for (; n < 3; n++) {
		r = next_token(&p, end, tok[n], sizeof(tok[n]));
		if (r == -1) {
			errbuf_set(err, errlen, "%s:%u: unterminated quoted token", name, lineno);
			return -1;
		}
		if (r == -2) {
			errbuf_set(err, errlen, "%s:%u: token longer than %d bytes", name, lineno,
				   TOKEN_MAX - 1);
			return -1;
		}
		if (r == 0)
			break;
	}
	if (n == 0)
		return 0;
	if (n < 3 || next_token(&p, end, extra, sizeof(extra)) != 0) {
		errbuf_set(err, errlen, "%s:%u: expected MAPNAME IDENTITY ROLE", name, lineno);
		return -1;
	}
	for (int i = 0; i < 3; i++) {
		if (!tok[i][0] || has_control(tok[i])) {
			errbuf_set(err, errlen, "%s:%u: empty token or control character",
				   name, lineno);
			return -1;
		}
	}
	if (strlen(tok[2]) > ROLE_MAX) {
		errbuf_set(err, errlen, "%s:%u: role longer than %d bytes", name, lineno, ROLE_MAX);
		return -1;
	}
	if (m->count >= m->cap) {
		errbuf_set(err, errlen, "%s:%u: more than %d lines",
			   name, lineno, CERTMAP_MAX_LINES);
		return -1;
	}
	l = &m->lines[m->count];
	memset(l, 0, sizeof(*l));
	l->is_regex = tok[1][0] == '/';
	if (l->is_regex) {
		int rc;

		if (regex_too_complex(tok[1] + 1)) {
			sanitize_str(shown, sizeof(shown), tok[1] + 1, SANITIZE_LOG, NULL);
			errbuf_set(err, errlen,
				   "%s:%u: regular expression \"%s\" is too complex (a repetition "
				   "of a repetition, or a count above %d)",
				   name, lineno, shown, REGEX_COUNT_MAX);
			return -1;
		}
		rc = regcomp(&l->re, tok[1] + 1, REG_EXTENDED);

		if (rc) {
			char why[128];

			regerror(rc, &l->re, why, sizeof(why));
			sanitize_str(shown, sizeof(shown), tok[1] + 1, SANITIZE_LOG, NULL);
			errbuf_set(err, errlen, "%s:%u: invalid regular expression \"%s\": %s",
				   name, lineno, shown, why);
			return -1;
		}
		if (strstr(tok[2], "\\1") && l->re.re_nsub < 1) {
			regfree(&l->re);
			sanitize_str(shown, sizeof(shown), tok[1] + 1, SANITIZE_LOG, NULL);
			errbuf_set(err, errlen,
				   "%s:%u: regular expression \"%s\" has no subexpressions as "
				   "requested by backreference in \"%s\"",
				   name, lineno, shown, tok[2]);
			return -1;
		}
	}
	l->map = strdup(tok[0]);
	l->identity = strdup(l->is_regex ? tok[1] + 1 : tok[1]);
	l->role = strdup(tok[2]);
	m->count++; /* certmap_free releases whatever was set */
	if (!l->map || !l->identity || !l->role) {
		errbuf_set(err, errlen, "%s: out of memory", name);
		return -1;
	}
	return 0;
}

int certmap_parse(const char *name, const char *data, size_t len, struct certmap **out,
		  char *err, size_t errlen)
{
	struct certmap *m;
	const char *p = data, *end = data + len;
	unsigned lineno = 0;

	*out = NULL;
	if (len > CERTMAP_MAX_FILE_SIZE) {
		errbuf_set(err, errlen, "%s: larger than %d MiB",
			   name, CERTMAP_MAX_FILE_SIZE >> 20);
		return -1;
	}
	size_t nlines = 1;

	for (size_t i = 0; i < len; i++)
		nlines += data[i] == '\n';
	if (nlines > CERTMAP_MAX_LINES)
		nlines = CERTMAP_MAX_LINES;
	m = calloc(1, sizeof(*m));
	if (!m || !(m->lines = calloc(nlines, sizeof(*m->lines)))) {
		free(m);
		errbuf_set(err, errlen, "%s: out of memory", name);
		return -1;
	}
	m->cap = nlines;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl ? nl : end) - p);
		const char *le;

		lineno++;
		if (n && p[n - 1] == '\r')
			n--;
		le = p + n;
		if (memchr(p, '\0', n)) {
			errbuf_set(err, errlen, "%s:%u: contains a NUL byte", name, lineno);
			certmap_free(m);
			return -1;
		}
		if (parse_line(m, name, lineno, p, le, err, errlen)) {
			certmap_free(m);
			return -1;
		}
		p = nl ? nl + 1 : end;
	}
	*out = m;
	return 0;
}

int certmap_load(const char *path, struct certmap **out, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	int rc;

	*out = NULL;
	if (userlist_read_file(path, false, CERTMAP_MAX_FILE_SIZE, &buf, &len, err, errlen))
		return -1;
	rc = certmap_parse(path, buf, len, out, err, errlen);
	free(buf);
	return rc;
}

size_t certmap_count(const struct certmap *m)
{
	return m ? m->count : 0;
}

/* role == pattern with its first "\1" replaced by sub[0..sublen). */
static bool role_matches(const char *pattern, const char *sub, size_t sublen, const char *role)
{
	const char *at = strstr(pattern, "\\1");
	size_t pre, rlen = strlen(role);

	if (!at)
		return strcmp(pattern, role) == 0;
	pre = (size_t)(at - pattern);
	return rlen == pre + sublen + strlen(at + 2) && memcmp(role, pattern, pre) == 0 &&
	       memcmp(role + pre, sub, sublen) == 0 && strcmp(role + pre + sublen, at + 2) == 0;
}

bool certmap_allows(const struct certmap *m, const char *map, const char *identity,
		    const char *role)
{
	if (!m || !map || !identity || !role || strlen(identity) > CERTMAP_IDENTITY_MAX)
		return false;
	for (size_t i = 0; i < m->count; i++) {
		const struct certmap_line *l = &m->lines[i];
		regmatch_t g[2];

		if (strcmp(l->map, map) != 0)
			continue;
		if (!l->is_regex) {
			if (strcmp(l->identity, identity) == 0 && strcmp(l->role, role) == 0)
				return true;
			continue;
		}
		if (regexec(&l->re, identity, 2, g, 0) != 0)
			continue;
		if (l->re.re_nsub >= 1 && g[1].rm_so >= 0) {
			if (role_matches(l->role, identity + g[1].rm_so,
					 (size_t)(g[1].rm_eo - g[1].rm_so), role))
				return true;
		} else if (role_matches(l->role, "", 0, role)) {
			return true;
		}
	}
	return false;
}
