/* The image store: an image is an ordered list of read-only layers; a layer is a directory
 * <state>/layers/<sha256> named by the hash of what built it. Built-in images are built on
 * first use. (Step builds, OCI import, snapshots and SQLite metadata come with the images issue.) */
#pragma once
#include <stddef.h>

#include "util/err.h"

struct image_store;

struct image {
	char id[65];       /* hex sha256 identifying the image */
	char name[64];     /* "" if it has none */
	size_t n_layers;
	char **layer_dirs; /* absolute paths, topmost first */
};

int image_store_open(const char *state_dir, struct image_store **ret, struct err *e);
void image_store_free(struct image_store *store);
/* Resolve a name ("busybox") or an image id. Builds a built-in image on first use.
 * -ENOENT (with a message naming it) for an unknown image. */
int image_store_resolve(struct image_store *store, const char *name_or_id, struct image **ret, struct err *e);
void image_free(struct image *img);
/* Names of the built-in images, NULL-terminated. */
const char *const *image_store_builtin_names(void);
