/* Landlock rules for a sandbox. Rules are allow-lists over file hierarchies: the rule on "/" (the
 * sandbox's overlay root) necessarily covers what is mounted below it, /proc included, so writes
 * to /proc and /sys are stopped by the read-only and masked mounts of rootfs.c and by procfs's own
 * ownership checks, not here. What Landlock adds is what the other layers leave to capabilities:
 * no device node is ever created, and device ioctls are confined to the standard nodes. */
#include "runtime/landlock.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/cleanup.h"

/* Debian 12's uapi headers stop at ABI 2: the later bits, defined here (see FIELD-NOTES). */
#define LL_ACCESS_FS_TRUNCATE (1ULL << 14)   /* ABI 3 */
#define LL_ACCESS_FS_IOCTL_DEV (1ULL << 15)  /* ABI 5 */
#define LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#define LL_SCOPE_SIGNAL (1ULL << 1)               /* ABI 6 */
#define LL_RULE_PATH_BENEATH 1

/* The ABI 6 layout of struct landlock_ruleset_attr; older kernels take a prefix of it. */
struct ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};

struct ll_path_beneath_attr {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

#define LL_WRITE_ANY                                                                                   \
	(LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |   \
	 LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |         \
	 LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_SYM)
#define LL_DEVICES (LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_BLOCK)
#define LL_FILE_WRITE (LANDLOCK_ACCESS_FS_WRITE_FILE | LL_ACCESS_FS_TRUNCATE | LL_ACCESS_FS_IOCTL_DEV)

/* Standard nodes: written and ioctl'd by ordinary programs. */
static const char *const landlock_dev_nodes[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random",
						 "/dev/urandom", "/dev/tty"};

int landlock_probe_abi(void)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	return abi < 0 ? -errno : (int)abi;
}

void landlock_describe(int abi, char *buf, size_t size)
{
	if (abi > 0)
		snprintf(buf, size, "ABI %d: writes confined to the sandbox's root, no device nodes, device ioctls only "
			 "on /dev's standard nodes and ptys%s", abi, abi >= 6 ? ", signals and abstract sockets scoped" : "");
	else if (abi == -EOPNOTSUPP)
		snprintf(buf, size, "unavailable: Landlock is built in but not enabled (lsm= boot parameter)");
	else if (abi == -ENOSYS)
		snprintf(buf, size, "unavailable: this kernel has no Landlock");
	else
		snprintf(buf, size, "unavailable: probe failed: %s", strerror(-abi));
}

/* What this ABI lets us handle (asking for an unknown bit is EINVAL). */
static uint64_t landlock_handled(int abi)
{
	uint64_t fs = LL_WRITE_ANY | LL_DEVICES;
	if (abi >= 2)
		fs |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		fs |= LL_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		fs |= LL_ACCESS_FS_IOCTL_DEV;
	return fs;
}

static int landlock_allow(int ruleset, const char *path, uint64_t access, bool optional, struct err *e)
{
	int fd = open(path, O_PATH | O_CLOEXEC);
	if (fd < 0 && optional && errno == ENOENT)
		return 0;
	if (fd < 0)
		return err_setx(e, errno, "landlock: open %s", path);
	struct ll_path_beneath_attr pb = {.allowed_access = access, .parent_fd = fd};
	long r = syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &pb, 0);
	int saved = errno;
	close(fd);
	return r < 0 ? err_setx(e, saved, "landlock: add rule for %s", path) : 0;
}

int landlock_apply(int abi, struct err *e)
{
	if (abi <= 0)
		return 0;
	uint64_t handled = landlock_handled(abi);
	struct ll_ruleset_attr attr = {.handled_access_fs = handled};
	size_t attr_size = sizeof(uint64_t); /* ABI 1-3: fs only */
	if (abi >= 4)
		attr_size = 2 * sizeof(uint64_t);
	if (abi >= 6) {
		attr.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL;
		attr_size = sizeof(attr);
	}
	_cleanup_close_ int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
	if (rs < 0)
		return err_setx(e, errno, "landlock: create ruleset (ABI %d)", abi);
	int r = landlock_allow(rs, "/", handled & ~(LL_DEVICES | LL_ACCESS_FS_IOCTL_DEV), false, e);
	if (r == 0)
		r = landlock_allow(rs, "/dev/pts", handled & ~LL_DEVICES, true, e);
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(landlock_dev_nodes); i++)
		r = landlock_allow(rs, landlock_dev_nodes[i], handled & LL_FILE_WRITE, true, e);
	if (r < 0)
		return r;
	if (syscall(SYS_landlock_restrict_self, rs, 0) < 0)
		return err_setx(e, errno, "landlock: restrict self");
	return 0;
}
