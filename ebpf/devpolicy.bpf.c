/* Device policy of a sandbox: a cgroup_dev program on its v2 cgroup. The kernel runs it on every
 * open of a device node and every mknod of one by a process in the cgroup; returning 0 refuses
 * with EPERM. Allowed: the standard nodes (DEVPOLICY_STANDARD) for read and write, and what the
 * extra map grants this sandbox's cgroup. Everything else, mknod included, is refused: a miss is
 * a denial (fail closed). */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

#include "devpolicy.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEVPOLICY_MAX_EXTRA);
	__type(key, struct devpolicy_key);
	__type(value, struct devpolicy_value);
} extra_devices SEC(".maps");

static __always_inline __u32 standard_access(__u32 type, __u32 major, __u32 minor)
{
#define DEVPOLICY_MATCH(t, ma, mi)                                                                \
	if (type == (t) && major == (ma) && ((mi) == DEVPOLICY_ANY || minor == (__u32)(mi)))      \
		return DEVPOLICY_STANDARD_ACCESS;
	DEVPOLICY_STANDARD(DEVPOLICY_MATCH)
#undef DEVPOLICY_MATCH
	return 0;
}

SEC("cgroup/dev")
int corral_devpolicy(struct bpf_cgroup_dev_ctx *ctx)
{
	__u32 type = ctx->access_type & 0xffff, access = ctx->access_type >> 16;
	__u32 allowed = standard_access(type, ctx->major, ctx->minor);
	if (access && (access & ~allowed) == 0)
		return 1;
	struct devpolicy_key key = {
		.cgroup_id = bpf_get_current_cgroup_id(),
		.type = type,
		.major = ctx->major,
		.minor = ctx->minor,
	};
	struct devpolicy_value *v = bpf_map_lookup_elem(&extra_devices, &key);
	if (v)
		allowed |= v->access;
	key.minor = DEVPOLICY_ANY;
	v = bpf_map_lookup_elem(&extra_devices, &key);
	if (v)
		allowed |= v->access;
	return access && (access & ~allowed) == 0;
}

char LICENSE[] SEC("license") = "GPL";
