#include "daemon/build_worker.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/image_build.h"
#include "images/layer.h"
#include "images/store.h"
#include "images/tarx.h"
#include "runtime/devpolicy.h"
#include "runtime/spawn.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/misc.h"
#include "util/sha256.h"

#define STEP_TIMEOUT_MS (30 * 60 * 1000)
#define STEP_PIDS_MAX 4096
#define STATUS_FILE_MAX (64 << 20)
#define COPY_LIMIT_TOTAL (4ull << 20) /* the tar rides in the request: 4 MiB at most anyway */
#define DEBIAN_RECIPE "corral-debian-v1"

/* ---- worker-side helpers ----------------------------------------------------------------------- */

/* Forward a child's output to the job's log, line by line, printable only. */
struct line_buf {
	char buf[1024];
	size_t len;
};

static void lines_feed(struct bgjob *job, struct line_buf *lb, const char *data, size_t n, const char *prefix)
{
	for (size_t i = 0; i < n; i++) {
		char c = data[i];
		if (c == '\n' || c == '\r' || lb->len == sizeof(lb->buf) - 1) {
			if (lb->len) {
				lb->buf[lb->len] = '\0';
				bgjob_log(job, "%s%s", prefix, lb->buf);
			}
			lb->len = 0;
			if (c == '\n' || c == '\r')
				continue;
		}
		lb->buf[lb->len++] = ((unsigned char)c < 0x20 && c != '\t') || (unsigned char)c == 0x7f ? '?' : c;
	}
}

/* Run a trusted host program (mmdebstrap, apt-get) with its output streamed to the log. Returns
 * its wait status or -errno. It dies with this thread (PR_SET_PDEATHSIG). */
static int run_host(struct bgjob *job, const char *const *argv, const char *prefix)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	static const char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
					   "DEBIAN_FRONTEND=noninteractive", NULL};
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int nul = open("/dev/null", O_RDONLY);
		if (nul < 0 || dup2(nul, 0) < 0 || dup2(p[1], 1) < 0 || dup2(p[1], 2) < 0)
			_exit(127);
		close_range(3, ~0U, 0);
		execve(argv[0], (char *const *)argv, (char *const *)envp);
		_exit(127);
	}
	close(p[1]);
	struct line_buf lb = {0};
	char buf[4096];
	ssize_t n;
	while ((n = read(p[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
		if (n > 0)
			lines_feed(job, &lb, buf, (size_t)n, prefix);
	lines_feed(job, &lb, "\n", 1, prefix);
	close(p[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return status;
}

static int status_err(int status, const char *what, struct err *e)
{
	if (status < 0)
		return err_set(e, -status, "run %s", what);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		return err_setx(e, EIO, "%s exited with status %d (see the build log)", what, WEXITSTATUS(status));
	return err_setx(e, EIO, "%s was killed by signal %d", what, WTERMSIG(status));
}

/* ---- jobs: what a worker thread needs, copied off the loop -------------------------------------- */

void build_job_free(struct build_job *j)
{
	for (size_t i = 0; i < j->n_lowers; i++)
		free(j->lowers[i]);
	free(j->lowers);
	for (size_t i = 0; i < j->n_args; i++)
		free(j->args[i]);
	free(j->args);
	free(j);
}

static int os_codename(char *out, size_t size, struct err *e)
{
	_cleanup_fclose_ FILE *f = fopen("/etc/os-release", "re");
	if (!f)
		return err_set(e, errno, "open /etc/os-release");
	char line[256];
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "VERSION_CODENAME=", 17))
			continue;
		char *v = line + 17;
		v[strcspn(v, "\"\n")] = '\0';
		if (*v == '"')
			v++;
		v[strcspn(v, "\"")] = '\0';
		if (!name_is_valid(v, 32))
			break;
		snprintf(out, size, "%s", v);
		return 0;
	}
	return err_setx(e, ENOENT, "no VERSION_CODENAME in /etc/os-release: cannot pick a Debian release");
}

static const char *host_sources(void)
{
	static const char *const candidates[] = {"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"};
	for (size_t i = 0; i < ARRAY_SIZE(candidates); i++)
		if (access(candidates[i], R_OK) == 0)
			return candidates[i];
	return NULL;
}

/* The layer id of the debian base: recipe, release, the host's sources (their bytes), arch. */
static int debian_layer_id(char id[65], char suite[64], const char **sources, struct err *e)
{
	int r = os_codename(suite, 64, e);
	if (r < 0)
		return r;
	*sources = host_sources();
	if (!*sources)
		return err_setx(e, ENOENT, "no apt sources on the host (/etc/apt/sources.list.d/debian.sources)");
	struct sha256 h;
	sha256_init(&h);
	sha256_update(&h, DEBIAN_RECIPE, sizeof(DEBIAN_RECIPE));
	sha256_update(&h, suite, strlen(suite) + 1);
	_cleanup_close_ int fd = open(*sources, O_RDONLY | O_CLOEXEC);
	char buf[4096];
	ssize_t n;
	while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
		sha256_update(&h, buf, (size_t)n);
	uint8_t d[32];
	sha256_final(&h, d);
	sha256_hex(d, id);
	return 0;
}

/* The end of every build job: a good result in tmp becomes the layer j->layer_id (and its size is
 * measured); a failed one is removed. */
static void commit_or_discard(struct build_job *j, const char *tmp)
{
	if (j->rc != 0) {
		fs_remove_tree(tmp, NULL);
		return;
	}
	j->rc = layer_commit(j->layers_dir, tmp, j->layer_id, &j->err);
	if (j->rc == 0) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s/%s", j->layers_dir, j->layer_id);
		layer_disk_usage(dir, &j->size, NULL);
	}
}

static void work_debian(struct bgjob *job, struct build_job *j)
{
	char suite[64], tmp[PATH_MAX];
	const char *sources;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((j->rc = debian_layer_id(j->layer_id, suite, &sources, &j->err)) < 0)
		return;
	if ((j->rc = layer_tmp_new(j->layers_dir, tmp, sizeof(tmp), &j->err)) < 0)
		return;
	bgjob_log(job, "mmdebstrap --variant=minbase %s from %s", suite, sources);
	const char *argv[] = {"/usr/bin/mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
			      "--skip=output/dev", "--aptopt=Acquire::Languages \"none\"", suite, tmp, sources, NULL};
	int st = run_host(job, argv, "");
	j->rc = status_err(st, "mmdebstrap (install it: apt-get install mmdebstrap)", &j->err);
	if (j->rc == 0 && chmod(tmp, 0755) < 0)
		j->rc = err_set(&j->err, errno, "chmod %s", tmp);
	commit_or_discard(j, tmp);
	if (j->rc == 0) {
		clock_gettime(CLOCK_MONOTONIC, &t1);
		bgjob_log(job, "debian base layer %.12s: %.1f MB in %.1f s", j->layer_id, (double)j->size / 1e6,
			  (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	}
}

/* Copy the image's dpkg status (topmost layer that has one) so that the host's apt-get resolves
 * dependencies against what the image has installed. Layers may come from snapshots: opened
 * beneath each layer dir without following any symlink. */
static int copy_dpkg_status(struct build_job *j, const char *out, struct err *e)
{
	_cleanup_close_ int dst = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (dst < 0)
		return err_set(e, errno, "create %s", out);
	for (size_t i = 0; i < j->n_lowers; i++) {
		_cleanup_close_ int dir = open(j->lowers[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dir < 0)
			continue;
		struct open_how how = {.flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY,
				       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
						  RESOLVE_NO_XDEV};
		_cleanup_close_ int fd = (int)syscall(SYS_openat2, dir, "var/lib/dpkg/status", &how, sizeof(how));
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			return 0; /* a whiteout or something odd: an empty status */
		}
		struct stat st;
		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
			return 0;
		if (st.st_size > STATUS_FILE_MAX)
			return err_setx(e, EFBIG, "the image's dpkg status is over %d MiB", STATUS_FILE_MAX >> 20);
		off_t off = 0;
		while (off < st.st_size) {
			ssize_t n = copy_file_range(fd, &off, dst, NULL, (size_t)(st.st_size - off), 0);
			if (n <= 0)
				return n < 0 ? err_set(e, errno, "copy dpkg status") : 0;
		}
		return 0;
	}
	return 0;
}

/* apt_install: the HOST downloads the .debs (it reaches the configured mirror; the sandbox has no
 * network), into a dir that becomes an extra read-only lower layer of the step's sandbox, where
 * apt-get installs them from local files. */
static int apt_download(struct bgjob *job, struct build_job *j, char *debs_layer, size_t size, struct err *e)
{
	char status[PATH_MAX], archives[PATH_MAX], partial[PATH_MAX];
	snprintf(status, sizeof(status), "%s/status", j->work_dir);
	snprintf(debs_layer, size, "%s/debs", j->work_dir);
	snprintf(archives, sizeof(archives), "%s/.corral-debs", debs_layer);
	snprintf(partial, sizeof(partial), "%s/partial", archives);
	int r = copy_dpkg_status(j, status, e);
	if (r < 0)
		return r;
	if (mkdir(debs_layer, 0755) < 0 || mkdir(archives, 0755) < 0 || mkdir(partial, 0755) < 0)
		return err_set(e, errno, "create %s", archives);
	char o_status[PATH_MAX + 32], o_archives[PATH_MAX + 32];
	snprintf(o_status, sizeof(o_status), "Dir::State::status=%s", status);
	snprintf(o_archives, sizeof(o_archives), "Dir::Cache::archives=%s", archives);
	const char *argv[64 + 24] = {"/usr/bin/apt-get", "install", "--download-only", "-y", "-q",
				     "--no-install-recommends", "-o", o_status, "-o", o_archives, "-o",
				     "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=", "-o",
				     "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1", "--"};
	size_t n = 19;
	for (size_t i = 0; i < j->n_args && n < ARRAY_SIZE(argv) - 1; i++)
		argv[n++] = j->args[i];
	argv[n] = NULL;
	bgjob_log(job, "host: apt-get download of %zu package(s) and their dependencies", j->n_args);
	r = status_err(run_host(job, argv, "host: "), "apt-get --download-only on the host", e);
	rmdir(partial);
	unlink(status);
	char lock[PATH_MAX + 8];
	snprintf(lock, sizeof(lock), "%s/lock", archives);
	unlink(lock);
	return r;
}

/* PID 1 of a step sandbox is the host's busybox (a sealed copy): it sets env and workdir, points
 * output at the log pipe (fd 3), then execs the image's own /bin/sh with the command. */
static const char step_script[] =
	"wd=$1; cmd=$2; shift 2; for kv in \"$@\"; do export \"$kv\"; done; "
	"mkdir -p \"$wd\" && cd \"$wd\" || exit 97; exec </dev/null >&3 2>&3 3>&-; "
	"if [ -x /bin/sh ]; then exec /bin/sh -c \"$cmd\"; fi; exec sh -c \"$cmd\"";

static int run_step_sandbox(struct bgjob *job, struct build_job *j, const char *extra_lower, const char *cmd,
			    const char *upper, struct err *e)
{
	char work[PATH_MAX], root[PATH_MAX], cgname[48];
	snprintf(work, sizeof(work), "%s/work", j->work_dir);
	snprintf(root, sizeof(root), "%s/root", j->work_dir);
	if (mkdir(upper, 0755) < 0 || mkdir(work, 0700) < 0 || mkdir(root, 0755) < 0 ||
	    chown(upper, j->uid_base, j->uid_base) < 0)
		return err_set(e, errno, "create step dirs in %s", j->work_dir);
	const char *lowers[IMAGE_MAX_LAYERS + 1];
	size_t nl = 0;
	if (extra_lower)
		lowers[nl++] = extra_lower;
	for (size_t i = 0; i < j->n_lowers && nl < ARRAY_SIZE(lowers); i++)
		lowers[nl++] = j->lowers[i];
	const char *argv[8 + IMAGE_MAX_ENV + 8] = {"sh", "-c", step_script, "sh", j->workdir[0] ? j->workdir : "/",
						  cmd};
	size_t na = 6;
	for (size_t i = 0; image_default_env[i]; i++)
		argv[na++] = image_default_env[i];
	argv[na++] = "DEBIAN_FRONTEND=noninteractive";
	for (size_t i = 0; i < j->n_env && na < ARRAY_SIZE(argv) - 1; i++)
		argv[na++] = j->args[i];
	argv[na] = NULL;
	id_random(cgname, sizeof(cgname), "build-", 8);
	struct cgroup_set *cg = NULL;
	struct cgroup_limits lim = {.pids = STEP_PIDS_MAX};
	lim.devices = devpolicy_v1_rules(&lim.n_devices);
	int r = cgroup_set_create(j->cg_host, cgname, &lim, &cg, e);
	if (r < 0)
		return r;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		cgroup_set_destroy(cg, NULL);
		return err_set(e, errno, "pipe");
	}
	struct spawn_config cfg = {
		.hostname = "build",
		.lower_dirs = lowers,
		.n_lower = nl,
		.upper_dir = upper,
		.work_dir = work,
		.root_dir = root,
		.uid_base = j->uid_base,
		.uid_count = UID_RANGE,
		.init_fd = j->busybox_fd,
		.control_fd = p[1],
		.cgroups = cg,
		.new_netns = true,
		.init_argv = argv,
		.confine = j->confine,
	};
	struct spawn_result res;
	r = spawn_sandbox(&cfg, &res, e);
	close(p[1]);
	if (r < 0) {
		close(p[0]);
		cgroup_set_destroy(cg, NULL);
		return r;
	}
	struct line_buf lb = {0};
	struct pollfd pfd[2] = {{.fd = p[0], .events = POLLIN}, {.fd = res.pidfd, .events = POLLIN}};
	int waited = 0, status = 0;
	bool exited = false, timed_out = false;
	while (!exited) {
		int n = poll(pfd, 2, 1000);
		if (n < 0 && errno != EINTR)
			break;
		if (pfd[0].fd >= 0 && (pfd[0].revents & (POLLIN | POLLHUP))) {
			char buf[4096];
			ssize_t k = read(p[0], buf, sizeof(buf));
			if (k > 0)
				lines_feed(job, &lb, buf, (size_t)k, "");
			else if (k == 0)
				pfd[0].fd = -1;
		}
		if (pfd[1].revents & POLLIN) {
			siginfo_t si = {0};
			if (waitid(P_PIDFD, (id_t)res.pidfd, &si, WEXITED) == 0) {
				status = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status, 0) : si.si_status;
				exited = true;
			}
		}
		if (n == 0 && (waited += 1000) >= STEP_TIMEOUT_MS && !timed_out) {
			timed_out = true;
			cgroup_set_kill(cg, NULL);
		}
		if (bgjob_cancelled(job) && !timed_out) {
			timed_out = true;
			cgroup_set_kill(cg, NULL);
		}
	}
	lines_feed(job, &lb, "\n", 1, "");
	close(p[0]);
	close(res.pidfd);
	cgroup_set_kill(cg, NULL);
	struct err e2 = {0};
	if (cgroup_set_destroy(cg, &e2) < 0)
		bgjob_log(job, "warning: %s", e2.msg);
	if (timed_out)
		return err_setx(e, ETIMEDOUT, "build step timed out or was cancelled");
	return status_err(status, "the step's command", e);
}

static void work_step(struct bgjob *job, struct build_job *j)
{
	char upper[PATH_MAX], debs[PATH_MAX], tmp[PATH_MAX];
	const char *extra = NULL;
	_cleanup_free_ char *cmd = NULL;
	if (mkdir(j->work_dir, 0711) < 0) {
		j->rc = err_set(&j->err, errno, "create %s", j->work_dir);
		return;
	}
	snprintf(upper, sizeof(upper), "%s/upper", j->work_dir);
	if (j->kind == JOB_COPY) {
		j->rc = layer_tmp_new(j->layers_dir, tmp, sizeof(tmp), &j->err);
		struct tarx_limits lim = {.max_total = COPY_LIMIT_TOTAL, .max_file = COPY_LIMIT_TOTAL, .max_entries = 100000};
		struct tarx_stats st;
		if (j->rc == 0)
			j->rc = tarx_extract_mem(j->tar, j->tar_len, tmp, j->dest, false, &lim, &st, &j->err);
		if (j->rc == 0)
			bgjob_log(job, "copied %llu entries, %llu bytes to /%s", (unsigned long long)st.entries,
				  (unsigned long long)st.bytes, j->dest);
		goto commit;
	}
	if (j->kind == JOB_APT) {
		if ((j->rc = apt_download(job, j, debs, sizeof(debs), &j->err)) < 0)
			goto out;
		extra = debs;
		cmd = strdup("set -e; set -- /.corral-debs/*.deb; if [ -e \"$1\" ]; then "
			     "apt-get install -y -q --no-install-recommends \"$@\"; else echo nothing to install; fi; "
			     "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb");
	} else {
		cmd = strdup(j->args[j->n_args - 1]);
	}
	if (!cmd) {
		j->rc = err_set(&j->err, ENOMEM, "step");
		goto out;
	}
	if ((j->rc = run_step_sandbox(job, j, extra, cmd, upper, &j->err)) < 0)
		goto out;
	if ((j->rc = layer_tmp_new(j->layers_dir, tmp, sizeof(tmp), &j->err)) < 0)
		goto out;
	struct layer_copy_stats cs;
	j->rc = layer_copy_upper(upper, tmp, j->uid_base, UID_RANGE, &cs, &j->err);
	if (j->rc == 0) {
		char debs_copy[PATH_MAX];
		snprintf(debs_copy, sizeof(debs_copy), "%s/.corral-debs", tmp);
		fs_remove_tree(debs_copy, NULL); /* only there if apt touched it; never part of the image */
		bgjob_log(job, "layer: %llu entries, %llu bytes", (unsigned long long)cs.entries,
			  (unsigned long long)cs.bytes);
	}
commit:
	commit_or_discard(j, tmp);
out:
	fs_remove_tree(j->work_dir, NULL);
}

void build_worker_run(struct bgjob *job, void *data)
{
	struct build_job *j = data;
	if (j->kind == JOB_DEBIAN)
		work_debian(job, j);
	else
		work_step(job, j);
}

