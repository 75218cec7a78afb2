/* Start a sandbox: namespaces, overlayfs root entered with pivot_root, minimal /dev, /proc, /tmp,
 * and a given executable (corral-init) as its PID 1. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/cgroup.h"
#include "runtime/confine.h"
#include "util/err.h"

struct spawn_config {
	const char *hostname;            /* also the sandbox id; <= 63 bytes */
	const char *const *lower_dirs;   /* image layers, topmost first (host paths, read-only) */
	size_t n_lower;
	const char *upper_dir;           /* the sandbox's writable layer; same filesystem as work_dir */
	const char *work_dir;            /* overlayfs workdir */
	const char *root_dir;            /* an empty host directory used as the mount point of the root */
	uid_t uid_base;                  /* sandbox uid/gid 0..uid_count-1 = host uid_base.. */
	uint32_t uid_count;
	int init_fd;                     /* executable run as PID 1 (execveat AT_EMPTY_PATH), argv[0] "corral-init" */
	int control_fd;                  /* handed to PID 1 as fd 3 (INITPROTO_CONTROL_FD); all other fds are closed */
	struct cgroup_set *cgroups;      /* the sandbox's cgroups, or NULL */
	bool new_netns;                  /* a network namespace with loopback up */
	uint64_t scratch_bytes;          /* size cap of /tmp and /dev/shm, each; 0: tmpfs default */
	const char *const *init_argv;    /* argv for PID 1; NULL means {"corral-init", NULL} (tests run busybox) */
	const struct confine *confine;   /* caps, seccomp, Landlock, /proc masks, rlimits applied just before
					  * PID 1's exec (see runtime/confine.h); NULL: namespaces only */
};

struct spawn_result {
	pid_t pid;   /* host pid of the sandbox's PID 1 */
	int pidfd;   /* O_CLOEXEC pidfd of it; the caller owns it */
	uint64_t start_time; /* field 22 of /proc/<pid>/stat, to recognise the process after a restart */
};

/* Create the sandbox. On success PID 1 runs the init executable with the control socket at fd 3.
 * On failure the child is killed and reaped, nothing is left mounted, and e says which step failed
 * and why (the child's own error travels back to the parent). */
int spawn_sandbox(const struct spawn_config *cfg, struct spawn_result *ret, struct err *e);

/* Read field 22 (starttime) of /proc/<pid>/stat. */
int spawn_read_start_time(pid_t pid, uint64_t *ret, struct err *e);
