/*
 * policy_stmt_shim: TEMPORARY link shim, to be deleted when the connection core's
 * session/stmt.c (the statement table's implementation) is merged.
 *
 * stmt.h declares the table's readers and the policy stage calls them, but on this branch
 * nothing implements them yet, so every program that links all library objects (the fuzz
 * targets) would fail to link. These weak definitions answer "no such statement", which
 * the stage reads as "nothing to re-check" (Bind/Execute are judged at their Parse); the
 * real, strong definitions replace them at link time the moment stmt.c exists. No core
 * calls the policy stage before then.
 */
#include "session/stmt.h"

#include <stddef.h>

__attribute__((weak)) const struct stmt_entry *stmt_lookup(const struct stmt_table *t,
							   const char *name)
{
	(void)t;
	(void)name;
	return NULL;
}

__attribute__((weak)) const struct stmt_entry *stmt_portal_lookup(const struct stmt_table *t,
								  const char *portal)
{
	(void)t;
	(void)portal;
	return NULL;
}
