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
};

struct sandbox;

struct manager {
	uv_loop_t *loop;
	struct config cfg;
	struct store *store;
	struct image_store *images;
	struct grpc_server *grpc;
	struct grpc_method *methods; /* every module's RPC methods, served by grpc */
	struct cgroup_host cgroups;
	int init_memfd;            /* sealed copy of corral-init, exec'd as every sandbox's PID 1 */
	struct sandbox *sandboxes; /* all known sandboxes, running and retained finished ones */
	uint32_t n_running;
	uint8_t *uid_slots;        /* max_sandboxes entries: 1 = slot in use */
	uv_timer_t *purge_timer;
	char sandboxes_dir[PATH_MAX]; /* <state>/sandboxes: per-sandbox root, upper and work dirs */
	char execs_dir[PATH_MAX];     /* <state>/execs: per-sandbox exec output spools */
	bool stopping;
};

int manager_init(struct manager *m, uv_loop_t *loop, const struct config *cfg, struct err *e);
/* Adopt the sandboxes recorded in the state dir (after a restart). */
int manager_adopt(struct manager *m, struct err *e);
void manager_stop(struct manager *m);
void manager_free(struct manager *m);
struct sandbox *manager_find_sandbox(struct manager *m, const char *id);
int manager_alloc_uid_slot(struct manager *m, uint32_t *ret);
void manager_free_uid_slot(struct manager *m, uint32_t slot);
/* Milliseconds on the loop's monotonic clock. */
uint64_t manager_now(const struct manager *m);
