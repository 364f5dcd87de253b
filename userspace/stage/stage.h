/*
 * stage: the inspection-stage interface and the pipeline that runs stages in order.
 *
 * Policy, masking, audit and the session log are stages, not code inside the connection
 * state machine. A stage sees: session start (identity known: after the StartupMessage),
 * each whole message of the types it asked for (before it is forwarded), and session end.
 * It answers with a verdict; it never touches sockets or connection state. Stages run in
 * pipeline order; the first verdict other than FORWARD wins.
 *
 * Messages of types no stage asked for are streamed by count and never buffered whole, so
 * a stage's type sets are also its cost.
 */
#ifndef PGWARDEN_STAGE_H
#define PGWARDEN_STAGE_H

#include "proto/proto.h"
#include "stage/session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A set of message type bytes (all protocol types are 7-bit). */
struct proto_typeset {
	uint64_t bits[2];
};

static inline void typeset_add(struct proto_typeset *s, uint8_t t)
{
	if (t < 128)
		s->bits[t >> 6] |= 1ULL << (t & 63);
}

static inline bool typeset_has(const struct proto_typeset *s, uint8_t t)
{
	return t < 128 && ((s->bits[t >> 6] >> (t & 63)) & 1);
}

static inline void typeset_union(struct proto_typeset *into, const struct proto_typeset *s)
{
	into->bits[0] |= s->bits[0];
	into->bits[1] |= s->bits[1];
}

enum stage_verdict {
	STAGE_FORWARD = 0,
	STAGE_CLOSE, /* end the session: the client gets a FATAL ErrorResponse */
};

#define STAGE_MESSAGE_MAX 256

struct stage_result {
	enum stage_verdict verdict;
	char sqlstate[6];
	char message[STAGE_MESSAGE_MAX];
};

/* Set a CLOSE verdict with its SQLSTATE and message. */
void stage_result_set(struct stage_result *r, enum stage_verdict v, const char *sqlstate,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

struct stage_ops {
	const char *name;
	struct proto_typeset frontend_types; /* whole client messages this stage must see */
	struct proto_typeset backend_types;  /* whole server messages this stage must see */
	size_t state_size; /* per-session state, zeroed, owned by the pipeline */
	/* Each callback is optional. */
	void (*session_start)(void *state, const struct session *s, struct stage_result *r);
	void (*frontend)(void *state, const struct session *s, const struct proto_msg *m,
			 struct stage_result *r);
	void (*backend)(void *state, const struct session *s, const struct proto_msg *m,
			struct stage_result *r);
	void (*session_end)(void *state, const struct session *s);
};

#define STAGE_MAX 8

/* An ordered, immutable list of stages; built at start-up. */
struct stage_pipeline {
	const struct stage_ops *stages[STAGE_MAX];
	unsigned count;
	size_t state_size; /* sum of stage states, each aligned */
	struct proto_typeset frontend_types;
	struct proto_typeset backend_types;
};

/* 0 or -E2BIG when the pipeline is full. */
int stage_pipeline_add(struct stage_pipeline *p, const struct stage_ops *ops)
	__attribute__((warn_unused_result));

/* Per-session run of a pipeline. state is p->state_size bytes, zeroed by the caller. */
void stage_session_start(const struct stage_pipeline *p, void *state, const struct session *s,
			 struct stage_result *r);
void stage_frontend(const struct stage_pipeline *p, void *state, const struct session *s,
		    const struct proto_msg *m, struct stage_result *r);
void stage_backend(const struct stage_pipeline *p, void *state, const struct session *s,
		   const struct proto_msg *m, struct stage_result *r);
void stage_session_end(const struct stage_pipeline *p, void *state, const struct session *s);

/* The session log: one line at session start, one at end. */
extern const struct stage_ops sessionlog_stage;

#endif
