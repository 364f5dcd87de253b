/*
 * version: the one version of this build, for every binary (-V/--version), the admin
 * status, the start-up log line and pgwarden_build_info. Both strings come from
 * scripts/version.sh at build time (git describe in a checkout, debian/changelog
 * otherwise); nothing else in the tree spells a version.
 */
#ifndef PGWARDEN_VERSION_H
#define PGWARDEN_VERSION_H

extern const char pgwarden_version[]; /* "0.1.0+g1234abcd5678", "0.1.2-3-g...", "0.1.0-1" */
extern const char pgwarden_commit[];  /* full commit id, "-dirty" when built from changes;
				       * "unknown" outside a checkout */

#endif
