/* The in-sandbox confinement applied to PID 1 right before it execs corral-init, so that init and
 * everything it spawns inherit it: rlimits, capabilities, no_new_privs, Landlock, seccomp (in that
 * order), plus the /proc masks that rootfs.c mounts. Built once per daemon (confine_new), applied
 * per sandbox with system calls only (confine_apply). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "runtime/caps.h"
#include "runtime/seccomp.h"
#include "util/err.h"

#define CONFINE_NOFILE_SOFT 65536
#define CONFINE_NOFILE_HARD 1048576

struct confine {
	bool enabled;        /* false: --no-confinement (namespaces only; for measurement) */
	struct caps_policy caps;
	struct seccomp_policy seccomp;
	int landlock_abi;    /* > 0: applied at this ABI; else -errno of the probe */
	uint64_t nofile_soft, nofile_hard;
};

/* Build the policy. enabled=false gives a policy that applies nothing (and masks nothing). */
int confine_new(bool enabled, struct confine **ret, struct err *e);
void confine_free(struct confine *c);
/* Apply in the spawn child, after pivot_root, just before exec. NULL or disabled: nothing. */
int confine_apply(const struct confine *c, struct err *e);
/* Whether rootfs should mask /proc (false for NULL or a disabled policy). */
bool confine_masks(const struct confine *c);
