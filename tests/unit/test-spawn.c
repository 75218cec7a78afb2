/* spawn_sandbox: a real sandbox over a one-layer busybox image, with busybox sh as PID 1 reporting
 * what it sees through the control socket (fd 3). Needs root (user namespaces with a mapped range,
 * overlayfs, mount API). Every test builds its files in a temp dir and removes it, kills and reaps
 * what it started and removes the cgroups it made, also when a CHECK fails. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>

#include "init/initproto.h"
#include "runtime/cgroup.h"
#include "runtime/spawn.h"
#include "testlib.h"

#define UID_BASE 400000
#define UID_COUNT 65536
#define OUT_MAX 8192

struct fixture {
	char dir[128];
	char layer[192], upper[192], work[192], root[192];
	const char *lowers[1];
	int init_fd;
	int ctl[2];     /* [0] the test's end, [1] handed to the sandbox as fd 3 */
	pid_t pid;
	int pidfd;      /* of a sandbox still to be killed and reaped, or -1 */
	struct cgroup_host host;
	struct cgroup_set *cg;
	bool cg_parent; /* remove host.parent dirs at teardown */
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	struct stat st;
	int r = in >= 0 && out >= 0 && fstat(in, &st) == 0 ? 0 : -1;
	for (off_t left = r == 0 ? st.st_size : 0; left > 0;) {
		ssize_t n = sendfile(out, in, NULL, (size_t)left);
		if (n <= 0) {
			r = -1;
			break;
		}
		left -= n;
	}
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return r;
}

/* A sealed, close-on-exec memfd copy of an executable: how the daemon hands corral-init over. */
static int sealed_memfd_of(const char *path)
{
	int in = open(path, O_RDONLY | O_CLOEXEC);
	int fd = memfd_create("corral-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	struct stat st;
	int ok = in >= 0 && fd >= 0 && fstat(in, &st) == 0;
	for (off_t left = ok ? st.st_size : 0; left > 0;) {
		ssize_t n = sendfile(fd, in, NULL, (size_t)left);
		if (n <= 0) {
			ok = 0;
			break;
		}
		left -= n;
	}
	ok = ok && fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) == 0;
	if (in >= 0)
		close(in);
	if (!ok && fd >= 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* A temp dir with layer/ (bin/busybox + bin/sh), upper/, work/, root/; as the init fd a sealed
 * memfd of busybox, run as "sh -c SCRIPT". */
static const char *fixture_setup(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->init_fd = f->ctl[0] = f->ctl[1] = f->pidfd = -1;
	if (geteuid() != 0)
		return "needs root";
	if (access("/bin/busybox", X_OK) != 0)
		return "needs /bin/busybox (busybox-static)";
	/* $TMPDIR picks the upper layer's filesystem: on ext4 overlay's mount-time checks cost
	 * ~1 ms of inode allocation, on tmpfs ~0.05 ms. */
	const char *tmp = getenv("TMPDIR");
	snprintf(f->dir, sizeof(f->dir), "%s/corral-test-spawn-XXXXXX", tmp && tmp[0] == '/' ? tmp : "/tmp");
	if (!mkdtemp(f->dir))
		return "mkdtemp failed";
	char bin[224], sh[256], bb[256];
	snprintf(f->layer, sizeof(f->layer), "%s/layer", f->dir);
	snprintf(f->upper, sizeof(f->upper), "%s/upper", f->dir);
	snprintf(f->work, sizeof(f->work), "%s/work", f->dir);
	snprintf(f->root, sizeof(f->root), "%s/root", f->dir);
	snprintf(bin, sizeof(bin), "%s/bin", f->layer);
	snprintf(bb, sizeof(bb), "%s/busybox", bin);
	snprintf(sh, sizeof(sh), "%s/sh", bin);
	if (mkdir(f->layer, 0755) || mkdir(bin, 0755) || mkdir(f->upper, 0755) || mkdir(f->work, 0755) ||
	    mkdir(f->root, 0755) || copy_file("/bin/busybox", bb, 0755) || symlink("busybox", sh))
		return "building the test image failed";
	f->lowers[0] = f->layer;
	f->init_fd = sealed_memfd_of(bb);
	if (f->init_fd < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->ctl) < 0)
		return "opening init or the control socket failed";
	return NULL;
}

static void fixture_teardown(struct fixture *f)
{
	if (f->pidfd >= 0) {
		siginfo_t si;
		pidfd_send_signal(f->pidfd, SIGKILL, NULL, 0);
		waitid(P_PIDFD, (id_t)f->pidfd, &si, WEXITED);
		close(f->pidfd);
	}
	if (f->cg) {
		cgroup_set_kill(f->cg, NULL);
		cgroup_set_destroy(f->cg, NULL);
	}
	if (f->cg_parent) {
		const char *roots[] = {f->host.v2_root, f->host.v1_memory, f->host.v1_pids, f->host.v1_cpu, f->host.v1_devices};
		for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
			char p[400];
			snprintf(p, sizeof(p), "%s/%s", roots[i], f->host.parent);
			if (roots[i][0])
				rmdir(p);
		}
	}
	for (int i = 0; i < 2; i++)
		if (f->ctl[i] >= 0)
			close(f->ctl[i]);
	if (f->init_fd >= 0)
		close(f->init_fd);
	if (f->dir[0])
		nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static struct spawn_config fixture_config(struct fixture *f, const char *const *argv)
{
	return (struct spawn_config){
		.hostname = "sbx-test",
		.lower_dirs = f->lowers,
		.n_lower = 1,
		.upper_dir = f->upper,
		.work_dir = f->work,
		.root_dir = f->root,
		.uid_base = UID_BASE,
		.uid_count = UID_COUNT,
		.init_fd = f->init_fd,
		.control_fd = f->ctl[1],
		.cgroups = f->cg,
		.new_netns = true,
		.init_argv = argv,
	};
}

/* Read the test's end of the control socket until EOF (the sandbox exited) or 10 s. */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	while (len + 1 < cap) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10000) <= 0)
			return -1;
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

/* Reap the sandbox; its exit code, or -1 if it did not exit normally. */
static int reap(struct fixture *f)
{
	siginfo_t si = {0};
	int r = waitid(P_PIDFD, (id_t)f->pidfd, &si, WEXITED);
	close(f->pidfd);
	f->pidfd = -1;
	return r == 0 && si.si_code == CLD_EXITED ? si.si_status : -1;
}

/* Value of "key=..." on its own line of out, or "" (static buffer). */
static const char *val(const char *out, const char *key)
{
	static char v[512];
	size_t kl = strlen(key);
	v[0] = '\0';
	for (const char *p = out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t n = strcspn(p + kl + 1, "\n");
			snprintf(v, sizeof(v), "%.*s", (int)(n < sizeof(v) ? n : sizeof(v) - 1), p + kl + 1);
			break;
		}
	return v;
}

static long num(const char *s)
{
	return strtol(s, NULL, 10);
}

/* Lines of path containing needle (NULL: all lines). */
static int count_lines_with(const char *path, const char *needle)
{
	FILE *fp = fopen(path, "re");
	char line[4096];
	int n = 0;
	if (!fp)
		return -1;
	while (fgets(line, sizeof(line), fp))
		n += !needle || strstr(line, needle) != NULL;
	fclose(fp);
	return n;
}


/* No stray child of ours: everything spawned has been reaped. */
static bool no_children(void)
{
	int st;
	return waitpid(-1, &st, WNOHANG) < 0 && errno == ECHILD;
}

/* The scripts below spin on builtins only (no fork, no redirection: PID 1's fds and the
 * cgroup's process count stay still while the test looks) until SIGUSR1 arrives. */
static int release_sandbox(pid_t pid)
{
	/* PID 1 of a pid namespace gets a signal from outside only once its handler is set:
	 * retry until the trap is installed and the loop exits (the child then runs on). */
	for (int i = 0; i < 2000; i++) {
		if (kill(pid, SIGUSR1) < 0)
			return -errno;
		char path[64], buf[512] = "";
		snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
		FILE *fp = fopen(path, "re");
		bool caught = false;
		while (fp && fgets(buf, sizeof(buf), fp))
			if (!strncmp(buf, "SigCgt:", 7))
				caught = strtoull(buf + 7, NULL, 16) & (1ULL << (SIGUSR1 - 1));
		if (fp)
			fclose(fp);
		if (caught) { /* the trap was set before this signal: it is (being) handled */
			kill(pid, SIGUSR1);
			return 0;
		}
		usleep(1000);
	}
	return -ETIMEDOUT;
}

static const char inside_script[] =
	/* Block until the test has looked at PID 1's fds from the host; no redirection (busybox sh
	 * would shuffle PID 1's own fds while it runs an in-process applet). */
	"trap 'go=1' USR1; while [ -z \"$go\" ]; do :; done\n"
	"exec >&3 2>&1\n"
	"echo hostname=$(busybox hostname)\n"
	"echo uid=$(busybox id -u):$(busybox id -g)\n"
	"echo pid=$$\n"
	"echo pidns=$(busybox readlink /proc/self/ns/pid)\n"
	"echo netns=$(busybox readlink /proc/self/ns/net)\n"
	"echo procs=$(busybox ls /proc | busybox grep -c '^[0-9]')\n"
	"busybox touch /marker && echo touched=yes\n"
	"echo null=$(echo x >/dev/null && busybox wc -c </dev/null)\n"
	"echo zero=$(busybox head -c 5 /dev/zero | busybox wc -c)\n"
	"echo lo=$(busybox ip -o link show lo)\n"
	"echo tmp=$(busybox stat -c %a /tmp)\n"
	"echo rootfs=$(busybox awk '$2==\"/\"{print $3}' /proc/self/mounts)\n"
	"echo procfs=$(busybox awk '$2==\"/proc\"{print $3}' /proc/self/mounts)\n"
	"echo devpts=$(busybox awk '$2==\"/dev/pts\"{print $3}' /proc/self/mounts)\n"
	"echo mounts=$(busybox wc -l </proc/self/mounts)\n"
	"echo ptmx=$(busybox readlink /dev/ptmx)\n"
	"echo pty=$( (exec 5<>/dev/ptmx; busybox ls /dev/pts | busybox tr '\\n' ' ') )\n"
	"echo hostfile=$([ -e /etc/debian_version ] && echo yes || echo no)\n"
	"echo path=$PATH\n"
	"echo env=$(busybox env | busybox wc -l)\n"
	"echo cgroup=$(busybox cat /proc/self/cgroup | busybox tail -n 1)\n"
	"echo end=yes\n";

/* PID 1's fds, seen from the host while it waits: 0-2 /dev/null, 3 a socket, and nothing else
 * from the host. busybox sh runs some applets in-process and saves redirected fds at 10 and up
 * while it does, so an fd above 3 is accepted only if it is a copy of one of 0-3. */
static void check_init_fds(pid_t pid)
{
	char path[64];
	struct stat base[4];
	for (int fd = 0; fd <= 3; fd++) {
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
		CHECK_MSG(stat(path, &base[fd]) == 0, "PID 1 has no fd %d", fd);
		if (fd < 3)
			CHECK_MSG(S_ISCHR(base[fd].st_mode) && base[fd].st_rdev == makedev(1, 3), "fd %d is not /dev/null", fd);
		else
			CHECK(S_ISSOCK(base[fd].st_mode));
	}
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	CHECK(d);
	long bad = -1;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || num(de->d_name) <= 3)
			continue;
		char fdpath[96];
		struct stat st;
		snprintf(fdpath, sizeof(fdpath), "%s/%s", path, de->d_name);
		if (stat(fdpath, &st) < 0)
			continue; /* closed meanwhile */
		bool copy = false;
		for (int fd = 0; fd <= 3; fd++)
			copy |= st.st_dev == base[fd].st_dev && st.st_ino == base[fd].st_ino;
		if (!copy)
			bad = num(de->d_name);
	}
	closedir(d);
	CHECK_MSG(bad < 0, "PID 1 has fd %ld open, not a copy of fds 0-3", bad);
}

static void body_inside(struct fixture *f)
{
	const char *argv[] = {"sh", "-c", inside_script, NULL};
	struct spawn_config cfg = fixture_config(f, argv);
	struct spawn_result res = {0};
	struct err e = {0};
	int r = spawn_sandbox(&cfg, &res, &e);
	CHECK_MSG(r == 0, "%s", e.msg);
	f->pidfd = res.pidfd;
	close(f->ctl[1]); /* only the sandbox holds it now: EOF when it exits */
	f->ctl[1] = -1;
	CHECK(res.pid > 0);
	uint64_t st = 0;
	CHECK(spawn_read_start_time(res.pid, &st, &e) == 0);
	CHECK_EQ_INT(st, res.start_time);
	check_init_fds(res.pid);
	if (test_failed)
		return;
	CHECK(release_sandbox(res.pid) == 0);

	char out[OUT_MAX];
	CHECK(read_all(f->ctl[0], out, sizeof(out)) > 0);
	CHECK_EQ_INT(reap(f), 0);
	CHECK_MSG(strcmp(val(out, "end"), "yes") == 0, "sandbox output:\n%s", out);
	CHECK_STREQ(val(out, "hostname"), "sbx-test");
	CHECK_STREQ(val(out, "uid"), "0:0");
	CHECK_STREQ(val(out, "pid"), "1");
	char host_ns[64] = "";
	CHECK(readlink("/proc/self/ns/pid", host_ns, sizeof(host_ns) - 1) > 0);
	CHECK(strncmp(val(out, "pidns"), "pid:[", 5) == 0 && strcmp(val(out, "pidns"), host_ns) != 0);
	memset(host_ns, 0, sizeof(host_ns));
	CHECK(readlink("/proc/self/ns/net", host_ns, sizeof(host_ns) - 1) > 0);
	CHECK(strncmp(val(out, "netns"), "net:[", 5) == 0 && strcmp(val(out, "netns"), host_ns) != 0);
	CHECK_MSG(num(val(out, "procs")) >= 1 && num(val(out, "procs")) <= 5, "procs=%s", val(out, "procs"));
	CHECK_STREQ(val(out, "touched"), "yes");
	CHECK_STREQ(val(out, "null"), "0");
	CHECK_STREQ(val(out, "zero"), "5");
	CHECK_MSG(strstr(val(out, "lo"), ",UP") != NULL, "lo=%s", val(out, "lo"));
	CHECK_STREQ(val(out, "tmp"), "1777");
	CHECK_STREQ(val(out, "rootfs"), "overlay");
	CHECK_STREQ(val(out, "procfs"), "proc");
	CHECK_STREQ(val(out, "devpts"), "devpts");
	CHECK_STREQ(val(out, "ptmx"), "pts/ptmx");
	CHECK_STREQ(val(out, "pty"), "0 ptmx"); /* a pty from the sandbox's own devpts instance */
	CHECK_STREQ(val(out, "hostfile"), "no");
	CHECK(strncmp(val(out, "path"), "/usr/local/sbin:", 16) == 0);
	CHECK_STREQ(val(out, "cgroup"), "0::/");
	/* overlay, proc, /tmp, /dev tmpfs, 6 nodes, devpts, shm: the host's mounts are gone. */
	CHECK_MSG(num(val(out, "mounts")) == 12, "mounts=%s", val(out, "mounts"));
	/* Sandbox root wrote /marker: on the host, the upper layer holds it owned by the range's base. */
	char marker[256];
	struct stat mst;
	snprintf(marker, sizeof(marker), "%s/marker", f->upper);
	CHECK(stat(marker, &mst) == 0);
	CHECK_EQ_INT(mst.st_uid, UID_BASE);
	CHECK_EQ_INT(mst.st_gid, UID_BASE);
	/* Nothing leaked onto the host: the root dir is still an empty directory, not a mount. */
	struct stat rst, dst;
	CHECK(stat(f->root, &rst) == 0 && stat(f->dir, &dst) == 0);
	CHECK(rst.st_dev == dst.st_dev);
}

static void test_spawn_inside(void)
{
	struct fixture f;
	const char *skip = fixture_setup(&f);
	if (!skip)
		body_inside(&f);
	fixture_teardown(&f);
	if (skip)
		SKIP(skip);
}

/* A failed spawn: a clear error and nothing left behind (no child, no mount). */
static void expect_spawn_failure(struct fixture *f, int code, const char *needle)
{
	const char *argv[] = {"sh", "-c", "exit 0", NULL};
	struct spawn_config cfg = fixture_config(f, argv);
	struct spawn_result res = {.pid = -7, .pidfd = -7};
	struct err e = {0};
	/* Only mounts of this test's own tree: other work on the host may mount meanwhile. */
	int mounts = count_lines_with("/proc/self/mountinfo", f->dir);
	int r = spawn_sandbox(&cfg, &res, &e);
	CHECK_MSG(r == code && e.code == code, "r=%d code=%d msg=%s", r, e.code, e.msg);
	CHECK_MSG(strstr(e.msg, "start sandbox sbx-test: ") == e.msg, "%s", e.msg);
	CHECK_MSG(strstr(e.msg, needle) != NULL, "\"%s\" not in \"%s\"", needle, e.msg);
	CHECK(res.pid == -7 && res.pidfd == -7); /* untouched on failure */
	CHECK(no_children());
	CHECK_EQ_INT(count_lines_with("/proc/self/mountinfo", f->dir), mounts);
}

static void test_spawn_missing_layer(void)
{
	struct fixture f;
	const char *skip = fixture_setup(&f);
	char missing[256];
	if (!skip) {
		snprintf(missing, sizeof(missing), "%s/no-such-layer", f.dir);
		f.lowers[0] = missing;
		expect_spawn_failure(&f, -ENOENT, missing);
	}
	fixture_teardown(&f);
	if (skip)
		SKIP(skip);
}

/* An image whose /proc, /dev or /tmp is a symlink (here to a host directory) is refused. */
static void body_symlinks(struct fixture *f)
{
	static const char *const names[] = {"proc", "dev", "tmp"};
	for (size_t i = 0; i < 3 && !test_failed; i++) {
		char link[256], needle[64];
		snprintf(link, sizeof(link), "%s/%s", f->layer, names[i]);
		snprintf(needle, sizeof(needle), "refusing image: /%s is a symlink", names[i]);
		CHECK(symlink("/etc", link) == 0);
		/* A fresh upper each time: a /tmp made by an earlier attempt would hide the lower symlink. */
		snprintf(f->upper, sizeof(f->upper), "%s/upper-%zu", f->dir, i);
		snprintf(f->work, sizeof(f->work), "%s/work-%zu", f->dir, i);
		CHECK(mkdir(f->upper, 0755) == 0 && mkdir(f->work, 0755) == 0);
		expect_spawn_failure(f, -ELOOP, needle);
		unlink(link);
	}
}

static void test_spawn_symlink_refused(void)
{
	struct fixture f;
	const char *skip = fixture_setup(&f);
	if (!skip)
		body_symlinks(&f);
	fixture_teardown(&f);
	if (skip)
		SKIP(skip);
}

/* An init that cannot be executed (a 0644 text file) fails after pivot_root, and says so. */
static void test_spawn_bad_init(void)
{
	struct fixture f;
	const char *skip = fixture_setup(&f);
	if (!skip) {
		char path[192];
		snprintf(path, sizeof(path), "%s/not-init", f.dir);
		close(f.init_fd);
		f.init_fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (f.init_fd >= 0 && write(f.init_fd, "text\n", 5) == 5)
			expect_spawn_failure(&f, -EACCES, "execute init");
		else
			CHECK(!"creating the fake init failed");
	}
	fixture_teardown(&f);
	if (skip)
		SKIP(skip);
}

static void test_spawn_bad_config(void)
{
	struct fixture f = {.init_fd = -1, .ctl = {-1, -1}, .pidfd = -1};
	const char *argv[] = {"sh", NULL};
	struct spawn_config cfg = fixture_config(&f, argv);
	struct spawn_result res;
	struct err e = {0};
	cfg.init_fd = 5;
	cfg.control_fd = 6;
	cfg.uid_base = 0; /* would map sandbox root to host root */
	CHECK_EQ_INT(spawn_sandbox(&cfg, &res, &e), -EINVAL);
	cfg.uid_base = UID_BASE;
	cfg.hostname = "a-hostname-that-is-much-longer-than-sixty-three-bytes-which-is-the-limit";
	CHECK_EQ_INT(spawn_sandbox(&cfg, &res, &e), -EINVAL);
	cfg.hostname = "x";
	cfg.n_lower = 0;
	CHECK_EQ_INT(spawn_sandbox(&cfg, &res, &e), -EINVAL);
}

/* With cgroups: PID 1 is in the v2 cgroup (clone3 CLONE_INTO_CGROUP) and the v1 ones. */
static void body_cgroups(struct fixture *f)
{
	char parent[32], name[32];
	struct err e = {0};
	snprintf(parent, sizeof(parent), "corral-test-%d", (int)getpid());
	snprintf(name, sizeof(name), "spawn-%d", (int)getpid());
	CHECK_MSG(cgroup_host_init(parent, &f->host, &e) == 0, "%s", e.msg);
	f->cg_parent = true;
	struct cgroup_limits lim = {.memory_bytes = 256 << 20, .pids = 64};
	CHECK_MSG(cgroup_set_create(&f->host, name, &lim, &f->cg, &e) == 0, "%s", e.msg);
	const char *argv[] = {"sh", "-c", "trap 'go=1' USR1; while [ -z \"$go\" ]; do :; done; busybox cat /proc/self/cgroup >&3", NULL};
	struct spawn_config cfg = fixture_config(f, argv);
	struct spawn_result res;
	CHECK_MSG(spawn_sandbox(&cfg, &res, &e) == 0, "%s", e.msg);
	f->pidfd = res.pidfd;
	close(f->ctl[1]);
	f->ctl[1] = -1;

	char path[64], cg[2048], want[128];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)res.pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	ssize_t n = read(fd, cg, sizeof(cg) - 1);
	close(fd);
	CHECK(n > 0);
	cg[n] = '\0';
	snprintf(want, sizeof(want), "/%s/%s\n", parent, name);
	if (f->host.v2_root[0]) {
		char v2[160];
		snprintf(v2, sizeof(v2), "0::%s", want);
		CHECK_MSG(strstr(cg, v2) != NULL, "%s", cg);
	}
	if (f->host.v1_memory[0]) {
		char mem[160];
		snprintf(mem, sizeof(mem), ":memory:%s", want);
		CHECK_MSG(strstr(cg, mem) != NULL, "%s", cg);
	}
	CHECK_EQ_INT(cgroup_set_count_procs(f->cg), 1);
	CHECK(release_sandbox(res.pid) == 0);
	char out[OUT_MAX];
	CHECK(read_all(f->ctl[0], out, sizeof(out)) > 0);
	CHECK_EQ_INT(reap(f), 0);
	/* Inside, a cgroup namespace rooted at the sandbox's cgroups. */
	CHECK_MSG(strstr(out, "0::/\n") != NULL, "%s", out);
}

static void test_spawn_cgroups(void)
{
	struct fixture f;
	const char *skip = fixture_setup(&f);
	if (!skip)
		body_cgroups(&f);
	fixture_teardown(&f);
	if (skip)
		SKIP(skip);
}

/* The real corral-init ($CORRAL_INIT, set by tests/unit/run.sh) as PID 1 from a sealed memfd:
 * it answers HELLO with READY over the control socket at fd 3. */
static void body_corral_init(struct fixture *f, const char *init)
{
	close(f->init_fd);
	f->init_fd = sealed_memfd_of(init);
	CHECK(f->init_fd >= 0);
	close(f->ctl[0]);
	close(f->ctl[1]);
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, f->ctl) == 0);
	struct spawn_config cfg = fixture_config(f, NULL);
	struct spawn_result res;
	struct err e = {0};
	CHECK_MSG(spawn_sandbox(&cfg, &res, &e) == 0, "%s", e.msg);
	f->pidfd = res.pidfd;
	close(f->ctl[1]);
	f->ctl[1] = -1;

	struct {
		struct initproto_hdr h;
		struct initproto_hello b;
	} hello = {{INITPROTO_HELLO, 0}, {INITPROTO_VERSION, 0}}, ready;
	memset(&ready, 0, sizeof(ready));
	CHECK_EQ_INT(initproto_send(f->ctl[0], &hello, sizeof(hello), NULL, 0), 0);
	struct pollfd p = {.fd = f->ctl[0], .events = POLLIN};
	CHECK_MSG(poll(&p, 1, 5000) == 1, "no answer from corral-init");
	int fds[INITPROTO_MAX_FDS];
	size_t nfds = INITPROTO_MAX_FDS;
	CHECK_EQ_INT(initproto_recv(f->ctl[0], &ready, sizeof(ready), fds, &nfds), sizeof(ready));
	CHECK_EQ_INT(ready.h.type, INITPROTO_READY);
	CHECK_EQ_INT(ready.b.version, INITPROTO_VERSION);
	CHECK_EQ_INT(nfds, 0);
}

static void test_spawn_corral_init(void)
{
	const char *init = getenv("CORRAL_INIT");
	struct fixture f;
	if (!init || access(init, R_OK) != 0)
		SKIP("set CORRAL_INIT to a built corral-init (tests/unit/run.sh does)");
	const char *skip = fixture_setup(&f);
	if (!skip)
		body_corral_init(&f, init);
	fixture_teardown(&f);
	if (skip)
		SKIP(skip);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

#define TIMING_RUNS 100

/* spawn_sandbox() wall time, and to the first output byte of `echo hi`; fresh upper/work each run
 * (as a real sandbox has). Reported, not asserted: this VM has occasional multi-second stalls. */
static void body_timing(struct fixture *f, bool netns)
{
	static double spawn[TIMING_RUNS], first[TIMING_RUNS];
	const char *argv[] = {"sh", "-c", "echo hi >&3", NULL};
	for (int i = 0; i < TIMING_RUNS; i++) {
		snprintf(f->upper, sizeof(f->upper), "%s/upper-%d-%d", f->dir, netns, i);
		snprintf(f->work, sizeof(f->work), "%s/work-%d-%d", f->dir, netns, i);
		CHECK(mkdir(f->upper, 0755) == 0 && mkdir(f->work, 0755) == 0);
		if (f->ctl[1] < 0)
			CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->ctl) == 0);
		struct spawn_config cfg = fixture_config(f, argv);
		cfg.new_netns = netns;
		struct spawn_result res;
		struct err e = {0};
		double t0 = now_ms();
		int r = spawn_sandbox(&cfg, &res, &e);
		spawn[i] = now_ms() - t0;
		CHECK_MSG(r == 0, "%s", e.msg);
		f->pidfd = res.pidfd;
		close(f->ctl[1]);
		f->ctl[1] = -1;
		char out[16];
		CHECK(read_all(f->ctl[0], out, sizeof(out)) == 3 && strcmp(out, "hi\n") == 0);
		first[i] = now_ms() - t0; /* EOF comes right after "hi": the sandbox exits */
		CHECK_EQ_INT(reap(f), 0);
		close(f->ctl[0]);
		f->ctl[0] = -1;
	}
	qsort(spawn, TIMING_RUNS, sizeof(double), cmp_double);
	qsort(first, TIMING_RUNS, sizeof(double), cmp_double);
	printf("  %s: spawn_sandbox median %.2f ms, p99 %.2f, max %.2f; to output + exit median %.2f ms, p99 %.2f "
	       "(n=%d)\n",
	       netns ? "with netns" : "no netns", spawn[TIMING_RUNS / 2], spawn[TIMING_RUNS * 99 / 100],
	       spawn[TIMING_RUNS - 1], first[TIMING_RUNS / 2], first[TIMING_RUNS * 99 / 100], TIMING_RUNS);
}

static void test_spawn_timing(void)
{
	struct fixture f;
	const char *skip = fixture_setup(&f);
	if (!skip) {
		body_timing(&f, false);
		if (!test_failed)
			body_timing(&f, true);
	}
	fixture_teardown(&f);
	if (skip)
		SKIP(skip);
}

static void test_start_time(void)
{
	uint64_t a = 0, b = 0;
	struct err e = {0};
	CHECK(spawn_read_start_time(getpid(), &a, &e) == 0);
	CHECK(spawn_read_start_time(getpid(), &b, &e) == 0);
	CHECK(a == b && a > 0);
	CHECK_EQ_INT(spawn_read_start_time(0x7ffffff0, &a, &e), -ENOENT);
}

TEST_MAIN(T(test_start_time), T(test_spawn_bad_config), T(test_spawn_inside), T(test_spawn_missing_layer),
	  T(test_spawn_symlink_refused), T(test_spawn_bad_init), T(test_spawn_cgroups), T(test_spawn_corral_init), T(test_spawn_timing))
