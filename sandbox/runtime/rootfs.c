/* The sandbox's root, built in the child between clone3 and exec. Mounts go through fds (fsopen,
 * fsmount, move_mount to an fd) so that nothing in the image, a symlink in particular, can redirect
 * a mount onto the host's tree. */
#include "runtime/rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/cleanup.h"

/* Host nodes bound into /dev; the same set as bubblewrap's --dev. */
static const char *const rootfs_dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
#define ROOTFS_N_NODES (sizeof(rootfs_dev_nodes) / sizeof(rootfs_dev_nodes[0]))

static const struct {
	const char *name, *target;
} rootfs_dev_links[] = {
	{"ptmx", "pts/ptmx"},
	{"fd", "/proc/self/fd"},
	{"stdin", "/proc/self/fd/0"},
	{"stdout", "/proc/self/fd/1"},
	{"stderr", "/proc/self/fd/2"},
};

/* /proc entries that leak host-wide state or reach kernel knobs (runc's and Docker's lists, plus
 * kallsyms): a file is covered by /dev/null, a directory by an empty read-only tmpfs. */
static const char *const rootfs_proc_masked[] = {
	"acpi", "asound", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "scsi", "kallsyms",
};
/* Kept visible but bound read-only over themselves. */
static const char *const rootfs_proc_readonly[] = {"bus", "fs", "irq", "sys", "sysrq-trigger"};

static void rootfs_close_all(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* An O_PATH fd of the directory name right under root, created (owned by sandbox root) if missing.
 * RESOLVE_NO_SYMLINKS refuses an image that made it a symlink, e.g. /proc -> /host/path. */
static int rootfs_mountpoint(int root, const char *name, mode_t mode, int *ret_fd, struct err *e)
{
	if (mkdirat(root, name, mode) < 0 && errno != EEXIST)
		return err_setx(e, errno, "create mount point /%s in the sandbox root", name);
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	int fd = (int)syscall(SYS_openat2, root, name, &how, sizeof(how));
	if (fd < 0 && errno == ELOOP)
		return err_setx(e, errno, "refusing image: /%s is a symlink", name);
	if (fd < 0 && errno == ENOTDIR)
		return err_setx(e, errno, "refusing image: /%s is not a directory", name);
	if (fd < 0)
		return err_setx(e, errno, "open mount point /%s in the sandbox root", name);
	*ret_fd = fd;
	return 0;
}

/* A new detached mount of fstype with string options (NULL-terminated key/value pairs). */
static int rootfs_new_fs(const char *fstype, const char *const *opts, unsigned attrs, int *ret_fd, struct err *e)
{
	_cleanup_close_ int fsfd = fsopen(fstype, FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return err_setx(e, errno, "open %s filesystem context", fstype);
	for (; opts && opts[0]; opts += 2)
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, opts[0], opts[1], 0) < 0)
			return err_setx(e, errno, "set %s option %s=%s", fstype, opts[0], opts[1]);
	if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return err_setx(e, errno, "create %s filesystem", fstype);
	int mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, attrs);
	if (mfd < 0)
		return err_setx(e, errno, "mount %s filesystem", fstype);
	*ret_fd = mfd;
	return 0;
}

/* Mount a new fstype on the directory fd `at` (or on name under it). Returns the mount's fd, which
 * afterwards refers to the root of the new mount (a dirfd inside it). */
static int rootfs_mount_at(const char *fstype, const char *const *opts, unsigned attrs, int at, const char *name,
			   const char *where, int *ret_fd, struct err *e)
{
	_cleanup_close_ int mfd = -1;
	int r = rootfs_new_fs(fstype, opts, attrs, &mfd, e);
	if (r < 0)
		return r;
	unsigned flags = MOVE_MOUNT_F_EMPTY_PATH | (name ? 0 : MOVE_MOUNT_T_EMPTY_PATH);
	if (move_mount(mfd, "", at, name ? name : "", flags) < 0)
		return err_setx(e, errno, "mount %s on %s in the sandbox", fstype, where);
	if (ret_fd)
		*ret_fd = TAKE_FD(mfd);
	return 0;
}

/* /dev: a small tmpfs with host nodes bound in (a sandbox can't mknod), its own devpts, /dev/shm. */
static int rootfs_make_dev(int root, const int *node_fds, const char *scratch_size, int *ret_null, struct err *e)
{
	static const char *const dev_opts[] = {"mode", "755", "size", "1m", NULL};
	static const char *const pts_opts[] = {"ptmxmode", "0666", "mode", "0620", NULL};
	const char *const shm_opts[] = {"mode", "1777", scratch_size ? "size" : NULL, scratch_size, NULL};
	_cleanup_close_ int at = -1, dev = -1;
	int r = rootfs_mountpoint(root, "dev", 0755, &at, e);
	if (r < 0)
		return r;
	r = rootfs_mount_at("tmpfs", dev_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, at, NULL, "/dev", &dev, e);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ROOTFS_N_NODES; i++) {
		const char *n = rootfs_dev_nodes[i];
		int fd = openat(dev, n, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0666);
		if (fd < 0)
			return err_setx(e, errno, "create /dev/%s in the sandbox", n);
		close(fd);
		if (move_mount(node_fds[i], "", dev, n, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			return err_setx(e, errno, "bind host /dev/%s into the sandbox", n);
	}
	/* A clone of the sandbox's /dev/null, to cover masked /proc files. */
	*ret_null = open_tree(dev, "null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (*ret_null < 0)
		return err_setx(e, errno, "clone /dev/null in the sandbox");
	for (size_t i = 0; i < ARRAY_SIZE(rootfs_dev_links); i++)
		if (symlinkat(rootfs_dev_links[i].target, dev, rootfs_dev_links[i].name) < 0)
			return err_setx(e, errno, "create symlink /dev/%s in the sandbox", rootfs_dev_links[i].name);
	if (mkdirat(dev, "pts", 0755) < 0 || mkdirat(dev, "shm", 01777) < 0)
		return err_setx(e, errno, "create /dev/pts or /dev/shm in the sandbox");
	/* A new devpts instance (every fsopen'd devpts is one): the host's ptys stay invisible. */
	r = rootfs_mount_at("devpts", pts_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, dev, "pts", "/dev/pts", NULL, e);
	if (r < 0)
		return r;
	return rootfs_mount_at("tmpfs", shm_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, dev, "shm", "/dev/shm", NULL, e);
}

/* Bind a clone of the mount `from` (an fd of a mount root) over name under dir, with attrs set. */
static int rootfs_bind_over(int from, int dir, const char *name, unsigned attrs, struct err *e)
{
	_cleanup_close_ int fd = open_tree(from, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
	if (fd < 0)
		return err_setx(e, errno, "clone a mount for /proc/%s", name);
	struct mount_attr ma = {.attr_set = attrs};
	if (attrs && syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &ma, sizeof(ma)) < 0)
		return err_setx(e, errno, "set attributes of the mount for /proc/%s", name);
	if (move_mount(fd, "", dir, name, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return err_setx(e, errno, "mount over /proc/%s", name);
	return 0;
}

/* Mask and write-protect /proc entries. Everything goes through the proc mount's fd; an entry
 * this kernel lacks is skipped. null_fd is a clone of the host's /dev/null node mount. */
static int rootfs_harden_proc(int proc, int null_fd, struct err *e)
{
	static const char *const empty_opts[] = {"size", "4k", "nr_inodes", "1", "mode", "0555", NULL};
	const unsigned ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
	_cleanup_close_ int empty = -1;
	struct stat st;
	int r;
	for (size_t i = 0; i < ARRAY_SIZE(rootfs_proc_readonly); i++) {
		const char *n = rootfs_proc_readonly[i];
		_cleanup_close_ int fd = open_tree(proc, n, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
		if (fd < 0 && errno == ENOENT)
			continue;
		if (fd < 0)
			return err_setx(e, errno, "clone /proc/%s", n);
		struct mount_attr ma = {.attr_set = ro};
		if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &ma, sizeof(ma)) < 0)
			return err_setx(e, errno, "make /proc/%s read-only", n);
		if (move_mount(fd, "", proc, n, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			return err_setx(e, errno, "mount /proc/%s read-only", n);
	}
	for (size_t i = 0; i < ARRAY_SIZE(rootfs_proc_masked); i++) {
		const char *n = rootfs_proc_masked[i];
		if (fstatat(proc, n, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			return err_setx(e, errno, "stat /proc/%s", n);
		}
		if (!S_ISDIR(st.st_mode)) {
			r = rootfs_bind_over(null_fd, proc, n, 0, e);
		} else {
			/* One empty read-only tmpfs, cloned over every masked directory. */
			if (empty < 0 && (r = rootfs_new_fs("tmpfs", empty_opts, ro, &empty, e)) < 0)
				return r;
			r = rootfs_bind_over(empty, proc, n, 0, e);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static int rootfs_make_proc_tmp(int root, int null_fd, bool harden, const char *scratch_size, struct err *e)
{
	const char *const tmp_opts[] = {"mode", "1777", scratch_size ? "size" : NULL, scratch_size, NULL};
	_cleanup_close_ int proc = -1, tmp = -1, procfs = -1;
	int r = rootfs_mountpoint(root, "proc", 0555, &proc, e);
	if (r < 0)
		return r;
	/* fsopen("proc") takes the caller's pid namespace: the child is its PID 1. */
	r = rootfs_mount_at("proc", NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, proc, NULL, "/proc",
			    &procfs, e);
	if (r < 0)
		return r;
	if (harden && (r = rootfs_harden_proc(procfs, null_fd, e)) < 0)
		return r;
	r = rootfs_mountpoint(root, "tmp", 01777, &tmp, e);
	if (r < 0)
		return r;
	return rootfs_mount_at("tmpfs", tmp_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, tmp, NULL, "/tmp", NULL, e);
}

/* With the host's nodes cloned: overlay in place, its mounts, then make it the root. After
 * move_mount the overlay's fd refers to the root of the attached mount, so it serves as the dirfd
 * for everything below. */
static int rootfs_build(int overlay_fd, int root_dir_fd, const char *root_dir, const int *nodes, bool harden,
			const char *scratch_size, struct err *e)
{
	int root = overlay_fd;
	if (move_mount(overlay_fd, "", root_dir_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		return err_setx(e, errno, "move the overlay onto %s", root_dir);
	/* An image's setuid binaries and device nodes must not work: a layer could carry a setuid-root
	 * shell or a /dev/mem node made by whoever built it. */
	struct mount_attr ma = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
	if (syscall(SYS_mount_setattr, root, "", AT_EMPTY_PATH, &ma, sizeof(ma)) < 0)
		return err_setx(e, errno, "make the sandbox root nosuid,nodev");
	_cleanup_close_ int null_fd = -1;
	int r = rootfs_make_dev(root, nodes, scratch_size, &null_fd, e);
	if (r < 0)
		return r;
	r = rootfs_make_proc_tmp(root, null_fd, harden, scratch_size, e);
	if (r < 0)
		return r;
	/* pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only the
	 * sandbox's tree, with no directory to spare for an old root. */
	if (fchdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		return err_setx(e, errno, "pivot_root into %s", root_dir);
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		return err_setx(e, errno, "detach the host's root from the sandbox");
	return 0;
}

int rootfs_enter(int overlay_fd, int root_dir_fd, const char *root_dir, bool harden, uint64_t scratch_bytes,
		 struct err *e)
{
	/* /tmp and /dev/shm are memory: capped (each) like the writable layer, not left at half of RAM. */
	char scratch[32];
	snprintf(scratch, sizeof(scratch), "%lluk", (unsigned long long)(scratch_bytes / 1024));
	const char *scratch_size = scratch_bytes >= 1024 ? scratch : NULL;
	int nodes[ROOTFS_N_NODES];
	int r = 0;
	for (size_t i = 0; i < ROOTFS_N_NODES; i++)
		nodes[i] = -1;
	/* Our copy of the host's mount tree must not propagate anything back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return err_setx(e, errno, "make / private in the sandbox's mount namespace");
	/* Clone the host's nodes now: after pivot_root the host's /dev is gone. */
	for (size_t i = 0; i < ROOTFS_N_NODES && r == 0; i++) {
		char path[32];
		snprintf(path, sizeof(path), "/dev/%s", rootfs_dev_nodes[i]);
		nodes[i] = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (nodes[i] < 0)
			r = err_setx(e, errno, "clone mount of host %s", path);
	}
	if (r == 0)
		r = rootfs_build(overlay_fd, root_dir_fd, root_dir, nodes, harden, scratch_size, e);
	rootfs_close_all(nodes, ROOTFS_N_NODES);
	return r;
}
