/* The daemon's one owning struct, its configuration, and the objects it manages. */
#pragma once
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "daemon/api.h"
#include "daemon/store.h"
#include "daemon/waitlist.h"
#include "images/store.h"
#include "runtime/cgroup.h"
#include "util/err.h"
#include "util/log.h"

#define CORRAL_VERSION "0.1.0"
#define DEFAULT_SOCKET "/run/corral/corral.sock"
#define DEFAULT_STATE_DIR "/var/lib/corral"
#define DEFAULT_SANDBOX_TIMEOUT_MS (300 * 1000)
#define MAX_WAIT_MS (60 * 1000)          /* long-poll cap for WaitSandbox / WaitExec */
#define MAX_STRINGS_BYTES (64 * 1024)    /* argv, and env, each */
#define MAX_LIVE_EXECS 1024              /* execs init holds at once, per sandbox */
#define MAX_EXEC_RECORDS 10000           /* exec records kept per sandbox */
#define MAX_TAGS 64
#define MAX_TAG_KEY 128
#define MAX_TAG_VALUE 1024
#define UID_RANGE 65536                  /* uids per sandbox */
#define DEFAULT_PIDS 4096                /* resources.pids when a request leaves it 0 */
#define DEFAULT_DISK_MIB (10 * 1024)     /* writable layer size when resources.disk_mib is 0 */

struct config {
	char socket_path[PATH_MAX];
	char state_dir[PATH_MAX];
	char listen[256];        /* "host:port" or "" */
	char token_file[PATH_MAX];
	char cgroup_parent[64];
	char init_path[PATH_MAX];
	uint32_t max_sandboxes;
	uint64_t output_buffer;  /* bytes retained per output stream */
	uint32_t retention_s;    /* how long finished sandboxes stay visible */
	uid_t uid_base;
	enum log_level log_level;
	/* Applied when a request leaves a resource 0 (--default-*); 0 here: that default's constant
	 * (memory: no limit). */
	uint64_t default_memory_mib;
	uint64_t default_disk_mib;
	uint32_t default_pids;
	bool require_hardening;  /* --require-hardening: refuse to start without every layer */
	bool no_confinement;     /* --no-confinement: namespaces only, for benchmarks */
	/* Networking (netpolicy/): --net-subnet, --net-uplink ("": default route's), --dns ("": the
	 * host's resolvers), --port-bind (where tunnels listen). */
	char net_subnet[64];
	char net_uplink[16];
	bool no_network;        /* --no-network: never touch the host's forwarding or NAT */
	uint32_t pool_size;     /* sandboxes started ahead of demand (--pool-size) */
	char net_dns[256];
	char port_bind[64];
};

struct sandbox;
struct image_service;
struct devpolicy;
struct netpolicy;
struct confine;

struct manager {
	uv_loop_t *loop;
	struct config cfg;
	struct store *store;
	struct image_store *images;
	struct image_service *imgsvc; /* builds, imports, snapshots, layer GC (daemon/image_build.c) */
	struct grpc_server *grpc;
	struct grpc_method *methods; /* every module's RPC methods, served by grpc */
	struct pool *pool;           /* sandboxes started ahead of demand; NULL with --pool-size 0 */
	struct cgroup_retry *cgroup_retries; /* cgroups of ended sandboxes still held by a zombie */
	uv_timer_t *cgroup_retry_timer;
	struct cgroup_host cgroups;
	struct devpolicy *devpolicy;   /* the cgroup_dev program, loaded once; NULL if the kernel refused */
	bool devpolicy_active;         /* every new sandbox gets the device program (GetInfo reads these) */
	char devpolicy_detail[128];    /* what is enforced, or why not */
	struct confine *confine;       /* caps, seccomp, Landlock, /proc masks: built once, applied per sandbox */
	bool userns_ok;                /* probed at start: unprivileged-range user namespaces work */
	char userns_detail[128];
	char bpf_lsm_detail[160];      /* BPF LSM probe result (never used for enforcement) */
	struct netpolicy *net;         /* networking: pool, NAT, BPF policy (set up on first need) */
	int init_memfd;            /* sealed copy of corral-init, exec'd as every sandbox's PID 1 */
	struct sandbox *sandboxes; /* all known sandboxes, running and retained finished ones */
	uint32_t n_running;
	uint8_t *uid_slots;        /* max_sandboxes entries: 1 = slot in use */
	uv_timer_t *purge_timer;
	char sandboxes_dir[PATH_MAX]; /* <state>/sandboxes: per-sandbox root, upper and work dirs */
	char execs_dir[PATH_MAX];     /* <state>/execs: per-sandbox exec output spools */
	bool stopping;
	bool server_closed;          /* stopping, and the gRPC server is closed */
	uint32_t starts_in_flight;   /* sandbox starts running on worker threads */
	struct pending_create *pending_creates; /* CreateSandbox calls waiting for their start */
	uint32_t n_pending_creates;
};

int manager_init(struct manager *m, uv_loop_t *loop, const struct config *cfg, struct err *e);
/* Adopt the sandboxes recorded in the state dir (after a restart). */
int manager_adopt(struct manager *m, struct err *e);
void manager_stop(struct manager *m);
/* A start on a worker thread ended: during a stop, the loop may end once none is left. */
void manager_start_done(struct manager *m);
void manager_free(struct manager *m);
struct sandbox *manager_find_sandbox(struct manager *m, const char *id);
/* As manager_find_sandbox, for client requests: pooled sandboxes (not handed out) are not found. */
struct sandbox *manager_find_client_sandbox(struct manager *m, const char *id);
/* The cgroups of an ended sandbox could not be removed yet (after a daemon restart its init is
 * not our child: the host's PID 1 reaps it, sometimes late, and a zombie keeps its cgroup busy).
 * Retried every half second for two minutes, and waited for (bounded) when the daemon stops. */
void manager_retry_cgroup_removal(struct manager *m, const char *name);
int manager_alloc_uid_slot(struct manager *m, uint32_t *ret);
void manager_free_uid_slot(struct manager *m, uint32_t slot);
/* Milliseconds on the loop's monotonic clock. */
uint64_t manager_now(const struct manager *m);
