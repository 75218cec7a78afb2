/* cgroup.c on the running host (hybrid here, pure v2 elsewhere). Tests that create cgroups need root
 * and skip without it; each removes its cgroups, its parent subtree and its children, also when a
 * CHECK fails. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "runtime/cgroup.h"
#include "testlib.h"

struct fixture {
	struct cgroup_host host;
	struct cgroup_set *set;
	pid_t child; /* to kill and reap, or 0 */
	char name[32];
};

static const char *fixture_setup(struct fixture *f)
{
	struct err e = {0};
	char parent[32];
	memset(f, 0, sizeof(*f));
	if (geteuid() != 0)
		return "needs root";
	snprintf(parent, sizeof(parent), "corral-test-cg-%d", (int)getpid());
	snprintf(f->name, sizeof(f->name), "sb-%d", (int)getpid());
	if (cgroup_host_init(parent, &f->host, &e) < 0) {
		fprintf(stderr, "  %s\n", e.msg);
		return "cgroup_host_init failed";
	}
	if (f->host.mode == CGROUP_MODE_NONE)
		return "no cgroup hierarchy on this host";
	return NULL;
}

static void fixture_teardown(struct fixture *f)
{
	if (f->child > 0) {
		kill(f->child, SIGKILL);
		waitpid(f->child, NULL, 0);
	}
	if (f->set) {
		cgroup_set_kill(f->set, NULL);
		cgroup_set_destroy(f->set, NULL);
	}
	const char *roots[] = {f->host.v2_root, f->host.v1_memory, f->host.v1_pids, f->host.v1_cpu,
			       f->host.v1_devices};
	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		char p[400];
		snprintf(p, sizeof(p), "%s/%s", roots[i], f->host.parent);
		if (roots[i][0] && f->host.parent[0])
			rmdir(p);
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

static void read_file(const char *root, const char *parent, const char *name, const char *file, char *buf,
		      size_t cap)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s/%s/%s", root, parent, name, file);
	buf[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

static bool dir_exists(const char *root, const char *parent, const char *name)
{
	char path[512];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s/%s", root, parent, name);
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static pid_t fork_pauser(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		for (;;)
			pause();
	}
	return pid;
}

static void test_names(void)
{
	struct cgroup_host h = {.mode = CGROUP_MODE_V2, .v2_root = "/nonexistent-cgroup-root", .parent = "corral"};
	static const char *const bad[] = {"", ".", "..", "a..b", "a/b", "a b", "x\n",
					  "a-name-that-is-far-too-long-for-a-cgroup-0123456789-0123456789-0123456789-0123456789"};
	struct cgroup_set *s = NULL;
	struct err e = {0};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_MSG(cgroup_set_create(&h, bad[i], NULL, &s, &e) == -EINVAL, "name \"%s\"", bad[i]);
		CHECK(strstr(e.msg, "invalid cgroup sandbox name") == e.msg);
	}
	CHECK(s == NULL);
	CHECK_EQ_INT(cgroup_host_init("../escape", &h, &e), -EINVAL);
	CHECK_EQ_INT(cgroup_set_open(&h, "..", &s, &e), -EINVAL);
	h.mode = CGROUP_MODE_NONE;
	h.v2_root[0] = '\0';
	CHECK_EQ_INT(cgroup_set_create(&h, "ok-name_1.2", NULL, &s, &e), -EOPNOTSUPP);
	CHECK_STREQ(cgroup_mode_name(CGROUP_MODE_HYBRID), "hybrid");
	CHECK_STREQ(cgroup_mode_name(CGROUP_MODE_V2), "v2");
}

static void body_host_init(struct fixture *f)
{
	struct cgroup_host again;
	struct err e = {0};
	printf("  mode %s, v2 %s (memory %d pids %d cpu %d), v1 memory %s pids %s cpu %s\n",
	       cgroup_mode_name(f->host.mode), f->host.v2_root, f->host.v2_memory, f->host.v2_pids, f->host.v2_cpu,
	       f->host.v1_memory, f->host.v1_pids, f->host.v1_cpu);
	if (f->host.v2_root[0])
		CHECK(dir_exists(f->host.v2_root, f->host.parent, "."));
	if (f->host.v1_memory[0])
		CHECK(dir_exists(f->host.v1_memory, f->host.parent, "."));
	CHECK_MSG(cgroup_host_init(f->host.parent, &again, &e) == 0, "%s", e.msg); /* idempotent */
	CHECK_EQ_INT(again.mode, f->host.mode);
}

static void test_host_init(void) { RUN(body_host_init); }

static void body_limits(struct fixture *f)
{
	const struct cgroup_host *h = &f->host;
	struct cgroup_limits lim = {.memory_bytes = 64 << 20, .pids = 32, .cpus = 0.5};
	struct err e = {0};
	char buf[128];
	int r = cgroup_set_create(h, f->name, &lim, &f->set, &e);
	if (r == -EOPNOTSUPP)
		SKIP("memory, pids or cpu controller not usable here");
	CHECK_MSG(r == 0, "%s", e.msg);
	if (h->v1_memory[0]) {
		read_file(h->v1_memory, h->parent, f->name, "memory.limit_in_bytes", buf, sizeof(buf));
		CHECK_STREQ(buf, "67108864");
		char sw[128];
		read_file(h->v1_memory, h->parent, f->name, "memory.memsw.limit_in_bytes", sw, sizeof(sw));
		CHECK(sw[0] == '\0' || strcmp(sw, "67108864") == 0);
	} else {
		read_file(h->v2_root, h->parent, f->name, "memory.max", buf, sizeof(buf));
		CHECK_STREQ(buf, "67108864");
		read_file(h->v2_root, h->parent, f->name, "memory.swap.max", buf, sizeof(buf));
		CHECK(buf[0] == '\0' || strcmp(buf, "0") == 0);
	}
	read_file(h->v1_pids[0] ? h->v1_pids : h->v2_root, h->parent, f->name, "pids.max", buf, sizeof(buf));
	CHECK_STREQ(buf, "32");
	if (h->v1_cpu[0]) {
		read_file(h->v1_cpu, h->parent, f->name, "cpu.cfs_quota_us", buf, sizeof(buf));
		CHECK_STREQ(buf, "50000");
	} else {
		read_file(h->v2_root, h->parent, f->name, "cpu.max", buf, sizeof(buf));
		CHECK_STREQ(buf, "50000 100000");
	}
	CHECK_EQ_INT(cgroup_set_clone_into_is_enough(f->set), h->mode == CGROUP_MODE_V2);
	CHECK(h->v2_root[0] ? cgroup_set_v2_fd(f->set) >= 0 : cgroup_set_v2_fd(f->set) == -1);
	CHECK_EQ_INT(cgroup_set_count_procs(f->set), 0);
	CHECK(!cgroup_set_oom_killed(f->set));

	/* The same name again: EEXIST, and the existing cgroups survive the failed create. */
	struct cgroup_set *dup = NULL;
	CHECK_EQ_INT(cgroup_set_create(h, f->name, &lim, &dup, &e), -EEXIST);
	CHECK(dup == NULL);
	const char *root = h->v2_root[0] ? h->v2_root : h->v1_memory;
	CHECK(dir_exists(root, h->parent, f->name));

	CHECK_MSG(cgroup_set_destroy(f->set, &e) == 0, "%s", e.msg);
	f->set = NULL;
	const char *roots[] = {h->v2_root, h->v1_memory, h->v1_pids, h->v1_cpu};
	for (size_t i = 0; i < 4; i++)
		CHECK(!roots[i][0] || !dir_exists(roots[i], h->parent, f->name));
}

static void test_create_limits_destroy(void) { RUN(body_limits); }

static void body_attach_kill(struct fixture *f, bool without_v2)
{
	struct cgroup_host h = f->host;
	struct err e = {0};
	/* Without the v2 hierarchy, cgroup.kill is absent and the kill loop over cgroup.procs runs. */
	if (without_v2) {
		if (!h.v1_memory[0] && !h.v1_pids[0])
			SKIP("no v1 hierarchy to test the kill loop on");
		h.v2_root[0] = '\0';
		h.v2_memory = h.v2_pids = h.v2_cpu = false;
	}
	CHECK_MSG(cgroup_set_create(&h, f->name, NULL, &f->set, &e) == 0, "%s", e.msg);
	f->child = fork_pauser();
	CHECK(f->child > 0);
	CHECK_MSG(cgroup_set_attach(f->set, f->child, &e) == 0, "%s", e.msg);
	CHECK_EQ_INT(cgroup_set_count_procs(f->set), 1);
	CHECK_MSG(cgroup_set_attach(f->set, f->child, &e) == 0, "%s", e.msg); /* again: harmless */
	CHECK_MSG(cgroup_set_kill(f->set, &e) == 0, "%s", e.msg);
	int st = 0;
	CHECK(waitpid(f->child, &st, 0) == f->child);
	f->child = 0;
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	CHECK_EQ_INT(cgroup_set_count_procs(f->set), 0);
	CHECK_MSG(cgroup_set_destroy(f->set, &e) == 0, "%s", e.msg);
	f->set = NULL;
}

static void body_attach_kill_v2(struct fixture *f) { body_attach_kill(f, false); }
static void body_attach_kill_v1(struct fixture *f) { body_attach_kill(f, true); }
static void test_attach_kill(void) { RUN(body_attach_kill_v2); }
static void test_attach_kill_loop(void) { RUN(body_attach_kill_v1); }

/* Memory limit 32 MiB, a child touching 256 MiB: the OOM killer kills it and the set reports it. */
static void body_oom(struct fixture *f)
{
	struct cgroup_limits lim = {.memory_bytes = 32 << 20};
	struct err e = {0};
	int r = cgroup_set_create(&f->host, f->name, &lim, &f->set, &e);
	if (r == -EOPNOTSUPP)
		SKIP("no usable memory controller");
	CHECK_MSG(r == 0, "%s", e.msg);
	int sync[2];
	CHECK(pipe(sync) == 0);
	f->child = fork();
	CHECK(f->child >= 0);
	if (f->child == 0) {
		char c;
		close(sync[1]);
		if (read(sync[0], &c, 1) != 1) /* wait until attached */
			_exit(2);
		for (size_t i = 0; i < 256; i++) {
			char *p = malloc(1 << 20);
			if (!p)
				_exit(3);
			memset(p, 1, 1 << 20);
		}
		_exit(0);
	}
	close(sync[0]);
	r = cgroup_set_attach(f->set, f->child, &e);
	CHECK(write(sync[1], "g", 1) == 1);
	close(sync[1]);
	CHECK_MSG(r == 0, "%s", e.msg);
	int st = 0;
	CHECK(waitpid(f->child, &st, 0) == f->child);
	f->child = 0;
	CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "status 0x%x", st);
	CHECK(cgroup_set_oom_killed(f->set));
}

static void test_oom(void) { RUN(body_oom); }

static void body_open(struct fixture *f)
{
	struct err e = {0};
	struct cgroup_set *s = NULL;
	CHECK_EQ_INT(cgroup_set_open(&f->host, f->name, &s, &e), -ENOENT);
	CHECK_MSG(cgroup_set_create(&f->host, f->name, NULL, &f->set, &e) == 0, "%s", e.msg);
	cgroup_set_free(f->set); /* a daemon restart: the handle goes, the cgroups stay */
	f->set = NULL;
	CHECK_MSG(cgroup_set_open(&f->host, f->name, &f->set, &e) == 0, "%s", e.msg);
	CHECK(f->host.v2_root[0] ? cgroup_set_v2_fd(f->set) >= 0 : cgroup_set_v2_fd(f->set) == -1);
	CHECK_MSG(cgroup_set_destroy(f->set, &e) == 0, "%s", e.msg);
	f->set = NULL;
	CHECK_EQ_INT(cgroup_set_open(&f->host, f->name, &s, &e), -ENOENT);
	cgroup_set_free(NULL);
}

static void test_open(void) { RUN(body_open); }

/* A dir that stays busy (a live process in it) makes destroy give up after its bounded retry, and
 * still free the set. */
static void body_destroy_busy(struct fixture *f)
{
	struct err e = {0};
	struct timespec t0, t1;
	CHECK_MSG(cgroup_set_create(&f->host, f->name, NULL, &f->set, &e) == 0, "%s", e.msg);
	f->child = fork_pauser();
	CHECK(f->child > 0);
	CHECK_MSG(cgroup_set_attach(f->set, f->child, &e) == 0, "%s", e.msg);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int r = cgroup_set_destroy(f->set, &e);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	f->set = NULL; /* freed regardless */
	CHECK_EQ_INT(r, -EBUSY);
	CHECK(strstr(e.msg, "remove cgroup ") == e.msg);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	CHECK_MSG(s < 3.0, "destroy took %.2f s", s);
	/* Clean up for real: kill, reap, then open and destroy what is left. */
	kill(f->child, SIGKILL);
	waitpid(f->child, NULL, 0);
	f->child = 0;
	CHECK_MSG(cgroup_set_open(&f->host, f->name, &f->set, &e) == 0, "%s", e.msg);
	CHECK_MSG(cgroup_set_destroy(f->set, &e) == 0, "%s", e.msg);
	f->set = NULL;
}

static void test_destroy_busy(void) { RUN(body_destroy_busy); }

TEST_MAIN(T(test_names), T(test_host_init), T(test_create_limits_destroy), T(test_attach_kill),
	  T(test_attach_kill_loop), T(test_oom), T(test_open), T(test_destroy_busy))
