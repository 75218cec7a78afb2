#include "images/tarx.h"

#include <archive.h>
#include <archive_entry.h>
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

#define TARX_MAX_DEPTH 128
#define NOBODY 65534

struct tarx {
	int root; /* the layer dir */
	const char *prefix;
	bool oci;
	const struct tarx_limits *lim;
	struct tarx_stats *stats;
	struct err *e;
};

/* Split a member path into normalised components: no absolute paths, no "..", "." dropped.
 * Writes the joined clean path (prefix + path) into out. */
static int clean_path(const char *prefix, const char *path, char *out, size_t size, struct err *e)
{
	if (path[0] == '/')
		return err_setx(e, EINVAL, "archive entry \"%.200s\" has an absolute path: refused", path);
	size_t len = 0;
	out[0] = '\0';
	const char *parts[2] = {prefix, path};
	for (int k = 0; k < 2; k++) {
		const char *p = parts[k];
		while (*p) {
			size_t n = strcspn(p, "/");
			if (n == 2 && !strncmp(p, "..", 2))
				return err_setx(e, EINVAL, "archive entry \"%.200s\" contains \"..\": refused", path);
			if (n > 0 && !(n == 1 && p[0] == '.')) {
				if (len + n + 2 >= size)
					return err_setx(e, ENAMETOOLONG, "archive entry path too long");
				if (len)
					out[len++] = '/';
				memcpy(out + len, p, n);
				len += n;
				out[len] = '\0';
			}
			p += n;
			while (*p == '/')
				p++;
		}
	}
	return 0;
}

/* Open the parent dir of clean path `path` below root, creating missing dirs, never following a
 * symlink (a symlink in the way fails with ELOOP/ENOTDIR: refused). *base points at the last
 * component. */
static int open_parent(struct tarx *t, char *path, const char **base, int *ret)
{
	int fd = dup(t->root);
	if (fd < 0)
		return err_set(t->e, errno, "dup");
	char *p = path;
	int depth = 0;
	for (;;) {
		char *slash = strchr(p, '/');
		if (!slash)
			break;
		*slash = '\0';
		if (++depth > TARX_MAX_DEPTH) {
			close(fd);
			return err_setx(t->e, EINVAL, "archive path deeper than %d levels", TARX_MAX_DEPTH);
		}
		if (mkdirat(fd, p, 0755) < 0 && errno != EEXIST) {
			int err = errno;
			close(fd);
			*slash = '/';
			return err_set(t->e, err, "create directory for \"%.200s\"", path);
		}
		int sub = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int err = errno;
		close(fd);
		*slash = '/';
		if (sub < 0) {
			if (err == ELOOP || err == ENOTDIR)
				return err_setx(t->e, EINVAL, "archive entry \"%.200s\" goes through a symlink or a file: refused",
						path);
			return err_set(t->e, err, "open directory for \"%.200s\"", path);
		}
		fd = sub;
		p = slash + 1;
	}
	*base = p;
	*ret = fd;
	return 0;
}

/* Make room for a new entry: a later layer entry replaces an earlier one of the same name. */
static void remove_existing(int dirfd, const char *name, bool keep_dir)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		if (keep_dir)
			return;
		/* empty dirs only: replacing a populated dir by a file is refused below (EEXIST) */
		unlinkat(dirfd, name, AT_REMOVEDIR);
		return;
	}
	unlinkat(dirfd, name, 0);
}

/* A relative symlink target must stay inside the root when resolved from the link's directory. */
static bool link_stays_inside(const char *link_path, const char *target)
{
	if (target[0] == '/')
		return true; /* resolved inside the sandbox's own root at run time */
	int depth = 0;
	for (const char *p = link_path; *p; p++)
		depth += *p == '/';
	for (const char *p = target; *p;) {
		size_t n = strcspn(p, "/");
		if (n == 2 && !strncmp(p, "..", 2)) {
			if (--depth < 0)
				return false;
		} else if (n > 0 && !(n == 1 && p[0] == '.')) {
			depth++;
		}
		p += n;
		while (*p == '/')
			p++;
	}
	return true;
}

static int write_data(struct tarx *t, struct archive *a, int fd, const char *path)
{
	const void *buf;
	size_t size;
	la_int64_t off;
	uint64_t file_bytes = 0;
	int r;
	while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
		file_bytes += size;
		t->stats->bytes += size;
		if (file_bytes > t->lim->max_file)
			return err_setx(t->e, EDQUOT, "archive file \"%.200s\" is larger than the %llu-byte limit", path,
					(unsigned long long)t->lim->max_file);
		if (t->stats->bytes > t->lim->max_total)
			return err_setx(t->e, EDQUOT, "archive contents exceed the %llu-byte limit",
					(unsigned long long)t->lim->max_total);
		if (pwrite(fd, buf, size, off) != (ssize_t)size)
			return err_set(t->e, errno, "write \"%.200s\"", path);
	}
	if (r != ARCHIVE_EOF)
		return err_setx(t->e, EINVAL, "read archive: %s", archive_error_string(a));
	return 0;
}

static int extract_entry(struct tarx *t, struct archive *a, struct archive_entry *ent)
{
	const char *raw = archive_entry_pathname(ent);
	if (!raw)
		return err_setx(t->e, EINVAL, "archive entry without a name");
	char path[PATH_MAX];
	int r = clean_path(t->prefix, raw, path, sizeof(path), t->e);
	if (r < 0)
		return r;
	if (!path[0])
		return 0; /* "./" itself */
	if (++t->stats->entries > t->lim->max_entries)
		return err_setx(t->e, EDQUOT, "archive has more than %llu entries", (unsigned long long)t->lim->max_entries);
	const char *hl = archive_entry_hardlink(ent);
	mode_t type = archive_entry_filetype(ent);
	if (!hl && (type == AE_IFCHR || type == AE_IFBLK))
		return err_setx(t->e, EINVAL, "archive entry \"%.200s\" is a device node: refused", raw);
	if (!hl && type == AE_IFREG && archive_entry_size_is_set(ent) &&
	    (uint64_t)archive_entry_size(ent) > t->lim->max_file)
		return err_setx(t->e, EDQUOT, "archive file \"%.200s\" is larger than the %llu-byte limit", raw,
				(unsigned long long)t->lim->max_file);
	const char *base;
	_cleanup_close_ int dir = -1;
	char path_copy[PATH_MAX];
	memcpy(path_copy, path, sizeof(path));
	if ((r = open_parent(t, path_copy, &base, &dir)) < 0)
		return r;
	if (t->oci && !strncmp(base, ".wh.", 4)) {
		if (!strcmp(base, ".wh..wh..opq")) {
			if (fsetxattr(dir, "trusted.overlay.opaque", "y", 1, 0) < 0)
				return err_set(t->e, errno, "mark \"%.200s\" opaque", raw);
			return 0;
		}
		const char *victim = base + 4;
		if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
			return err_setx(t->e, EINVAL, "archive whiteout \"%.200s\" is malformed: refused", raw);
		remove_existing(dir, victim, false);
		if (mknodat(dir, victim, S_IFCHR | 0600, makedev(0, 0)) < 0 && errno != EEXIST)
			return err_set(t->e, errno, "create whiteout for \"%.200s\"", raw);
		return 0;
	}
	mode_t perm = archive_entry_perm(ent) & 07777;
	uid_t uid = (uid_t)archive_entry_uid(ent), gid = (gid_t)archive_entry_gid(ent);
	if (uid >= 65536)
		uid = NOBODY;
	if (gid >= 65536)
		gid = NOBODY;
	if (hl) {
		char target[PATH_MAX], tcopy[PATH_MAX];
		if ((r = clean_path(t->prefix, hl, target, sizeof(target), t->e)) < 0)
			return err_prefix(t->e, "hard link");
		memcpy(tcopy, target, sizeof(tcopy));
		const char *tbase;
		_cleanup_close_ int tdir = -1;
		if ((r = open_parent(t, tcopy, &tbase, &tdir)) < 0)
			return r;
		struct stat st;
		if (fstatat(tdir, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			return err_setx(t->e, EINVAL,
					"archive hard link \"%.200s\" -> \"%.200s\" does not name a file extracted before: refused",
					raw, hl);
		remove_existing(dir, base, false);
		if (linkat(tdir, tbase, dir, base, 0) < 0)
			return err_set(t->e, errno, "hard link \"%.200s\"", raw);
		return 0;
	}
	switch (type) {
	case AE_IFDIR:
		remove_existing(dir, base, true);
		if (mkdirat(dir, base, 0700) < 0 && errno != EEXIST)
			return err_set(t->e, errno, "mkdir \"%.200s\"", raw);
		break;
	case AE_IFREG: {
		remove_existing(dir, base, false);
		_cleanup_close_ int fd = openat(dir, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return err_set(t->e, errno, "create \"%.200s\"", raw);
		if ((r = write_data(t, a, fd, raw)) < 0)
			return r;
		if (archive_entry_size_is_set(ent) && ftruncate(fd, archive_entry_size(ent)) < 0)
			return err_set(t->e, errno, "size \"%.200s\"", raw);
		break;
	}
	case AE_IFLNK: {
		const char *target = archive_entry_symlink(ent);
		if (!target || !*target || strlen(target) >= PATH_MAX)
			return err_setx(t->e, EINVAL, "archive symlink \"%.200s\" has no target", raw);
		if (!link_stays_inside(path, target))
			return err_setx(t->e, EINVAL, "archive symlink \"%.200s\" -> \"%.200s\" leaves the root: refused", raw,
					target);
		remove_existing(dir, base, false);
		if (symlinkat(target, dir, base) < 0)
			return err_set(t->e, errno, "symlink \"%.200s\"", raw);
		break;
	}
	case AE_IFIFO:
		remove_existing(dir, base, false);
		if (mkfifoat(dir, base, 0600) < 0)
			return err_set(t->e, errno, "mkfifo \"%.200s\"", raw);
		break;
	default:
		return err_setx(t->e, EINVAL, "archive entry \"%.200s\" has an unsupported type: refused", raw);
	}
	if (type != AE_IFDIR)
		perm &= ~(mode_t)(S_ISUID | S_ISGID);
	if (fchownat(dir, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return err_set(t->e, errno, "chown \"%.200s\"", raw);
	if (type != AE_IFLNK && fchmodat(dir, base, perm, 0) < 0)
		return err_set(t->e, errno, "chmod \"%.200s\"", raw);
	struct timespec ts[2] = {{archive_entry_mtime(ent), 0}, {archive_entry_mtime(ent), 0}};
	utimensat(dir, base, ts, AT_SYMLINK_NOFOLLOW);
	return 0;
}

static int extract(struct archive *a, const char *dst_dir, const char *prefix, bool oci,
		   const struct tarx_limits *lim, struct tarx_stats *stats, struct err *e)
{
	struct tarx_stats dummy;
	struct tarx t = {.prefix = prefix ? prefix : "", .oci = oci, .lim = lim, .stats = stats ? stats : &dummy, .e = e};
	memset(t.stats, 0, sizeof(*t.stats));
	t.root = open(dst_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (t.root < 0)
		return err_set(e, errno, "open %s", dst_dir);
	struct archive_entry *ent;
	int r = 0, ar;
	while ((ar = archive_read_next_header(a, &ent)) == ARCHIVE_OK || ar == ARCHIVE_WARN) {
		if ((r = extract_entry(&t, a, ent)) < 0)
			break;
	}
	if (r == 0 && ar != ARCHIVE_EOF)
		r = err_setx(e, EINVAL, "read archive: %s", archive_error_string(a) ? archive_error_string(a) : "corrupt");
	close(t.root);
	return r;
}

static struct archive *reader_new(void)
{
	struct archive *a = archive_read_new();
	if (!a)
		return NULL;
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	return a;
}

int tarx_extract_fd(int fd, const char *dst_dir, const char *prefix, bool oci_whiteouts,
		    const struct tarx_limits *lim, struct tarx_stats *stats, struct err *e)
{
	struct archive *a = reader_new();
	if (!a)
		return err_set(e, ENOMEM, "libarchive");
	int r;
	if (archive_read_open_fd(a, fd, 65536) != ARCHIVE_OK)
		r = err_setx(e, EINVAL, "open archive: %s", archive_error_string(a));
	else
		r = extract(a, dst_dir, prefix, oci_whiteouts, lim, stats, e);
	archive_read_free(a);
	return r;
}

int tarx_extract_mem(const void *buf, size_t len, const char *dst_dir, const char *prefix, bool oci_whiteouts,
		     const struct tarx_limits *lim, struct tarx_stats *stats, struct err *e)
{
	struct archive *a = reader_new();
	if (!a)
		return err_set(e, ENOMEM, "libarchive");
	int r;
	if (archive_read_open_memory(a, buf, len) != ARCHIVE_OK)
		r = err_setx(e, EINVAL, "open archive: %s", archive_error_string(a));
	else
		r = extract(a, dst_dir, prefix, oci_whiteouts, lim, stats, e);
	archive_read_free(a);
	return r;
}
