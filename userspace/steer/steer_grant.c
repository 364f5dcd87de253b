/*
 * steer_grant: let a pgwardend that does not run as root use a fail-closed attach's pins.
 *
 * The packaged daemon runs as the pgwarden user with CAP_BPF and CAP_DAC_READ_SEARCH: it can
 * reach and read root's pins (the instance's configuration map, opened read-only), but not
 * write one. The maps it writes are the origin map (it deletes each connection's entry
 * once it has read it) and the relay-socket map (it registers its listeners), so those two
 * pins, and only those, go to the daemon's group with mode 0660. Link pins stay root's
 * 0600: a descriptor of a link is enough to detach it.
 */
#include "steer/steer.h"
#include "steer/steer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int steer_pins_grant(const char *instance, gid_t gid, char *err, size_t errlen)
{
	static const char *const maps[] = {PGW_STR(PGW_MAP_ORIGIN_TUP),
					   PGW_STR(PGW_MAP_RELAY_SOCKS)};
	char path[256];

	for (unsigned i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		steer_pin_path(path, sizeof(path), instance, maps[i]);
		if (chown(path, (uid_t)-1, gid) != 0 || chmod(path, 0660) != 0) {
			int rc = -errno;

			snprintf(err, errlen, "cannot give group %u the map %s: %s", (unsigned)gid,
				 path, strerror(errno));
			return rc;
		}
	}
	return 0;
}
