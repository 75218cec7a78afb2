/* Per-sandbox cgroups on cgroup v2 hosts and on hybrid hosts (controllers on v1, an empty cgroup2
 * mount at /sys/fs/cgroup/unified). Every sandbox gets `corral/<name>` in each hierarchy used:
 * the v1 memory, pids and cpu controllers where they live on v1, and always a v2 cgroup (the
 * attach point for BPF programs, and where limits go on pure v2 hosts). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

enum cgroup_mode { CGROUP_MODE_NONE, CGROUP_MODE_V1, CGROUP_MODE_HYBRID, CGROUP_MODE_V2 };

#define CGROUP_DEV_ANY 0xffffffffu /* wildcard minor in a cgroup_device */

/* One rule for the v1 devices controller: "c 1:3 rw". */
struct cgroup_device {
	char type;              /* 'c' or 'b' */
	uint32_t major, minor;  /* minor CGROUP_DEV_ANY: every minor */
	const char *access;     /* some of "rwm" */
};

struct cgroup_limits {
	uint64_t memory_bytes; /* 0: no limit. Swap is disabled where the kernel lets us. */
	uint32_t pids;         /* 0: no limit */
	double cpus;           /* fractional cores; 0: no limit */
	/* Where the v1 devices controller is mounted: NULL leaves the inherited rules; otherwise
	 * everything is denied, then these are allowed (keep it the same list as the BPF policy). */
	const struct cgroup_device *devices;
	size_t n_devices;
};

struct cgroup_host {
	enum cgroup_mode mode;
	char v2_root[256];       /* mount point of cgroup2, "" if none */
	bool v2_memory, v2_pids, v2_cpu; /* controllers usable in our v2 subtree */
	char v1_memory[256], v1_pids[256], v1_cpu[256]; /* v1 mount points, "" if not on v1 */
	char v1_devices[256];    /* v1 devices controller mount point, "" if none */
	char parent[64];         /* subtree name under each root, e.g. "corral" */
};

struct cgroup_set; /* one sandbox's cgroups; opaque */

/* Probe the host and create the parent subtree (`parent`, e.g. "corral") in each hierarchy,
 * enabling v2 controllers for it where possible. Safe to call again. */
int cgroup_host_init(const char *parent, struct cgroup_host *ret, struct err *e);
const char *cgroup_mode_name(enum cgroup_mode mode);

/* Create the sandbox's cgroups and apply limits. On failure nothing is left behind. */
int cgroup_set_create(const struct cgroup_host *host, const char *name, const struct cgroup_limits *limits,
		      struct cgroup_set **ret, struct err *e);
/* Open existing cgroups of a sandbox (daemon restart). -ENOENT if none exist. */
int cgroup_set_open(const struct cgroup_host *host, const char *name, struct cgroup_set **ret, struct err *e);
/* O_DIRECTORY fd of the v2 cgroup, for clone3(CLONE_INTO_CGROUP) and BPF attach; -1 if none. */
int cgroup_set_v2_fd(const struct cgroup_set *set);
/* True when clone3(CLONE_INTO_CGROUP) into the v2 fd places the process in every cgroup used
 * (pure v2); false on hybrid hosts, where cgroup_set_attach must also run. */
bool cgroup_set_clone_into_is_enough(const struct cgroup_set *set);
/* Move pid into the v1 cgroups (and the v2 one if not placed there by clone). */
int cgroup_set_attach(struct cgroup_set *set, pid_t pid, struct err *e);
/* SIGKILL every process in the sandbox's cgroups (cgroup.kill where it exists). */
int cgroup_set_kill(struct cgroup_set *set, struct err *e);
/* True if the kernel's OOM killer killed a process in this sandbox (memory.events / oom_control). */
bool cgroup_set_oom_killed(const struct cgroup_set *set);
/* How many processes the OOM killer killed in this sandbox so far (0 if unknown). */
uint64_t cgroup_set_oom_kill_count(const struct cgroup_set *set);
/* Path of the v1 devices cgroup of the set, or NULL where there is none. */
const char *cgroup_set_devices_path(const struct cgroup_set *set);
/* Number of processes still in the sandbox's cgroups (0 when empty), or -errno. */
int cgroup_set_count_procs(const struct cgroup_set *set);
/* Remove every cgroup directory (retrying briefly while the kernel still holds them) and free
 * the set. The set is freed even on error. */
int cgroup_set_destroy(struct cgroup_set *set, struct err *e);
/* As cgroup_set_destroy, one attempt without waiting (-EBUSY while a task still holds one). */
int cgroup_set_destroy_nowait(struct cgroup_set *set, struct err *e);
/* Free the handle, leaving the cgroups in place. Accepts NULL. */
void cgroup_set_free(struct cgroup_set *set);
/* Freeze (true) or thaw (false) every process of the sandbox through the v2 cgroup.freeze (pure v2
 * and hybrid hosts; the unified hierarchy of a hybrid host has it). Freezing waits, up to 1 s, for
 * the kernel to report the cgroup frozen. -EOPNOTSUPP where no v2 cgroup exists (v1-only hosts). */
int cgroup_set_freeze(struct cgroup_set *set, bool frozen, struct err *e);
