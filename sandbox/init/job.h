/* corral-init's jobs, its side of the daemon's execs (named apart from the daemon's struct exec):
 * starting one (pipes or a pty, fork, the child's setup, PATH search, exec) and the daemon-side fds
 * init keeps for it until the daemon releases it. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "init/initproto.h"
#include "util/err.h"

struct job {
	uint32_t handle;
	pid_t pid; /* also its process group and session: the child calls setsid() */
	bool running;
	int wait_status; /* valid once !running */
	/* init's own copies of the daemon-side ends, -1 where absent. Holding them is what lets an
	 * exec's output survive a daemon restart. */
	int stdin_fd, stdout_fd, stderr_fd, pty_fd;
};

struct job_ctx {
	int devnull;          /* /dev/null opened at start: DEVNULL streams read nothing from a path */
	struct rlimit nofile; /* RLIMIT_NOFILE as init found it; restored in every child */
};

/* Start req as exec handle; on success *ret holds the running exec and its daemon-side fds.
 * Fails with -errno and a message ("exec <argv0>: <why>", "workdir <dir>: <why>", …). */
int job_spawn(const struct job_ctx *ctx, uint32_t handle, const struct initproto_spawn_req *req,
	       struct job *ret, struct err *err);
/* INITPROTO_FD_* bits for the fds still held. */
uint32_t job_fd_flags(const struct job *j);
/* The held fds in protocol order (see INITPROTO_FD_*); returns how many. */
size_t job_fds(const struct job *j, int fds[INITPROTO_MAX_FDS]);
void job_close_stdin(struct job *j);
void job_close_fds(struct job *j);
/* Signal the exec's process group (its pid if the group is gone); nothing once it has exited. */
int job_signal(const struct job *j, int signo);
