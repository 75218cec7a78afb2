/* devpolicy.c on the running kernel: load the cgroup_dev program, attach it to a fresh cgroup
 * (through cgroup.c, so the v1 devices controller gets the same list where it is mounted), and
 * check from a child in that cgroup what it may open and mknod. Needs root and BPF; skips with
 * the reason otherwise. Everything created is removed, also when a CHECK fails. */
#include <linux/types.h>

#include <bpf/bpf.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "runtime/cgroup.h"
#include "ebpf/devpolicy.h"
#include "runtime/devpolicy.h"
#include "testlib.h"

struct fixture {
	struct cgroup_host host;
	struct cgroup_set *set;
	struct devpolicy *dp;
	char tmp[64];
};

static const char *fixture_setup(struct fixture *f)
{
	struct err e = {0};
	char parent[48];
	memset(f, 0, sizeof(*f));
	if (geteuid() != 0)
		return "needs root (cgroups, BPF)";
	snprintf(parent, sizeof(parent), "corral-test-dp-%d", (int)getpid());
	if (cgroup_host_init(parent, &f->host, &e) < 0) {
		fprintf(stderr, "  %s\n", e.msg);
		return "cgroup_host_init failed";
	}
	if (!f->host.v2_root[0])
		return "no cgroup2 hierarchy to attach to";
	if (devpolicy_load(&f->dp, &e) < 0) {
		fprintf(stderr, "  %s\n", e.msg);
		return "the kernel refused the cgroup_dev program";
	}
	struct cgroup_limits l = {0};
	l.devices = devpolicy_v1_rules(&l.n_devices);
	if (cgroup_set_create(&f->host, "sb-dp", &l, &f->set, &e) < 0) {
		fprintf(stderr, "  %s\n", e.msg);
		return "cgroup_set_create failed";
	}
	snprintf(f->tmp, sizeof(f->tmp), "/tmp/corral-test-dp-%d", (int)getpid());
	mkdir(f->tmp, 0700);
	return NULL;
}

static void fixture_teardown(struct fixture *f)
{
	if (f->set) {
		cgroup_set_kill(f->set, NULL);
		cgroup_set_destroy(f->set, NULL);
	}
	devpolicy_free(f->dp);
	const char *roots[] = {f->host.v2_root, f->host.v1_memory, f->host.v1_pids, f->host.v1_cpu,
			       f->host.v1_devices};
	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		char p[400];
		snprintf(p, sizeof(p), "%s/%s", roots[i], f->host.parent);
		if (roots[i][0] && f->host.parent[0])
			rmdir(p);
	}
	if (f->tmp[0]) {
		char p[128];
		snprintf(p, sizeof(p), "%s/node", f->tmp);
		unlink(p);
		rmdir(f->tmp);
	}
}

#define RUN(body)                                         \
	do {                                              \
		struct fixture f_;                        \
		const char *skip_ = fixture_setup(&f_);   \
		if (!skip_)                               \
			body(&f_);                        \
		fixture_teardown(&f_);                    \
		if (skip_)                                \
			SKIP(skip_);                      \
	} while (0)

/* Run one access in a child placed in the sandbox's cgroups: 0 if it worked, else its errno. The
 * child is host root with every capability, so only the device policy can refuse it. */
enum op { OP_OPEN_READ, OP_OPEN_WRITE, OP_MKNOD };

static int try_in_cgroup(struct fixture *f, enum op op, const char *path, char type, unsigned ma, unsigned mi)
{
	int pfd[2];
	if (pipe(pfd) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		char go;
		close(pfd[1]);
		if (read(pfd[0], &go, 1) != 1)
			_exit(255);
		int r = 0;
		if (op == OP_MKNOD) {
			mode_t m = (type == 'b' ? S_IFBLK : S_IFCHR) | 0600;
			r = mknod(path, m, makedev(ma, mi)) < 0 ? errno : 0;
		} else {
			int fd = open(path, (op == OP_OPEN_READ ? O_RDONLY : O_WRONLY) | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
			r = fd < 0 ? errno : 0;
			if (fd >= 0)
				close(fd);
		}
		_exit(r);
	}
	close(pfd[0]);
	struct err e = {0};
	if (pid < 0 || cgroup_set_attach(f->set, pid, &e) < 0) {
		fprintf(stderr, "  attach: %s\n", e.msg);
		close(pfd[1]);
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		return -1;
	}
	(void)!write(pfd[1], "x", 1);
	close(pfd[1]);
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void body_attach(struct fixture *f)
{
	struct err e = {0};
	int cg = cgroup_set_v2_fd(f->set);
	CHECK(devpolicy_prog_id(f->dp) > 0);
	CHECK(!devpolicy_is_attached(f->dp, cg, true));
	CHECK_MSG(devpolicy_attach(f->dp, cg, &e) == 0, "%s", e.msg);
	CHECK(devpolicy_is_attached(f->dp, cg, false));
	CHECK_MSG(devpolicy_attach(f->dp, cg, &e) == 0, "%s", e.msg); /* idempotent: still one */
	__u32 ids[8], n = 8, flags = 0;
	CHECK(bpf_prog_query(cg, BPF_CGROUP_DEVICE, 0, &flags, ids, &n) == 0);
	CHECK_EQ_INT(n, 1);
}

static void test_attach(void) { RUN(body_attach); }

static void body_policy(struct fixture *f)
{
	struct err e = {0};
	char node[128];
	CHECK_MSG(devpolicy_attach(f->dp, cgroup_set_v2_fd(f->set), &e) == 0, "%s", e.msg);
	snprintf(node, sizeof(node), "%s/node", f->tmp);
	/* The standard nodes, read and write. */
	CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_WRITE, "/dev/null", 0, 0, 0), 0);
	CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_READ, "/dev/zero", 0, 0, 0), 0);
	CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_READ, "/dev/urandom", 0, 0, 0), 0);
	CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_WRITE, "/dev/full", 0, 0, 0), 0);
	/* Anything else: EPERM even for host root (harmless nodes, read-only opens). */
	CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_READ, "/dev/kmsg", 0, 0, 0), EPERM);
	if (access("/dev/loop-control", F_OK) == 0)
		CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_READ, "/dev/loop-control", 0, 0, 0), EPERM);
	/* mknod: refused for every device, the standard ones included. */
	CHECK_EQ_INT(try_in_cgroup(f, OP_MKNOD, node, 'c', 1, 3), EPERM);
	CHECK_EQ_INT(try_in_cgroup(f, OP_MKNOD, node, 'c', 1, 11), EPERM);
	CHECK_EQ_INT(try_in_cgroup(f, OP_MKNOD, node, 'b', 7, 0), EPERM);
	/* An extra device granted to this cgroup only, then taken back. */
	struct devpolicy_device kmsg = {'c', 1, 11, DEVPOLICY_ACC_READ};
	CHECK_MSG(devpolicy_allow(f->dp, cgroup_set_v2_fd(f->set), &kmsg, &e) == 0, "%s", e.msg);
	if (f->host.v1_devices[0]) {
		/* The v1 controller denies it still: the BPF map alone is not enough on a hybrid host. */
		CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_READ, "/dev/kmsg", 0, 0, 0), EPERM);
		char rule_path[512];
		snprintf(rule_path, sizeof(rule_path), "%s/devices.allow", cgroup_set_devices_path(f->set));
		int fd = open(rule_path, O_WRONLY | O_CLOEXEC);
		CHECK(fd >= 0);
		CHECK(write(fd, "c 1:11 r", 8) == 8);
		close(fd);
	}
	CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_READ, "/dev/kmsg", 0, 0, 0), 0);
	CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_WRITE, "/dev/kmsg", 0, 0, 0), EPERM); /* read only */
	devpolicy_forget(f->dp, cgroup_set_v2_fd(f->set));
	CHECK_EQ_INT(try_in_cgroup(f, OP_OPEN_READ, "/dev/kmsg", 0, 0, 0), EPERM);
	/* Bad input. */
	struct devpolicy_device bad = {'x', 1, 1, DEVPOLICY_ACC_READ};
	CHECK_EQ_INT(devpolicy_allow(f->dp, cgroup_set_v2_fd(f->set), &bad, &e), -EINVAL);
	bad.type = 'c';
	bad.access = 0x80;
	CHECK_EQ_INT(devpolicy_allow(f->dp, cgroup_set_v2_fd(f->set), &bad, &e), -EINVAL);
}

static void test_policy(void) { RUN(body_policy); }

static void body_v1_rules(struct fixture *f)
{
	char path[512], buf[1024] = "";
	const char *dev = cgroup_set_devices_path(f->set);
	if (!dev) {
		printf("  (no v1 devices controller on this host)\n");
		return;
	}
	snprintf(path, sizeof(path), "%s/devices.list", dev);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	CHECK(n > 0);
	buf[n] = '\0';
	CHECK_MSG(strstr(buf, "c 1:3 rw\n") && strstr(buf, "c 136:* rw\n") && !strstr(buf, "a *:*"), "%s", buf);
	size_t nrules;
	devpolicy_v1_rules(&nrules);
	size_t lines = 0;
	for (char *p = buf; *p; p++)
		lines += *p == '\n';
	CHECK_EQ_INT(lines, nrules);
}

static void test_v1_rules(void) { RUN(body_v1_rules); }

/* Removing the cgroup detaches the program: nothing of ours stays with the kernel but the loaded
 * program, and that goes with devpolicy_free. */
static void body_cleanup(struct fixture *f)
{
	struct err e = {0};
	uint32_t id = devpolicy_prog_id(f->dp);
	CHECK_MSG(devpolicy_attach(f->dp, cgroup_set_v2_fd(f->set), &e) == 0, "%s", e.msg);
	CHECK(cgroup_set_destroy(f->set, &e) == 0);
	f->set = NULL;
	devpolicy_free(f->dp);
	f->dp = NULL;
	/* The kernel frees the program after an RCU grace period once the cgroup is released. */
	bool gone = false;
	for (int i = 0; i < 200 && !gone; i++) {
		int fd = bpf_prog_get_fd_by_id(id);
		if (fd < 0)
			gone = true;
		else {
			close(fd);
			usleep(10000);
		}
	}
	CHECK_MSG(gone, "program %u still loaded 2 s after its cgroup was removed", id);
}

static void test_cleanup(void) { RUN(body_cleanup); }

TEST_MAIN(T(test_attach), T(test_policy), T(test_v1_rules), T(test_cleanup))
