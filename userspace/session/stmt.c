/* stmt: a session's prepared statements and portals as its server has them (see stmt.h). */
#include "session/stmt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define STMT_MIN_BUCKETS 8

/* FNV-1a: names are chosen by the client, but a client that collides its own names only
 * slows its own session, whose table the limits bound. */
static uint32_t stmt_hash(const char *name)
{
	uint32_t h = 2166136261u;

	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * 16777619u;
	return h;
}

static size_t stmt_entry_bytes(const struct stmt_entry *e)
{
	return strlen(e->name) + (e->sql ? e->sql_len : 0);
}

struct stmt_entry *stmt_new(const char *name, const char *sql, uint32_t sql_len,
			    uint16_t nparams, bool sql_level)
{
	size_t ln = strlen(name) + 1;
	struct stmt_entry *e = calloc(1, sizeof(*e) + ln + (sql ? sql_len + 1 : 0));

	if (!e)
		return NULL;
	e->name = memcpy((char *)(e + 1), name, ln);
	if (sql) {
		e->sql = memcpy(e->name + ln, sql, sql_len);
		e->sql[sql_len] = '\0';
		e->sql_len = sql_len;
	}
	e->nparams = nparams;
	e->sql_level = sql_level;
	e->refs = 1;
	return e;
}

void stmt_put(struct stmt_entry *e)
{
	if (e && --e->refs == 0)
		free(e);
}

struct stmt_entry *stmt_lookup(const struct stmt_table *t, const char *name)
{
	struct stmt_entry *e;

	if (!t || !t->nbuckets)
		return NULL;
	for (e = t->buckets[stmt_hash(name) & (t->nbuckets - 1)]; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

bool stmt_fits(const struct stmt_table *t, const char *name, uint32_t sql_len)
{
	/* A statement that replaces one of the same name (the unnamed one) costs only the
	 * difference; counting it whole errs on the side of the limit. */
	bool replaces = stmt_lookup(t, name) != NULL;

	if (t->max_count && !replaces && t->count >= t->max_count)
		return false;
	return !t->max_bytes || t->bytes + strlen(name) + sql_len <= t->max_bytes;
}

/* Unlink name's entry; returns it (the caller drops the table's reference) or NULL. */
static struct stmt_entry *stmt_unlink(struct stmt_table *t, const char *name)
{
	struct stmt_entry **pp;

	if (!t->nbuckets)
		return NULL;
	for (pp = &t->buckets[stmt_hash(name) & (t->nbuckets - 1)]; *pp; pp = &(*pp)->next) {
		struct stmt_entry *e = *pp;

		if (strcmp(e->name, name) == 0) {
			*pp = e->next;
			e->next = NULL;
			t->count--;
			t->bytes -= stmt_entry_bytes(e);
			return e;
		}
	}
	return NULL;
}

/* Double the buckets when the chains get long; on ENOMEM the table keeps working with
 * longer chains. */
static void stmt_grow(struct stmt_table *t)
{
	uint32_t n = t->nbuckets ? t->nbuckets * 2 : STMT_MIN_BUCKETS;
	struct stmt_entry **b;

	if (t->nbuckets && t->count < t->nbuckets)
		return;
	b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (uint32_t i = 0; i < t->nbuckets; i++) {
		struct stmt_entry *e = t->buckets[i], *next;

		for (; e; e = next) {
			uint32_t k = stmt_hash(e->name) & (n - 1);

			next = e->next;
			e->next = b[k];
			b[k] = e;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

void stmt_commit(struct stmt_table *t, struct stmt_entry *e)
{
	uint32_t k;

	stmt_put(stmt_unlink(t, e->name));
	stmt_grow(t);
	if (!t->nbuckets) {
		stmt_put(e); /* no memory even for the first buckets: forget it */
		return;
	}
	k = stmt_hash(e->name) & (t->nbuckets - 1);
	e->next = t->buckets[k];
	t->buckets[k] = e;
	t->count++;
	t->bytes += stmt_entry_bytes(e);
}

void stmt_remove(struct stmt_table *t, const char *name)
{
	stmt_put(stmt_unlink(t, name));
}

void stmt_remove_all(struct stmt_table *t)
{
	for (uint32_t i = 0; i < t->nbuckets; i++) {
		struct stmt_entry *e = t->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = NULL;
			stmt_put(e);
		}
		t->buckets[i] = NULL;
	}
	t->count = 0;
	t->bytes = 0;
}

static struct stmt_portal **stmt_portal_find(struct stmt_table *t, const char *name)
{
	struct stmt_portal **pp;

	for (pp = &t->portals; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->name, name) == 0)
			return pp;
	return NULL;
}

struct stmt_entry *stmt_portal_lookup(const struct stmt_table *t, const char *portal)
{
	if (t && !portal[0])
		return t->unnamed_portal;
	for (const struct stmt_portal *p = t ? t->portals : NULL; p; p = p->next)
		if (strcmp(p->name, portal) == 0)
			return p->stmt;
	return NULL;
}

static void stmt_portal_free(struct stmt_portal *p)
{
	stmt_put(p->stmt);
	free(p);
}

void stmt_portal_close(struct stmt_table *t, const char *portal)
{
	struct stmt_portal **pp, *p;

	if (!portal[0]) {
		stmt_put(t->unnamed_portal);
		t->unnamed_portal = NULL;
		return;
	}
	pp = stmt_portal_find(t, portal);
	if (!pp)
		return;
	p = *pp;
	*pp = p->next;
	stmt_portal_free(p);
}

int stmt_portal_bind(struct stmt_table *t, const char *portal, struct stmt_entry *stmt)
{
	size_t ln;
	struct stmt_portal *p;

	if (!portal[0]) {
		if (stmt)
			stmt->refs++;
		stmt_put(t->unnamed_portal);
		t->unnamed_portal = stmt;
		return 0;
	}
	ln = strlen(portal) + 1;
	p = calloc(1, sizeof(*p) + ln);
	if (!p)
		return -ENOMEM;
	/* A named portal the server refuses to rebind, so the old one cannot be here then. */
	stmt_portal_close(t, portal);
	p->name = memcpy((char *)(p + 1), portal, ln);
	p->stmt = stmt;
	if (stmt)
		stmt->refs++;
	p->next = t->portals;
	t->portals = p;
	return 0;
}

void stmt_portals_end(struct stmt_table *t)
{
	struct stmt_portal *p = t->portals, *next;

	for (; p; p = next) {
		next = p->next;
		stmt_portal_free(p);
	}
	t->portals = NULL;
	stmt_portal_close(t, "");
}

void stmt_table_release(struct stmt_table *t)
{
	stmt_portals_end(t);
	stmt_remove_all(t);
	free(t->buckets);
	t->buckets = NULL;
	t->nbuckets = 0;
}
