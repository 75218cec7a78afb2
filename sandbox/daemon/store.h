/* Durable daemon state in SQLite (WAL): sandboxes and execs. Specs are stored as the packed
 * protobuf request that created them, so the schema stays small as the API grows. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

struct store;

struct exit_info {
	int32_t reason; /* Corral__V1__ExitReason */
	int32_t code;
	int32_t signal;
	char message[256];
};

struct store_sandbox_row {
	const char *id;
	int32_t state; /* Corral__V1__SandboxState */
	int64_t created_at_ms, finished_at_ms;
	struct exit_info exit;
	int32_t init_pid;
	uint64_t init_start_time;
	uint32_t uid_slot;
	const void *spec; /* packed CreateSandboxRequest (tags as currently set) */
	size_t spec_len;
};

struct store_exec_row {
	const char *sandbox_id;
	const char *exec_id;
	uint32_t handle;
	int32_t state; /* Corral__V1__ExecState */
	int32_t pid;
	int64_t started_at_ms, finished_at_ms;
	struct exit_info exit;
	uint64_t stdin_offset;
	bool stdin_eof;
	bool released; /* init no longer holds its fds */
	const void *spec; /* packed StartExecRequest */
	size_t spec_len;
};

int store_open(const char *path, struct store **ret, struct err *e);
void store_close(struct store *s);

int store_sandbox_insert(struct store *s, const struct store_sandbox_row *row, struct err *e);
int store_sandbox_set_spec(struct store *s, const char *id, const void *spec, size_t len, struct err *e);
/* A pooled sandbox handed to a client: its spec and creation time become the client's. */
int store_sandbox_claim(struct store *s, const char *id, const void *spec, size_t len, int64_t created_at_ms,
			struct err *e);
int store_sandbox_finish(struct store *s, const char *id, int64_t finished_at_ms, const struct exit_info *exit,
			 struct err *e);
/* Delete the sandbox and all its execs. */
int store_sandbox_delete(struct store *s, const char *id, struct err *e);
/* Calls cb for every sandbox row; cb's row is valid only during the call. Stops if cb returns < 0. */
int store_sandbox_foreach(struct store *s, int (*cb)(const struct store_sandbox_row *row, void *data), void *data,
			  struct err *e);

/* Insert or replace the exec's row. */
int store_exec_put(struct store *s, const struct store_exec_row *row, struct err *e);
int store_exec_set_stdin(struct store *s, const char *sandbox_id, const char *exec_id, uint64_t offset, bool eof,
			 struct err *e);
int store_exec_foreach(struct store *s, const char *sandbox_id,
		       int (*cb)(const struct store_exec_row *row, void *data), void *data, struct err *e);

/* Networking of a sandbox (netpolicy): its pool pair, host veth and tunnels, for adoption. */
struct store_net_row {
	const char *sandbox_id;
	int64_t slot;       /* pool pair; -1: no network (ports only) */
	int32_t ifindex;    /* host end of its veth */
	uint64_t cgroup_id; /* its v2 cgroup */
	const char *tunnels; /* "container_port:host_port,..." */
};
int store_net_put(struct store *s, const struct store_net_row *row, struct err *e);
/* -ENOENT when the sandbox has no row; tunnels is copied into the caller's buffer. */
int store_net_get(struct store *s, const char *sandbox_id, struct store_net_row *ret, char *tunnels, size_t size,
		  struct err *e);
int store_net_delete(struct store *s, const char *sandbox_id, struct err *e);
