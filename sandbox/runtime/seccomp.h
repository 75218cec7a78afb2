/* The sandbox's syscall filter: an allow-list in the spirit of Docker's default profile, built
 * once per daemon with libseccomp and kept as ready classic-BPF programs, so each sandbox only pays
 * for the seccomp(2) calls that install them. */
#pragma once
#include <linux/filter.h>
#include <stddef.h>

#include "util/err.h"

#define SECCOMP_POLICY_MAX_PROGS 2

struct seccomp_policy {
	/* Installed in order; the kernel runs every filter and keeps the strictest answer. [0] is the
	 * allow-list (libseccomp; default EPERM); [1] is hand-written: it denies TIOCSTI and TIOCLINUX
	 * on the kernel's 32-bit command, and answers ENOSYS for syscalls newer than libseccomp's table
	 * that are not allowed by number. */
	struct sock_fprog progs[SECCOMP_POLICY_MAX_PROGS];
	size_t n_progs;
	size_t n_allowed; /* syscalls allowed (unconditionally or with argument checks) */
};

/* Build the programs. The policy owns heap copies of them; free with seccomp_policy_free. */
int seccomp_policy_build(struct seccomp_policy *ret, struct err *e);
void seccomp_policy_free(struct seccomp_policy *p);
/* Install the programs on the calling thread. Needs no_new_privs (or CAP_SYS_ADMIN). System calls
 * only: safe between clone3 and exec. Returns -errno; e gets a message without strerror. */
int seccomp_policy_apply(const struct seccomp_policy *p, struct err *e);
