/* Loader of ebpf/devpolicy.bpf.c through its libbpf skeleton: open → load once, attach per
 * sandbox, grant extras through the program's hash map keyed by cgroup id. */
#include <linux/types.h>

#include "runtime/devpolicy.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devpolicy.skel.h"
#include "ebpf/devpolicy.h"
#include "util/cleanup.h"
#include "util/log.h"

#define DEVPOLICY_QUERY_MAX 64 /* programs listed per cgroup when checking an attachment */

struct devpolicy {
	struct devpolicy_bpf *skel;
	int prog_fd, map_fd;
	uint32_t prog_id;
};

/* The v1 form of DEVPOLICY_STANDARD, for the devices controller. */
#define DEVPOLICY_V1(t, ma, mi) {(t) == DEVPOLICY_DEV_CHAR ? 'c' : 'b', (ma), (mi), "rw"},
static const struct cgroup_device devpolicy_v1[] = {DEVPOLICY_STANDARD(DEVPOLICY_V1)};
#undef DEVPOLICY_V1
_Static_assert(DEVPOLICY_STANDARD_ACCESS == (DEVPOLICY_ACC_READ | DEVPOLICY_ACC_WRITE),
	       "devpolicy_v1 says \"rw\": keep it in step with DEVPOLICY_STANDARD_ACCESS");
_Static_assert(DEVPOLICY_ANY == CGROUP_DEV_ANY, "wildcard minors must agree");

const struct cgroup_device *devpolicy_v1_rules(size_t *ret_n)
{
	*ret_n = ARRAY_SIZE(devpolicy_v1);
	return devpolicy_v1;
}

/* libbpf prints to stderr by default; library code logs at debug at most. */
static int devpolicy_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char buf[512];
	if (level == LIBBPF_DEBUG)
		return 0;
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (n > 0 && buf[strlen(buf) - 1] == '\n')
		buf[strlen(buf) - 1] = '\0';
	log_debug("libbpf: %s", buf);
	return n;
}

int devpolicy_load(struct devpolicy **ret, struct err *e)
{
	libbpf_set_print(devpolicy_libbpf_print);
	struct devpolicy *dp = calloc(1, sizeof(*dp));
	if (!dp)
		return err_set(e, ENOMEM, "device policy");
	dp->skel = devpolicy_bpf__open();
	if (!dp->skel) {
		int r = err_set(e, errno ? errno : EINVAL, "open the device policy BPF object");
		free(dp);
		return r;
	}
	int r = devpolicy_bpf__load(dp->skel);
	if (r < 0) {
		r = err_set(e, -r, "load the device policy BPF program (cgroup_dev)");
		devpolicy_free(dp);
		return r;
	}
	dp->prog_fd = bpf_program__fd(dp->skel->progs.corral_devpolicy);
	dp->map_fd = bpf_map__fd(dp->skel->maps.extra_devices);
	struct bpf_prog_info info = {0};
	__u32 len = sizeof(info);
	if (bpf_obj_get_info_by_fd(dp->prog_fd, &info, &len) == 0)
		dp->prog_id = info.id;
	*ret = dp;
	return 0;
}

void devpolicy_free(struct devpolicy *dp)
{
	if (!dp)
		return;
	devpolicy_bpf__destroy(dp->skel); /* attachments stay: they belong to the cgroups now */
	free(dp);
}

uint32_t devpolicy_prog_id(const struct devpolicy *dp) { return dp ? dp->prog_id : 0; }

int devpolicy_attach(struct devpolicy *dp, int cgroup_fd, struct err *e)
{
	if (cgroup_fd < 0)
		return err_setx(e, EBADF, "attach device policy: the sandbox has no v2 cgroup");
	if (devpolicy_is_attached(dp, cgroup_fd, false))
		return 0;
	if (bpf_prog_attach(dp->prog_fd, cgroup_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) < 0)
		return err_set(e, errno, "attach device policy program to the sandbox's cgroup");
	return 0;
}

bool devpolicy_is_attached(const struct devpolicy *dp, int cgroup_fd, bool any_program)
{
	__u32 ids[DEVPOLICY_QUERY_MAX], n = DEVPOLICY_QUERY_MAX, flags = 0;
	if (bpf_prog_query(cgroup_fd, BPF_CGROUP_DEVICE, 0, &flags, ids, &n) < 0)
		return false;
	if (any_program)
		return n > 0;
	for (__u32 i = 0; i < n && dp; i++)
		if (ids[i] == dp->prog_id)
			return true;
	return false;
}

int devpolicy_cgroup_id(int cgroup_fd, uint64_t *ret)
{
	union {
		struct file_handle fh;
		char buf[sizeof(struct file_handle) + sizeof(uint64_t)];
	} u = {0};
	int mnt_id;
	u.fh.handle_bytes = sizeof(uint64_t);
	if (name_to_handle_at(cgroup_fd, "", &u.fh, &mnt_id, AT_EMPTY_PATH) < 0)
		return -errno;
	if (u.fh.handle_bytes != sizeof(uint64_t))
		return -EIO;
	memcpy(ret, u.fh.f_handle, sizeof(*ret));
	return 0;
}

int devpolicy_allow(struct devpolicy *dp, int cgroup_fd, const struct devpolicy_device *dev, struct err *e)
{
	struct devpolicy_key key = {0};
	struct devpolicy_value val = {.access = dev->access};
	if (dev->type != 'c' && dev->type != 'b')
		return err_setx(e, EINVAL, "device type '%c' is neither 'c' nor 'b'", dev->type);
	if (!dev->access || (dev->access & ~(DEVPOLICY_ACC_READ | DEVPOLICY_ACC_WRITE | DEVPOLICY_ACC_MKNOD)))
		return err_setx(e, EINVAL, "device access %#x is empty or unknown", dev->access);
	uint64_t id;
	int r = devpolicy_cgroup_id(cgroup_fd, &id);
	if (r < 0)
		return err_set(e, -r, "read the sandbox's cgroup id");
	key.cgroup_id = id;
	key.type = dev->type == 'c' ? DEVPOLICY_DEV_CHAR : DEVPOLICY_DEV_BLOCK;
	key.major = dev->major;
	key.minor = dev->minor;
	if (bpf_map_update_elem(dp->map_fd, &key, &val, BPF_ANY) < 0)
		return err_set(e, errno, "allow device %c %u:%u to the sandbox", dev->type, dev->major, dev->minor);
	return 0;
}

void devpolicy_forget(struct devpolicy *dp, int cgroup_fd)
{
	uint64_t id;
	if (!dp || cgroup_fd < 0 || devpolicy_cgroup_id(cgroup_fd, &id) < 0)
		return;
	/* Collect first: deleting while iterating restarts a hash map walk. Bounded by the map size. */
	struct devpolicy_key cur, next, *doomed = calloc(DEVPOLICY_MAX_EXTRA, sizeof(*doomed));
	size_t n = 0;
	if (!doomed)
		return;
	void *prev = NULL;
	while (n < DEVPOLICY_MAX_EXTRA && bpf_map_get_next_key(dp->map_fd, prev, &next) == 0) {
		if (next.cgroup_id == id)
			doomed[n++] = next;
		cur = next;
		prev = &cur;
	}
	for (size_t i = 0; i < n; i++)
		(void)bpf_map_delete_elem(dp->map_fd, &doomed[i]);
	free(doomed);
}
