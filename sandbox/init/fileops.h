/* corral-init's side of the filesystem API (protocol: init/initproto.h, "Files").
 *
 * Every path resolves from init's root with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), so
 * "..", absolute symlinks and /proc/<pid>/root all stay inside the sandbox; a final symlink is
 * never followed (stat, remove, read, and write, which replaces the link itself). Init does only
 * bounded work here: it opens files and hands their fds to the daemon, which moves the bytes; a
 * recursive removal runs in a short-lived child so a huge tree cannot stall PID 1.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "init/initproto.h"

#define FILEOPS_MAX_WORKERS 8 /* recursive removals running at once */

struct fileops_write; /* a temp file waiting for COMMIT or ABORT */

struct fileops_worker {
	pid_t pid;
	uint32_t id;
	char *path; /* for the answer's message */
};

struct fileops {
	int root; /* O_PATH fd of init's "/" (the sandbox's root), the anchor of every lookup */
	struct fileops_write *writes;
	size_t n_writes;
	struct fileops_worker workers[FILEOPS_MAX_WORKERS];
	size_t n_workers;
	char *buf; /* INITPROTO_FILE_REPLY_MAX bytes for replies */
};

/* How replies leave: one packet with an optional fd (-1: none). Failures are the sender's. */
typedef void (*fileops_send_fn)(void *ctx, const void *pkt, size_t len, int fd);

/* Open the root anchor (rootdir: "/" in a sandbox, any directory in tests). Returns 0 or -errno. */
int fileops_init(struct fileops *fo, const char *rootdir);
void fileops_free(struct fileops *fo);
/* Serve one FILE_* request packet (hdr included). Malformed requests get an EINVAL result. */
void fileops_request(struct fileops *fo, const void *pkt, size_t len, fileops_send_fn send, void *ctx);
/* A child was reaped: if it was a removal worker, answer its request. Returns true if it was. */
bool fileops_reaped(struct fileops *fo, pid_t pid, int wait_status, fileops_send_fn send, void *ctx);
/* The daemon went away: drop every temp file, and forget the answers owed to it. */
void fileops_reset(struct fileops *fo);
