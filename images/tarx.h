/* Safe tar extraction into a layer directory (libarchive for reading; every write is ours, made
 * with openat relative to directory fds opened with O_NOFOLLOW, so nothing the archive creates can
 * redirect a later write). Refused: absolute paths, "..", links whose target leaves the root
 * (hard links to anything not extracted before), device nodes, over-size entries (-EDQUOT). setuid/setgid
 * bits are stripped. With oci_whiteouts, ".wh.NAME" becomes an overlay whiteout (char 0/0) and
 * ".wh..wh..opq" marks its directory opaque (trusted.overlay.opaque=y). Thread-safe. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

struct tarx_limits {
	uint64_t max_total;   /* bytes of file data */
	uint64_t max_file;    /* bytes of one file */
	uint64_t max_entries;
};

struct tarx_stats {
	uint64_t bytes, entries;
};

/* Extract the archive in fd (read from its current offset) into dst_dir below prefix ("" or a
 * relative path such as "app/src", created as needed). Limits exceeded: -EDQUOT with a message. */
int tarx_extract_fd(int fd, const char *dst_dir, const char *prefix, bool oci_whiteouts,
		    const struct tarx_limits *lim, struct tarx_stats *stats, struct err *e);
int tarx_extract_mem(const void *buf, size_t len, const char *dst_dir, const char *prefix, bool oci_whiteouts,
		     const struct tarx_limits *lim, struct tarx_stats *stats, struct err *e);
