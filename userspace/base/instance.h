/*
 * instance: the name of a pgwarden instance. It names the steering attach's bpffs pin
 * directory and nft table, and the daemon's configuration names the attach it reads by it
 * (steer_instance), so its rules live here, once, for both: 1 to INSTANCE_NAME_MAX - 1 of
 * [A-Za-z0-9_-], default "pgwarden". No project dependencies.
 */
#ifndef PGWARDEN_INSTANCE_H
#define PGWARDEN_INSTANCE_H

#include <stdbool.h>

#define INSTANCE_NAME_DEFAULT "pgwarden"
#define INSTANCE_NAME_MAX 32 /* with the NUL */

/* Whether s is a usable instance name (it becomes a directory and an nft table name). */
bool instance_name_valid(const char *s);

#endif
