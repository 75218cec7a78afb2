/* The control protocol between corrald and corral-init (PID 1 of every sandbox).
 *
 * Transport: an AF_UNIX SOCK_SEQPACKET socket; one packet = one message; file descriptors travel
 * as SCM_RIGHTS on the packet that names them. Every packet starts with struct initproto_hdr.
 * Integers are host-endian (both ends run on the same host). Both ends treat what they receive as
 * hostile: initproto_decode_* validate every length, count and string before anything is used.
 *
 * Exec handles are small integers chosen by the daemon (handle 0 is the sandbox's entrypoint);
 * the daemon maps them to the client-visible exec ids.
 *
 * Lifetime and restart adoption: corral-init holds its own copy of every exec's pipe ends (or pty
 * master) until the daemon RELEASEs the exec, so a process blocks on a full pipe while the daemon
 * is away and loses nothing. When the daemon side of the control socket closes, init makes a new
 * socketpair and parks the daemon's end at fd INITPROTO_ADOPT_FD. A restarted daemon takes it with
 * pidfd_getfd(init_pidfd, INITPROTO_ADOPT_FD), sends HELLO with adopt=1, and init answers with one
 * EXEC_STATE per exec it still holds (fds attached), then READY. Init closes its copy of the parked
 * end when the first message arrives on the new connection.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define INITPROTO_VERSION 1
#define INITPROTO_CONTROL_FD 3 /* fd of the control socket when corral-init starts */
#define INITPROTO_ADOPT_FD 10  /* where init parks the daemon's end while no daemon is connected */
#define INITPROTO_MAX_PACKET (192 * 1024) /* > 64 KiB argv + 64 KiB env + workdir + header */
#define INITPROTO_MAX_ARGS 4096 /* argv entries, and env entries, each */
#define INITPROTO_MAX_STRINGS_BYTES (64 * 1024) /* argv bytes, and env bytes, each (NULs counted) */
#define INITPROTO_MAX_FDS 3
#define INITPROTO_MAX_HANDLES 4096 /* execs init will hold at once */
#define INITPROTO_MSG_TEXT_MAX 256

enum initproto_type {
	/* daemon -> init */
	INITPROTO_HELLO = 1,       /* struct initproto_hello */
	INITPROTO_SPAWN = 2,       /* struct initproto_spawn + strings */
	INITPROTO_SIGNAL = 3,      /* struct initproto_signal: to the exec's process group */
	INITPROTO_CLOSE_STDIN = 4, /* no payload: init closes its copy of the stdin write end */
	INITPROTO_RELEASE = 5,     /* no payload: init forgets a finished exec and closes its fds */
	/* init -> daemon */
	INITPROTO_READY = 100,       /* struct initproto_hello (version), after HELLO is handled */
	INITPROTO_SPAWNED = 101,     /* struct initproto_spawned + fds (see below) */
	INITPROTO_SPAWN_FAILED = 102, /* struct initproto_failed */
	INITPROTO_EXITED = 103,      /* struct initproto_exited */
	INITPROTO_EXEC_STATE = 104,  /* struct initproto_exec_state + fds, only during adoption */

	/* The filesystem API (see "Files" below). hdr.handle carries a daemon-chosen request id. */
	/* daemon -> init */
	INITPROTO_FILE_OPEN_READ = 20,  /* file_req + path: FILE_RESULT (+ the file's fd, read-only) */
	INITPROTO_FILE_OPEN_WRITE = 21, /* file_req + path: FILE_RESULT (+ a temp file's fd, write-only) */
	INITPROTO_FILE_COMMIT = 22,     /* no payload: rename request id's temp file into place; FILE_RESULT */
	INITPROTO_FILE_ABORT = 23,      /* no payload: drop request id's temp file; no reply */
	INITPROTO_FILE_STAT = 24,       /* file_req + path: FILE_RESULT with the stat */
	INITPROTO_FILE_LIST = 25,       /* file_req + path: FILE_ENTRIES packets, then FILE_RESULT */
	INITPROTO_FILE_MKDIR = 26,      /* file_req (flags PARENTS, mode) + path: FILE_RESULT */
	INITPROTO_FILE_REMOVE = 27,     /* file_req (flags RECURSIVE) + path: FILE_RESULT */
	/* init -> daemon */
	INITPROTO_FILE_RESULT = 120,  /* struct initproto_file_result + target + NUL; one per request */
	INITPROTO_FILE_ENTRIES = 121, /* struct initproto_file_entries + entries, before LIST's result */
};

struct initproto_hdr {
	uint32_t type;
	uint32_t handle; /* the exec the message is about; 0 where none applies */
};

struct initproto_hello {
	uint32_t version;
	uint32_t adopt; /* 1: a restarted daemon wants every held exec re-announced */
};

/* Stream modes for stdout and stderr. */
#define INITPROTO_STREAM_PIPE 0
#define INITPROTO_STREAM_DEVNULL 1

#define INITPROTO_SPAWN_PTY 0x1u /* one pty: its master carries stdin and stdout; stderr merged */

/* Followed by: argc NUL-terminated argv strings, then envc NUL-terminated "K=V" strings, then
 * one NUL-terminated workdir (absolute; "" means "/"). Exactly argc + envc + 1 strings, no
 * trailing bytes. */
struct initproto_spawn {
	uint32_t flags;
	uint32_t stdout_mode;
	uint32_t stderr_mode;
	uint16_t pty_rows, pty_cols;
	uint32_t argc;
	uint32_t envc;
};

struct initproto_signal {
	int32_t signo;
};

/* fds attached, in this order, present only where the flag says so:
 * non-pty: [stdin write end][stdout read end if PIPE][stderr read end if PIPE]
 * pty:     [pty master]  (used for stdin, stdout and resize) */
#define INITPROTO_FD_STDIN 0x1u
#define INITPROTO_FD_STDOUT 0x2u
#define INITPROTO_FD_STDERR 0x4u
#define INITPROTO_FD_PTY 0x8u

struct initproto_spawned {
	int32_t pid; /* in the sandbox's pid namespace */
	uint32_t fd_flags;
};

struct initproto_failed {
	int32_t error; /* positive errno */
	char msg[INITPROTO_MSG_TEXT_MAX]; /* NUL-terminated */
};

struct initproto_exited {
	int32_t wait_status; /* as from waitpid() */
};

struct initproto_exec_state {
	int32_t pid;
	uint32_t running;     /* 0: exited, wait_status valid */
	int32_t wait_status;
	uint32_t fd_flags;    /* which fds are attached, as for SPAWNED */
};

/* A decoded SPAWN message; pointers point into the caller's packet buffer. */
struct initproto_spawn_req {
	struct initproto_spawn fixed;
	const char *argv[INITPROTO_MAX_ARGS + 1]; /* NULL-terminated */
	const char *envp[INITPROTO_MAX_ARGS + 1]; /* NULL-terminated */
	const char *workdir;
};

/* Encode a SPAWN into buf (size cap). Returns the packet length, or -E2BIG / -EINVAL. */
int initproto_encode_spawn(void *buf, size_t cap, uint32_t handle, const struct initproto_spawn *fixed,
			   const char *const *argv, const char *const *envp, const char *workdir);
/* Validate and decode a SPAWN packet (hdr included). Returns 0 or -EINVAL / -E2BIG. */
int initproto_decode_spawn(const void *pkt, size_t len, struct initproto_spawn_req *out);

/* Send one packet with up to INITPROTO_MAX_FDS fds. Returns 0 or -errno (-EAGAIN if it would block). */
int initproto_send(int sock, const void *pkt, size_t len, const int *fds, size_t nfds);
/* As initproto_send, but never blocks, whatever the socket's O_NONBLOCK (which the peer shares):
 * -EAGAIN when the socket buffer is full. */
int initproto_send_nowait(int sock, const void *pkt, size_t len, const int *fds, size_t nfds);
/* Receive one packet (never blocks: -EAGAIN when none is queued). *nfds in: capacity of fds (>= INITPROTO_MAX_FDS); out: fds received (all
 * O_CLOEXEC). Returns the packet length (0 on orderly EOF) or -errno. A truncated packet or
 * truncated fd list is -EMSGSIZE, with any received fds already closed. */
ssize_t initproto_recv(int sock, void *buf, size_t cap, int *fds, size_t *nfds);
/* Expected fd count for fd_flags. */
size_t initproto_fd_count(uint32_t fd_flags);

/* --- Files ----------------------------------------------------------------------------------
 * The filesystem API is served by init inside the sandbox, so every path resolves in the
 * sandbox's own view (openat2 with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS from init's root).
 * Init never moves file contents itself: it opens the file (or a temp file beside the target)
 * and hands the fd to the daemon, which reads or writes it in bounded chunks.
 *
 * Each request gets exactly one FILE_RESULT with its id, except OPEN_WRITE, which is answered
 * once when the temp file is open and once more after COMMIT, and ABORT, which is not answered.
 * The daemon must not reuse an id until its last answer arrived. When the daemon goes away,
 * init drops every temp file and every answer still owed.
 */
#define INITPROTO_FILE_PARENTS 0x1u   /* OPEN_WRITE, MKDIR: create missing parent directories */
#define INITPROTO_FILE_RECURSIVE 0x2u /* REMOVE: a directory and everything below it */
#define INITPROTO_FILE_REPLY_MAX (32 * 1024)     /* largest FILE_* packet init sends */
#define INITPROTO_FILE_MAX_ENTRIES 10000         /* LIST: more entries is E2BIG */
#define INITPROTO_FILE_MAX_LIST_BYTES (4u << 20) /* LIST: names + targets; more is E2BIG */
#define INITPROTO_FILE_MAX_WRITES 64             /* temp files init holds at once */

enum initproto_file_type {
	INITPROTO_FTYPE_REGULAR = 1, /* the values of corral.v1.FileType */
	INITPROTO_FTYPE_DIRECTORY = 2,
	INITPROTO_FTYPE_SYMLINK = 3,
	INITPROTO_FTYPE_OTHER = 4,
};

/* Followed by the path: absolute, NUL-terminated, shorter than PATH_MAX, no trailing bytes. */
struct initproto_file_req {
	uint32_t flags;
	uint32_t mode; /* permission bits for OPEN_WRITE / MKDIR (0: default) */
};

/* One filesystem entry as the sandbox sees it (uid/gid inside its user namespace). */
struct initproto_file_stat {
	uint32_t type;       /* enum initproto_file_type */
	uint32_t mode;       /* permission bits, <= 07777 */
	uint64_t size;
	int64_t mtime_ms;
	uint32_t uid, gid;
	uint16_t name_len;   /* ENTRIES: bytes of the name that follows (then a NUL); else 0 */
	uint16_t target_len; /* bytes of the symlink target that follows (then a NUL) */
	uint32_t reserved;   /* 0 */
};

struct initproto_file_result {
	int32_t error;     /* 0 or a positive errno */
	uint32_t has_stat; /* 1: st describes the path (or the opened file) */
	struct initproto_file_stat st;
	char msg[INITPROTO_MSG_TEXT_MAX]; /* NUL-terminated, says what failed on which path */
};

/* Followed by count entries: struct initproto_file_stat, name, NUL, target, NUL. */
struct initproto_file_entries {
	uint32_t count;
};

/* The file systems whose regular files the daemon reads and writes through a handed-over fd:
 * disk and memory file systems only. Pseudo file systems (proc, sysfs, cgroup, fuse, …) may block
 * or expose more than the file's bytes when driven from the daemon, so they are refused. */
bool initproto_file_fs_ok(long f_type);
/* An absolute path without NUL bytes, shorter than PATH_MAX. */
bool initproto_file_path_ok(const char *path, size_t len);
/* Encode a file request (type OPEN_READ .. REMOVE). Returns the length, -EINVAL or -E2BIG. */
int initproto_encode_file_req(void *buf, size_t cap, uint32_t type, uint32_t id, uint32_t flags, uint32_t mode,
			      const char *path);
/* Validate and decode one (hdr included); *ret_path points into pkt. Returns 0 or -EINVAL. */
int initproto_decode_file_req(const void *pkt, size_t len, struct initproto_file_req *ret, const char **ret_path);
/* Validate a FILE_RESULT body (after the header). *ret_target points into body ("" if none). */
int initproto_decode_file_result(const void *body, size_t len, struct initproto_file_result *ret,
				 const char **ret_target);
/* Append one entry to an ENTRIES packet being built in buf[*pos..cap). -E2BIG when it does not fit. */
int initproto_put_file_entry(void *buf, size_t cap, size_t *pos, const struct initproto_file_stat *st,
			     const char *name, const char *target);
/* Validate the ENTRIES body (after the header): *ret_count entries, each well formed. */
int initproto_check_file_entries(const void *body, size_t len, uint32_t *ret_count);
/* Walk a checked ENTRIES body: decode the entry at *pos and advance it. Pointers point into body. */
void initproto_next_file_entry(const char **pos, struct initproto_file_stat *st, const char **name,
			       const char **target);
