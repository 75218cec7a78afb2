/* Landlock as a further filesystem layer: inside the sandbox, files may be written only within its
 * own root (the overlay, /tmp, /dev/shm), device nodes may not be created anywhere, and device
 * ioctls work only on the standard /dev nodes and the sandbox's ptys. */
#pragma once
#include <stddef.h>

#include "util/err.h"

/* The kernel's Landlock ABI version (>= 1), or -errno (-ENOSYS: not built in; -EOPNOTSUPP:
 * built in but not enabled at boot). Call in the daemon. */
int landlock_probe_abi(void);
/* Describe a probe result for GetInfo ("ABI 7" or why not). */
void landlock_describe(int abi, char *buf, size_t size);
/* Restrict the calling thread (inside the sandbox, after pivot_root) at the given ABI. Needs
 * no_new_privs or CAP_SYS_ADMIN. System calls only. */
int landlock_apply(int abi, struct err *e);
