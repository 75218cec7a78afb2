/* Inside the sandbox's new mount namespace (the spawn child, already sandbox root): put the overlay
 * in place, give it /proc, /dev and /tmp, and make it the root. */
#pragma once
#include <stdint.h>
#include <stdbool.h>

#include "util/err.h"

/* Move the detached overlay_fd onto the directory root_dir_fd (an O_PATH fd opened in this mount
 * namespace; root_dir is its path, for messages), mount /proc, /dev (tmpfs with the host's null, zero,
 * full, random, urandom and tty bound in, devpts, shm) and /tmp inside it, then pivot_root into it
 * and detach the host tree. On return the cwd is the new "/". Refuses an image whose /proc, /dev or
 * /tmp is a symlink or not a directory (-ELOOP / -ENOTDIR). The root is nosuid,nodev. With harden,
 * /proc's sensitive entries are masked (/dev/null or an empty read-only tmpfs) and /proc/sys, bus,
 * fs, irq and sysrq-trigger are bound read-only.
 * Runs between clone3 and exec of a possibly multi-threaded daemon, so it only makes system calls:
 * messages in e carry no strerror text; the caller adds it from e->code. */
/* scratch_bytes: size cap of /tmp and of /dev/shm (each); 0: the tmpfs default. */
int rootfs_enter(int overlay_fd, int root_dir_fd, const char *root_dir, bool harden, uint64_t scratch_bytes,
		 struct err *e);
