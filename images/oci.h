/* OCI image import: a `docker save` archive or an OCI image layout tarball (already spooled to a
 * file) becomes layers under <layers>, one per image layer, with OCI whiteouts turned into
 * overlayfs whiteouts and opaque dirs (images/tarx.h does the safe extraction). Runs on a worker
 * thread; the caller registers the layers and the image in the store afterwards. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "images/tarx.h"
#include "util/err.h"

#define OCI_MAX_LAYERS 63

struct oci_result {
	char layer_ids[OCI_MAX_LAYERS][65]; /* bottom first */
	uint64_t layer_sizes[OCI_MAX_LAYERS];
	size_t n_layers;
	char **env; /* "KEY=VALUE" from the config, if any */
	size_t n_env;
	char workdir[256];
};

/* work_dir: an empty scratch dir (removed by the caller). Limits apply to the outer archive and
 * to each layer's contents. log(line, data) reports progress (may be NULL). */
int oci_import(const char *archive_path, const char *work_dir, const char *layers_dir, const struct tarx_limits *lim,
	       void (*log)(const char *line, void *data), void *log_data, struct oci_result *res, struct err *e);
void oci_result_release(struct oci_result *res);
