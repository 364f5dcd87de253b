/* auth_types: the names of the auth modes and methods (see auth_types.h). */
#include "auth/auth_types.h"

const char *const auth_method_names[AUTH_METHOD_NAMES_COUNT + 1] = {
	"trust", "password", "md5", "scram-sha-256", "scram-sha-256-plus", "gss", "sspi", NULL,
};

const char *const auth_mode_names[AUTH_MODE_COUNT + 1] = {"passthrough", "terminate", NULL};
