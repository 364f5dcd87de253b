/*
 * sql_split_dump: pgwarden's statement split of a SQL file, for the differential lexer test
 * (tests/integration/test_sql_differential.py).
 *
 *   sql_split_dump [--scs-off] FILE
 *
 * Prints one line per statement: "on|off TEXT_OFFSET TEXT_LENGTH FLAGS", offsets in bytes
 * into FILE. It reads the file as psql would send it statement by statement: a statement
 * that sets standard_conforming_strings (SET [SESSION|LOCAL] ... TO/= on|off|true|false,
 * RESET, RESET ALL) changes how the rest is lexed, as the server's report of the new value
 * would for pgwarden. Exit 0, or 2 on a usage or read error.
 */
#include "sql/sql.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The new standard_conforming_strings a statement sets: 1 on, 0 off, -1 none. */
static int scs_change(const char *s, size_t n)
{
	char buf[256];
	size_t k = 0;

	/* lower case, runs of space and quotes squeezed out */
	for (size_t i = 0; i < n && k + 1 < sizeof(buf); i++) {
		char c = (char)tolower((unsigned char)s[i]);

		if (c == '\'' || c == '"')
			continue;
		if (isspace((unsigned char)c)) {
			if (k && buf[k - 1] != ' ')
				buf[k++] = ' ';
			continue;
		}
		buf[k++] = c;
	}
	buf[k] = '\0';
	if (!strcmp(buf, "reset standard_conforming_strings") || !strcmp(buf, "reset all"))
		return 1;
	const char *p = buf;

	if (strncmp(p, "set ", 4))
		return -1;
	p += 4;
	if (!strncmp(p, "session ", 8))
		p += 8;
	else if (!strncmp(p, "local ", 6))
		p += 6;
	if (strncmp(p, "standard_conforming_strings", 27))
		return -1;
	p += 27;
	while (*p == ' ')
		p++;
	if (!strncmp(p, "to ", 3))
		p += 3;
	else if (*p == '=')
		p++;
	while (*p == ' ')
		p++;
	if (!strcmp(p, "on") || !strcmp(p, "true") || !strcmp(p, "default"))
		return 1;
	if (!strcmp(p, "off") || !strcmp(p, "false"))
		return 0;
	return -1;
}

int main(int argc, char **argv)
{
	bool on = true;
	const char *path;
	FILE *f;
	char *buf;
	long len;
	size_t start = 0;

	if (argc == 3 && !strcmp(argv[1], "--scs-off")) {
		on = false;
		path = argv[2];
	} else if (argc == 2) {
		path = argv[1];
	} else {
		fprintf(stderr, "usage: sql_split_dump [--scs-off] FILE\n");
		return 2;
	}
	f = fopen(path, "rb");
	if (!f || fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		fprintf(stderr, "sql_split_dump: %s: cannot read\n", path);
		return 2;
	}
	buf = malloc((size_t)len + 1);
	if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		fprintf(stderr, "sql_split_dump: %s: cannot read\n", path);
		return 2;
	}
	fclose(f);
	for (;;) {
		struct sql_splitter sp;
		struct sql_stmt st;
		bool restarted = false;

		sql_split_init(&sp, buf + start, (size_t)len - start, on ? 0 : SQL_LEX_BACKSLASH_QUOTES);
		while (sql_split_next(&sp, &st)) {
			int change;

			printf("%s %zu %zu %u\n", on ? "on" : "off", start + st.text_off, st.text_len,
			       st.flags);
			change = scs_change(buf + start + st.text_off, st.text_len);
			if (change >= 0 && change != (int)on) {
				on = change;
				start += st.off + st.len;
				restarted = true;
				break;
			}
		}
		if (!restarted)
			break;
	}
	free(buf);
	return 0;
}
