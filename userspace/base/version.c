/* version: the build's version strings (see version.h). The only file that includes the
 * generated header, so a new commit recompiles one object. */
#include "base/version.h"

#include "pgwarden_version.h"

const char pgwarden_version[] = PGWARDEN_VERSION;
const char pgwarden_commit[] = PGWARDEN_COMMIT;
