/* mask_rules: see mask_rules.h. */
#include "mask/mask_rules.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mask_policy *current;

static int add_rule(struct mask_policy *mp, const struct policy *p, const struct policy_rule *r,
		    char *err, size_t errlen)
{
	struct mask_profile *prof;
	int rc = mask_policy_add_profile(mp, r->name, &prof);

	if (rc) {
		snprintf(err, errlen, "%s: out of memory", p->path ? p->path : "policy");
		return rc;
	}
	for (unsigned i = 0; i < r->nmasks; i++) {
		const struct policy_mask *m = &r->masks[i];
		struct mask_colref ref;
		char text[MASK_COLREF_STRLEN + 1], why[200];

		/* The loader decoded the names as the server would; quote them back so that
		 * mask_profile_add() reads exactly those names. */
		if (strlen(m->schema) > MASK_IDENT_MAX || strlen(m->table) > MASK_IDENT_MAX ||
		    strlen(m->column) > MASK_IDENT_MAX) {
			snprintf(err, errlen, "%s:%u: mask: a name is longer than 63 bytes",
				 p->path ? p->path : "policy", m->line);
			return -EINVAL;
		}
		memcpy(ref.schema, m->schema, strlen(m->schema) + 1);
		memcpy(ref.table, m->table, strlen(m->table) + 1);
		memcpy(ref.column, m->column, strlen(m->column) + 1);
		mask_colref_format(&ref, text, sizeof(text));
		rc = mask_profile_add(prof, text, m->strategy, why, sizeof(why));
		if (rc) {
			snprintf(err, errlen, "%s:%u: mask: %s", p->path ? p->path : "policy", m->line,
				 rc == -ENOMEM ? "out of memory" : why);
			return rc;
		}
	}
	return 0;
}

int mask_rules_build(const struct policy *p, struct mask_policy **out, char *err, size_t errlen)
{
	struct mask_policy *mp = mask_policy_new();

	*out = NULL;
	if (!mp) {
		snprintf(err, errlen, "mask: out of memory");
		return -ENOMEM;
	}
	for (unsigned i = 0; p && i < p->nrules; i++) {
		int rc;

		if (!p->rules[i].nmasks)
			continue;
		rc = add_rule(mp, p, &p->rules[i], err, errlen);
		if (rc) {
			mask_policy_put(mp);
			return rc;
		}
	}
	mask_policy_seal(mp);
	*out = mp;
	return 0;
}

void mask_rules_publish(struct mask_policy *mp)
{
	struct mask_policy *old;

	pthread_mutex_lock(&current_lock);
	old = current;
	current = mp;
	pthread_mutex_unlock(&current_lock);
	mask_policy_put(old);
}

struct mask_policy *mask_rules_acquire(void)
{
	struct mask_policy *mp;

	pthread_mutex_lock(&current_lock);
	mp = current;
	if (mp)
		mask_policy_get(mp);
	pthread_mutex_unlock(&current_lock);
	return mp;
}
