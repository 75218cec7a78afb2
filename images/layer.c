#include "images/layer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/fs.h"
#include "util/misc.h"

#define LAYER_MAX_DEPTH 512
#define NOBODY 65534

bool layer_id_is_valid(const char *id)
{
	if (strlen(id) != 64)
		return false;
	for (const char *p = id; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

int layer_tmp_new(const char *layers_dir, char *tmp, size_t size, struct err *e)
{
	char rnd[40];
	id_random(rnd, sizeof(rnd), ".tmp-", 12);
	if (snprintf(tmp, size, "%s/%s", layers_dir, rnd) >= (int)size)
		return err_setx(e, ENAMETOOLONG, "layer temp dir path too long");
	if (mkdir(tmp, 0755) < 0)
		return err_set(e, errno, "mkdir %s", tmp);
	return 0;
}

struct copy_ctx {
	uid_t base;
	uint32_t count;
	struct layer_copy_stats *stats;
	struct err *e;
	bool no_cfr;        /* copy_file_range refused (EXDEV): read/write through buf */
	char buf[1 << 18];
};

static uid_t shift_id(const struct copy_ctx *c, uid_t id)
{
	if (id >= c->base && id - c->base < c->count)
		return id - c->base;
	return id == 0 ? 0 : NOBODY; /* host root: whiteouts the overlay made itself */
}

/* The overlay markers that give a layer its meaning; anything else an upper carries is either
 * rebuilt by the kernel (origin, impure) or unsafe to carry across sandboxes (security.*). */
static const char *const kept_xattrs[] = {"trusted.overlay.opaque", "trusted.overlay.redirect"};

static int copy_xattrs(int src, int dst, const char *name, struct err *e)
{
	for (size_t i = 0; i < ARRAY_SIZE(kept_xattrs); i++) {
		char val[PATH_MAX];
		ssize_t n = fgetxattr(src, kept_xattrs[i], val, sizeof(val));
		if (n < 0)
			continue;
		if (fsetxattr(dst, kept_xattrs[i], val, (size_t)n, 0) < 0)
			return err_set(e, errno, "set %s on %s", kept_xattrs[i], name);
	}
	return 0;
}

/* Copy data segments only (SEEK_DATA/SEEK_HOLE): a sparse 1 TiB file stays sparse. */
static int copy_data(int in, int out, off_t size, const char *name, struct copy_ctx *c)
{
	off_t pos = 0;
	while (pos < size) {
		off_t data = lseek(in, pos, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO)
				break;
			return err_set(c->e, errno, "seek %s", name);
		}
		off_t hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0)
			return err_set(c->e, errno, "seek %s", name);
		off_t off_in = data, off_out = data;
		while (off_in < hole) {
			ssize_t n = -1;
			if (!c->no_cfr) {
				n = copy_file_range(in, &off_in, out, &off_out, (size_t)(hole - off_in), 0);
				if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS)) {
					c->no_cfr = true; /* across filesystems (a tmpfs upper): plain reads and writes */
					continue;
				}
			} else {
				size_t want = (size_t)(hole - off_in) < sizeof(c->buf) ? (size_t)(hole - off_in) : sizeof(c->buf);
				n = pread(in, c->buf, want, off_in);
				if (n > 0 && pwrite(out, c->buf, (size_t)n, off_out) != n)
					n = -1;
				if (n > 0) {
					off_in += n;
					off_out += n;
				}
			}
			if (n < 0)
				return err_set(c->e, errno, "copy %s", name);
			if (n == 0)
				break; /* shrank under us */
			c->stats->bytes += (uint64_t)n;
		}
		pos = hole;
	}
	if (ftruncate(out, size) < 0)
		return err_set(c->e, errno, "truncate %s", name);
	return 0;
}

static int set_meta(int dirfd, const char *name, const struct stat *st, mode_t mode, struct copy_ctx *c)
{
	if (fchownat(dirfd, name, shift_id(c, st->st_uid), shift_id(c, st->st_gid), AT_SYMLINK_NOFOLLOW) < 0)
		return err_set(c->e, errno, "chown %s", name);
	if (!S_ISLNK(st->st_mode) && fchmodat(dirfd, name, mode, 0) < 0)
		return err_set(c->e, errno, "chmod %s", name);
	struct timespec ts[2] = {st->st_atim, st->st_mtim};
	if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return err_set(c->e, errno, "set times of %s", name);
	return 0;
}

static int copy_dir(int src, int dst, int depth, struct copy_ctx *c);

static int copy_entry(int src, int dst, const char *name, int depth, struct copy_ctx *c)
{
	struct stat st;
	if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : err_set(c->e, errno, "stat %s", name);
	mode_t perm = st.st_mode & 07777;
	if (!S_ISDIR(st.st_mode))
		perm &= ~(mode_t)(S_ISUID | S_ISGID);
	else
		perm &= ~(mode_t)S_ISUID;
	int r;
	c->stats->entries++;
	switch (st.st_mode & S_IFMT) {
	case S_IFREG: {
		_cleanup_close_ int in = openat(src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (in < 0)
			return err_set(c->e, errno, "open %s", name);
		_cleanup_close_ int out = openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (out < 0)
			return err_set(c->e, errno, "create %s", name);
		if ((r = copy_data(in, out, st.st_size, name, c)) < 0)
			return r;
		if ((r = copy_xattrs(in, out, name, c->e)) < 0)
			return r;
		break;
	}
	case S_IFDIR: {
		if (mkdirat(dst, name, 0700) < 0)
			return err_set(c->e, errno, "mkdir %s", name);
		_cleanup_close_ int in = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		_cleanup_close_ int out = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (in < 0 || out < 0)
			return err_set(c->e, errno, "open dir %s", name);
		if ((r = copy_xattrs(in, out, name, c->e)) < 0)
			return r;
		if ((r = copy_dir(in, out, depth + 1, c)) < 0)
			return r;
		break;
	}
	case S_IFLNK: {
		char target[PATH_MAX];
		ssize_t n = readlinkat(src, name, target, sizeof(target) - 1);
		if (n < 0)
			return err_set(c->e, errno, "readlink %s", name);
		target[n] = '\0';
		if (symlinkat(target, dst, name) < 0)
			return err_set(c->e, errno, "symlink %s", name);
		break;
	}
	case S_IFCHR:
		if (st.st_rdev != makedev(0, 0)) /* only whiteouts; a real device never belongs in a layer */
			return 0;
		if (mknodat(dst, name, S_IFCHR | 0600, makedev(0, 0)) < 0)
			return err_set(c->e, errno, "create whiteout %s", name);
		perm = 0;
		break;
	case S_IFIFO:
		if (mkfifoat(dst, name, 0600) < 0)
			return err_set(c->e, errno, "mkfifo %s", name);
		break;
	default: /* sockets, block devices */
		c->stats->entries--;
		return 0;
	}
	return set_meta(dst, name, &st, perm, c);
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int copy_dir(int src, int dst, int depth, struct copy_ctx *c)
{
	if (depth > LAYER_MAX_DEPTH)
		return err_setx(c->e, ELOOP, "directory tree deeper than %d levels", LAYER_MAX_DEPTH);
	int fd = dup(src);
	if (fd < 0)
		return err_set(c->e, errno, "dup");
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return err_set(c->e, errno, "fdopendir");
	}
	/* Sorted, so a layer is written (and later hashed or compared) in a stable order. */
	char **names = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **nn = realloc(names, cap * sizeof(*nn));
			if (!nn) {
				r = err_set(c->e, ENOMEM, "list directory");
				goto out;
			}
			names = nn;
		}
		if (!(names[n] = strdup(de->d_name))) {
			r = err_set(c->e, ENOMEM, "list directory");
			goto out;
		}
		n++;
	}
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	for (size_t i = 0; i < n && r == 0; i++)
		r = copy_entry(src, dst, names[i], depth, c);
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return r;
}

int layer_copy_upper(const char *src, const char *dst, uid_t uid_base, uint32_t count,
		     struct layer_copy_stats *stats, struct err *e)
{
	struct layer_copy_stats dummy;
	_cleanup_free_ struct copy_ctx *cp = calloc(1, sizeof(*cp));
	if (!cp)
		return err_set(e, ENOMEM, "copy %s", src);
	struct copy_ctx *cc = cp;
	cc->base = uid_base;
	cc->count = count;
	cc->stats = stats ? stats : &dummy;
	cc->e = e;
	memset(cc->stats, 0, sizeof(*cc->stats));
	_cleanup_close_ int in = open(src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int out = open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0 || out < 0)
		return err_set(e, errno, "open %s", in < 0 ? src : dst);
	struct stat st;
	if (fstat(in, &st) < 0)
		return err_set(e, errno, "stat %s", src);
	int r = copy_xattrs(in, out, src, e);
	if (r == 0)
		r = copy_dir(in, out, 0, cc);
	if (r < 0)
		return err_prefix(e, "copy %s", src);
	if (fchown(out, shift_id(cc, st.st_uid), shift_id(cc, st.st_gid)) < 0 ||
	    fchmod(out, st.st_mode & 01777) < 0)
		return err_set(e, errno, "set owner of %s", dst);
	return 0;
}

int layer_commit(const char *layers_dir, const char *tmp, const char *id, struct err *e)
{
	char final[PATH_MAX];
	if (!layer_id_is_valid(id))
		return err_setx(e, EINVAL, "invalid layer id");
	snprintf(final, sizeof(final), "%s/%s", layers_dir, id);
	{
		_cleanup_close_ int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || syncfs(fd) < 0)
			return err_set(e, errno, "sync %s", tmp);
	}
	int r = 0;
	if (rename(tmp, final) < 0) {
		if (errno != ENOTEMPTY && errno != EEXIST)
			r = err_set(e, errno, "rename %s to %s", tmp, final);
		fs_remove_tree(tmp, NULL);
	}
	if (r < 0)
		return r;
	return fs_sync_dir(layers_dir, e);
}

static int usage_dir(int dirfd, int depth, uint64_t *sum)
{
	if (depth > LAYER_MAX_DEPTH)
		return -ELOOP;
	int fd = dup(dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d)) && r == 0) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		*sum += (uint64_t)st.st_blocks * 512;
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				r = usage_dir(sub, depth + 1, sum);
				close(sub);
			}
		}
	}
	closedir(d);
	return r;
}

int layer_disk_usage(const char *dir, uint64_t *ret, struct err *e)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, errno, "open %s", dir);
	*ret = 0;
	int r = usage_dir(fd, 0, ret);
	if (r < 0)
		return err_set(e, -r, "measure %s", dir);
	return 0;
}
