/* Detached overlayfs through the new mount API: the layers are passed as mount fds ("lowerdir+"),
 * so idmapped layer mounts can be used without ever being attached anywhere. */
#include "runtime/overlay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/cleanup.h"

/* Upper root owned by host root shows as nobody inside and / is not writable (EACCES). */
static int overlay_own_upper(const char *upper_dir, uid_t base, struct err *e)
{
	struct stat st;
	if (lstat(upper_dir, &st) < 0)
		return err_set(e, errno, "stat upper dir %s", upper_dir);
	if (!S_ISDIR(st.st_mode))
		return err_setx(e, ENOTDIR, "upper dir %s: not a directory", upper_dir);
	if (st.st_uid == base && st.st_gid == (gid_t)base)
		return 0;
	if (lchown(upper_dir, base, (gid_t)base) < 0)
		return err_set(e, errno, "chown upper dir %s to %u", upper_dir, (unsigned)base);
	return 0;
}

/* The kernel explains a failed fsconfig in the context's log ("e overlayfs: ..."), far better than
 * the bare errno: add its first message. */
static int overlay_fail(int fsfd, struct err *e, int errnum, const char *what)
{
	char log[256];
	ssize_t n = read(fsfd, log, sizeof(log) - 1);
	if (n > 2) {
		log[n] = '\0';
		log[strcspn(log, "\n")] = '\0';
		return err_setx(e, errnum, "%s: %s (%s)", what, strerror(errnum), log + 2);
	}
	return err_set(e, errnum, "%s", what);
}

int overlay_mount(const int *lower_fds, size_t n_lower, const char *upper_dir, const char *work_dir, uid_t base,
		  int *ret_fd, struct err *e)
{
	int r = overlay_own_upper(upper_dir, base, e);
	if (r < 0)
		return r;
	_cleanup_close_ int fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return err_set(e, errno, "open overlay filesystem context");
	for (size_t i = 0; i < n_lower; i++)
		if (fsconfig(fsfd, FSCONFIG_SET_FD, "lowerdir+", NULL, lower_fds[i]) < 0)
			return overlay_fail(fsfd, e, errno, "add overlay lower layer");
	/* upperdir and workdir are taken as paths: they come from the daemon, not from the image. */
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", upper_dir, 0) < 0)
		return overlay_fail(fsfd, e, errno, "set overlay upperdir");
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", work_dir, 0) < 0)
		return overlay_fail(fsfd, e, errno, "set overlay workdir");
	if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		char what[300];
		snprintf(what, sizeof(what), "create overlay with upper %s", upper_dir);
		return overlay_fail(fsfd, e, errno, what);
	}
	/* nodev: the superblock belongs to the host's user namespace, so a device node in an image
	 * layer (an imported OCI archive may carry some) would otherwise open the host's device. */
	_cleanup_close_ int mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
	if (mfd < 0)
		return err_set(e, errno, "mount overlay with upper %s", upper_dir);
	*ret_fd = TAKE_FD(mfd);
	return 0;
}
