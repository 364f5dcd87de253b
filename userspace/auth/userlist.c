/*
 * userlist: PgBouncer-format user files (see userlist.h).
 *
 * One secret block holds everything: the entry array (sorted by name for bsearch), then
 * the names and passwords, NUL-terminated. The file's own bytes are read into a second
 * secret block that is cleansed as soon as parsing ends.
 */
#include "auth/userlist.h"

#include "auth/secret.h"
#include "base/errbuf.h"
#include "base/sanitize.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct userlist_entry {
	const char *name;
	const char *password;          /* USERLIST_PASSWORDS */
	struct scram_verifier verifier; /* USERLIST_VERIFIERS */
	unsigned line;
};

struct userlist {
	int refcount; /* atomic */
	enum userlist_kind kind;
	size_t count;
	struct userlist_entry *entries; /* in block */
	void *block;                    /* secret memory */
	uint32_t common_iterations;
	size_t common_salt_len;
};

/* ---- one line --------------------------------------------------------------------------- */

/*
 * A quoted field at *p (on its opening quote), "" meaning one quote, ending before end.
 * Unquoted into out (NUL-terminated, cap bytes). Returns the length, -1 when unterminated,
 * -2 when too long.
 */
static long quoted_field(const char **p, const char *end, char *out, size_t cap)
{
	const char *s = *p + 1;
	size_t n = 0;

	for (;;) {
		if (s >= end)
			return -1;
		if (*s == '"') {
			if (s + 1 < end && s[1] == '"') {
				s++;
			} else {
				s++;
				break;
			}
		}
		if (n + 1 >= cap)
			return -2;
		out[n++] = *s++;
	}
	out[n] = '\0';
	*p = s;
	return (long)n;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool has_control(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return true;
	return false;
}

static bool looks_md5(const char *s, size_t n)
{
	if (n != 35 || strncmp(s, "md5", 3) != 0)
		return false;
	for (size_t i = 3; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

struct parse {
	const char *name;
	enum userlist_kind kind;
	char *err;
	size_t errlen;
	struct userlist_entry *entries; /* plain heap while parsing; no secrets in it */
	size_t count;
	char *strings; /* secret block under construction */
	size_t strings_len, strings_cap;
};

static int line_fail(struct parse *ps, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int line_fail(struct parse *ps, unsigned line, const char *fmt, ...)
{
	char problem[USERLIST_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(problem, sizeof(problem), fmt, ap);
	va_end(ap);
	errbuf_set(ps->err, ps->errlen, "%s:%u: %s", ps->name, line, problem);
	return -1;
}

static const char *safe_name(const char *s, char *buf, size_t n)
{
	sanitize_str(buf, n, s, SANITIZE_LOG, NULL);
	return buf;
}

static int parse_line(struct parse *ps, const char *p, const char *end, unsigned line,
		      char *user, char *secret)
{
	char shown[USERLIST_NAME_MAX * 4 + 1];
	long ul, sl;

	while (p < end && is_blank(*p))
		p++;
	if (p == end || *p == ';' || *p == '#')
		return 0;
	if (*p != '"')
		return line_fail(ps, line, "expected a quoted user name (\"name\" \"secret\")");
	ul = quoted_field(&p, end, user, USERLIST_NAME_MAX + 2);
	if (ul == -1)
		return line_fail(ps, line, "unterminated quoted user name");
	if (ul == -2)
		return line_fail(ps, line, "user name longer than %d bytes", USERLIST_NAME_MAX);
	if (ul == 0)
		return line_fail(ps, line, "empty user name");
	if ((size_t)ul > USERLIST_NAME_MAX)
		return line_fail(ps, line, "user name longer than %d bytes", USERLIST_NAME_MAX);
	if (has_control(user, (size_t)ul) || memchr(user, '\0', (size_t)ul))
		return line_fail(ps, line, "user name contains a control character");
	if (p >= end || !is_blank(*p))
		return line_fail(ps, line, "expected blanks and a quoted secret after the user name");
	while (p < end && is_blank(*p))
		p++;
	if (p >= end || *p != '"')
		return line_fail(ps, line, "user \"%s\": expected a quoted secret",
				 safe_name(user, shown, sizeof(shown)));
	sl = quoted_field(&p, end, secret, SCRAM_PASSWORD_MAX + 2);
	if (sl == -1)
		return line_fail(ps, line, "user \"%s\": unterminated quoted secret",
				 safe_name(user, shown, sizeof(shown)));
	if (sl == -2 || sl > SCRAM_PASSWORD_MAX)
		return line_fail(ps, line, "user \"%s\": secret longer than %d bytes",
				 safe_name(user, shown, sizeof(shown)), SCRAM_PASSWORD_MAX);
	while (p < end && is_blank(*p))
		p++;
	if (p != end)
		return line_fail(ps, line, "user \"%s\": unexpected text after the secret",
				 safe_name(user, shown, sizeof(shown)));
	if (sl == 0 || memchr(secret, '\0', (size_t)sl))
		return line_fail(ps, line, "user \"%s\": empty secret",
				 safe_name(user, shown, sizeof(shown)));
	return (int)(ul + 1); /* > 0: an entry */
}

static int add_strings(struct parse *ps, const char *s, size_t n, size_t *at)
{
	if (ps->strings_len + n + 1 > ps->strings_cap)
		return -ENOSPC;
	memcpy(ps->strings + ps->strings_len, s, n);
	ps->strings[ps->strings_len + n] = '\0';
	*at = ps->strings_len;
	ps->strings_len += n + 1;
	return 0;
}

static int add_entry(struct parse *ps, unsigned line, const char *user, const char *secret)
{
	char shown[USERLIST_NAME_MAX * 4 + 1];
	struct userlist_entry *e;
	size_t slen = strlen(secret), at;
	int rc;

	if (ps->count >= USERLIST_MAX_ENTRIES)
		return line_fail(ps, line, "more than %d entries", USERLIST_MAX_ENTRIES);
	e = &ps->entries[ps->count];
	memset(e, 0, sizeof(*e));
	e->line = line;
	if (ps->kind == USERLIST_VERIFIERS) {
		if (strncmp(secret, "SCRAM-SHA-256$", 14) != 0)
			return line_fail(ps, line,
					 looks_md5(secret, slen) ?
						 "user \"%s\": an md5 hash cannot verify SCRAM-SHA-256; "
						 "give the role's SCRAM-SHA-256 verifier "
						 "(pg_authid.rolpassword)" :
						 "user \"%s\": not a SCRAM-SHA-256 verifier (plaintext "
						 "passwords are refused here; give "
						 "pg_authid.rolpassword)",
					 safe_name(user, shown, sizeof(shown)));
		rc = scram_verifier_parse(secret, slen, &e->verifier);
		if (rc)
			return line_fail(ps, line, "user \"%s\": invalid SCRAM-SHA-256 verifier (%s)",
					 safe_name(user, shown, sizeof(shown)),
					 rc == SCRAM_ERR_ITERATIONS ?
						 "iteration count outside 4096..1000000" :
					 rc == SCRAM_ERR_SALT ? "salt must be 8..64 bytes of base64" :
								"malformed");
	} else {
		if (strncmp(secret, "SCRAM-SHA-256$", 14) == 0 || looks_md5(secret, slen))
			return line_fail(ps, line,
					 "user \"%s\": a verifier or hash cannot log in; "
					 "auth.upstream_passwords holds passwords",
					 safe_name(user, shown, sizeof(shown)));
		if (add_strings(ps, secret, slen, &at))
			return line_fail(ps, line, "out of room");
		e->password = (const char *)(uintptr_t)(at + 1); /* offset + 1, fixed below */
	}
	if (add_strings(ps, user, strlen(user), &at))
		return line_fail(ps, line, "out of room");
	e->name = (const char *)(uintptr_t)(at + 1);
	ps->count++;
	return 0;
}

static const char *str_at(const struct parse *ps, const char *offset_plus_one)
{
	return ps->strings + ((uintptr_t)offset_plus_one - 1);
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct userlist_entry *)a)->name,
		      ((const struct userlist_entry *)b)->name);
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The most frequent value of v[0..n) (sorted in place); dflt when n == 0. */
static uint32_t mode_of(uint32_t *v, size_t n, uint32_t dflt)
{
	uint32_t best = dflt;
	size_t best_run = 0, run = 0;

	qsort(v, n, sizeof(*v), u32_cmp);
	for (size_t i = 0; i < n; i++) {
		run = i && v[i] == v[i - 1] ? run + 1 : 1;
		if (run > best_run) {
			best_run = run;
			best = v[i];
		}
	}
	return best;
}

int userlist_parse(const char *name, const char *data, size_t len, enum userlist_kind kind,
		   struct userlist **out, char *err, size_t errlen)
{
	struct parse ps = {.name = name, .kind = kind, .err = err, .errlen = errlen};
	struct userlist *u = NULL;
	char *scratch = NULL;
	const char *p = data, *end = data + len;
	unsigned line = 0;
	size_t nlines = 1, entries_size;
	int rc = -1;

	*out = NULL;
	if (len > USERLIST_MAX_FILE_SIZE) {
		errbuf_set(err, errlen, "%s: larger than %d MiB",
			   name, USERLIST_MAX_FILE_SIZE >> 20);
		return -1;
	}
	for (size_t i = 0; i < len; i++)
		nlines += data[i] == '\n';
	if (nlines > USERLIST_MAX_ENTRIES)
		nlines = USERLIST_MAX_ENTRIES + 1;
	ps.entries = calloc(nlines, sizeof(*ps.entries));
	/* Names and passwords are never longer than the file. */
	ps.strings_cap = len + 1;
	ps.strings = secret_alloc(ps.strings_cap);
	scratch = secret_alloc(2 * (SCRAM_PASSWORD_MAX + 2));
	if (!ps.entries || !ps.strings || !scratch) {
		errbuf_set(err, errlen, "%s: out of memory", name);
		goto out;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl ? nl : end) - p);
		const char *le;
		int r;

		line++;
		if (n && p[n - 1] == '\r')
			n--;
		le = p + n;
		if (memchr(p, '\0', n)) {
			line_fail(&ps, line, "contains a NUL byte");
			goto out;
		}
		r = parse_line(&ps, p, le, line, scratch, scratch + SCRAM_PASSWORD_MAX + 2);
		if (r < 0)
			goto out;
		if (r > 0 && add_entry(&ps, line, scratch, scratch + SCRAM_PASSWORD_MAX + 2))
			goto out;
		p = nl ? nl + 1 : end;
	}
	/* Fix string offsets into pointers, sort, refuse duplicates. */
	for (size_t i = 0; i < ps.count; i++) {
		ps.entries[i].name = str_at(&ps, ps.entries[i].name);
		if (ps.entries[i].password)
			ps.entries[i].password = str_at(&ps, ps.entries[i].password);
	}
	qsort(ps.entries, ps.count, sizeof(*ps.entries), entry_cmp);
	for (size_t i = 1; i < ps.count; i++) {
		if (strcmp(ps.entries[i].name, ps.entries[i - 1].name) == 0) {
			char shown[USERLIST_NAME_MAX * 4 + 1];
			const struct userlist_entry *a = &ps.entries[i - 1], *b = &ps.entries[i];

			line_fail(&ps, a->line > b->line ? a->line : b->line,
				  "user \"%s\" is listed twice (first on line %u)",
				  safe_name(a->name, shown, sizeof(shown)),
				  a->line < b->line ? a->line : b->line);
			goto out;
		}
	}
	u = calloc(1, sizeof(*u));
	entries_size = ps.count * sizeof(struct userlist_entry);
	if (!u || !(u->block = secret_alloc(entries_size + ps.strings_len + 1))) {
		errbuf_set(err, errlen, "%s: out of memory", name);
		goto out;
	}
	/* Move everything into one block: entries, then the strings, pointers rebased. */
	memcpy((char *)u->block + entries_size, ps.strings, ps.strings_len);
	u->entries = u->block;
	for (size_t i = 0; i < ps.count; i++) {
		u->entries[i] = ps.entries[i];
		u->entries[i].name = (char *)u->block + entries_size + (ps.entries[i].name - ps.strings);
		if (ps.entries[i].password)
			u->entries[i].password =
				(char *)u->block + entries_size + (ps.entries[i].password - ps.strings);
	}
	u->count = ps.count;
	u->kind = kind;
	u->refcount = 1;
	{
		uint32_t *v = malloc((ps.count ? ps.count : 1) * sizeof(*v));

		if (!v) {
			errbuf_set(err, errlen, "%s: out of memory", name);
			goto out;
		}
		for (size_t i = 0; i < ps.count; i++)
			v[i] = u->entries[i].verifier.iterations;
		u->common_iterations = kind == USERLIST_VERIFIERS ?
					       mode_of(v, ps.count, SCRAM_ITERATIONS_DEFAULT) :
					       SCRAM_ITERATIONS_DEFAULT;
		for (size_t i = 0; i < ps.count; i++)
			v[i] = (uint32_t)u->entries[i].verifier.salt_len;
		u->common_salt_len = kind == USERLIST_VERIFIERS ?
					     mode_of(v, ps.count, SCRAM_SALT_DEFAULT_LEN) :
					     SCRAM_SALT_DEFAULT_LEN;
		free(v);
	}
	*out = u;
	u = NULL;
	rc = 0;
out:
	if (u) {
		secret_free(u->block);
		free(u);
	}
	if (ps.entries) {
		OPENSSL_cleanse(ps.entries, nlines * sizeof(*ps.entries));
		free(ps.entries);
	}
	secret_free(ps.strings);
	secret_free(scratch);
	return rc;
}

int userlist_check_file(int fd, bool secret, char *err, size_t errlen)
{
	struct stat st;
	mode_t perm;

	if (fstat(fd, &st) != 0) {
		errbuf_set(err, errlen, "%s", strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		errbuf_set(err, errlen, "not a regular file");
		return -1;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		errbuf_set(err, errlen,
			   "owned by uid %u; must be owned by pgwardend's user (uid %u) or root",
			   (unsigned)st.st_uid, (unsigned)geteuid());
		return -1;
	}
	perm = st.st_mode & 07777;
	/* Nobody else may change it; a secret file nobody else may read, except a root-owned
	 * one its group may read (PostgreSQL's rule for ssl_key_file). */
	if (perm & (S_IWGRP | S_IWOTH | S_IXGRP | S_IXOTH) ||
	    (secret && (perm & S_IROTH || (perm & S_IRGRP && st.st_uid != 0)))) {
		errbuf_set(err, errlen, "permissions %04o are too open; use %s", (unsigned)perm,
			   secret ? "0600 (or 0640 when root owns the file)" : "0644 or stricter");
		return -1;
	}
	return 0;
}

int userlist_read_file(const char *path, bool secret, size_t max, char **out, size_t *outlen,
		       char *err, size_t errlen)
{
	char why[256], *buf;
	struct stat st;
	size_t len = 0;
	int fd;

	*out = NULL;
	*outlen = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (userlist_check_file(fd, secret, why, sizeof(why)) || fstat(fd, &st)) {
		errbuf_set(err, errlen, "%s: %s", path, why);
		close(fd);
		return -1;
	}
	if ((size_t)st.st_size > max) {
		errbuf_set(err, errlen, "%s: larger than %zu MiB", path, max >> 20);
		close(fd);
		return -1;
	}
	buf = secret ? secret_alloc((size_t)st.st_size + 1) : malloc((size_t)st.st_size + 1);
	if (!buf) {
		errbuf_set(err, errlen, "%s: out of memory", path);
		close(fd);
		return -1;
	}
	while (len <= (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				break;
			errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
			len = SIZE_MAX;
			break;
		}
		len += (size_t)n;
	}
	close(fd);
	if (len != SIZE_MAX && len > (size_t)st.st_size)
		errbuf_set(err, errlen, "%s: changed while being read; try again", path);
	if (len > (size_t)st.st_size) {
		if (secret)
			secret_free(buf);
		else
			free(buf);
		return -1;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

int userlist_load(const char *path, enum userlist_kind kind, struct userlist **out, char *err,
		  size_t errlen)
{
	char *buf;
	size_t len;
	int rc;

	*out = NULL;
	if (userlist_read_file(path, true, USERLIST_MAX_FILE_SIZE, &buf, &len, err, errlen))
		return -1;
	rc = userlist_parse(path, buf, len, kind, out, err, errlen);
	secret_free(buf);
	return rc;
}

void userlist_ref(struct userlist *u)
{
	__atomic_add_fetch(&u->refcount, 1, __ATOMIC_RELAXED);
}

void userlist_unref(struct userlist *u)
{
	if (!u || __atomic_sub_fetch(&u->refcount, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	secret_free(u->block);
	free(u);
}

size_t userlist_count(const struct userlist *u)
{
	return u ? u->count : 0;
}

static const struct userlist_entry *find(const struct userlist *u, const char *user)
{
	struct userlist_entry key = {.name = user};

	if (!u || !user || !u->count)
		return NULL;
	return bsearch(&key, u->entries, u->count, sizeof(key), entry_cmp);
}

const struct scram_verifier *userlist_verifier(const struct userlist *u, const char *user)
{
	const struct userlist_entry *e = find(u, user);

	return e && u->kind == USERLIST_VERIFIERS ? &e->verifier : NULL;
}

const char *userlist_password(const struct userlist *u, const char *user)
{
	const struct userlist_entry *e = find(u, user);

	return e && u->kind == USERLIST_PASSWORDS ? e->password : NULL;
}

uint32_t userlist_common_iterations(const struct userlist *u)
{
	return u ? u->common_iterations : SCRAM_ITERATIONS_DEFAULT;
}

size_t userlist_common_salt_len(const struct userlist *u)
{
	return u ? u->common_salt_len : SCRAM_SALT_DEFAULT_LEN;
}

const char *userlist_name_at(const struct userlist *u, size_t i)
{
	return u && i < u->count ? u->entries[i].name : NULL;
}
