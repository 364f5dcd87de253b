/* stage: ordered pipeline of inspection stages (see stage.h). */
#include "stage/stage.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define STAGE_STATE_ALIGN 16

static size_t stage_align(size_t n)
{
	return (n + STAGE_STATE_ALIGN - 1) & ~(size_t)(STAGE_STATE_ALIGN - 1);
}

void stage_result_set(struct stage_result *r, enum stage_verdict v, const char *sqlstate,
		      const char *fmt, ...)
{
	va_list ap;

	r->verdict = v;
	snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate);
	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
}

int stage_pipeline_add(struct stage_pipeline *p, const struct stage_ops *ops)
{
	if (p->count >= STAGE_MAX)
		return -E2BIG;
	p->stages[p->count++] = ops;
	p->state_size += stage_align(ops->state_size);
	typeset_union(&p->frontend_types, &ops->frontend_types);
	typeset_union(&p->backend_types, &ops->backend_types);
	return 0;
}

/*
 * Each stage's state is a slice of one per-session block, in pipeline order. Walking the
 * slices in the same order as stage_pipeline_add() summed them keeps offsets consistent.
 */
#define STAGE_FOREACH(p, state, i, ops, st)                                                   \
	for (size_t i##_off = 0, i = 0;                                                        \
	     i < (p)->count && ((ops) = (p)->stages[i], (st) = (char *)(state) + i##_off, 1);   \
	     i##_off += stage_align((p)->stages[i]->state_size), i++)

void stage_session_start(const struct stage_pipeline *p, void *state, const struct session *s,
			 struct stage_result *r)
{
	const struct stage_ops *ops;
	void *st;

	r->verdict = STAGE_FORWARD;
	STAGE_FOREACH(p, state, i, ops, st) {
		if (ops->session_start)
			ops->session_start(st, s, r);
		if (r->verdict != STAGE_FORWARD)
			return;
	}
}

void stage_frontend(const struct stage_pipeline *p, void *state, const struct session *s,
		    const struct proto_msg *m, struct stage_result *r)
{
	const struct stage_ops *ops;
	void *st;

	r->verdict = STAGE_FORWARD;
	STAGE_FOREACH(p, state, i, ops, st) {
		if (ops->frontend && typeset_has(&ops->frontend_types, m->type))
			ops->frontend(st, s, m, r);
		if (r->verdict != STAGE_FORWARD)
			return;
	}
}

void stage_backend(const struct stage_pipeline *p, void *state, const struct session *s,
		   const struct proto_msg *m, struct stage_result *r)
{
	const struct stage_ops *ops;
	void *st;

	r->verdict = STAGE_FORWARD;
	STAGE_FOREACH(p, state, i, ops, st) {
		if (ops->backend && typeset_has(&ops->backend_types, m->type))
			ops->backend(st, s, m, r);
		if (r->verdict != STAGE_FORWARD)
			return;
	}
}

void stage_session_end(const struct stage_pipeline *p, void *state, const struct session *s)
{
	const struct stage_ops *ops;
	void *st;

	/* Every stage hears the end, whatever an earlier one decided. */
	STAGE_FOREACH(p, state, i, ops, st) {
		if (ops->session_end)
			ops->session_end(st, s);
	}
}
