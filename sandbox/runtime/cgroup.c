/* Per-sandbox cgroups on pure v2, hybrid (controllers on v1 + an empty cgroup2) and v1 hosts.
 *
 * A set is a list of unique directories, one per hierarchy used (the v2 cgroup first when there is
 * one), plus, for each controller we limit, the index of the directory that holds it. That covers
 * co-mounted v1 controllers (memory and pids on one hierarchy) without special cases. */
#include "runtime/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/cleanup.h"

#define CGROUP_PATH_MAX 512
#define CGROUP_NAME_MAX 64
#define CGROUP_MAX_DIRS 5          /* v2 + v1 memory, pids, cpu, devices */
#define CGROUP_CPU_PERIOD_US 100000
#define CGROUP_RMDIR_TIMEOUT_NS 1000000000LL /* a killed task can pin its cgroup briefly */
#define CGROUP_KILL_ROUNDS 100     /* v1 kill loop: a fork bomb is bounded by pids.max */

struct cgroup_dir {
	int fd; /* O_DIRECTORY of the cgroup; -1 if it does not exist (open of a partial set) */
	char path[CGROUP_PATH_MAX];
};

struct cgroup_set {
	struct cgroup_dir dirs[CGROUP_MAX_DIRS];
	size_t n_dirs;
	int v2;                  /* index of the v2 cgroup in dirs, or -1 */
	int memory, pids, cpu;   /* index of the dir holding each controller, or -1 */
	int devices;             /* index of the v1 devices cgroup, or -1 (v2 uses the BPF policy) */
	char v2_rel[CGROUP_PATH_MAX]; /* "/<parent>/<name>": the v2 path as /proc/PID/cgroup shows it */
};

const char *cgroup_mode_name(enum cgroup_mode mode)
{
	switch (mode) {
	case CGROUP_MODE_NONE: return "none";
	case CGROUP_MODE_V1: return "v1";
	case CGROUP_MODE_HYBRID: return "hybrid";
	case CGROUP_MODE_V2: return "v2";
	}
	return "unknown";
}

/* Names become path components: a strict alphabet, no "." or "..", bounded length. */
static int cgroup_check_name(const char *what, const char *name, struct err *e)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n >= CGROUP_NAME_MAX)
		return err_setx(e, EINVAL, "invalid cgroup %s name: length must be 1..%d", what, CGROUP_NAME_MAX - 1);
	if (strstr(name, "..") || strcmp(name, ".") == 0)
		return err_setx(e, EINVAL, "invalid cgroup %s name \"%s\": contains \"..\" or is \".\"", what, name);
	for (const char *p = name; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return err_setx(e, EINVAL, "invalid cgroup %s name \"%s\": only [A-Za-z0-9._-] allowed", what,
					name);
	}
	return 0;
}

/* Write a whole value to a control file. Returns 0 or -errno. */
static int cgroup_write(int dirfd, const char *file, const char *val)
{
	_cleanup_close_ int fd = openat(dirfd, file, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = strlen(val);
	ssize_t n = write(fd, val, len);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

/* Read a control file into buf (NUL-terminated). Returns the length or -errno. */
static ssize_t cgroup_read(int dirfd, const char *file, char *buf, size_t cap)
{
	_cleanup_close_ int fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = 0;
	while (len + 1 < cap) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

static bool cgroup_has_file(int dirfd, const char *file)
{
	return faccessat(dirfd, file, F_OK, 0) == 0;
}

/* True if the space-separated list contains word. */
static bool cgroup_word_in(const char *list, const char *word)
{
	size_t wl = strlen(word);
	for (const char *p = list; (p = strstr(p, word)); p += wl) {
		bool start = p == list || p[-1] == ' ' || p[-1] == ',';
		char end = p[wl];
		if (start && (end == '\0' || end == ' ' || end == ',' || end == '\n'))
			return true;
	}
	return false;
}

/* --- host probe ------------------------------------------------------------------------ */

/* Fill the mount points from /proc/self/mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...]
 * - FSTYPE SOURCE SUPEROPTS". The first mount of each hierarchy wins (later ones are bind mounts). */
static int cgroup_probe_mounts(struct cgroup_host *h, struct err *e)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return err_set(e, errno, "open /proc/self/mountinfo");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		char mnt[256], fstype[32];
		const char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %*s %255s", mnt) != 1 || sscanf(sep + 3, "%31s", fstype) != 1)
			continue;
		if (strchr(mnt, '\\'))
			continue; /* escaped characters: never a cgroup mount we would create under */
		const char *super = strrchr(sep, ' ');
		if (!super)
			continue;
		super++;
		if (strcmp(fstype, "cgroup2") == 0) {
			if (!h->v2_root[0])
				snprintf(h->v2_root, sizeof(h->v2_root), "%s", mnt);
		} else if (strcmp(fstype, "cgroup") == 0) {
			if (!h->v1_memory[0] && cgroup_word_in(super, "memory"))
				snprintf(h->v1_memory, sizeof(h->v1_memory), "%s", mnt);
			if (!h->v1_pids[0] && cgroup_word_in(super, "pids"))
				snprintf(h->v1_pids, sizeof(h->v1_pids), "%s", mnt);
			if (!h->v1_cpu[0] && cgroup_word_in(super, "cpu"))
				snprintf(h->v1_cpu, sizeof(h->v1_cpu), "%s", mnt);
			if (!h->v1_devices[0] && cgroup_word_in(super, "devices"))
				snprintf(h->v1_devices, sizeof(h->v1_devices), "%s", mnt);
		}
	}
	return 0;
}

static int cgroup_mkdir(const char *path, struct err *e)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return err_set(e, errno, "create cgroup %s", path);
	return 0;
}

/* On v2, a child cgroup only gets the controllers its parent enables in cgroup.subtree_control.
 * Enabling fails where the parent has processes of its own (a container's non-root "root"), so this
 * is best-effort and the result is read back. */
static int cgroup_v2_init(struct cgroup_host *h, struct err *e)
{
	static const char *const ctls[] = {"memory", "pids", "cpu"};
	char path[CGROUP_PATH_MAX], buf[512];
	_cleanup_close_ int root = open(h->v2_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return err_set(e, errno, "open cgroup2 root %s", h->v2_root);
	if (cgroup_read(root, "cgroup.controllers", buf, sizeof(buf)) < 0)
		buf[0] = '\0';
	bool avail[ARRAY_SIZE(ctls)];
	for (size_t i = 0; i < ARRAY_SIZE(ctls); i++) {
		char plus[16];
		avail[i] = cgroup_word_in(buf, ctls[i]);
		snprintf(plus, sizeof(plus), "+%s", ctls[i]);
		if (avail[i])
			(void)cgroup_write(root, "cgroup.subtree_control", plus);
	}
	snprintf(path, sizeof(path), "%s/%s", h->v2_root, h->parent);
	int r = cgroup_mkdir(path, e);
	if (r < 0)
		return r;
	_cleanup_close_ int parent = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (parent < 0)
		return err_set(e, errno, "open cgroup %s", path);
	for (size_t i = 0; i < ARRAY_SIZE(ctls); i++) {
		char plus[16];
		snprintf(plus, sizeof(plus), "+%s", ctls[i]);
		if (avail[i])
			(void)cgroup_write(parent, "cgroup.subtree_control", plus);
	}
	if (cgroup_read(parent, "cgroup.subtree_control", buf, sizeof(buf)) < 0)
		buf[0] = '\0';
	h->v2_memory = cgroup_word_in(buf, "memory");
	h->v2_pids = cgroup_word_in(buf, "pids");
	h->v2_cpu = cgroup_word_in(buf, "cpu");
	return 0;
}

int cgroup_host_init(const char *parent, struct cgroup_host *ret, struct err *e)
{
	struct cgroup_host h = {0};
	int r = cgroup_check_name("parent", parent, e);
	if (r < 0)
		return r;
	snprintf(h.parent, sizeof(h.parent), "%s", parent);
	r = cgroup_probe_mounts(&h, e);
	if (r < 0)
		return r;
	bool v1 = h.v1_memory[0] || h.v1_pids[0] || h.v1_cpu[0];
	h.mode = h.v2_root[0] ? (v1 ? CGROUP_MODE_HYBRID : CGROUP_MODE_V2) : (v1 ? CGROUP_MODE_V1 : CGROUP_MODE_NONE);
	if (h.v2_root[0]) {
		r = cgroup_v2_init(&h, e);
		if (r < 0)
			return r;
	}
	const char *v1_roots[] = {h.v1_memory, h.v1_pids, h.v1_cpu, h.v1_devices};
	for (size_t i = 0; i < ARRAY_SIZE(v1_roots); i++) {
		char path[CGROUP_PATH_MAX];
		if (!v1_roots[i][0])
			continue;
		snprintf(path, sizeof(path), "%s/%s", v1_roots[i], h.parent);
		r = cgroup_mkdir(path, e); /* co-mounted controllers: the second mkdir sees EEXIST */
		if (r < 0)
			return r;
	}
	*ret = h;
	return 0;
}

/* --- sets -------------------------------------------------------------------------------- */

/* Index of the dir for a hierarchy root, adding it if new. */
static int cgroup_set_add_dir(struct cgroup_set *s, const struct cgroup_host *h, const char *root, const char *name)
{
	char path[CGROUP_PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s/%s", root, h->parent, name);
	for (size_t i = 0; i < s->n_dirs; i++)
		if (strcmp(s->dirs[i].path, path) == 0)
			return (int)i;
	struct cgroup_dir *d = &s->dirs[s->n_dirs];
	d->fd = -1;
	snprintf(d->path, sizeof(d->path), "%s", path);
	return (int)s->n_dirs++;
}

/* Lay out the set's dirs for host h without touching the filesystem. */
static int cgroup_set_layout(const struct cgroup_host *h, const char *name, struct cgroup_set **ret, struct err *e)
{
	int r = cgroup_check_name("sandbox", name, e);
	if (r < 0)
		return r;
	r = cgroup_check_name("parent", h->parent, e);
	if (r < 0)
		return r;
	if (h->mode == CGROUP_MODE_NONE)
		return err_setx(e, EOPNOTSUPP, "create cgroups for %s: no cgroup hierarchy on this host", name);
	struct cgroup_set *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(e, ENOMEM, "allocate cgroup set");
	s->v2 = s->memory = s->pids = s->cpu = s->devices = -1;
	if (h->v2_root[0]) {
		s->v2 = cgroup_set_add_dir(s, h, h->v2_root, name);
		snprintf(s->v2_rel, sizeof(s->v2_rel), "/%s/%s", h->parent, name);
	}
	s->memory = h->v1_memory[0] ? cgroup_set_add_dir(s, h, h->v1_memory, name) : h->v2_memory ? s->v2 : -1;
	s->pids = h->v1_pids[0] ? cgroup_set_add_dir(s, h, h->v1_pids, name) : h->v2_pids ? s->v2 : -1;
	s->cpu = h->v1_cpu[0] ? cgroup_set_add_dir(s, h, h->v1_cpu, name) : h->v2_cpu ? s->v2 : -1;
	s->devices = h->v1_devices[0] ? cgroup_set_add_dir(s, h, h->v1_devices, name) : -1;
	*ret = s;
	return 0;
}

static int cgroup_set_apply_memory(struct cgroup_set *s, uint64_t bytes, struct err *e)
{
	char val[32];
	const struct cgroup_dir *d = &s->dirs[s->memory];
	int r;
	snprintf(val, sizeof(val), "%llu", (unsigned long long)bytes);
	if (s->memory != s->v2) {
		/* v1: memsw (memory+swap) must be >= the memory limit, so it is written second. Without
		 * swap accounting, swappiness 0 keeps the cgroup's anonymous memory out of swap. */
		r = cgroup_write(d->fd, "memory.limit_in_bytes", val);
		if (r < 0)
			return err_set(e, r, "set memory.limit_in_bytes of cgroup %s", d->path);
		if (cgroup_has_file(d->fd, "memory.memsw.limit_in_bytes")) {
			r = cgroup_write(d->fd, "memory.memsw.limit_in_bytes", val);
			if (r < 0)
				return err_set(e, r, "set memory.memsw.limit_in_bytes of cgroup %s", d->path);
		} else {
			(void)cgroup_write(d->fd, "memory.swappiness", "0");
		}
		return 0;
	}
	r = cgroup_write(d->fd, "memory.max", val);
	if (r < 0)
		return err_set(e, r, "set memory.max of cgroup %s", d->path);
	if (cgroup_has_file(d->fd, "memory.swap.max")) {
		r = cgroup_write(d->fd, "memory.swap.max", "0");
		if (r < 0)
			return err_set(e, r, "set memory.swap.max of cgroup %s", d->path);
	}
	return 0;
}

static int cgroup_set_apply_cpu(struct cgroup_set *s, double cpus, struct err *e)
{
	char val[64];
	const struct cgroup_dir *d = &s->dirs[s->cpu];
	double q = cpus * CGROUP_CPU_PERIOD_US;
	unsigned long long quota = q < 1000 ? 1000 : q > 1e12 ? 1000000000000ULL : (unsigned long long)(q + 0.5);
	int r;
	if (s->cpu != s->v2) {
		snprintf(val, sizeof(val), "%d", CGROUP_CPU_PERIOD_US);
		r = cgroup_write(d->fd, "cpu.cfs_period_us", val);
		if (r < 0)
			return err_set(e, r, "set cpu.cfs_period_us of cgroup %s", d->path);
		snprintf(val, sizeof(val), "%llu", quota);
		r = cgroup_write(d->fd, "cpu.cfs_quota_us", val);
		if (r < 0)
			return err_set(e, r, "set cpu.cfs_quota_us of cgroup %s", d->path);
		return 0;
	}
	snprintf(val, sizeof(val), "%llu %d", quota, CGROUP_CPU_PERIOD_US);
	r = cgroup_write(d->fd, "cpu.max", val);
	if (r < 0)
		return err_set(e, r, "set cpu.max of cgroup %s", d->path);
	return 0;
}

/* v1 devices: deny everything, then allow the list. A new cgroup inherits its parent's rules (here
 * "a *:* rwm"), so the deny must come first; the sandbox has no process yet, so there is no window. */
static int cgroup_set_apply_devices(struct cgroup_set *s, const struct cgroup_device *devs, size_t n, struct err *e)
{
	const struct cgroup_dir *d = &s->dirs[s->devices];
	int r = cgroup_write(d->fd, "devices.deny", "a");
	if (r < 0)
		return err_set(e, r, "deny all devices in cgroup %s", d->path);
	for (size_t i = 0; i < n; i++) {
		char rule[64], minor[16];
		if (devs[i].type != 'c' && devs[i].type != 'b')
			return err_setx(e, EINVAL, "device rule type '%c' is neither 'c' nor 'b'", devs[i].type);
		if (devs[i].minor == CGROUP_DEV_ANY)
			snprintf(minor, sizeof(minor), "*");
		else
			snprintf(minor, sizeof(minor), "%u", devs[i].minor);
		snprintf(rule, sizeof(rule), "%c %u:%s %s", devs[i].type, devs[i].major, minor, devs[i].access);
		r = cgroup_write(d->fd, "devices.allow", rule);
		if (r < 0)
			return err_set(e, r, "allow \"%s\" in cgroup %s", rule, d->path);
	}
	return 0;
}

static int cgroup_set_apply(struct cgroup_set *s, const struct cgroup_limits *l, struct err *e)
{
	int r;
	if (!l)
		return 0;
	if (l->memory_bytes) {
		if (s->memory < 0)
			return err_setx(e, EOPNOTSUPP, "memory limit: no usable memory controller on this host");
		r = cgroup_set_apply_memory(s, l->memory_bytes, e);
		if (r < 0)
			return r;
	}
	if (l->pids) {
		char val[16];
		if (s->pids < 0)
			return err_setx(e, EOPNOTSUPP, "pids limit: no usable pids controller on this host");
		snprintf(val, sizeof(val), "%u", l->pids);
		r = cgroup_write(s->dirs[s->pids].fd, "pids.max", val);
		if (r < 0)
			return err_set(e, r, "set pids.max of cgroup %s", s->dirs[s->pids].path);
	}
	if (l->cpus < 0)
		return err_setx(e, EINVAL, "cpu limit: %g cores is negative", l->cpus);
	if (l->cpus > 0) {
		if (s->cpu < 0)
			return err_setx(e, EOPNOTSUPP, "cpu limit: no usable cpu controller on this host");
		r = cgroup_set_apply_cpu(s, l->cpus, e);
		if (r < 0)
			return r;
	}
	if (l->devices && s->devices >= 0) {
		r = cgroup_set_apply_devices(s, l->devices, l->n_devices, e);
		if (r < 0)
			return r;
	}
	return 0;
}

int cgroup_set_create(const struct cgroup_host *host, const char *name, const struct cgroup_limits *limits,
		      struct cgroup_set **ret, struct err *e)
{
	struct cgroup_set *s = NULL;
	int r = cgroup_set_layout(host, name, &s, e);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->n_dirs; i++) {
		struct cgroup_dir *d = &s->dirs[i];
		if (mkdir(d->path, 0755) < 0) {
			r = err_set(e, errno, "create cgroup %s", d->path);
			goto undo_dirs;
		}
		d->fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d->fd < 0) {
			r = err_set(e, errno, "open cgroup %s", d->path);
			rmdir(d->path);
			goto undo_dirs;
		}
	}
	r = cgroup_set_apply(s, limits, e);
	if (r < 0)
		goto undo_dirs;
	*ret = s;
	return 0;
undo_dirs:
	(void)cgroup_set_destroy(s, NULL); /* removes only the dirs that were opened */
	return r;
}

int cgroup_set_open(const struct cgroup_host *host, const char *name, struct cgroup_set **ret, struct err *e)
{
	struct cgroup_set *s = NULL;
	int r = cgroup_set_layout(host, name, &s, e);
	if (r < 0)
		return r;
	size_t found = 0;
	for (size_t i = 0; i < s->n_dirs; i++) {
		struct cgroup_dir *d = &s->dirs[i];
		d->fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d->fd >= 0)
			found++;
		else if (errno != ENOENT) {
			r = err_set(e, errno, "open cgroup %s", d->path);
			cgroup_set_free(s);
			return r;
		}
	}
	if (found == 0) {
		cgroup_set_free(s);
		return err_setx(e, ENOENT, "open cgroups of %s: none exist", name);
	}
	*ret = s;
	return 0;
}

int cgroup_set_v2_fd(const struct cgroup_set *set)
{
	return set && set->v2 >= 0 ? set->dirs[set->v2].fd : -1;
}

bool cgroup_set_clone_into_is_enough(const struct cgroup_set *set)
{
	return set && set->v2 >= 0 && set->n_dirs == 1;
}

/* Is pid already in the v2 cgroup? Reading /proc/PID/cgroup is lock-free, while a cgroup.procs write
 * takes the global threadgroup lock even when nothing moves. Assumes the daemon has no cgroup
 * namespace of its own, so the "0::" path is relative to the cgroup2 mount. */
static bool cgroup_pid_in_v2(const struct cgroup_set *s, pid_t pid)
{
	char file[64], buf[4096];
	snprintf(file, sizeof(file), "/proc/%d/cgroup", (int)pid);
	_cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	const char *line = strstr(buf, "0::");
	if (!line || (line != buf && line[-1] != '\n'))
		return false;
	size_t len = strlen(s->v2_rel);
	return strncmp(line + 3, s->v2_rel, len) == 0 && (line[3 + len] == '\n' || line[3 + len] == '\0');
}

int cgroup_set_attach(struct cgroup_set *set, pid_t pid, struct err *e)
{
	char val[16];
	snprintf(val, sizeof(val), "%d", (int)pid);
	for (size_t i = 0; i < set->n_dirs; i++) {
		const struct cgroup_dir *d = &set->dirs[i];
		if (d->fd < 0)
			continue;
		if ((int)i == set->v2 && cgroup_pid_in_v2(set, pid))
			continue; /* already placed by clone3(CLONE_INTO_CGROUP) */
		int r = cgroup_write(d->fd, "cgroup.procs", val);
		if (r < 0)
			return err_set(e, r, "move pid %d into cgroup %s", (int)pid, d->path);
	}
	return 0;
}

/* Read cgroup.procs of one dir: the count, and optionally SIGKILL each pid. */
static int cgroup_dir_procs(const struct cgroup_dir *d, bool kill_them)
{
	char buf[16384];
	ssize_t n = cgroup_read(d->fd, "cgroup.procs", buf, sizeof(buf));
	if (n < 0)
		return (int)n;
	int count = 0;
	for (char *p = buf; *p;) {
		char *end;
		long pid = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pid > 0) {
			count++;
			if (kill_them)
				(void)kill((pid_t)pid, SIGKILL);
		}
		p = end;
		while (*p == '\n')
			p++;
	}
	/* A full buffer means there may be more: report at least one more so callers keep going. */
	return (size_t)n == sizeof(buf) - 1 ? count + 1 : count;
}

int cgroup_set_kill(struct cgroup_set *set, struct err *e)
{
	if (set->v2 >= 0 && set->dirs[set->v2].fd >= 0 && cgroup_has_file(set->dirs[set->v2].fd, "cgroup.kill")) {
		const struct cgroup_dir *d = &set->dirs[set->v2];
		int r = cgroup_write(d->fd, "cgroup.kill", "1");
		if (r < 0)
			return err_set(e, r, "kill processes of cgroup %s", d->path);
		return 0;
	}
	/* No cgroup.kill: signal what is listed until the lists are empty. New processes can be forked
	 * between reading and killing, so repeat, boundedly. SIGKILLed processes leave the list only
	 * once they are gone, so an unchanged non-empty list is normal for a few rounds. */
	for (int round = 0; round < CGROUP_KILL_ROUNDS; round++) {
		int total = 0;
		for (size_t i = 0; i < set->n_dirs; i++) {
			if (set->dirs[i].fd < 0)
				continue;
			int n = cgroup_dir_procs(&set->dirs[i], true);
			if (n < 0)
				return err_set(e, n, "list processes of cgroup %s", set->dirs[i].path);
			total += n;
		}
		if (total == 0)
			return 0;
		nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	}
	return err_setx(e, EBUSY, "kill processes of cgroup %s: still not empty after %d rounds",
			set->n_dirs ? set->dirs[0].path : "?", CGROUP_KILL_ROUNDS);
}

/* Value of "key N" in a flat keyed file such as memory.events or memory.oom_control. */
static long long cgroup_read_key(int dirfd, const char *file, const char *key)
{
	char buf[1024];
	if (cgroup_read(dirfd, file, buf, sizeof(buf)) < 0)
		return -1;
	size_t kl = strlen(key);
	for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
			return strtoll(p + kl + 1, NULL, 10);
	return -1;
}

bool cgroup_set_oom_killed(const struct cgroup_set *set)
{
	return cgroup_set_oom_kill_count(set) > 0;
}

uint64_t cgroup_set_oom_kill_count(const struct cgroup_set *set)
{
	if (!set || set->memory < 0 || set->dirs[set->memory].fd < 0)
		return 0;
	int fd = set->dirs[set->memory].fd;
	long long n = set->memory == set->v2 ? cgroup_read_key(fd, "memory.events", "oom_kill")
					     : cgroup_read_key(fd, "memory.oom_control", "oom_kill");
	return n > 0 ? (uint64_t)n : 0;
}

const char *cgroup_set_devices_path(const struct cgroup_set *set)
{
	return set && set->devices >= 0 ? set->dirs[set->devices].path : NULL;
}

int cgroup_set_count_procs(const struct cgroup_set *set)
{
	int most = 0;
	for (size_t i = 0; i < set->n_dirs; i++) {
		if (set->dirs[i].fd < 0)
			continue;
		int n = cgroup_dir_procs(&set->dirs[i], false);
		if (n < 0)
			return n;
		if (n > most)
			most = n;
	}
	return most;
}

static long long cgroup_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cgroup_set_destroy_within(struct cgroup_set *set, long long timeout_ns, struct err *e)
{
	if (!set)
		return 0;
	int ret = 0;
	long long deadline = cgroup_now_ns() + timeout_ns;
	for (size_t i = 0; i < set->n_dirs; i++) {
		struct cgroup_dir *d = &set->dirs[i];
		if (d->fd < 0)
			continue; /* never created or opened: not ours to remove */
		close(d->fd);
		d->fd = -1;
		/* EBUSY: a task that was just killed still counts until it is fully released. */
		while (rmdir(d->path) < 0) {
			if (errno == ENOENT)
				break;
			if (errno != EBUSY || cgroup_now_ns() >= deadline) {
				if (ret == 0)
					ret = err_set(e, errno, "remove cgroup %s", d->path);
				break;
			}
			nanosleep(&(struct timespec){.tv_nsec = 2000000}, NULL);
		}
	}
	free(set);
	return ret;
}

int cgroup_set_destroy(struct cgroup_set *set, struct err *e)
{
	return cgroup_set_destroy_within(set, CGROUP_RMDIR_TIMEOUT_NS, e);
}

int cgroup_set_destroy_nowait(struct cgroup_set *set, struct err *e)
{
	return cgroup_set_destroy_within(set, 0, e);
}

void cgroup_set_free(struct cgroup_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n_dirs; i++)
		if (set->dirs[i].fd >= 0)
			close(set->dirs[i].fd);
	free(set);
}

/* --- freezer ------------------------------------------------------------------------------ */

#define CGROUP_FREEZE_TIMEOUT_NS 1000000000LL

int cgroup_set_freeze(struct cgroup_set *set, bool frozen, struct err *e)
{
	if (set->v2 < 0 || set->dirs[set->v2].fd < 0 || !cgroup_has_file(set->dirs[set->v2].fd, "cgroup.freeze"))
		return err_setx(e, EOPNOTSUPP, "freeze: no v2 cgroup with cgroup.freeze for this sandbox");
	const struct cgroup_dir *d = &set->dirs[set->v2];
	int r = cgroup_write(d->fd, "cgroup.freeze", frozen ? "1" : "0");
	if (r < 0)
		return err_set(e, -r, "%s cgroup %s", frozen ? "freeze" : "thaw", d->path);
	if (!frozen)
		return 0;
	/* Freezing is asynchronous: cgroup.events says "frozen 1" once every task has stopped. */
	long long deadline = cgroup_now_ns() + CGROUP_FREEZE_TIMEOUT_NS;
	while (cgroup_read_key(d->fd, "cgroup.events", "frozen") != 1) {
		if (cgroup_now_ns() > deadline) {
			cgroup_write(d->fd, "cgroup.freeze", "0");
			return err_setx(e, ETIMEDOUT, "freeze cgroup %s: not frozen after 1 s", d->path);
		}
		nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
	}
	return 0;
}
