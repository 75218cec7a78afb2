#include "util/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/cleanup.h"

/* Bounded so a hostile, very deep tree cannot exhaust the stack. */
#define FS_MAX_DEPTH 4096

static int remove_children(int dirfd, int depth, struct err *e)
{
	if (depth > FS_MAX_DEPTH)
		return err_setx(e, ELOOP, "directory tree deeper than %d levels", FS_MAX_DEPTH);
	int fd = dup(dirfd);
	if (fd < 0)
		return err_set(e, errno, "dup");
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return err_set(e, errno, "fdopendir");
	}
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(dirfd, de->d_name, 0) == 0)
			continue;
		if (errno != EISDIR && errno != EPERM) {
			if (errno == ENOENT)
				continue;
			r = err_set(e, errno, "unlink %s", de->d_name);
			break;
		}
		int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0) {
			r = err_set(e, errno, "open %s", de->d_name);
			break;
		}
		r = remove_children(sub, depth + 1, e);
		close(sub);
		if (r < 0)
			break;
		if (unlinkat(dirfd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
			r = err_set(e, errno, "rmdir %s", de->d_name);
			break;
		}
		rewinddir(d); /* the directory changed under readdir; start over (entries already gone) */
	}
	closedir(d);
	return r;
}

int fs_remove_tree(const char *path, struct err *e)
{
	if (unlink(path) == 0 || errno == ENOENT)
		return 0;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : err_set(e, errno, "open %s", path);
	int r = remove_children(fd, 0, e);
	if (r < 0)
		return err_prefix(e, "remove %s", path);
	if (rmdir(path) < 0 && errno != ENOENT)
		return err_set(e, errno, "rmdir %s", path);
	return 0;
}

int fs_mkdir_p(const char *path, mode_t mode, struct err *e)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(buf))
		return err_setx(e, ENAMETOOLONG, "path too long: %.64s", path);
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return err_set(e, errno, "mkdir %s", buf);
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return err_set(e, errno, "mkdir %s", buf);
	return 0;
}

int fs_sync_dir(const char *path, struct err *e)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, errno, "open %s", path);
	if (fsync(fd) < 0)
		return err_set(e, errno, "fsync %s", path);
	return 0;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int fs_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, struct err *e)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return err_setx(e, ENAMETOOLONG, "path too long: %.64s", path);
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return err_set(e, errno, "create %s", tmp);
	int r = write_all(fd, data, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return err_set(e, -r, "write %s", path);
	}
	char dir[PATH_MAX];
	memcpy(dir, path, strlen(path) + 1);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		return fs_sync_dir(dir, e);
	}
	return 0;
}

int fs_sealed_copy(const char *path, const char *name, int *ret_fd, struct err *e)
{
	_cleanup_close_ int in = open(path, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return err_set(e, errno, "open %s", path);
	_cleanup_close_ int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return err_set(e, errno, "memfd_create");
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(fd, buf, (size_t)n) != n)
			return err_set(e, errno, "copy %s", path);
	if (n < 0)
		return err_set(e, errno, "read %s", path);
	if (fchmod(fd, 0555) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return err_set(e, errno, "seal the copy of %s", path);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int fs_copy_file(const char *src, const char *dst, mode_t mode, struct err *e)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return err_set(e, errno, "open %s", src);
	_cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (out < 0)
		return err_set(e, errno, "create %s", dst);
	char buf[65536];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return err_set(e, errno, "read %s", src);
		if (n == 0)
			break;
		int r = write_all(out, buf, (size_t)n);
		if (r < 0)
			return err_set(e, -r, "write %s", dst);
	}
	if (fchmod(out, mode) < 0)
		return err_set(e, errno, "chmod %s", dst);
	if (fsync(out) < 0)
		return err_set(e, errno, "fsync %s", dst);
	return 0;
}
