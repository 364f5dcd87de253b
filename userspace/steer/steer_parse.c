/* steer_parse: option defaults, --port/--address parsing, the mounts-table reader. Pure
 * functions (no kernel state), so the unit suite covers them without root. */
#include "steer/steer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

void steer_opts_init(struct steer_opts *o)
{
	memset(o, 0, sizeof(*o));
	snprintf(o->instance, sizeof(o->instance), "%s", STEER_DEFAULT_INSTANCE);
	o->relay_mark = STEER_DEFAULT_RELAY_MARK;
	o->tproxy_mark = STEER_DEFAULT_TPROXY_MARK;
	o->route_table = STEER_DEFAULT_ROUTE_TABLE;
	o->rule_priority = STEER_DEFAULT_RULE_PRIORITY;
	o->check_relay = true;
	o->origin_max = STEER_DEFAULT_ORIGIN_MAX;
}

int steer_parse_port(const char *text, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (!text || *text < '0' || *text > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || *end || v == 0 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int steer_parse_ip(const char *text, struct addr *out)
{
	char host[INET6_ADDRSTRLEN];
	size_t len;

	memset(out, 0, sizeof(*out));
	if (!text)
		return -EINVAL;
	len = strlen(text);
	if (len >= 2 && text[0] == '[' && text[len - 1] == ']') {
		text++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(host))
		return -EINVAL;
	memcpy(host, text, len);
	host[len] = '\0';
	struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;

	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		out->len = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		out->len = sizeof(*s6);
		return 0;
	}
	return -EINVAL;
}

/* Decode the octal escapes the kernel writes for space, tab, newline and backslash in
 * mount fields (fs/proc_namespace.c: mangle()). False when the result does not fit. */
static bool mounts_unescape(const char *in, char *out, size_t n)
{
	size_t j = 0;

	for (size_t i = 0; in[i]; i++) {
		char c = in[i];

		if (c == '\\' && in[i + 1] >= '0' && in[i + 1] <= '3' && in[i + 2] >= '0' &&
		    in[i + 2] <= '7' && in[i + 3] >= '0' && in[i + 3] <= '7') {
			c = (char)((in[i + 1] - '0') * 64 + (in[i + 2] - '0') * 8 + (in[i + 3] - '0'));
			i += 3;
		}
		if (j + 1 >= n)
			return false;
		out[j++] = c;
	}
	out[j] = '\0';
	return true;
}

int steer_find_mount(FILE *mounts, const char *fstype, char *out, size_t n)
{
	char line[4096];
	bool too_long = false;

	while (fgets(line, sizeof(line), mounts)) {
		char *save = NULL;
		char *dev, *dir, *type;

		if (!strchr(line, '\n') && !feof(mounts)) {
			/* A line longer than our buffer: skip the rest of it, it is not ours to
			 * misread. */
			int c;

			while ((c = fgetc(mounts)) != EOF && c != '\n')
				;
			continue;
		}
		dev = strtok_r(line, " \t\n", &save);
		dir = strtok_r(NULL, " \t\n", &save);
		type = strtok_r(NULL, " \t\n", &save);
		if (!dev || !dir || !type || strcmp(type, fstype) != 0)
			continue;
		if (dir[0] != '/')
			continue;
		if (!mounts_unescape(dir, out, n)) {
			too_long = true;
			continue;
		}
		return 0;
	}
	return too_long ? -ENAMETOOLONG : -ENOENT;
}
