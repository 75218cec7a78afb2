/* User-namespace id maps and idmapped layer mounts: the sandbox's uid 0..count-1 is host base.. */
#pragma once
#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

/* Write uid_map and gid_map of pid's (new, still unmapped) user namespace: 0 count -> base. */
int idmap_write_maps(pid_t pid, uid_t base, uint32_t count, struct err *e);
/* A detached, read-only clone of the mount tree at dir whose ownership is shifted through the map of
 * userns_fd: host-owned image files appear owned by the sandbox's ids. *ret_fd is O_CLOEXEC. */
int idmap_clone_layer(const char *dir, int userns_fd, int *ret_fd, struct err *e);
