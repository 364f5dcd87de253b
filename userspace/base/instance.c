/* instance: the rules of an instance name (see instance.h). */
#include "base/instance.h"

#include <string.h>

bool instance_name_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len >= INSTANCE_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}
