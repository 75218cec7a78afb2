/* A process started in a sandbox: its output streams (spooled to files, offset-addressed,
 * bounded, re-readable), its stdin (idempotent by offset) and its status. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "daemon/sandbox.h"

#define ENTRYPOINT_EXEC_ID "entrypoint"
#define ENTRYPOINT_HANDLE 0

struct reader;
struct stdin_write;
struct start_waiter;

/* One output stream. Stream offset == spool file offset; bytes before `start` were dropped
 * (holes punched) after a reader had received them and the buffer needed room. */
struct outstream {
	struct exec *ex;
	int which;          /* 1 stdout, 2 stderr */
	bool piped;         /* false: DEVNULL (or stderr of a pty exec): empty stream */
	int fd;             /* read end of the pipe or pty master; -1 when closed */
	uv_poll_t *poll;
	bool polling;
	int spool_fd;
	uint64_t start, end, delivered;
	bool eof;
	struct reader *readers;
};

struct exec {
	struct sandbox *sb;
	struct exec *next;
	char id[65];
	uint32_t handle;
	Corral__V1__StartExecRequest *spec; /* owned */
	int32_t state;                       /* EXEC_RUNNING / EXEC_FINISHED */
	bool spawned;                        /* init confirmed the process started */
	bool released;                       /* init dropped its copies of our fds */
	int32_t pid;
	int64_t started_at_ms, finished_at_ms;
	struct exit_info exit;
	int32_t kill_reason;                 /* REASON_TIMEOUT/REASON_TERMINATED when we killed it; 0 otherwise */
	uint64_t oom_kills_at_start;         /* the sandbox's OOM-kill count when it started (0 after a restart) */

	struct outstream out[2];
	int stdin_fd;                        /* -1 when closed */
	uv_poll_t *stdin_poll;
	uint64_t stdin_offset;
	bool stdin_eof;
	struct stdin_write *stdin_pending;
	int pty_fd;                          /* for resize; -1 if not a pty exec */

	uv_timer_t *timeout_timer;
	struct start_waiter *start_waiters;  /* StartExec calls waiting for SPAWNED */
	struct waitlist waiters;             /* WaitExec calls */
};

/* Create an exec record (not yet spawned) from a validated request; spools created. */
int exec_new(struct sandbox *sb, const char *exec_id, uint32_t handle, const Corral__V1__StartExecRequest *req,
	     struct exec **ret, struct err *e);
/* Send SPAWN to init. */
int exec_spawn(struct exec *ex, struct err *e);
/* Restore an exec from its DB row (restart). */
int exec_restore(struct sandbox *sb, const struct store_exec_row *row, struct exec **ret, struct err *e);
/* Init messages about this exec. fds are taken over (closed on error). */
int exec_on_spawned(struct exec *ex, int32_t pid, uint32_t fd_flags, int *fds, size_t nfds, struct err *e);
void exec_on_spawn_failed(struct exec *ex, int error, const char *msg);
void exec_on_exited(struct exec *ex, int wait_status);
/* The exec's sandbox ended: mark it finished (if running) as terminated. */
void exec_on_sandbox_end(struct exec *ex);
/* Kill the exec's process group with reason (REASON_TIMEOUT, REASON_TERMINATED). */
int exec_kill(struct exec *ex, int32_t reason);
void exec_persist(struct exec *ex);
void exec_free(struct exec *ex);
bool exec_is_entrypoint(const struct exec *ex);

/* RPC-side operations (called from the RPC handlers). */
void exec_add_start_waiter(struct exec *ex, struct grpc_call *call);
void exec_read(struct exec *ex, int which, uint64_t offset, struct grpc_call *call);
void exec_write_stdin(struct exec *ex, uint64_t offset, const uint8_t *data, size_t len, bool eof,
		      struct grpc_call *call);
int exec_resize(struct exec *ex, unsigned rows, unsigned cols, struct err *e);
