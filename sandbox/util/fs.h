/* Filesystem helpers that never follow symlinks where that matters. */
#pragma once
#include <stddef.h>
#include <sys/types.h>

#include "util/err.h"

/* Remove path and everything below it without following symlinks (fd-based walk; hostile trees
 * written by sandboxes are safe to remove). Missing path is success. */
int fs_remove_tree(const char *path, struct err *e);
/* mkdir -p with mode for each created component. */
int fs_mkdir_p(const char *path, mode_t mode, struct err *e);
/* Write data to path atomically (temp file in the same dir, fsync, rename, fsync dir). */
int fs_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, struct err *e);
/* Copy regular file src to dst (created with mode, O_EXCL). */
int fs_copy_file(const char *src, const char *dst, mode_t mode, struct err *e);
/* A sealed, read-only memfd copy of the file at path (name shows in /proc/PID/exe), for
 * executables run inside sandboxes: nothing there can reach or overwrite the host's file. */
int fs_sealed_copy(const char *path, const char *name, int *ret_fd, struct err *e);
/* fsync a directory by path. */
int fs_sync_dir(const char *path, struct err *e);
