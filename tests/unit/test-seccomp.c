/* The confinement policy (runtime/seccomp, caps, landlock, confine): built once, applied in forked
 * children that then try what a sandbox must not do. Each child reports the first check that went
 * wrong through its exit status (0: all held). */
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "runtime/caps.h"
#include "runtime/confine.h"
#include "runtime/landlock.h"
#include "runtime/seccomp.h"
#include "testlib.h"

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Run fn in a child; its exit status (0 = ok, else the failing check's number). */
static int in_child(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(fn(arg));
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	if (WIFSIGNALED(st))
		return 1000 + WTERMSIG(st);
	return WEXITSTATUS(st);
}

#define EXPECT_ERR(n, call, err)                     \
	do {                                         \
		errno = 0;                           \
		long r_ = (long)(call);              \
		if (r_ != -1 || errno != (err))      \
			return (n);                  \
	} while (0)

static int child_filter(void *arg)
{
	const struct seccomp_policy *p = arg;
	struct err e = {0};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || seccomp_policy_apply(p, &e) < 0)
		return 1;
	if (getpid() <= 0)
		return 2;
	EXPECT_ERR(3, mount("none", "/tmp", "tmpfs", 0, NULL), EPERM);
	EXPECT_ERR(4, syscall(SYS_clone3, NULL, 0), ENOSYS);
	EXPECT_ERR(5, unshare(CLONE_NEWUSER), EPERM);
	EXPECT_ERR(6, syscall(467, -1, "", 0, NULL, 0), EPERM); /* open_tree_attr */
	EXPECT_ERR(7, syscall(500), ENOSYS);                    /* a future syscall */
	char c = 'x';
	EXPECT_ERR(8, syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI, &c), EPERM);
	EXPECT_ERR(9, syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI | (1UL << 32), &c), EPERM); /* high bits */
	EXPECT_ERR(10, socket(AF_PACKET, SOCK_RAW, 0), EPERM);
	EXPECT_ERR(11, socket(AF_INET, SOCK_STREAM, 132 /* SCTP: a module */), EPERM);
	EXPECT_ERR(12, syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0), EPERM);
	struct io_uring_params iop = {0};
	EXPECT_ERR(13, syscall(SYS_io_uring_setup, 1, &iop), EPERM);
	EXPECT_ERR(14, syscall(SYS_bpf, 0, NULL, 0), EPERM);
	EXPECT_ERR(15, syscall(SYS_userfaultfd, 0), EPERM);
	EXPECT_ERR(16, personality(READ_IMPLIES_EXEC), EPERM);
	EXPECT_ERR(17, syscall(SYS_fsopen, "tmpfs", 0), EPERM);
	EXPECT_ERR(18, syscall(SYS_clone, (unsigned long)CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), EPERM);
	EXPECT_ERR(19, socketpair(AF_INET, SOCK_STREAM, 0, (int[2]){0}), EPERM);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return 20;
	close(s);
	if (personality(0xffffffff) < 0)
		return 21;
	pid_t pid = fork(); /* glibc's fork is clone without namespace flags */
	if (pid < 0)
		return 22;
	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	return 0;
}

static void test_seccomp_build_and_deny(void)
{
	struct seccomp_policy p;
	struct err e = {0};
	double t0 = now_us();
	CHECK_MSG(seccomp_policy_build(&p, &e) == 0, "%s", e.msg);
	double t1 = now_us();
	printf("  built %zu programs (%u + %u instructions, %zu syscalls allowed) in %.0f us\n", p.n_progs,
	       p.progs[0].len, p.progs[1].len, p.n_allowed, t1 - t0);
	CHECK_EQ_INT(p.n_progs, 2);
	CHECK(p.n_allowed > 250);
	int r = in_child(child_filter, &p);
	seccomp_policy_free(&p);
	CHECK_MSG(r == 0, "check %d failed in the filtered child", r);
}

struct cost {
	const struct seccomp_policy *p;
	int fd;
};

static int child_cost(void *arg)
{
	struct cost *c = arg;
	struct err e = {0};
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	double t0 = now_us();
	int r = seccomp_policy_apply(c->p, &e);
	double dt = now_us() - t0;
	return r < 0 || write(c->fd, &dt, sizeof(dt)) != sizeof(dt);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void test_seccomp_apply_cost(void)
{
	struct seccomp_policy p;
	struct err e = {0};
	CHECK_MSG(seccomp_policy_build(&p, &e) == 0, "%s", e.msg);
	int fds[2];
	CHECK(pipe(fds) == 0);
	struct cost c = {&p, fds[1]};
	double t[50];
	int n = 0;
	for (; n < 50; n++)
		if (in_child(child_cost, &c) != 0 || read(fds[0], &t[n], sizeof(t[n])) != sizeof(t[n]))
			break;
	close(fds[0]);
	close(fds[1]);
	seccomp_policy_free(&p);
	CHECK_EQ_INT(n, 50);
	qsort(t, (size_t)n, sizeof(t[0]), cmp_double);
	printf("  install per sandbox: median %.1f us, max %.1f us\n", t[n / 2], t[n - 1]);
	CHECK(t[n / 2] < 2000);
}

static uint64_t status_hex(const char *key)
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return UINT64_MAX;
	buf[n] = '\0';
	char *p = strstr(buf, key);
	return p ? strtoull(p + strlen(key), NULL, 16) : UINT64_MAX;
}

static int child_confine(void *arg)
{
	const struct confine *c = arg;
	struct err e = {0};
	/* Root in a fresh user namespace holds every capability there, as the spawn child does. */
	if (unshare(CLONE_NEWUSER) < 0)
		return 1;
	if (confine_apply(c, &e) < 0) {
		fprintf(stderr, "  confine_apply: %s (%d)\n", e.msg, e.code);
		return 2;
	}
	if (status_hex("CapEff:\t") != c->caps.keep || status_hex("CapPrm:\t") != c->caps.keep)
		return 3;
	if (status_hex("CapBnd:\t") != c->caps.keep || status_hex("CapInh:\t") != 0 || status_hex("CapAmb:\t") != 0)
		return 4;
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 || prctl(PR_GET_SECCOMP, 0, 0, 0, 0) != 2)
		return 5;
	/* Securebits are locked: even with CAP_SETPCAP they cannot be changed back. */
	if (prctl(PR_SET_SECUREBITS, 0, 0, 0, 0) == 0)
		return 6;
	EXPECT_ERR(7, prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 0 /* chown */, 0, 0), EPERM);
	/* Landlock: no device node anywhere (mknod of a fifo is fine). */
	if (c->landlock_abi > 0) {
		char path[64];
		snprintf(path, sizeof(path), "/tmp/corral-ut-fifo-%d", (int)getpid());
		if (mknod(path, S_IFIFO | 0600, 0) < 0)
			return 8;
		unlink(path);
	}
	return 0;
}

static void test_confine_apply(void)
{
	if (geteuid() != 0)
		SKIP("needs root (a user namespace with all capabilities)");
	struct confine *c = NULL;
	struct err e = {0};
	double t0 = now_us();
	CHECK_MSG(confine_new(true, &c, &e) == 0, "%s", e.msg);
	printf("  confine_new: %.0f us; landlock ABI %d\n", now_us() - t0, c->landlock_abi);
	char caps[256];
	caps_policy_describe(&c->caps, caps, sizeof(caps));
	CHECK_STREQ(caps, "chown,dac_override,fowner,fsetid,kill,setgid,setuid,setpcap,net_bind_service,"
			  "sys_chroot,audit_write,setfcap");
	int r = in_child(child_confine, c);
	confine_free(c);
	CHECK_MSG(r == 0, "check %d failed in the confined child", r);
}

static void test_disabled_policy_applies_nothing(void)
{
	struct confine *c = NULL;
	struct err e = {0};
	CHECK(confine_new(false, &c, &e) == 0);
	CHECK(!confine_masks(c));
	CHECK(confine_apply(c, &e) == 0);
	CHECK(confine_apply(NULL, &e) == 0);
	confine_free(c);
}

static void test_landlock_probe(void)
{
	int abi = landlock_probe_abi();
	char d[256];
	landlock_describe(abi, d, sizeof(d));
	printf("  %s\n", d);
	if (abi < 0)
		SKIP("this kernel has no usable Landlock");
	CHECK(abi >= 1);
}

TEST_MAIN(T(test_seccomp_build_and_deny), T(test_seccomp_apply_cost), T(test_confine_apply),
	  T(test_disabled_policy_applies_nothing), T(test_landlock_probe))
