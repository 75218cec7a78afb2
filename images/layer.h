/* Layers on disk: a layer is a read-only directory <layers>/<id>, its files owned by 0-based ids
 * (the sandbox's idmapped lower mount shifts them). New layers are written into a temp dir under
 * <layers>, synced, then renamed into place, so a layer dir either exists whole or not at all.
 * Thread-safe (no shared state): snapshot and build workers call these off the event loop. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

struct layer_copy_stats {
	uint64_t bytes;   /* file bytes copied (holes not counted) */
	uint64_t entries; /* files, dirs, links, whiteouts */
};

/* Make a fresh temp dir <layers>/.tmp-<random> for a new layer; its path goes to tmp (PATH_MAX). */
int layer_tmp_new(const char *layers_dir, char *tmp, size_t size, struct err *e);
/* Copy an overlay upper dir (a sandbox's writable layer) into the empty dir dst, shifting owners
 * from [uid_base, uid_base+count) back to 0-based ids (others become 65534), keeping whiteouts
 * (char 0/0) and the trusted.overlay.opaque/redirect xattrs, dropping setuid/setgid bits, device
 * nodes and sockets. Never follows symlinks; holes stay holes. */
int layer_copy_upper(const char *src, const char *dst, uid_t uid_base, uint32_t count,
		     struct layer_copy_stats *stats, struct err *e);
/* syncfs the temp dir's filesystem, rename it to <layers>/<id> (an existing layer of that id wins:
 * ids name content or inputs, so the old one is the same), fsync <layers>. tmp is removed. */
int layer_commit(const char *layers_dir, const char *tmp, const char *id, struct err *e);
/* Bytes used by a tree (st_blocks), not following symlinks. */
int layer_disk_usage(const char *dir, uint64_t *ret, struct err *e);
bool layer_id_is_valid(const char *id);
