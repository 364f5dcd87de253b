/*
 * mask_track: which request each server message answers, and the prepared statements,
 * portals, cursors and SQL-prepared names a session has, as far as masking needs them.
 *
 * A DataRow does not say which statement produced it; its columns come from the last
 * RowDescription of a simple Query, or, in the extended protocol, from the portal being
 * executed, described by Describe('P'), or by Describe('S') of its statement plus the
 * Bind's result formats, possibly in an earlier batch. The tracker keeps the client's
 * requests in order (a FIFO), and the server's answers pop them in the same order, so the
 * stage always knows what a message answers.
 *
 * Named objects change only on the server's confirmation (ParseComplete, BindComplete,
 * CloseComplete, a CommandComplete for DECLARE/PREPARE/CLOSE/DEALLOCATE), never on the
 * request: a Parse the server refuses (a duplicate name) must not replace what the name
 * means. An error pops everything up to the Sync the server skips to; ReadyForQuery pops
 * through the Sync or Query it answers (so a batch whose error the relay answered itself
 * still ends cleanly).
 *
 * Bounded: at most MASK_TRACK_QUEUE requests in flight and MASK_TRACK_NAMES named objects;
 * beyond, the stage refuses the request (54000) rather than grow.
 */
#ifndef PGWARDEN_MASK_TRACK_H
#define PGWARDEN_MASK_TRACK_H

#include "mask/mask_plan.h"
#include "mask/mask_stmt.h"

#include <stdbool.h>
#include <stdint.h>

#define MASK_TRACK_QUEUE 4096
#define MASK_TRACK_NAMES 10000

enum mask_req_kind {
	MREQ_QUERY = 1,
	MREQ_PARSE,
	MREQ_BIND,
	MREQ_DESCRIBE_S,
	MREQ_DESCRIBE_P,
	MREQ_EXECUTE,
	MREQ_CLOSE_S,
	MREQ_CLOSE_P,
	MREQ_SYNC,
};

struct mask_req {
	enum mask_req_kind kind;
	char *name;   /* statement (PARSE, DESCRIBE_S, CLOSE_S) or portal (BIND, DESCRIBE_P,
		       * EXECUTE, CLOSE_P) */
	char *stmt;   /* BIND: the statement bound */
	int16_t *formats;
	uint16_t nformats; /* BIND: result format codes as sent */
	struct mask_stmt_info *infos; /* QUERY: one per statement; PARSE: one */
	uint16_t ninfos, cur;         /* QUERY: the statement now answering */
	/* The result being received (QUERY's current statement, EXECUTE's portal). */
	struct mask_plan plan;
	bool planned;
	bool copy_planned;
	uint64_t request; /* QUERY, EXECUTE: the client request (stage_ctx.request), for audit */
};

/* A statement or portal as the server has it; or a cursor / SQL prepared name. */
struct mask_named {
	char *name;
	struct mask_stmt_info *info; /* what the classifier said (NULL: nothing) */
	struct mask_desc desc;
	bool described;
	struct mask_named *next;
};

enum mask_ns {
	MASK_NS_STMT = 0, /* protocol prepared statements (and SQL PREPAREs: one namespace) */
	MASK_NS_PORTAL,
	MASK_NS_SQLNAME,  /* DECLAREd cursors and PREPAREd statements: their definition's refs */
	MASK_NS_COUNT,
};

struct mask_track {
	struct mask_req *queue; /* ring of MASK_TRACK_QUEUE */
	unsigned head, len;
	struct mask_named **buckets[MASK_NS_COUNT];
	unsigned nbuckets;
	unsigned count; /* named objects, all namespaces */
};

int mask_track_init(struct mask_track *t) __attribute__((warn_unused_result));
void mask_track_release(struct mask_track *t);

/* A new request at the tail (zeroed), or NULL when MASK_TRACK_QUEUE are in flight. */
struct mask_req *mask_track_push(struct mask_track *t, enum mask_req_kind kind);
/* The oldest request, or NULL. */
struct mask_req *mask_track_head(struct mask_track *t);
struct mask_req *mask_track_at(struct mask_track *t, unsigned i);
void mask_track_pop(struct mask_track *t);
static inline unsigned mask_track_len(const struct mask_track *t)
{
	return t->len;
}

/* The named object, or NULL. */
struct mask_named *mask_track_find(struct mask_track *t, enum mask_ns ns, const char *name);
/* Create or replace (its old contents released). NULL on -ENOMEM or beyond the bound. */
struct mask_named *mask_track_put(struct mask_track *t, enum mask_ns ns, const char *name);
void mask_track_drop(struct mask_track *t, enum mask_ns ns, const char *name);
void mask_track_drop_all(struct mask_track *t, enum mask_ns ns);

/* A heap copy of a statement's facts (NULL in: NULL out; NULL on -ENOMEM too, and the
 * caller must then treat the statement as unknown). */
struct mask_stmt_info *mask_stmt_info_dup(const struct mask_stmt_info *s);

#endif
