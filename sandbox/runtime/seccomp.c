/* Syscall filter for sandboxes. Allow-list: anything not named here answers EPERM, so a syscall
 * added to the kernel later is denied until someone reads what it does. Blocked on purpose (the
 * Docker default profile's reasoning, tightened): keyrings, io_uring, userfaultfd, bpf,
 * perf_event_open, kexec, module loading, every mount API old and new, pivot_root, setns, new
 * namespaces through clone/unshare (clone3 answers ENOSYS: its flags sit in memory a filter cannot
 * read, and libc falls back to clone), open_by_handle_at, clock setting, syslog, personality
 * changes, modify_ldt, TIOCSTI/TIOCLINUX. socket() is limited to families and protocols that are
 * built into the kernel, so that a sandbox cannot make the kernel load a protocol module by asking
 * for it. Only the native x86-64 ABI passes: i386 (int 0x80) and x32 calls kill the process. */
#include "runtime/seccomp.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/cleanup.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef SECCOMP_SET_MODE_FILTER
#define SECCOMP_SET_MODE_FILTER 1
#endif

#define NS_FLAGS \
	(CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | \
	 CLONE_NEWTIME)

/* Allowed without conditions. Names libseccomp does not know on x86-64 (32-bit-only calls) are
 * skipped, so the list can stay close to Docker's for reading side by side. */
static const char *const seccomp_allowed[] = {
	"accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "cachestat", "capget", "capset",
	"chdir", "chmod", "chown", "chroot", "clock_getres", "clock_gettime", "clock_nanosleep", "close",
	"close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
	"epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd", "eventfd2", "execve",
	"execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate", "fanotify_mark",
	"fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr",
	"flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate",
	"futex", "futex_waitv", "futex_wake", "futimesat", "get_mempolicy", "get_robust_list", "getcpu", "getcwd",
	"getdents", "getdents64", "getegid", "geteuid", "getgid", "getgroups", "getitimer", "getpeername",
	"getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresuid",
	"getrlimit", "getrusage", "getsid", "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid",
	"getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
	"io_destroy", "io_getevents", "io_pgetevents", "io_setup", "io_submit", "ioctl", "ioprio_get",
	"ioprio_set", "kcmp", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
	"lchown", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "lremovexattr", "lseek",
	"lsetxattr", "lstat", "madvise", "map_shadow_stack", "mbind", "membarrier", "memfd_create",
	"memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
	"mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink",
	"mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
	"name_to_handle_at", "nanosleep", "newfstatat", "open", "openat", "openat2", "pause", "pidfd_getfd",
	"pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
	"ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_madvise", "process_mrelease",
	"process_vm_readv", "process_vm_writev", "pselect6", "ptrace", "pwrite64", "pwritev", "pwritev2", "read",
	"readahead", "readlink", "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages",
	"removexattr", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
	"rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
	"rt_tgsigqueueinfo", "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
	"sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity",
	"sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
	"semget", "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto", "set_mempolicy",
	"set_mempolicy_home_node", "set_robust_list", "set_tid_address", "setfsgid", "setfsuid", "setgid",
	"setgroups", "setitimer", "setpgid", "setpriority", "setregid", "setresgid", "setresuid", "setreuid",
	"setrlimit", "setsid", "setsockopt", "setuid", "setxattr", "shmat", "shmctl", "shmdt", "shmget",
	"shutdown", "sigaltstack", "signalfd", "signalfd4", "splice", "stat", "statfs", "statx", "symlink",
	"symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
	"timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create", "timerfd_gettime",
	"timerfd_settime", "times", "tkill", "truncate", "umask", "uname", "unlink", "unlinkat", "utime",
	"utimensat", "utimes", "vfork", "vmsplice", "wait4", "waitid", "write", "writev",
};

/* Newer than libseccomp 2.5.4's table (it stops at futex_wake, 454): by number, x86-64. */
static const int seccomp_allowed_nr[] = {
	455, /* futex_wait */
	456, /* futex_requeue */
	462, /* mseal: only takes rights away */
	463, 464, 465, 466, /* setxattrat, getxattrat, listxattrat, removexattrat: as the *xattr calls */
	468, 469, /* file_getattr, file_setattr: as the FS_IOC_FSGETXATTR ioctls */
};
/* Above this, anything not allowed by number answers ENOSYS (libc falls back) rather than EPERM;
 * open_tree_attr (467) is the new mount API again and stays EPERM through the allow-list. */
#define SECCOMP_NR_LAST_KNOWN 454
#define SECCOMP_NR_OPEN_TREE_ATTR 467

/* personality(2) values Docker allows: query, and the harmless flags some runtimes set. */
static const unsigned long seccomp_personalities[] = {0x0, 0x0008, 0x20000, 0x20008, 0xffffffff};

/* Families and protocols built into any kernel that runs us. Anything else could make
 * __sock_create / inet_create / netlink_create request_module("net-pf-…"). */
static const struct {
	int family, protocol; /* protocol -1: any (the family loads nothing by protocol) */
} seccomp_sockets[] = {
	{AF_UNIX, -1},
	{AF_INET, 0},           {AF_INET, IPPROTO_TCP},   {AF_INET, IPPROTO_UDP},   {AF_INET, IPPROTO_ICMP},
	{AF_INET6, 0},          {AF_INET6, IPPROTO_TCP},  {AF_INET6, IPPROTO_UDP},  {AF_INET6, IPPROTO_ICMPV6},
	{AF_NETLINK, NETLINK_ROUTE},
};

static void seccomp_ctx_releasep(scmp_filter_ctx *ctx)
{
	if (*ctx)
		seccomp_release(*ctx);
}

/* libseccomp writes a filter to an fd only (2.5 has no in-memory export): go through a memfd. */
static int seccomp_export(scmp_filter_ctx ctx, struct sock_fprog *ret, struct err *e)
{
	_cleanup_close_ int fd = memfd_create("corral-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return err_set(e, errno, "seccomp: memfd_create");
	int r = seccomp_export_bpf(ctx, fd);
	if (r < 0)
		return err_set(e, -r, "seccomp: export the filter");
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % sizeof(struct sock_filter) || size / sizeof(struct sock_filter) > BPF_MAXINSNS)
		return err_setx(e, EINVAL, "seccomp: exported filter has a bad size (%lld bytes)", (long long)size);
	struct sock_filter *insns = malloc((size_t)size);
	if (!insns)
		return err_set(e, ENOMEM, "seccomp");
	if (pread(fd, insns, (size_t)size, 0) != size) {
		free(insns);
		return err_set(e, errno ? errno : EIO, "seccomp: read the exported filter");
	}
	ret->filter = insns;
	ret->len = (unsigned short)(size / sizeof(struct sock_filter));
	return 0;
}

static int seccomp_add(scmp_filter_ctx ctx, uint32_t action, int nr, unsigned n, const struct scmp_arg_cmp *args,
		       const char *what, struct err *e)
{
	int r = seccomp_rule_add_array(ctx, action, nr, n, args);
	if (r < 0)
		return err_set(e, -r, "seccomp: add rule for %s (%d)", what, nr);
	return 0;
}

static int seccomp_build_conditional(scmp_filter_ctx ctx, size_t *n_allowed, struct err *e)
{
	int r;
	/* clone: threads and forks, no new namespaces (user namespaces above all). The kernel reads
	 * only the low 32 bits of the flags, where every CLONE_NEW* sits, so a masked compare holds. */
	struct scmp_arg_cmp no_ns = SCMP_A0(SCMP_CMP_MASKED_EQ, NS_FLAGS, 0);
	if ((r = seccomp_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, &no_ns, "clone", e)) < 0 ||
	    (r = seccomp_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(unshare), 1, &no_ns, "unshare", e)) < 0 ||
	    (r = seccomp_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0, NULL, "clone3", e)) < 0)
		return r;
	*n_allowed += 2;
	for (size_t i = 0; i < ARRAY_SIZE(seccomp_personalities); i++) {
		struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_EQ, seccomp_personalities[i]);
		if ((r = seccomp_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(personality), 1, &a, "personality", e)) < 0)
			return r;
	}
	(*n_allowed)++;
	/* socket() and socketpair(): EQ compares on the full register fail closed when an attacker
	 * sets the upper 32 bits that the kernel would ignore. */
	for (size_t i = 0; i < ARRAY_SIZE(seccomp_sockets); i++) {
		struct scmp_arg_cmp a[2] = {SCMP_A0(SCMP_CMP_EQ, (uint64_t)seccomp_sockets[i].family),
					    SCMP_A2(SCMP_CMP_EQ, (uint64_t)seccomp_sockets[i].protocol)};
		unsigned n = seccomp_sockets[i].protocol < 0 ? 1 : 2;
		if ((r = seccomp_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), n, a, "socket", e)) < 0)
			return r;
	}
	struct scmp_arg_cmp unix_only = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);
	if ((r = seccomp_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socketpair), 1, &unix_only, "socketpair", e)) < 0)
		return r;
	*n_allowed += 2;
	return 0;
}

static int seccomp_build_allowlist(struct seccomp_policy *p, struct err *e)
{
	_cleanup_(seccomp_ctx_releasep) scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	if (!ctx)
		return err_set(e, ENOMEM, "seccomp: init");
	/* A foreign-ABI syscall (int 0x80, x32) is an attack, not a mistake: end the process. */
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (r < 0)
		return err_set(e, -r, "seccomp: set the bad-arch action");
	/* A binary tree instead of a linear scan of ~300 compares on every syscall. */
	if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)) < 0)
		return err_set(e, -r, "seccomp: optimize the filter");
	for (size_t i = 0; i < ARRAY_SIZE(seccomp_allowed); i++) {
		int nr = seccomp_syscall_resolve_name(seccomp_allowed[i]);
		if (nr == __NR_SCMP_ERROR || nr < 0)
			continue; /* not a native x86-64 syscall */
		if ((r = seccomp_add(ctx, SCMP_ACT_ALLOW, nr, 0, NULL, seccomp_allowed[i], e)) < 0)
			return r;
		p->n_allowed++;
	}
	for (size_t i = 0; i < ARRAY_SIZE(seccomp_allowed_nr); i++) {
		if ((r = seccomp_add(ctx, SCMP_ACT_ALLOW, seccomp_allowed_nr[i], 0, NULL, "a syscall by number", e)) < 0)
			return r;
		p->n_allowed++;
	}
	if ((r = seccomp_build_conditional(ctx, &p->n_allowed, e)) < 0)
		return r;
	return seccomp_export(ctx, &p->progs[p->n_progs++], e);
}

/* The second program, written by hand: libseccomp refuses a conditional deny beside an
 * unconditional allow of the same syscall, has no masked not-equal, and cannot compare syscall
 * numbers by range. It runs after the allow-list; where both answer ERRNO the kernel returns the
 * errno of the later one, so ENOSYS here wins over the allow-list's default EPERM. */
#define LD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define LD_ARCH BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch))
#define LD_ARG1_LO BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])) /* LE */
#define RET(v) BPF_STMT(BPF_RET | BPF_K, (v))
#define JEQ(v, t, f) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (v), (t), (f))

static int seccomp_build_tail(struct seccomp_policy *p, struct err *e)
{
	static const struct sock_filter prog[] = {
		/* 0 */ LD_ARCH,
		/* 1 */ JEQ(AUDIT_ARCH_X86_64, 0, 9), /* others: the allow-list kills them */
		/* 2 */ LD_NR,
		/* 3 */ BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 7, 0), /* x32: likewise */
		/* 4 */ JEQ(__NR_ioctl, 3, 0),
		/* 5 */ BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, SECCOMP_NR_LAST_KNOWN, 7, 0),
		/* 6 */ RET(SECCOMP_RET_ALLOW),
		/* 7 */ RET(SECCOMP_RET_ALLOW),
		/* 8 ioctl */ LD_ARG1_LO,
		/* 9 */ JEQ(TIOCSTI, 2, 0),
		/* 10 */ JEQ(TIOCLINUX, 1, 0),
		/* 11 */ RET(SECCOMP_RET_ALLOW),
		/* 12 */ RET(SECCOMP_RET_ERRNO | EPERM),
		/* 13 newer than libseccomp: open_tree_attr EPERM, allowed by number, else ENOSYS */
		JEQ(SECCOMP_NR_OPEN_TREE_ATTR, 11, 0),
		/* 14 */ JEQ(455, 9, 0), JEQ(456, 8, 0), JEQ(462, 7, 0), JEQ(463, 6, 0), JEQ(464, 5, 0),
		/* 19 */ JEQ(465, 4, 0), JEQ(466, 3, 0), JEQ(468, 2, 0), JEQ(469, 1, 0),
		/* 23 */ RET(SECCOMP_RET_ERRNO | ENOSYS),
		/* 24 */ RET(SECCOMP_RET_ALLOW),
		/* 25 */ RET(SECCOMP_RET_ERRNO | EPERM),
	};
	struct sock_filter *copy = malloc(sizeof(prog));
	if (!copy)
		return err_set(e, ENOMEM, "seccomp");
	memcpy(copy, prog, sizeof(prog));
	p->progs[p->n_progs].filter = copy;
	p->progs[p->n_progs++].len = ARRAY_SIZE(prog);
	return 0;
}

int seccomp_policy_build(struct seccomp_policy *ret, struct err *e)
{
	struct seccomp_policy p = {0};
	int r = seccomp_build_allowlist(&p, e);
	if (r >= 0)
		r = seccomp_build_tail(&p, e);
	if (r < 0) {
		seccomp_policy_free(&p);
		return r;
	}
	*ret = p;
	return 0;
}

void seccomp_policy_free(struct seccomp_policy *p)
{
	for (size_t i = 0; i < p->n_progs; i++)
		free(p->progs[i].filter);
	memset(p, 0, sizeof(*p));
}

int seccomp_policy_apply(const struct seccomp_policy *p, struct err *e)
{
	for (size_t i = 0; i < p->n_progs; i++)
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &p->progs[i]) < 0)
			return err_setx(e, errno, "install seccomp filter %zu", i);
	return 0;
}
