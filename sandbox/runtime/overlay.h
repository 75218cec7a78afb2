/* The sandbox's root filesystem as a detached overlayfs mount, built by host root before the child
 * enters it. */
#pragma once
#include <stddef.h>
#include <sys/types.h>

#include "util/err.h"

/* A detached overlay of the layer mounts lower_fds (topmost first) with upper_dir/work_dir, mounted
 * nodev. upper_dir's root is chowned to base:base if it is not already (sandbox root must own it, or
 * nothing can be created in /). *ret_fd is the O_CLOEXEC mount fd, ready for move_mount. */
int overlay_mount(const int *lower_fds, size_t n_lower, const char *upper_dir, const char *work_dir, uid_t base,
		  int *ret_fd, struct err *e);
