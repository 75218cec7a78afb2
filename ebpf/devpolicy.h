/* Types and the standard device list shared by devpolicy.bpf.c and the user-space loader
 * (sandbox/runtime/devpolicy.c). The BPF side gets __u32/__u64 from vmlinux.h, user space from
 * <linux/types.h>, which it includes first. */
#pragma once

/* uapi values the kernel's BTF does not carry (include/uapi/linux/bpf.h). */
#define DEVPOLICY_DEV_BLOCK 1 /* BPF_DEVCG_DEV_BLOCK */
#define DEVPOLICY_DEV_CHAR 2  /* BPF_DEVCG_DEV_CHAR */
#define DEVPOLICY_ACC_MKNOD 1 /* BPF_DEVCG_ACC_MKNOD */
#define DEVPOLICY_ACC_READ 2  /* BPF_DEVCG_ACC_READ */
#define DEVPOLICY_ACC_WRITE 4 /* BPF_DEVCG_ACC_WRITE */
#define DEVPOLICY_ANY 0xffffffffu /* wildcard minor in the extra-devices map */

#define DEVPOLICY_MAX_EXTRA 4096  /* entries in the extra-devices map, all sandboxes together */

/* The nodes every sandbox may open for reading and writing (what its /dev holds): X(type, major,
 * minor), minor DEVPOLICY_ANY for all. No entry allows mknod: a sandbox never needs one (its /dev
 * is built for it), and overlayfs whiteouts (char 0:0) are exempt in the kernel. */
#define DEVPOLICY_STANDARD(X)                          \
	X(DEVPOLICY_DEV_CHAR, 1, 3)   /* /dev/null */    \
	X(DEVPOLICY_DEV_CHAR, 1, 5)   /* /dev/zero */    \
	X(DEVPOLICY_DEV_CHAR, 1, 7)   /* /dev/full */    \
	X(DEVPOLICY_DEV_CHAR, 1, 8)   /* /dev/random */  \
	X(DEVPOLICY_DEV_CHAR, 1, 9)   /* /dev/urandom */ \
	X(DEVPOLICY_DEV_CHAR, 5, 0)   /* /dev/tty */     \
	X(DEVPOLICY_DEV_CHAR, 5, 2)   /* /dev/pts/ptmx */ \
	X(DEVPOLICY_DEV_CHAR, 136, DEVPOLICY_ANY) /* /dev/pts/N */
#define DEVPOLICY_STANDARD_ACCESS (DEVPOLICY_ACC_READ | DEVPOLICY_ACC_WRITE)

/* A device allowed to one sandbox beyond the standard ones (a GPU, say): key of the extra map.
 * cgroup_id is the sandbox's v2 cgroup (what bpf_get_current_cgroup_id() returns inside it). */
struct devpolicy_key {
	__u64 cgroup_id;
	__u32 type;  /* DEVPOLICY_DEV_* */
	__u32 major;
	__u32 minor; /* or DEVPOLICY_ANY */
	__u32 pad;   /* zero: keys are compared bytewise */
};

struct devpolicy_value {
	__u32 access; /* DEVPOLICY_ACC_* bits allowed */
};
