/* A sandbox as the daemon manages it: its spec, its PID 1 (corral-init) and control channel,
 * timers, cgroups, and its execs. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "daemon/manager.h"

struct exec;

struct sandbox {
	struct manager *m;
	struct sandbox *next, *prev;
	char id[32];
	Corral__V1__CreateSandboxRequest *spec; /* owned; tags as currently set */
	int32_t state;                           /* SANDBOX_RUNNING / SANDBOX_FINISHED */
	int64_t created_at_ms, finished_at_ms;   /* wall clock */
	struct exit_info exit;
	uint32_t uid_slot;
	bool has_uid_slot;

	pid_t init_pid;
	uint64_t init_start_time;
	int pidfd;                 /* -1 once init has been reaped */
	uv_poll_t *pidfd_poll;
	int ctl_fd;                /* control socket to init; -1 when closed */
	struct ctl_out *outq, *outq_tail; /* packets waiting for room in init's socket buffer */
	size_t outq_bytes;
	uv_poll_t *ctl_poll;
	bool adopting;             /* HELLO(adopt) sent, READY not yet received */
	struct cgroup_set *cg;
	char image_id[65];         /* the image it runs (pinned in the image store while it runs) */
	struct sandbox_net *net;   /* networking and tunnels (rpc_net.c); NULL: loopback only, no ports */

	struct exec *execs;        /* newest first */
	uint32_t n_execs, n_live_execs;
	uint32_t next_handle;
	int32_t running_user_execs; /* execs other than the entrypoint that have not finished */

	uv_timer_t *life_timer, *idle_timer;
	uint64_t last_activity;    /* manager_now() of the last exec start/finish or stdin write */
	struct waitlist waiters;   /* WaitSandbox calls */
	bool resources_released;   /* dirs, cgroups, uid slot given back */
	bool pooled;               /* started ahead in the pool: invisible to clients until claimed */
	struct files_state *files; /* the file API's calls in progress (daemon/rpc_files.c) */
};

/* Create and start a sandbox from a validated request. */
int sandbox_create(struct manager *m, const Corral__V1__CreateSandboxRequest *req, struct sandbox **ret,
		   struct err *e);
/* As sandbox_create, with the kernel's part of the start (spawn_sandbox) on a worker thread;
 * done runs on the loop with the sandbox, or NULL and why. 0, or <0 if it could not begin. */
int sandbox_create_async(struct manager *m, const Corral__V1__CreateSandboxRequest *req,
			 void (*done)(struct sandbox *sb, const struct err *e, void *data), void *data, struct err *e);
/* Hand a pooled sandbox to a client: its spec, timers and entrypoint become the request's. The
 * request must be pool-compatible (pool.h) and name the sandbox's image. */
int sandbox_claim(struct sandbox *sb, const Corral__V1__CreateSandboxRequest *req, struct err *e);
/* Re-attach a sandbox recorded as running before a daemon restart, or record its death. */
int sandbox_adopt(struct manager *m, const struct store_sandbox_row *row, struct err *e);
/* End the sandbox (if running) with a reason: kill everything, release its resources. */
void sandbox_finish(struct sandbox *sb, int32_t reason, int32_t code, int32_t sig, const char *message);
/* Wait up to timeout_ms for a finished sandbox's init to exit, then release its resources. */
void sandbox_reap_blocking(struct sandbox *sb, int timeout_ms);
/* Forget a finished sandbox: DB rows, output spools, memory. */
void sandbox_purge(struct sandbox *sb);
/* Free in-memory state only (daemon shutdown: the sandbox keeps running). */
void sandbox_detach(struct sandbox *sb);
/* Note client activity (for idle_timeout). */
void sandbox_touch(struct sandbox *sb);
/* Replace tags; persists. */
int sandbox_set_tags(struct sandbox *sb, Corral__V1__SetSandboxTagsRequest__TagsEntry *const *tags, size_t n,
		     struct err *e);
/* Send one control packet to init. -EPIPE if the channel is gone. */
int sandbox_send(struct sandbox *sb, const void *pkt, size_t len);
struct exec *sandbox_find_exec(struct sandbox *sb, const char *exec_id);
