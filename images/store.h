/* The image store: an image is an ordered list of read-only layers plus a config (env, workdir);
 * a layer is a directory <state>/layers/<sha256> named by the hash of its content or of what
 * built it. Metadata lives in SQLite (<state>/images.db, WAL, synchronous=NORMAL like the daemon's own database: commits survive a daemon crash): images, names
 * (name -> image id, latest wins), layers (id, size), the step cache and the pins that tie running
 * sandboxes to their image. A layer's reference count is the number of images listing it (derived,
 * so it cannot drift). Every function here runs on the daemon's loop thread; layer files are
 * written by workers (images/layer.h) and registered here afterwards. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define IMAGE_MAX_LAYERS 64
#define IMAGE_MAX_ENV 256
#define IMAGE_NAME_MAX 63

struct image_store;

struct image {
	char id[65];       /* hex sha256 of the layer list and config */
	char name[64];     /* "" if it has none */
	size_t n_layers;
	char **layer_dirs; /* absolute paths, topmost first */
	char (*layer_ids)[65]; /* bottom first */
	char **env;        /* "KEY=VALUE" */
	size_t n_env;
	char workdir[256];
	uint64_t size_bytes;
	int64_t created_ms, expires_ms; /* expires 0: never */
};

/* What a new image is made of (borrowed). */
struct image_spec {
	const char *name;              /* "" or NULL: none */
	const char *const *layer_ids;  /* bottom first, each already registered */
	size_t n_layers;
	const char *const *env;        /* "KEY=VALUE" */
	size_t n_env;
	const char *workdir;
	int64_t expires_ms;
};

/* Called when a sandbox asks for a built-in image that is not built yet (debian, python): the
 * daemon starts the build in the background. */
typedef void (*image_builtin_hook)(const char *name, void *data);

int image_store_open(const char *state_dir, struct image_store **ret, struct err *e);
void image_store_free(struct image_store *store);
const char *image_store_layers_dir(const struct image_store *store);
void image_store_set_builtin_hook(struct image_store *store, image_builtin_hook hook, void *data);

/* Resolve a name or an image id for a new sandbox. busybox is built on first use (instant); an
 * unbuilt debian/python starts its build through the hook and fails with -EAGAIN. -ENOENT (with
 * a message naming it) for an unknown or expired image. */
int image_store_resolve(struct image_store *store, const char *name_or_id, struct image **ret, struct err *e);
/* Like resolve, but never starts a build (-ENOENT for an unbuilt built-in). */
int image_store_get(struct image_store *store, const char *name_or_id, struct image **ret, struct err *e);
/* All images (built-ins once built, named and unnamed ones), newest first. */
int image_store_list(struct image_store *store, struct image ***ret, size_t *n, struct err *e);
void image_free(struct image *img);
void image_list_free(struct image **imgs, size_t n);
/* Names of the built-in images, NULL-terminated. */
const char *const *image_store_builtin_names(void);
bool image_store_is_builtin(const char *name);

/* Record a layer dir that a worker committed under <layers>/<id>; size in bytes. */
int image_store_add_layer(struct image_store *store, const char *layer_id, uint64_t size, struct err *e);
/* Create (or find: ids are content-derived) an image and point its name at it. */
int image_store_add(struct image_store *store, const struct image_spec *spec, struct image **ret, struct err *e);
/* Delete an image by name or id (its name rows too). -EBUSY while a sandbox uses it. Layers
 * are freed by the next image_store_gc. */
int image_store_delete(struct image_store *store, const char *name_or_id, struct err *e);

/* Step cache: key (hex sha256 of the parent layers and the step's inputs) -> layer id. */
bool image_store_step_lookup(struct image_store *store, const char *key, char layer_id[65]);
int image_store_step_put(struct image_store *store, const char *key, const char *layer_id, struct err *e);

/* A running sandbox uses an image: it cannot be deleted or expire, nor its layers be collected. */
int image_store_pin(struct image_store *store, const char *sandbox_id, const char *image_id, struct err *e);
void image_store_unpin(struct image_store *store, const char *sandbox_id);
/* The image pinned by a sandbox (after a daemon restart); false if none. */
bool image_store_pinned(struct image_store *store, const char *sandbox_id, char image_id[65]);
/* Drop pins of sandboxes for which keep(sandbox_id) is false (startup, after adoption). */
void image_store_unpin_stale(struct image_store *store, bool (*keep)(const char *sandbox_id, void *data), void *data);
/* Hold layers in memory while a build or import that will reference them is in progress. */
int image_store_hold(struct image_store *store, const char *layer_id);
void image_store_release(struct image_store *store, const char *layer_id);

/* Delete expired unpinned images and forget unreferenced, unheld layers. Their dirs are renamed
 * to <layers>/.trash-* (instant); the paths go to *trash (caller removes them off the loop and
 * frees the array with image_trash_free). */
int image_store_gc(struct image_store *store, int64_t now_ms, char ***trash, size_t *n_trash, struct err *e);
void image_trash_free(char **trash, size_t n);
/* Built-in names, then every other image name (sorted), for GetInfo. Free with image_names_free. */
int image_store_names(struct image_store *store, char ***ret, size_t *n);
void image_names_free(char **names, size_t n);
