/* Start a sandbox's PID 1: clone3 into new namespaces (and its v2 cgroup), then, while the child
 * waits, the parent (host root) writes its id maps, puts it in its v1 cgroups and builds its root as
 * a detached overlay of idmapped layers; the child enters that root and execs init.
 *
 * Parent and child talk over a SOCK_SEQPACKET socketpair: GO (parent -> child, with the overlay
 * mount fd), then EXEC or ERROR (child -> parent). The child's end is close-on-exec, so a
 * successful exec shows as EOF after EXEC.
 *
 * The child is a raw clone3 copy of a possibly multi-threaded daemon: until exec it makes system
 * calls only (no malloc, no stdio, no glibc set*id wrappers, which would signal threads that do not
 * exist in the child) and it never returns. */
#include "runtime/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "init/initproto.h"
#include "runtime/idmap.h"
#include "runtime/overlay.h"
#include "runtime/rootfs.h"
#include "util/cleanup.h"

#define SPAWN_MAX_LAYERS 128          /* overlayfs itself stops at 500 */
#define SPAWN_HOSTNAME_MAX 63
#define SPAWN_TIMEOUT_MS 30000        /* this VM has multi-second stalls on mount ops; not minutes */
#define SPAWN_PATH_ENV "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum spawn_msg_type { SPAWN_MSG_GO = 1, SPAWN_MSG_EXEC = 2, SPAWN_MSG_ERROR = 3 };

struct spawn_msg {
	uint32_t type;
	int32_t errnum;           /* positive errno, for ERROR */
	char what[ERR_MSG_MAX];   /* for ERROR: the failed step, without strerror (added by the parent) */
};

/* --- child ---------------------------------------------------------------------------------- */

static void spawn_child_send(int sock, uint32_t type, const struct err *e)
{
	struct spawn_msg m = {.type = type};
	if (e) {
		m.errnum = e->code < 0 ? -e->code : EIO;
		memcpy(m.what, e->msg, sizeof(m.what));
	}
	(void)send(sock, &m, sizeof(m), MSG_NOSIGNAL);
}

/* Wait for GO and its overlay fd. Any other outcome (the parent failed or died) means stop. */
static int spawn_child_wait_go(int sock, int *ret_overlay)
{
	struct spawn_msg m;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	ssize_t n;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (n != (ssize_t)sizeof(m) || m.type != SPAWN_MSG_GO || !c || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EPROTO;
	memcpy(ret_overlay, CMSG_DATA(c), sizeof(int));
	return 0;
}

/* Exec resets handlers but keeps ignored signals ignored: a daemon's SIG_IGN for SIGPIPE must not
 * leak into init and every process it starts. */
static void spawn_child_reset_signals(void)
{
	struct sigaction sa = {.sa_handler = SIG_DFL};
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			(void)sigaction(sig, &sa, NULL); /* glibc refuses its internal signals: fine */
}

static int spawn_child_loopback_up(struct err *e)
{
	_cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = {0};
	memcpy(ifr.ifr_name, "lo", 3);
	if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return err_setx(e, errno, "read flags of lo in the sandbox");
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		return err_setx(e, errno, "bring lo up in the sandbox");
	return 0;
}

/* Final fd table: 0-2 /dev/null, 3 the control socket (inherited by init), and, close-on-exec, the
 * spawn socket at 4 and init's executable at 5; nothing else. Everything kept is first lifted above
 * 5 so the dup2s below cannot overwrite one another. */
static int spawn_child_fds(const struct spawn_config *cfg, int *sock, int *init_fd, struct err *e)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		return err_setx(e, errno, "open /dev/null in the sandbox");
	int s = fcntl(*sock, F_DUPFD_CLOEXEC, 6);
	int c = fcntl(cfg->control_fd, F_DUPFD_CLOEXEC, 6);
	int i = fcntl(*init_fd, F_DUPFD_CLOEXEC, 6);
	int n = fcntl(null, F_DUPFD_CLOEXEC, 6);
	if (s < 0 || c < 0 || i < 0 || n < 0)
		return err_setx(e, errno, "duplicate fds for init");
	if (dup3(s, 4, O_CLOEXEC) < 0)
		return err_setx(e, errno, "duplicate fds for init");
	*sock = 4;
	if (dup2(n, 0) < 0 || dup2(n, 1) < 0 || dup2(n, 2) < 0 || dup2(c, INITPROTO_CONTROL_FD) < 0 ||
	    dup3(i, 5, O_CLOEXEC) < 0)
		return err_setx(e, errno, "set up fds for init");
	*init_fd = 5;
	if (close_range(6, ~0U, 0) < 0)
		return err_setx(e, errno, "close inherited fds");
	return 0;
}

/* Become the sandbox's root before creating anything: until now we are host uid 0. Raw syscalls:
 * glibc's wrappers would try to sync the daemon's other threads, which do not exist here. */
static int spawn_child_become_root(struct err *e)
{
	if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
		return err_setx(e, errno, "become root of the sandbox's user namespace");
	/* The daemon's supplementary groups (host gid 0) must not follow us in. */
	if (syscall(SYS_setgroups, 0, NULL) < 0)
		return err_setx(e, errno, "drop supplementary groups");
	/* We are in every cgroup now: a cgroup namespace rooted here hides the host's paths. */
	if (unshare(CLONE_NEWCGROUP) < 0)
		return err_setx(e, errno, "create cgroup namespace");
	return 0;
}

static int spawn_child_setup(const struct spawn_config *cfg, int overlay_fd, int *sock, int *init_fd, struct err *e)
{
	/* The root dir must be looked up in our own mount namespace (an fd from the parent would name
	 * the host's mount), and before we become the sandbox's root: as host uid 0, without
	 * capabilities, we can still enter root-owned directories of the daemon's state tree. */
	int root_dir_fd = open(cfg->root_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	int r = root_dir_fd < 0 ? err_setx(e, errno, "open root dir %s", cfg->root_dir) : spawn_child_become_root(e);
	if (r == 0)
		r = rootfs_enter(overlay_fd, root_dir_fd, cfg->root_dir, confine_masks(cfg->confine), cfg->scratch_bytes, e);
	if (root_dir_fd >= 0)
		close(root_dir_fd);
	close(overlay_fd);
	if (r < 0)
		return r;
	if (sethostname(cfg->hostname, strlen(cfg->hostname)) < 0)
		return err_setx(e, errno, "set hostname %s", cfg->hostname);
	if (cfg->new_netns) {
		r = spawn_child_loopback_up(e);
		if (r < 0)
			return r;
	}
	r = spawn_child_fds(cfg, sock, init_fd, e);
	if (r < 0)
		return r;
	/* Last, so that init and all it starts inherit it; nothing after this needs a privilege. */
	return confine_apply(cfg->confine, e);
}

/* Close every fd from 3 up except the three given. */
static void spawn_child_close_others(int a, int b, int c)
{
	int keep[3] = {a, b, c};
	for (int i = 0; i < 3; i++) /* sort the three */
		for (int j = i + 1; j < 3; j++)
			if (keep[j] < keep[i]) {
				int t = keep[i];
				keep[i] = keep[j];
				keep[j] = t;
			}
	unsigned lo = 3;
	for (int i = 0; i < 3; i++) {
		if (keep[i] < (int)lo)
			continue;
		if ((unsigned)keep[i] > lo)
			close_range(lo, (unsigned)keep[i] - 1, 0);
		lo = (unsigned)keep[i] + 1;
	}
	close_range(lo, ~0U, 0);
}

static _Noreturn void spawn_child(const struct spawn_config *cfg, int sock)
{
	static const char *const default_argv[] = {"corral-init", NULL};
	static const char *const envp[] = {SPAWN_PATH_ENV, NULL};
	struct err e = {0};
	int overlay_fd = -1, init_fd = cfg->init_fd;
	sigset_t none;

	spawn_child_reset_signals();
	/* First of all, let go of the daemon's other fds (copied by clone): a file another sandbox is
	 * having written through the daemon must not stay open for writing here while we wait
	 * (its exec would fail with ETXTBSY), nor anything else reach this sandbox. */
	spawn_child_close_others(sock, cfg->control_fd, init_fd);
	if (spawn_child_wait_go(sock, &overlay_fd) < 0)
		_exit(127); /* the parent gave up (it reports why) or died */
	if (spawn_child_setup(cfg, overlay_fd, &sock, &init_fd, &e) == 0) {
		spawn_child_send(sock, SPAWN_MSG_EXEC, NULL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL); /* the parent blocked everything around clone3 */
		/* Belt and braces: whatever was opened since the fds were closed (a library, a
		 * sanitizer runtime) must not cross into the sandbox. */
		close_range(INITPROTO_CONTROL_FD + 1, ~0U, CLOSE_RANGE_CLOEXEC);
		execveat(init_fd, "", (char *const *)(cfg->init_argv ? cfg->init_argv : default_argv),
			 (char *const *)envp, AT_EMPTY_PATH);
		err_setx(&e, errno, "execute init");
	}
	spawn_child_send(sock, SPAWN_MSG_ERROR, &e);
	_exit(127);
}

/* --- parent --------------------------------------------------------------------------------- */

struct spawn_proc {
	pid_t pid;
	int pidfd;
};

/* Cleanup for a child that did not make it: SIGKILL (its pid namespace dies with it) and reap. */
static void spawn_proc_killp(struct spawn_proc *p)
{
	if (p->pidfd < 0)
		return;
	int saved = errno;
	siginfo_t si;
	(void)pidfd_send_signal(p->pidfd, SIGKILL, NULL, 0);
	while (waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED) < 0 && errno == EINTR)
		;
	close(p->pidfd);
	errno = saved;
}

static int spawn_check_config(const struct spawn_config *cfg, struct err *e)
{
	size_t hl = cfg->hostname ? strlen(cfg->hostname) : 0;
	if (hl == 0 || hl > SPAWN_HOSTNAME_MAX)
		return err_setx(e, EINVAL, "invalid sandbox hostname: length must be 1..%d", SPAWN_HOSTNAME_MAX);
	if (!cfg->lower_dirs || cfg->n_lower == 0 || cfg->n_lower > SPAWN_MAX_LAYERS)
		return err_setx(e, EINVAL, "invalid image: %zu layers (1..%d)", cfg->n_lower, SPAWN_MAX_LAYERS);
	if (!cfg->upper_dir || !cfg->work_dir || !cfg->root_dir)
		return err_setx(e, EINVAL, "invalid sandbox: upper, work and root dirs are required");
	/* Base 0 would map sandbox root to host root and undo the whole point of the user namespace. */
	if (cfg->uid_base == 0 || cfg->uid_count == 0 || (uint64_t)cfg->uid_base + cfg->uid_count > UINT32_MAX)
		return err_setx(e, EINVAL, "invalid uid range %u+%u", (unsigned)cfg->uid_base, cfg->uid_count);
	if (cfg->init_fd < 0 || cfg->control_fd < 0)
		return err_setx(e, EINVAL, "invalid sandbox: init_fd and control_fd are required");
	return 0;
}

/* Everything the parent does while the child waits, ending with GO. */
static int spawn_parent_prepare(const struct spawn_config *cfg, pid_t pid, int sock, struct err *e)
{
	int layers[SPAWN_MAX_LAYERS];
	size_t n = 0;
	int r;

	if (cfg->cgroups && !cgroup_set_clone_into_is_enough(cfg->cgroups)) {
		r = cgroup_set_attach(cfg->cgroups, pid, e);
		if (r < 0)
			return r;
	}
	r = idmap_write_maps(pid, cfg->uid_base, cfg->uid_count, e);
	if (r < 0)
		return r;
	/* The child's user namespace already holds the sandbox's map: use it for the idmapped layers
	 * too, rather than a helper namespace per sandbox. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
	_cleanup_close_ int userns = open(path, O_RDONLY | O_CLOEXEC);
	if (userns < 0)
		return err_set(e, errno, "open %s", path);
	_cleanup_close_ int overlay = -1;
	for (; n < cfg->n_lower; n++) {
		r = idmap_clone_layer(cfg->lower_dirs[n], userns, &layers[n], e);
		if (r < 0)
			goto out;
	}
	r = overlay_mount(layers, n, cfg->upper_dir, cfg->work_dir, cfg->uid_base, &overlay, e);
	if (r < 0)
		goto out;

	struct spawn_msg m = {.type = SPAWN_MSG_GO};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u = {0};
	struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &overlay, sizeof(int));
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
		r = err_set(e, errno, "hand the root filesystem to the sandbox's PID 1");
out:
	/* The child holds its own reference to the overlay now; closing ours (and the layer mounts,
	 * which the overlay pins) leaves nothing on the host. */
	for (size_t i = 0; i < n; i++)
		close(layers[i]);
	return r;
}

static long long spawn_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* Child died without a word: say how. */
static int spawn_child_died(const struct spawn_proc *p, struct err *e)
{
	siginfo_t si = {0};
	if (waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOWAIT) == 0 && si.si_code != CLD_EXITED)
		return err_setx(e, EIO, "sandbox's PID 1 was killed by signal %d before exec", si.si_status);
	return err_setx(e, EIO, "sandbox's PID 1 exited with status %d before exec", si.si_status);
}

/* Wait for EXEC then EOF (init runs), or ERROR. */
static int spawn_parent_wait(const struct spawn_proc *p, int sock, struct err *e)
{
	long long deadline = spawn_now_ms() + SPAWN_TIMEOUT_MS;
	bool exec_seen = false;
	for (;;) {
		struct pollfd pfd = {.fd = sock, .events = POLLIN};
		long long left = deadline - spawn_now_ms();
		int pr = left > 0 ? poll(&pfd, 1, (int)left) : 0;
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return err_set(e, errno, "wait for the sandbox's PID 1");
		if (pr == 0)
			return err_setx(e, ETIMEDOUT, "sandbox's PID 1 did not start within %d ms", SPAWN_TIMEOUT_MS);
		struct spawn_msg m;
		ssize_t n = recv(sock, &m, sizeof(m), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return err_set(e, errno, "read from the sandbox's PID 1");
		if (n == 0)
			return exec_seen ? 0 : spawn_child_died(p, e);
		if (n != (ssize_t)sizeof(m))
			return err_setx(e, EPROTO, "bad message from the sandbox's PID 1");
		if (m.type == SPAWN_MSG_ERROR) {
			m.what[sizeof(m.what) - 1] = '\0';
			return err_set(e, m.errnum, "%s", m.what);
		}
		exec_seen = m.type == SPAWN_MSG_EXEC;
	}
}

int spawn_sandbox(const struct spawn_config *cfg, struct spawn_result *ret, struct err *e)
{
	int r = spawn_check_config(cfg, e);
	if (r < 0)
		return r;
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return err_set(e, errno, "start sandbox %s: create socketpair", cfg->hostname);
	_cleanup_close_ int sock = sp[0];

	int pidfd = -1;
	struct clone_args args = {
		.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_PIDFD |
			 (cfg->new_netns ? CLONE_NEWNET : 0),
		.pidfd = (uint64_t)(uintptr_t)&pidfd,
		.exit_signal = SIGCHLD,
	};
	int v2 = cgroup_set_v2_fd(cfg->cgroups);
	if (v2 >= 0) {
		args.flags |= CLONE_INTO_CGROUP;
		args.cgroup = (uint64_t)v2;
	}
	/* No signal handler may run in the child: block everything across clone3; the child resets
	 * the handlers and unblocks just before exec. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
	if (pid == 0) {
		close(sock);
		spawn_child(cfg, sp[1]);
	}
	int saved = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(sp[1]); /* from now on EOF means the child exec'd or died */
	if (pid < 0)
		return err_set(e, saved, "start sandbox %s: clone3", cfg->hostname);

	_cleanup_(spawn_proc_killp) struct spawn_proc proc = {.pid = pid, .pidfd = pidfd};
	uint64_t start_time = 0;
	r = spawn_read_start_time(pid, &start_time, e);
	if (r >= 0)
		r = spawn_parent_prepare(cfg, pid, sock, e);
	if (r >= 0)
		r = spawn_parent_wait(&proc, sock, e);
	if (r < 0)
		return err_prefix(e, "start sandbox %s", cfg->hostname);
	ret->pid = pid;
	ret->pidfd = TAKE_FD(proc.pidfd);
	ret->start_time = start_time;
	return 0;
}

int spawn_read_start_time(pid_t pid, uint64_t *ret, struct err *e)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, errno, "open %s", path);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return err_set(e, errno, "read %s", path);
	buf[n] = '\0';
	/* comm (field 2) may hold spaces and parentheses: fields are counted from the last ')'. */
	char *p = strrchr(buf, ')');
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (!p)
		return err_setx(e, EIO, "parse %s: too few fields", path);
	char *end;
	errno = 0;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (errno || end == p + 1)
		return err_setx(e, EIO, "parse %s: bad start time", path);
	*ret = v;
	return 0;
}
