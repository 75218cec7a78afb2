/* The sandbox device policy: one cgroup_dev BPF program (ebpf/devpolicy.bpf.c), loaded once per
 * daemon, attached to each sandbox's v2 cgroup before its first process exists. It lets a sandbox
 * open only the standard nodes (ebpf/devpolicy.h) plus the extra devices granted to it, and mknod
 * nothing. The same list is given to the v1 devices controller where one is mounted
 * (devpolicy_v1_rules), so both checks the kernel makes agree.
 *
 * Attachment is the legacy BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI: the kernel keeps the program on
 * the cgroup without any fd or pin of ours, so sandboxes keep their policy across a daemon restart,
 * and removing the cgroup detaches it (nothing to clean up, nothing to leak). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/cgroup.h"
#include "util/err.h"

struct devpolicy;

/* One extra device for one sandbox. type: 'c' or 'b'; minor UINT32_MAX = any; access: bits of
 * DEVPOLICY_ACC_* (ebpf/devpolicy.h). */
struct devpolicy_device {
	char type;
	uint32_t major, minor;
	uint32_t access;
};

/* Open and load the program (≈ 20 ms). Fails (-errno + message) where the kernel refuses cgroup
 * device programs; the caller decides whether that is fatal. */
int devpolicy_load(struct devpolicy **ret, struct err *e);
void devpolicy_free(struct devpolicy *dp);
/* Attach to a v2 cgroup (an O_DIRECTORY fd). Idempotent per program and cgroup. */
int devpolicy_attach(struct devpolicy *dp, int cgroup_fd, struct err *e);
/* True if this daemon's program, or any cgroup_dev program, is attached to the cgroup. */
bool devpolicy_is_attached(const struct devpolicy *dp, int cgroup_fd, bool any_program);
/* Grant the sandbox whose v2 cgroup is cgroup_fd one more device (a GPU node, say). */
int devpolicy_allow(struct devpolicy *dp, int cgroup_fd, const struct devpolicy_device *dev, struct err *e);
/* Drop every extra device granted to that cgroup (the sandbox ended). */
void devpolicy_forget(struct devpolicy *dp, int cgroup_fd);
/* The kernel's id of the program (bpftool prog show id N), for reports and tests. */
uint32_t devpolicy_prog_id(const struct devpolicy *dp);
/* The standard list for the v1 devices controller: "c 1:3 rw" ... */
const struct cgroup_device *devpolicy_v1_rules(size_t *ret_n);
/* The cgroup id of a v2 cgroup dir (what bpf_get_current_cgroup_id() returns inside it). */
int devpolicy_cgroup_id(int cgroup_fd, uint64_t *ret);
