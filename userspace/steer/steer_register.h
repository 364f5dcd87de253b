/*
 * steer_register: the relay-port guard, pgwardend's side (see the comment below and
 * docs/STEERING.md). Main thread only, except steer_registrar_registered().
 */
#ifndef PGWARDEN_STEER_REGISTER_H
#define PGWARDEN_STEER_REGISTER_H

#include "base/addr.h"

struct steer_origin; /* steer/steer_origin.h */

/*
 * The relay-port guard, pgwardend's side: the hooks deliver steered connections only to
 * listening sockets registered in the instance's socket map (bpf/steer.h,
 * pgw_relay_socks), so nobody else who binds the relay's port ever receives them. The
 * main thread owns a registrar, adds its plain TCP listeners (one per address; the kernel
 * spreads over the SO_REUSEPORT group), and calls steer_registrar_tick() when the
 * returned number of milliseconds has passed: it finds the map (pinned by instance name,
 * or the fail-open handle's) and registers what is missing. Entries vanish when the
 * sockets close. fail_open: the process's fail-open handle, or NULL.
 */
struct steer_registrar;
int steer_registrar_new(const char *instance, struct steer_origin *fail_open,
			struct steer_registrar **out) __attribute__((warn_unused_result));
/* 0, -ENOSPC (more than PGW_RELAY_SOCKS_MAX addresses), -errno. The fd stays the caller's
 * and must outlive the registrar's use of it. */
int steer_registrar_add(struct steer_registrar *r, int listen_fd, const struct addr *a)
	__attribute__((warn_unused_result));
int steer_registrar_tick(struct steer_registrar *r);
/* Listeners registered in the current map (any thread; for status). */
unsigned steer_registrar_registered(const struct steer_registrar *r);
/* Which attach the registrar last found (the kernel's id of its relay-socket map), 0 while
 * none is attached: a change is an attach or a detach (main thread, after a tick). */
uint32_t steer_registrar_attach_id(const struct steer_registrar *r);
void steer_registrar_free(struct steer_registrar *r);

#endif
