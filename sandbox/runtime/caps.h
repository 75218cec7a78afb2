/* The sandbox's capabilities: a small set for ordinary tools (Docker's default set), everything
 * else gone from every set including the bounding set, ambient raising refused, securebits
 * locked. The policy is resolved once in the daemon with libcap; applying it is system calls only. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

struct caps_policy {
	uint64_t keep;     /* bit n = capability n stays (permitted, effective, bounding) */
	unsigned last_cap; /* highest capability this kernel knows (/proc/sys/kernel/cap_last_cap) */
};

/* Resolve the default set by name against this kernel. */
int caps_policy_init(struct caps_policy *ret, struct err *e);
/* Apply to the calling thread, which must hold CAP_SETPCAP (in its user namespace). After this,
 * an exec by uid 0 gets exactly `keep`; by any other uid, nothing. System calls only. */
int caps_policy_apply(const struct caps_policy *p, struct err *e);
/* "chown,dac_override,…" into buf (for GetInfo). */
void caps_policy_describe(const struct caps_policy *p, char *buf, size_t size);
