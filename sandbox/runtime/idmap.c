/* User-namespace id maps and idmapped layer mounts (see FIELD-NOTES, "Sandbox root with a user
 * namespace"). Runs in the daemon, as host root, between clone3 and the child's go-ahead. */
#include "runtime/idmap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "util/cleanup.h"

static int idmap_write_file(pid_t pid, const char *file, const char *val, struct err *e)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, errno, "open %s", path);
	size_t len = strlen(val);
	ssize_t n = write(fd, val, len); /* the kernel takes a map in one write only */
	if (n < 0)
		return err_set(e, errno, "write \"%.*s\" to %s", (int)len - 1, val, path);
	if ((size_t)n != len)
		return err_setx(e, EIO, "write to %s: short write", path);
	return 0;
}

int idmap_write_maps(pid_t pid, uid_t base, uint32_t count, struct err *e)
{
	char map[64];
	snprintf(map, sizeof(map), "0 %u %u\n", (unsigned)base, (unsigned)count);
	/* setgroups stays "allow": the maps are written by host root, so "deny" protects nothing here,
	 * while it would keep the daemon's supplementary groups (host gid 0) in the sandbox forever and
	 * break programs that drop privileges with setgroups (apt's _apt sandbox). The child drops the
	 * inherited groups itself with setgroups(0, NULL). */
	int r = idmap_write_file(pid, "uid_map", map, e);
	if (r < 0)
		return r;
	return idmap_write_file(pid, "gid_map", map, e);
}

int idmap_clone_layer(const char *dir, int userns_fd, int *ret_fd, struct err *e)
{
	_cleanup_close_ int fd = open_tree(AT_FDCWD, dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (fd < 0)
		return err_set(e, errno, "clone mount of image layer %s", dir);
	/* Read-only as well: overlayfs never writes to a lower layer, and a layer is shared by every
	 * sandbox of the image, so nothing may write through this mount. */
	struct mount_attr attr = {
		.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
		.userns_fd = (uint64_t)userns_fd,
	};
	if (mount_setattr(fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0)
		return err_set(e, errno, "idmap mount of image layer %s", dir);
	*ret_fd = TAKE_FD(fd);
	return 0;
}
