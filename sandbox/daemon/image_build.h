/* Image builds and the image service's background work: built-in images (debian via mmdebstrap
 * from the host's own apt sources, python = debian + packages), images built in steps (each step
 * run in a confined sandbox and its writable layer turned into a cached layer), layer garbage
 * collection. Builds run on worker threads (daemon/bgjob.h); the loop only keeps state, talks to
 * SQLite and streams log lines to every caller waiting on the same build. */
#pragma once
#include "corral/v1/image.pb-c.h"
#include "daemon/grpc.h"
#include "daemon/manager.h"

struct image_service;

int image_service_new(struct manager *m, struct image_service **ret, struct err *e);
void image_service_free(struct image_service *svc);
/* BuildImage: validate, then join the build of the same request or start it; streams events to
 * call and finishes it. */
void image_build_serve(struct image_service *svc, const Corral__V1__BuildImageRequest *req, struct grpc_call *call);
/* Collect garbage now (after a delete, a sandbox's end); the removal of dirs runs off the loop. */
void image_service_gc(struct image_service *svc);
/* Per-service list head for ImportImage calls in flight (owned by rpc_images.c). */
void **image_service_imports(struct image_service *svc);
/* <state>/builds: scratch space for builds and imports. */
const char *image_service_scratch_dir(const struct image_service *svc);
/* The sealed busybox-static memfd, PID 1 of build-step sandboxes. */
int image_service_busybox_fd(const struct image_service *svc);
/* Fill an Image message from a struct image; release with image_pb_release. */
struct image;
struct image_pb {
	Corral__V1__Image msg;
	Corral__V1__Image__EnvEntry *env_storage, **env;
	char **env_keys;
	char **layer_ids;
};
int image_pb_fill(const struct image *img, struct image_pb *pb);
void image_pb_release(struct image_pb *pb);
/* Default PATH etc. for build steps. */
extern const char *const image_default_env[];
