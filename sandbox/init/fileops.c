/* corral-init: the filesystem API, inside the sandbox (see init/fileops.h). */
#include "init/fileops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "init/park.h"
#include "util/cleanup.h"

/* "..", absolute symlinks and /proc/<pid>/root resolve inside the root; magic links fail. */
#define IN_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
#define REMOVE_MAX_DEPTH 512 /* a recursive removal refuses deeper trees (fds and stack stay bounded) */
#define TMP_PREFIX ".corral-write-"

struct fileops_write {
	uint32_t id;
	int dirfd; /* O_PATH fd of the target's directory */
	int fd;    /* init's copy of the temp file (the daemon writes through its own) */
	mode_t mode;
	char tmp[sizeof(TMP_PREFIX) + 16];
	char name[NAME_MAX + 1];
};

/* One request being served: where its answer goes. */
struct req {
	struct fileops *fo;
	uint32_t id;
	fileops_send_fn send;
	void *ctx;
	const char *path;
};

static void fd_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ---- replies ------------------------------------------------------------------------------- */

static void __attribute__((format(printf, 6, 7)))
reply(const struct req *rq, int error, const struct initproto_file_stat *st, const char *target, int fd,
      const char *fmt, ...)
{
	struct initproto_hdr hdr = {.type = INITPROTO_FILE_RESULT, .handle = rq->id};
	struct initproto_file_result r = {.error = error};
	size_t tl = target ? strlen(target) : 0;
	if (st) {
		r.has_stat = 1;
		r.st = *st;
		r.st.name_len = 0;
		r.st.target_len = (uint16_t)tl;
	} else {
		tl = 0;
	}
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r.msg, sizeof(r.msg), fmt, ap);
		va_end(ap);
	}
	char *p = rq->fo->buf;
	memcpy(p, &hdr, sizeof(hdr));
	memcpy(p + sizeof(hdr), &r, sizeof(r));
	memcpy(p + sizeof(hdr) + sizeof(r), tl ? target : "", tl + 1);
	rq->send(rq->ctx, p, sizeof(hdr) + sizeof(r) + tl + 1, fd);
}

/* The typed error of a failed call on rq->path: the message says what, on which path, why. */
static void reply_errno(const struct req *rq, int error, const char *what)
{
	switch (error) {
	case ENOENT: return reply(rq, error, NULL, NULL, -1, "no such file or directory: %s", rq->path);
	case ENOTDIR: return reply(rq, error, NULL, NULL, -1, "not a directory: a component of %s", rq->path);
	case EISDIR: return reply(rq, error, NULL, NULL, -1, "is a directory: %s", rq->path);
	case EEXIST: return reply(rq, error, NULL, NULL, -1, "already exists: %s", rq->path);
	case EACCES:
	case EPERM: return reply(rq, error, NULL, NULL, -1, "permission denied: %s %s", what, rq->path);
	case ENOTEMPTY: return reply(rq, error, NULL, NULL, -1, "directory not empty: %s (remove it recursively)", rq->path);
	case ENOSPC:
	case EDQUOT: return reply(rq, error, NULL, NULL, -1, "no space left in the sandbox: %s %s", what, rq->path);
	case ELOOP: return reply(rq, error, NULL, NULL, -1, "too many symlinks, or a /proc magic link, in %s", rq->path);
	case ENAMETOOLONG: return reply(rq, error, NULL, NULL, -1, "name too long: %s", rq->path);
	default: return reply(rq, error, NULL, NULL, -1, "%s %s: %s", what, rq->path, strerror(error));
	}
}

static void fill_stat(const struct stat *s, struct initproto_file_stat *st)
{
	*st = (struct initproto_file_stat){0};
	st->type = S_ISREG(s->st_mode)   ? INITPROTO_FTYPE_REGULAR
		   : S_ISDIR(s->st_mode) ? INITPROTO_FTYPE_DIRECTORY
		   : S_ISLNK(s->st_mode) ? INITPROTO_FTYPE_SYMLINK
					 : INITPROTO_FTYPE_OTHER;
	st->mode = s->st_mode & 07777;
	st->size = s->st_size > 0 ? (uint64_t)s->st_size : 0;
	st->mtime_ms = (int64_t)s->st_mtim.tv_sec * 1000 + s->st_mtim.tv_nsec / 1000000;
	st->uid = s->st_uid;
	st->gid = s->st_gid;
}

/* ---- path resolution ---------------------------------------------------------------------- */

static int openat2_(int dirfd, const char *path, uint64_t flags, mode_t mode, uint64_t resolve)
{
	struct open_how how = {.flags = flags | O_CLOEXEC, .mode = mode, .resolve = resolve};
	int fd;
	do
		fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
	while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : fd;
}

static int open_in_root(const struct fileops *fo, const char *path, uint64_t flags)
{
	return openat2_(fo->root, path, flags, 0, IN_ROOT);
}

/* Split an absolute path into its directory and last component (trailing slashes dropped; "/"
 * has an empty last component). A last component of "." or ".." names no entry: -EINVAL. */
static int split(const char *path, char dir[PATH_MAX], char base[NAME_MAX + 1])
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	const char *slash = memrchr(path, '/', n);
	if (!slash || n >= PATH_MAX)
		return -EINVAL;
	size_t bl = n - (size_t)(slash + 1 - path);
	if (bl > NAME_MAX)
		return -ENAMETOOLONG;
	memcpy(base, slash + 1, bl);
	base[bl] = '\0';
	if (!strcmp(base, ".") || !strcmp(base, ".."))
		return -EINVAL;
	size_t dl = slash == path ? 1 : (size_t)(slash - path);
	memcpy(dir, path, dl);
	dir[dl] = '\0';
	return 0;
}

/* Open the directory holding path's last component, as O_PATH. */
static int open_parent(const struct req *rq, char base[NAME_MAX + 1])
{
	char dir[PATH_MAX];
	int r = split(rq->path, dir, base);
	if (r < 0)
		return r;
	return open_in_root(rq->fo, dir, O_PATH | O_DIRECTORY);
}

static bool path_error(const struct req *rq, int r, const char *what)
{
	if (r >= 0)
		return false;
	if (r == -EINVAL)
		reply(rq, EINVAL, NULL, NULL, -1, "invalid path %s: it must name an entry (not end in . or ..)", rq->path);
	else
		reply_errno(rq, -r, what);
	return true;
}

/* mkdir -p inside the root: every prefix is looked up from the root (RESOLVE_IN_ROOT), so a
 * symlink among the components is followed but never leaves the sandbox. */
static int mkdir_parents(const struct fileops *fo, const char *path, mode_t mode)
{
	char prefix[PATH_MAX], dir[PATH_MAX], base[NAME_MAX + 1];
	size_t n = strlen(path);
	if (n >= PATH_MAX)
		return -ENAMETOOLONG;
	for (size_t i = 1; i <= n; i++) {
		if (i < n && path[i] != '/')
			continue;
		if (path[i - 1] == '/')
			continue; /* "//" */
		memcpy(prefix, path, i);
		prefix[i] = '\0';
		_cleanup_(fd_closep) int fd = open_in_root(fo, prefix, O_PATH | O_DIRECTORY);
		if (fd >= 0)
			continue;
		if (fd != -ENOENT)
			return fd;
		int r = split(prefix, dir, base);
		if (r < 0)
			return r;
		_cleanup_(fd_closep) int parent = open_in_root(fo, dir, O_PATH | O_DIRECTORY);
		if (parent < 0)
			return parent;
		if (mkdirat(parent, base, mode) < 0 && errno != EEXIST)
			return -errno;
		/* mkdir applies init's umask; set the mode asked for (on what is there now). */
		_cleanup_(fd_closep) int made = openat(parent, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (made < 0)
			return -errno;
		fchmod(made, mode);
	}
	return 0;
}

/* ---- requests ----------------------------------------------------------------------------- */

static void op_open_read(struct req *rq)
{
	char base[NAME_MAX + 1];
	_cleanup_(fd_closep) int parent = open_parent(rq, base);
	if (path_error(rq, parent, "open"))
		return;
	if (!base[0])
		return reply_errno(rq, EISDIR, "read");
	struct stat s;
	if (fstatat(parent, base, &s, AT_SYMLINK_NOFOLLOW) < 0)
		return reply_errno(rq, errno, "stat");
	if (S_ISLNK(s.st_mode))
		return reply(rq, ELOOP, NULL, NULL, -1, "is a symlink (a final symlink is not followed): %s", rq->path);
	if (S_ISDIR(s.st_mode))
		return reply_errno(rq, EISDIR, "read");
	if (!S_ISREG(s.st_mode))
		return reply(rq, ENODEV, NULL, NULL, -1, "not a regular file (a fifo, socket or device): %s", rq->path);
	/* Checked again on the open file: the entry may have been swapped since. O_NONBLOCK: a FIFO
	 * swapped in must not block PID 1 in open. */
	_cleanup_(fd_closep) int fd = openat(parent, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return reply_errno(rq, errno, "open");
	struct statfs sf;
	if (fstat(fd, &s) < 0 || fstatfs(fd, &sf) < 0)
		return reply_errno(rq, errno, "stat");
	if (!S_ISREG(s.st_mode))
		return reply(rq, ENODEV, NULL, NULL, -1, "not a regular file: %s", rq->path);
	if (!initproto_file_fs_ok(sf.f_type))
		return reply(rq, ENODEV, NULL, NULL, -1, "%s is on a pseudo file system: not served (proc, sysfs, …)",
			     rq->path);
	struct initproto_file_stat st;
	fill_stat(&s, &st);
	reply(rq, 0, &st, NULL, fd, NULL);
}

static struct fileops_write *find_write(struct fileops *fo, uint32_t id)
{
	for (size_t i = 0; i < fo->n_writes; i++)
		if (fo->writes[i].id == id)
			return &fo->writes[i];
	return NULL;
}

/* Drop a temp file: unlink it only if its name still points at our file. */
static void write_drop(struct fileops *fo, struct fileops_write *w, bool unlink)
{
	struct stat a, b;
	if (unlink && fstat(w->fd, &a) == 0 && fstatat(w->dirfd, w->tmp, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		unlinkat(w->dirfd, w->tmp, 0);
	close(w->fd);
	close(w->dirfd);
	*w = fo->writes[--fo->n_writes];
}

static void op_open_write(struct req *rq, const struct initproto_file_req *f)
{
	struct fileops *fo = rq->fo;
	char dir[PATH_MAX], base[NAME_MAX + 1];
	if (find_write(fo, rq->id))
		return reply(rq, EBUSY, NULL, NULL, -1, "write id %u is in use", rq->id);
	if (fo->n_writes >= INITPROTO_FILE_MAX_WRITES)
		return reply(rq, EAGAIN, NULL, NULL, -1, "too many file writes in progress (at most %d)",
			     INITPROTO_FILE_MAX_WRITES);
	int r = split(rq->path, dir, base);
	if (path_error(rq, r, "write"))
		return;
	if (!base[0])
		return reply_errno(rq, EISDIR, "write");
	if ((f->flags & INITPROTO_FILE_PARENTS) && path_error(rq, mkdir_parents(fo, dir, 0755), "create parents of"))
		return;
	_cleanup_(fd_closep) int parent = park_avoid(open_in_root(fo, dir, O_PATH | O_DIRECTORY));
	if (path_error(rq, parent, "open the directory of"))
		return;
	mode_t mode = f->mode ? f->mode : 0644;
	struct stat s;
	if (fstatat(parent, base, &s, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISDIR(s.st_mode))
			return reply_errno(rq, EISDIR, "write");
		if (!f->mode && S_ISREG(s.st_mode)) /* replacing a file keeps its mode unless told */
			mode = s.st_mode & 07777;
	} else if (errno != ENOENT) {
		return reply_errno(rq, errno, "stat");
	}
	uint64_t rnd;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		return reply_errno(rq, EIO, "random name for");
	struct fileops_write w = {.id = rq->id, .mode = mode, .fd = -1, .dirfd = -1};
	snprintf(w.tmp, sizeof(w.tmp), TMP_PREFIX "%016llx", (unsigned long long)rnd);
	memcpy(w.name, base, strlen(base) + 1);
	/* A named temp file in the target's directory, renamed over the target at COMMIT: readers
	 * see the old file or the new one, never half of one. */
	int fd = openat(parent, w.tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return reply_errno(rq, errno, "create a temp file beside");
	w.fd = park_avoid(fd);
	if (w.fd < 0) {
		unlinkat(parent, w.tmp, 0);
		return reply_errno(rq, -w.fd, "create a temp file beside");
	}
	w.dirfd = TAKE_FD(parent);
	fo->writes[fo->n_writes++] = w;
	reply(rq, 0, NULL, NULL, w.fd, NULL);
}

static void op_commit(struct req *rq)
{
	struct fileops *fo = rq->fo;
	struct fileops_write *w = find_write(fo, rq->id);
	struct stat a, b;
	if (!w)
		return reply(rq, EINVAL, NULL, NULL, -1, "no write %u in progress", rq->id);
	if (fchmod(w->fd, w->mode) < 0 || fstat(w->fd, &a) < 0) {
		reply(rq, errno, NULL, NULL, -1, "set the mode of %s: %s", w->name, strerror(errno));
		return write_drop(fo, w, true);
	}
	if (fstatat(w->dirfd, w->tmp, &b, AT_SYMLINK_NOFOLLOW) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		reply(rq, EIO, NULL, NULL, -1, "the temp file for %s was moved or replaced inside the sandbox", w->name);
		return write_drop(fo, w, false);
	}
	if (renameat(w->dirfd, w->tmp, w->dirfd, w->name) < 0) {
		int e = errno;
		reply(rq, e, NULL, NULL, -1, "%s %s: %s",
		      e == EISDIR ? "is a directory:" : "replace", w->name, strerror(e));
		return write_drop(fo, w, true);
	}
	struct initproto_file_stat st;
	fill_stat(&a, &st);
	reply(rq, 0, &st, NULL, -1, NULL);
	write_drop(fo, w, false);
}

static void op_abort(struct fileops *fo, uint32_t id)
{
	struct fileops_write *w = find_write(fo, id);
	if (w)
		write_drop(fo, w, true);
}

/* stat of an entry without following it; for a symlink, its target too. */
static int stat_at(int dirfd, const char *name, struct initproto_file_stat *st, char target[PATH_MAX])
{
	struct stat s;
	target[0] = '\0';
	if (fstatat(dirfd, name, &s, AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH)) < 0)
		return -errno;
	fill_stat(&s, st);
	if (S_ISLNK(s.st_mode)) {
		ssize_t n = readlinkat(dirfd, name, target, PATH_MAX - 1);
		target[n > 0 ? n : 0] = '\0';
	}
	return 0;
}

static void op_stat(struct req *rq)
{
	char base[NAME_MAX + 1], target[PATH_MAX];
	_cleanup_(fd_closep) int parent = open_parent(rq, base);
	if (path_error(rq, parent, "stat"))
		return;
	struct initproto_file_stat st;
	int r = stat_at(base[0] ? parent : rq->fo->root, base, &st, target);
	if (r < 0)
		return reply_errno(rq, -r, "stat");
	reply(rq, 0, &st, target, -1, NULL);
}

static void send_entries(const struct req *rq, char *pkt, size_t len, uint32_t count)
{
	struct initproto_hdr hdr = {.type = INITPROTO_FILE_ENTRIES, .handle = rq->id};
	struct initproto_file_entries h = {.count = count};
	memcpy(pkt, &hdr, sizeof(hdr));
	memcpy(pkt + sizeof(hdr), &h, sizeof(h));
	rq->send(rq->ctx, pkt, len, -1);
}

static void op_list(struct req *rq)
{
	/* The listed directory itself may be reached through a symlink (/bin -> usr/bin): fine, the
	 * lookup stays in the root. Entries are stat'ed without following. */
	int fd = open_in_root(rq->fo, rq->path, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return reply_errno(rq, -fd, "list");
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return reply_errno(rq, errno, "list");
	}
	const size_t head = sizeof(struct initproto_hdr) + sizeof(struct initproto_file_entries);
	char *pkt = rq->fo->buf, target[PATH_MAX];
	size_t pos = head, total = 0;
	uint32_t in_pkt = 0, n = 0;
	int error = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct initproto_file_stat st;
		if (stat_at(fd, de->d_name, &st, target) < 0)
			continue; /* removed meanwhile */
		total += strlen(de->d_name) + strlen(target) + sizeof(st);
		if (++n > INITPROTO_FILE_MAX_ENTRIES || total > INITPROTO_FILE_MAX_LIST_BYTES) {
			error = E2BIG;
			break;
		}
		if (initproto_put_file_entry(pkt, INITPROTO_FILE_REPLY_MAX, &pos, &st, de->d_name, target) == -E2BIG) {
			send_entries(rq, pkt, pos, in_pkt);
			pos = head;
			in_pkt = 0;
			if (initproto_put_file_entry(pkt, INITPROTO_FILE_REPLY_MAX, &pos, &st, de->d_name, target) < 0)
				continue; /* cannot happen: one entry always fits an empty packet */
		}
		in_pkt++;
	}
	closedir(d);
	if (error)
		return reply(rq, error, NULL, NULL, -1, "%s has more than %d entries (or %u bytes of names): list a "
			     "narrower directory", rq->path, INITPROTO_FILE_MAX_ENTRIES, INITPROTO_FILE_MAX_LIST_BYTES);
	if (in_pkt)
		send_entries(rq, pkt, pos, in_pkt);
	reply(rq, 0, NULL, NULL, -1, NULL);
}

static void op_mkdir(struct req *rq, const struct initproto_file_req *f)
{
	mode_t mode = f->mode ? f->mode : 0755;
	if (f->flags & INITPROTO_FILE_PARENTS) {
		int r = mkdir_parents(rq->fo, rq->path, mode);
		if (r == -ENOTDIR) { /* as mkdir -p: the path itself exists as something else */
			char base[NAME_MAX + 1];
			struct stat s;
			_cleanup_(fd_closep) int parent = open_parent(rq, base);
			if (parent >= 0 && base[0] && fstatat(parent, base, &s, AT_SYMLINK_NOFOLLOW) == 0 &&
			    !S_ISDIR(s.st_mode))
				return reply(rq, EEXIST, NULL, NULL, -1, "already exists and is not a directory: %s",
					     rq->path);
		}
		if (path_error(rq, r, "create directory"))
			return;
		return reply(rq, 0, NULL, NULL, -1, NULL);
	}
	char base[NAME_MAX + 1];
	_cleanup_(fd_closep) int parent = open_parent(rq, base);
	if (path_error(rq, parent, "create directory"))
		return;
	if (!base[0])
		return reply_errno(rq, EEXIST, "create directory");
	if (mkdirat(parent, base, mode) < 0)
		return reply_errno(rq, errno, "create directory");
	_cleanup_(fd_closep) int made = openat(parent, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (made >= 0)
		fchmod(made, mode); /* mkdir applied init's umask */
	reply(rq, 0, NULL, NULL, -1, NULL);
}

/* Remove name in dirfd and, for a directory, everything below it; never follows a symlink. */
static int remove_tree_at(int dirfd, const char *name, int depth)
{
	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	if (depth > REMOVE_MAX_DEPTH)
		return -ELOOP;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -ENOMEM;
	}
	int r = 0;
	/* Entries may be created while we remove: a few passes, then the rmdir's error stands. */
	for (int pass = 0; pass < 4; pass++) {
		struct dirent *de;
		while (r == 0 && (de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				r = remove_tree_at(fd, de->d_name, depth + 1);
		if (r < 0)
			break;
		if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
			break;
		r = -errno;
		if (r != -ENOTEMPTY)
			break;
		r = 0;
		rewinddir(d);
	}
	closedir(d);
	return r;
}

static void op_remove(struct req *rq, const struct initproto_file_req *f)
{
	struct fileops *fo = rq->fo;
	char base[NAME_MAX + 1];
	_cleanup_(fd_closep) int parent = open_parent(rq, base);
	if (path_error(rq, parent, "remove"))
		return;
	if (!base[0])
		return reply(rq, EPERM, NULL, NULL, -1, "permission denied: the root directory cannot be removed");
	struct stat s;
	if (fstatat(parent, base, &s, AT_SYMLINK_NOFOLLOW) < 0)
		return reply_errno(rq, errno, "remove");
	if (!S_ISDIR(s.st_mode)) {
		if (unlinkat(parent, base, 0) < 0)
			return reply_errno(rq, errno, "remove");
		return reply(rq, 0, NULL, NULL, -1, NULL);
	}
	if (!(f->flags & INITPROTO_FILE_RECURSIVE)) {
		if (unlinkat(parent, base, AT_REMOVEDIR) < 0)
			return reply_errno(rq, errno, "remove");
		return reply(rq, 0, NULL, NULL, -1, NULL);
	}
	/* A tree can be arbitrarily large: remove it in a child so PID 1 keeps serving. The child
	 * reports through its exit status; init answers when it reaps it (fileops_reaped). */
	if (fo->n_workers >= FILEOPS_MAX_WORKERS)
		return reply(rq, EAGAIN, NULL, NULL, -1, "too many recursive removals in progress (at most %d)",
			     FILEOPS_MAX_WORKERS);
	char *path = strdup(rq->path);
	if (!path)
		return reply_errno(rq, ENOMEM, "remove");
	pid_t pid = fork();
	if (pid < 0) {
		free(path);
		return reply_errno(rq, errno, "start removing");
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Keep nothing of init's but the directory: no control socket, no exec pipes. */
		if (parent > 3)
			close_range(3, (unsigned)parent - 1, 0);
		close_range((unsigned)parent + 1, ~0U, 0);
		int r = remove_tree_at(parent, base, 0);
		_exit(r < 0 ? (-r & 0xff) : 0);
	}
	fo->workers[fo->n_workers++] = (struct fileops_worker){.pid = pid, .id = rq->id, .path = path};
}

/* ---- entry points -------------------------------------------------------------------------- */

int fileops_init(struct fileops *fo, const char *rootdir)
{
	*fo = (struct fileops){.root = -1};
	fo->writes = calloc(INITPROTO_FILE_MAX_WRITES, sizeof(*fo->writes));
	fo->buf = malloc(INITPROTO_FILE_REPLY_MAX);
	if (!fo->writes || !fo->buf)
		return -ENOMEM;
	int fd = open(rootdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	fo->root = park_avoid(fd);
	return fo->root < 0 ? fo->root : 0;
}

void fileops_free(struct fileops *fo)
{
	fileops_reset(fo);
	if (fo->root >= 0)
		close(fo->root);
	free(fo->writes);
	free(fo->buf);
	*fo = (struct fileops){.root = -1};
}

void fileops_request(struct fileops *fo, const void *pkt, size_t len, fileops_send_fn send, void *ctx)
{
	struct initproto_hdr hdr;
	struct initproto_file_req f;
	struct req rq = {.fo = fo, .send = send, .ctx = ctx, .path = ""};
	memcpy(&hdr, pkt, sizeof(hdr)); /* the caller checked len >= sizeof(hdr) */
	rq.id = hdr.handle;
	if (hdr.type == INITPROTO_FILE_ABORT)
		return op_abort(fo, hdr.handle);
	if (hdr.type == INITPROTO_FILE_COMMIT)
		return op_commit(&rq);
	if (initproto_decode_file_req(pkt, len, &f, &rq.path) < 0)
		return reply(&rq, EINVAL, NULL, NULL, -1, "invalid file request");
	switch (hdr.type) {
	case INITPROTO_FILE_OPEN_READ: return op_open_read(&rq);
	case INITPROTO_FILE_OPEN_WRITE: return op_open_write(&rq, &f);
	case INITPROTO_FILE_STAT: return op_stat(&rq);
	case INITPROTO_FILE_LIST: return op_list(&rq);
	case INITPROTO_FILE_MKDIR: return op_mkdir(&rq, &f);
	case INITPROTO_FILE_REMOVE: return op_remove(&rq, &f);
	}
}

bool fileops_reaped(struct fileops *fo, pid_t pid, int wait_status, fileops_send_fn send, void *ctx)
{
	for (size_t i = 0; i < fo->n_workers; i++) {
		if (fo->workers[i].pid != pid)
			continue;
		struct fileops_worker w = fo->workers[i];
		_cleanup_free_ char *path = w.path;
		struct req rq = {.fo = fo, .id = w.id, .send = send, .ctx = ctx, .path = path};
		fo->workers[i] = fo->workers[--fo->n_workers];
		if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0)
			reply(&rq, 0, NULL, NULL, -1, NULL);
		else if (WIFEXITED(wait_status))
			reply_errno(&rq, WEXITSTATUS(wait_status), "remove");
		else
			reply(&rq, EINTR, NULL, NULL, -1, "the removal was interrupted (killed inside the sandbox)");
		return true;
	}
	return false;
}

void fileops_reset(struct fileops *fo)
{
	while (fo->n_writes)
		write_drop(fo, &fo->writes[0], true);
	/* Workers still running finish on their own; their answers were owed to the daemon that
	 * left, and init reaps them as orphans. */
	while (fo->n_workers)
		free(fo->workers[--fo->n_workers].path);
}
