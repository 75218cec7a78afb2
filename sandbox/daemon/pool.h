/* A small pool of sandboxes started ahead of demand, so CreateSandbox can hand one out at once
 * instead of paying for namespaces, mounts and cgroups on the request's path.
 *
 * Pooled sandboxes are ordinary sandboxes created from a template (the image last asked for,
 * default limits, no network, no ports) and marked `pooled`: invisible to clients and not
 * counted as running until claimed. A request that needs anything else is created the usual way.
 * The pool refills as soon as a sandbox is handed out, one start at a time, with the kernel's
 * part of each start on a worker thread: a refill never holds up the event loop. Pooled sandboxes carry an internal
 * tag, so a restarted daemon recognises and removes those of an earlier run. */
#pragma once
#include <stdbool.h>

#include "daemon/manager.h"

#define POOL_TAG "corral.internal/pool"

struct sandbox;

int pool_init(struct manager *m);
void pool_free(struct manager *m);
/* Could req be served from the pool (whatever its image)? */
bool pool_compatible(const struct manager *m, const Corral__V1__CreateSandboxRequest *req);
/* A pooled sandbox of image_id claimed for req, or NULL if none is ready. */
struct sandbox *pool_claim(struct manager *m, const Corral__V1__CreateSandboxRequest *req, const char *image_id,
			   struct err *e);
/* A compatible request for image (name or id as the client gave it) was served: keep the pool
 * filled with that image from now on. */
void pool_note_demand(struct manager *m, const char *image, const char *image_id);
/* A pooled sandbox ended before being claimed. */
void pool_forget(struct manager *m, struct sandbox *sb);
/* The image is being deleted: end pooled sandboxes of it and stop refilling with it. */
void pool_release_image(struct manager *m, const char *image_id);
/* Daemon stop: pooled sandboxes are not left behind for the next daemon. */
void pool_drain(struct manager *m);
/* After adoption: remove pooled sandboxes of an earlier run. */
void pool_reap_adopted(struct manager *m);
