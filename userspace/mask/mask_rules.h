/*
 * mask_rules: the policy file's `mask:` maps turned into the masking policy the stage and
 * the catalog use, and the one that is current.
 *
 * mask_rules_build() makes one sealed struct mask_policy from a loaded policy snapshot:
 * one profile per rule that has a `mask:` map, named like the rule, with every entry parsed
 * by mask_profile_add() (so a strategy the masking code does not know refuses the whole
 * policy file, with the file's line). The daemon builds it before it publishes a policy, so
 * a policy that masks is never in force without its masking.
 *
 * The current masking policy is swapped like the policy snapshot it comes from: publish()
 * takes the caller's reference, acquire() gives a new one; safe from any thread. A session's
 * profile is the current policy's profile named like the rule the policy stage matched it
 * to (policy_stage_rule()).
 */
#ifndef PGWARDEN_MASK_RULES_H
#define PGWARDEN_MASK_RULES_H

#include "mask/mask_policy.h"
#include "policy/policy.h"

#include <stddef.h>

/* Build p's masking policy (NULL p: an empty one). 0 and *out, or -EINVAL with
 * "FILE:LINE: mask: ..." in err, or -ENOMEM. */
int mask_rules_build(const struct policy *p, struct mask_policy **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Make mp current (the caller's reference is taken over; NULL: none). */
void mask_rules_publish(struct mask_policy *mp);
/* The current masking policy with a reference (mask_policy_put()), or NULL. */
struct mask_policy *mask_rules_acquire(void);

#endif
