/* The filesystem API of SandboxService (ReadFile, WriteFile, ListFiles, StatFile, MakeDirectory,
 * RemovePath). The daemon never enters a sandbox: every request goes to the sandbox's corral-init
 * (init/fileops.h), which resolves the path inside the sandbox and hands back an open file; the
 * daemon only moves bytes through that fd, in bounded chunks. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

struct sandbox;

/* Per-sandbox state of the file API (sandbox->files); created on first use. */
struct files_state;

/* A FILE_RESULT or FILE_ENTRIES packet from init (body after the header). Takes the fds. Returns
 * <0 with e set when init broke the protocol (the caller terminates the sandbox). */
int rpc_files_on_packet(struct sandbox *sb, uint32_t type, uint32_t id, const void *body, size_t len, int *fds,
			size_t nfds, struct err *e);
/* The sandbox ended (or lost its init): fail every file call in progress. */
void rpc_files_sandbox_end(struct sandbox *sb);
/* The sandbox's memory is going away: end its calls and free sandbox->files. */
void rpc_files_sandbox_free(struct sandbox *sb);
