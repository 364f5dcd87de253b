/* mask_scrub: errors, notices, notifications and parameters for masked identities
 * (see mask_scrub.h for what is kept and why). */
#include "mask/mask_scrub.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* SQLSTATE classes whose messages the server builds from names and the client's query. */
static const char safe_classes[][3] = {
	"08", "0A", "0B", "0L", "0P", "25", "26", "28", "2B", "2D", "34", "3B", "3D",
	"3F", "40", "42", "53", "54", "55", "57", "58", "72", "F0",
};

static const struct {
	const char cls[3];
	const char *what;
} class_names[] = {
	{"00", "notice"},
	{"01", "warning"},
	{"02", "no data"},
	{"09", "triggered action exception"},
	{"20", "case not found"},
	{"21", "cardinality violation"},
	{"22", "data exception"},
	{"23", "integrity constraint violation"},
	{"24", "invalid cursor state"},
	{"27", "triggered data change violation"},
	{"2F", "SQL routine exception"},
	{"38", "external routine exception"},
	{"39", "external routine invocation exception"},
	{"44", "WITH CHECK OPTION violation"},
	{"HV", "foreign data wrapper error"},
	{"P0", "PL/pgSQL error"},
	{"XX", "internal error"},
};

bool mask_scrub_class_safe(const char *sqlstate)
{
	if (!sqlstate || strlen(sqlstate) != 5)
		return false;
	for (size_t i = 0; i < sizeof(safe_classes) / sizeof(safe_classes[0]); i++)
		if (sqlstate[0] == safe_classes[i][0] && sqlstate[1] == safe_classes[i][1])
			return true;
	return false;
}

static const char *class_name(const char *sqlstate)
{
	for (size_t i = 0; i < sizeof(class_names) / sizeof(class_names[0]); i++)
		if (sqlstate[0] == class_names[i].cls[0] && sqlstate[1] == class_names[i].cls[1])
			return class_names[i].what;
	return "error";
}

struct wbuf {
	uint8_t *p;
	size_t n, cap;
	bool over;
};

static void w_bytes(struct wbuf *w, const void *p, size_t n)
{
	if (w->n + n > w->cap) {
		w->over = true;
		return;
	}
	memcpy(w->p + w->n, p, n);
	w->n += n;
}

static void w_field(struct wbuf *w, uint8_t type, const char *v)
{
	w_bytes(w, &type, 1);
	w_bytes(w, v, strlen(v) + 1);
}

/* Fields that name things or say where, never carry data: kept in every class. */
static bool field_always_kept(uint8_t t)
{
	return strchr("SVCstcdnFLRP", t) != NULL;
}

int mask_scrub_error(const struct proto_msg *m, uint8_t *out, size_t cap)
{
	struct proto_cursor c;
	struct wbuf w = {.p = out, .cap = cap};
	const char *sqlstate = NULL;
	char text[128];
	bool safe, changed = false;

	if (m->type != PqMsg_ErrorResponse && m->type != PqMsg_NoticeResponse)
		return -EPROTO;
	/* First pass: validate and find the SQLSTATE. */
	proto_cursor_init(&c, m->body, m->body_len);
	for (;;) {
		uint8_t t = proto_get_u8(&c);
		const char *v;

		if (c.err)
			return -EPROTO;
		if (t == 0)
			break;
		v = proto_get_cstr(&c);
		if (!v)
			return -EPROTO;
		if (t == 'C')
			sqlstate = v;
	}
	if (!proto_cursor_done(&c) || !sqlstate)
		return -EPROTO;
	safe = mask_scrub_class_safe(sqlstate);
	snprintf(text, sizeof(text), "%s (details withheld from a masked session; SQLSTATE %.5s)",
		 class_name(sqlstate), sqlstate);
	/* Second pass: write what stays. */
	w_bytes(&w, &m->type, 1);
	w_bytes(&w, "\0\0\0\0", 4);
	proto_cursor_init(&c, m->body, m->body_len);
	for (;;) {
		uint8_t t = proto_get_u8(&c);
		const char *v;

		if (t == 0)
			break;
		v = proto_get_cstr(&c);
		if (field_always_kept(t) || (safe && t != 'D')) {
			w_field(&w, t, v);
			continue;
		}
		changed = true;
		if (t == 'M')
			w_field(&w, 'M', text);
	}
	w_bytes(&w, "", 1);
	if (w.over)
		return -ENOSPC;
	if (!changed)
		return 0;
	proto_write_u32(out + 1, (uint32_t)(w.n - 1));
	return (int)w.n;
}

int mask_scrub_notification(const struct proto_msg *m, uint8_t *out, size_t cap)
{
	struct proto_cursor c;
	const char *channel, *payload;
	uint32_t pid;
	size_t cl, total;

	if (m->type != PqMsg_NotificationResponse)
		return -EPROTO;
	proto_cursor_init(&c, m->body, m->body_len);
	pid = proto_get_u32(&c);
	channel = proto_get_cstr(&c);
	payload = proto_get_cstr(&c);
	if (!proto_cursor_done(&c))
		return -EPROTO;
	if (!payload[0])
		return 0;
	cl = strlen(channel);
	total = PROTO_HEADER_LEN + 4 + cl + 1 + 1;
	if (cap < total)
		return -ENOSPC;
	out[0] = PqMsg_NotificationResponse;
	proto_write_u32(out + 1, (uint32_t)(total - 1));
	proto_write_u32(out + 5, pid);
	memcpy(out + 9, channel, cl + 1);
	out[9 + cl + 1] = '\0';
	return (int)total;
}

/* Parameters the server controls, or whose values come from a fixed set. */
static const char *const fixed_params[] = {
	"server_version", "server_encoding", "client_encoding", "DateStyle", "IntervalStyle",
	"TimeZone", "integer_datetimes", "is_superuser", "session_authorization",
	"standard_conforming_strings", "in_hot_standby", "default_transaction_read_only",
	"scram_iterations",
};

int mask_scrub_parameter(const struct proto_msg *m, const char *client_value, uint8_t *out,
			 size_t cap)
{
	const char *name, *value;
	int n;

	if (proto_read_parameter_status(m, &name, &value) != PROTO_OK)
		return -EPROTO;
	for (size_t i = 0; i < sizeof(fixed_params) / sizeof(fixed_params[0]); i++)
		if (strcmp(name, fixed_params[i]) == 0)
			return 0;
	if (!value[0] || (client_value && strcmp(client_value, value) == 0))
		return 0;
	n = proto_write_parameter_status(out, cap, name, "");
	return n == PROTO_ERR_BUFFER ? -ENOSPC : n < 0 ? -EPROTO : n;
}
