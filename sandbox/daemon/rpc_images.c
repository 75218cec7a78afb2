/* ImageService (BuildImage, ImportImage, GetImage, ListImages, DeleteImage) and
 * SandboxService/SnapshotFilesystem. */
#include "daemon/rpc_images.h"
#include "daemon/pool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "corral/v1/image.pb-c.h"
#include "daemon/bgjob.h"
#include "daemon/image_build.h"
#include "daemon/rpc.h"
#include "daemon/sandbox.h"
#include "daemon/snapshot.h"
#include "daemon/status.h"
#include "images/oci.h"
#include "images/store.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/misc.h"

#define IMPORT_MAX_ARCHIVE (2ull << 30)  /* spooled archive */
#define IMPORT_MAX_CONTENT (4ull << 30)  /* unpacked bytes of one layer */
#define IMPORT_MAX_FILE (1ull << 30)
#define IMPORT_MAX_ENTRIES 500000
#define IMPORTS_MAX 8                    /* imports in flight at once */
#define BUILD_MAX_STEPS 64
#define BUILD_MAX_PACKAGES 512

static int validate_image_name(const char *name, struct err *e)
{
	if (name[0] && (!name_is_valid(name, IMAGE_NAME_MAX) || image_store_is_builtin(name)))
		return err_setx(e, EINVAL, "image name \"%.64s\" must match [A-Za-z0-9][A-Za-z0-9._-]{0,62} and not be a "
					   "built-in name (busybox, debian, python)", name);
	return 0;
}

static void reply_image(struct grpc_call *call, const struct image *img, ProtobufCMessage *resp,
			Corral__V1__Image **slot)
{
	struct image_pb pb;
	if (image_pb_fill(img, &pb) < 0) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	*slot = &pb.msg;
	if (grpc_call_send(call, resp) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	image_pb_release(&pb);
}

/* ---- Get, List, Delete ------------------------------------------------------------------------- */

static void get_image(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	const Corral__V1__GetImageRequest *req = (const Corral__V1__GetImageRequest *)msg;
	if (!req->image[0] || strlen(req->image) > 128) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "image (a name or an id) is required");
		return;
	}
	struct image *img = NULL;
	struct err e = {0};
	if (image_store_get(m->images, req->image, &img, &e) < 0)
		return status_reply_err(call, &e);
	Corral__V1__GetImageResponse resp = CORRAL__V1__GET_IMAGE_RESPONSE__INIT;
	reply_image(call, img, &resp.base, &resp.image);
	image_free(img);
}

static void list_images(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	struct image **imgs = NULL;
	size_t n = 0;
	struct err e = {0};
	struct image *bb = NULL;
	image_store_get(m->images, "busybox", &bb, NULL); /* always listed: it costs nothing */
	image_free(bb);
	if (image_store_list(m->images, &imgs, &n, &e) < 0)
		return status_reply_err(call, &e);
	_cleanup_free_ struct image_pb *pbs = calloc(n ? n : 1, sizeof(*pbs));
	_cleanup_free_ Corral__V1__Image **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	size_t k = 0;
	for (size_t i = 0; pbs && ptrs && i < n; i++) {
		if (image_pb_fill(imgs[i], &pbs[k]) < 0)
			break;
		ptrs[k] = &pbs[k].msg;
		k++;
	}
	if (k < n) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	} else {
		Corral__V1__ListImagesResponse resp = CORRAL__V1__LIST_IMAGES_RESPONSE__INIT;
		resp.n_images = k;
		resp.images = ptrs;
		if (grpc_call_send(call, &resp.base) == 0)
			grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	}
	for (size_t i = 0; i < k; i++)
		image_pb_release(&pbs[i]);
	image_list_free(imgs, n);
}

/* A sandbox holds its image until its resources are released, a few ms after it finished (its
 * init is being reaped). If only such sandboxes hold the image, finish their release now (bounded:
 * SIGKILL was sent) so that Terminate then Delete works. False if a running sandbox uses it. */
static bool finish_releases(struct manager *m, const char *name_or_id)
{
	struct image *img = NULL;
	if (image_store_get(m->images, name_or_id, &img, NULL) < 0)
		return false;
	pool_release_image(m, img->id); /* sandboxes started ahead hold no client's work */
	bool running = false, reaped = false;
	for (struct sandbox *sb = m->sandboxes; sb && !running; sb = sb->next)
		running = sb->state == SANDBOX_RUNNING && !strcmp(sb->image_id, img->id);
	for (struct sandbox *sb = m->sandboxes; sb && !running; sb = sb->next)
		if (sb->state != SANDBOX_RUNNING && !sb->resources_released && !strcmp(sb->image_id, img->id)) {
			sandbox_reap_blocking(sb, 1000);
			reaped = true;
		}
	image_free(img);
	return !running && reaped;
}

static void delete_image(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	const Corral__V1__DeleteImageRequest *req = (const Corral__V1__DeleteImageRequest *)msg;
	if (!req->image[0] || strlen(req->image) > 128) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "image (a name or an id) is required");
		return;
	}
	struct err e = {0};
	int r = image_store_delete(m->images, req->image, &e);
	if (r == -EBUSY && finish_releases(m, req->image)) {
		err_clear(&e);
		r = image_store_delete(m->images, req->image, &e);
	}
	if (r == -EBUSY) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "%s", e.msg);
		return;
	}
	if (r < 0)
		return status_reply_err(call, &e);
	image_service_gc(m->imgsvc);
	Corral__V1__DeleteImageResponse resp = CORRAL__V1__DELETE_IMAGE_RESPONSE__INIT;
	if (grpc_call_send(call, &resp.base) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* ---- BuildImage --------------------------------------------------------------------------------- */

static bool package_name_ok(const char *p)
{
	if (!*p || *p == '-' || strlen(p) > 128)
		return false;
	for (; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr(".+-:=~", *p)))
			return false;
	return true;
}

static bool env_key_ok(const char *k)
{
	if (!*k || strlen(k) > 128 || (*k >= '0' && *k <= '9'))
		return false;
	for (; *k; k++)
		if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '_'))
			return false;
	return true;
}

static int validate_build(const Corral__V1__BuildImageRequest *req, struct err *e)
{
	if (!req->base_image[0] || strlen(req->base_image) > 128)
		return err_setx(e, EINVAL, "base_image is required (busybox, debian, python, or an image name or id)");
	if (validate_image_name(req->name, e) < 0)
		return -EINVAL;
	if (req->n_steps > BUILD_MAX_STEPS)
		return err_setx(e, EINVAL, "at most %d steps", BUILD_MAX_STEPS);
	for (size_t i = 0; i < req->n_steps; i++) {
		const Corral__V1__BuildStep *s = req->steps[i];
		switch (s->step_case) {
		case CORRAL__V1__BUILD_STEP__STEP_APT_INSTALL:
			if (!s->apt_install->n_packages || s->apt_install->n_packages > BUILD_MAX_PACKAGES)
				return err_setx(e, EINVAL, "step %zu: apt_install needs 1 to %d packages", i, BUILD_MAX_PACKAGES);
			for (size_t k = 0; k < s->apt_install->n_packages; k++)
				if (!package_name_ok(s->apt_install->packages[k]))
					return err_setx(e, EINVAL, "step %zu: invalid package name \"%.64s\"", i,
							s->apt_install->packages[k]);
			break;
		case CORRAL__V1__BUILD_STEP__STEP_RUN_COMMANDS: {
			size_t total = 0;
			for (size_t k = 0; k < s->run_commands->n_commands; k++)
				total += strlen(s->run_commands->commands[k]) + 1;
			if (!s->run_commands->n_commands || total > 64 * 1024)
				return err_setx(e, EINVAL, "step %zu: run_commands needs 1 or more commands, 64 KiB in all", i);
			break;
		}
		case CORRAL__V1__BUILD_STEP__STEP_COPY:
			if (!s->copy->tar.len)
				return err_setx(e, EINVAL, "step %zu: copy needs a tar archive", i);
			if (strlen(s->copy->dest) > 200 || strstr(s->copy->dest, ".."))
				return err_setx(e, EINVAL, "step %zu: copy dest must be a path without \"..\"", i);
			break;
		case CORRAL__V1__BUILD_STEP__STEP_ENV:
			for (size_t k = 0; k < s->env->n_env; k++)
				if (!env_key_ok(s->env->env[k]->key) || strlen(s->env->env[k]->value) > 4096)
					return err_setx(e, EINVAL, "step %zu: invalid env name \"%.64s\"", i, s->env->env[k]->key);
			break;
		case CORRAL__V1__BUILD_STEP__STEP_WORKDIR:
			if (s->workdir->workdir[0] != '/' || strlen(s->workdir->workdir) > 200)
				return err_setx(e, EINVAL, "step %zu: workdir must be an absolute path", i);
			break;
		default:
			return err_setx(e, EINVAL, "step %zu: no step kind set", i);
		}
	}
	return 0;
}

static void build_image(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	const Corral__V1__BuildImageRequest *req = (const Corral__V1__BuildImageRequest *)msg;
	struct err e = {0};
	if (validate_build(req, &e) < 0)
		return status_reply_err(call, &e);
	if (req->allow_network) { /* never ignore what was asked for */
		grpc_call_finish(call, GRPC_STATUS_UNIMPLEMENTED,
				 "allow_network is not supported yet: build steps reach only the host's package sources "
				 "(apt_install downloads on the host)");
		return;
	}
	image_build_serve(m->imgsvc, req, call);
}

/* ---- ImportImage ---------------------------------------------------------------------------------- */

struct import {
	struct import *next;
	struct manager *m;
	struct grpc_call *call;
	int fd;
	uint64_t bytes;
	char path[PATH_MAX];    /* spooled archive */
	char work[PATH_MAX];    /* scratch dir */
	char name[IMAGE_NAME_MAX + 1];
	bool started, cancelled;
	/* worker result */
	struct oci_result res;
	int rc;
	struct err err;
};

static void import_unlink(struct import *im)
{
	struct import **head = (struct import **)image_service_imports(im->m->imgsvc);
	for (struct import **pp = head; *pp; pp = &(*pp)->next)
		if (*pp == im) {
			*pp = im->next;
			break;
		}
}

static void import_free(struct import *im)
{
	if (im->fd >= 0)
		close(im->fd);
	unlink(im->path);
	fs_remove_tree(im->work, NULL);
	oci_result_release(&im->res);
	free(im);
}

static struct import *import_find(struct manager *m, struct grpc_call *call)
{
	for (struct import *im = *(struct import **)image_service_imports(m->imgsvc); im; im = im->next)
		if (im->call == call)
			return im;
	return NULL;
}

static void import_on_cancel(struct grpc_call *call, void *data)
{
	struct import *im = data;
	if (im->started) { /* the worker still runs: its on_done frees */
		im->cancelled = true;
		return;
	}
	import_unlink(im);
	grpc_call_unref(im->call);
	import_free(im);
}

static void import_work(struct bgjob *job, void *data)
{
	struct import *im = data;
	struct tarx_limits lim = {.max_total = IMPORT_MAX_CONTENT, .max_file = IMPORT_MAX_FILE,
				  .max_entries = IMPORT_MAX_ENTRIES};
	if (mkdir(im->work, 0700) < 0) {
		im->rc = err_set(&im->err, errno, "create %s", im->work);
		return;
	}
	im->rc = oci_import(im->path, im->work, image_store_layers_dir(im->m->images), &lim, NULL, NULL, &im->res,
			    &im->err);
}

static void import_done(struct bgjob *job, void *data)
{
	struct import *im = data;
	struct manager *m = im->m;
	import_unlink(im);
	struct err e = {0};
	int r = im->rc;
	if (r < 0)
		e = im->err;
	for (size_t i = 0; r == 0 && i < im->res.n_layers; i++)
		r = image_store_add_layer(m->images, im->res.layer_ids[i], im->res.layer_sizes[i], &e);
	struct image *img = NULL;
	if (r == 0) {
		const char *ids[OCI_MAX_LAYERS];
		for (size_t i = 0; i < im->res.n_layers; i++)
			ids[i] = im->res.layer_ids[i];
		struct image_spec spec = {.name = im->name, .layer_ids = ids, .n_layers = im->res.n_layers,
					  .env = (const char *const *)im->res.env, .n_env = im->res.n_env,
					  .workdir = im->res.workdir[0] ? im->res.workdir : "/"};
		r = image_store_add(m->images, &spec, &img, &e);
	}
	if (!im->cancelled) {
		if (r < 0) {
			status_reply_err(im->call, &e);
		} else {
			Corral__V1__ImportImageResponse resp = CORRAL__V1__IMPORT_IMAGE_RESPONSE__INIT;
			reply_image(im->call, img, &resp.base, &resp.image);
		}
	}
	if (r < 0)
		log_info("image import failed: %s", e.msg);
	image_free(img);
	grpc_call_unref(im->call);
	import_free(im);
	image_service_gc(m->imgsvc); /* layers of a refused import, if any were registered */
}

static const struct bgjob_ops import_ops = {.work = import_work, .on_done = import_done};

static void import_fail(struct import *im, enum grpc_status_code code, const char *msg)
{
	grpc_call_finish(im->call, code, "%s", msg);
	import_unlink(im);
	grpc_call_unref(im->call);
	import_free(im);
}

static void import_image(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	const Corral__V1__ImportImageRequest *req = (const Corral__V1__ImportImageRequest *)msg;
	struct import *im = import_find(m, call);
	if (!im) {
		if (!req) {
			grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "no archive data was sent");
			return;
		}
		size_t n = 0;
		for (struct import *o = *(struct import **)image_service_imports(m->imgsvc); o; o = o->next)
			n++;
		if (n >= IMPORTS_MAX) {
			grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "%d imports are already in progress", IMPORTS_MAX);
			return;
		}
		struct err e = {0};
		if (validate_image_name(req->name, &e) < 0)
			return status_reply_err(call, &e);
		im = calloc(1, sizeof(*im));
		if (!im) {
			grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			return;
		}
		im->m = m;
		im->call = call;
		snprintf(im->name, sizeof(im->name), "%s", req->name);
		char rnd[32];
		id_random(rnd, sizeof(rnd), "import-", 8);
		snprintf(im->path, sizeof(im->path), "%s/%s.tar", image_service_scratch_dir(m->imgsvc), rnd);
		snprintf(im->work, sizeof(im->work), "%s/%s.d", image_service_scratch_dir(m->imgsvc), rnd);
		im->fd = open(im->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (im->fd < 0) {
			free(im);
			grpc_call_finish(call, GRPC_STATUS_INTERNAL, "cannot spool the archive");
			return;
		}
		grpc_call_ref(call);
		grpc_call_on_cancel(call, import_on_cancel, im);
		struct import **head = (struct import **)image_service_imports(m->imgsvc);
		im->next = *head;
		*head = im;
	}
	if (req) {
		if (req->name[0] && strcmp(req->name, im->name))
			return import_fail(im, GRPC_STATUS_INVALID_ARGUMENT, "only the first message may carry the name");
		if (im->bytes + req->data.len > IMPORT_MAX_ARCHIVE)
			return import_fail(im, GRPC_STATUS_RESOURCE_EXHAUSTED, "the archive is larger than the 2 GiB import limit");
		size_t off = 0;
		while (off < req->data.len) {
			ssize_t w = write(im->fd, req->data.data + off, req->data.len - off);
			if (w < 0)
				return import_fail(im, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot spool the archive (disk full?)");
			off += (size_t)w;
		}
		im->bytes += req->data.len;
		return;
	}
	/* Half-close: unpack off the loop. */
	close(im->fd);
	im->fd = -1;
	if (im->bytes == 0)
		return import_fail(im, GRPC_STATUS_INVALID_ARGUMENT, "no archive data was sent");
	im->started = true;
	struct err e = {0};
	if (bgjob_start(m->loop, &import_ops, im, &e) < 0) {
		im->started = false;
		return import_fail(im, GRPC_STATUS_INTERNAL, e.msg);
	}
}

/* ---- SnapshotFilesystem ------------------------------------------------------------------------- */

static void snapshot_filesystem(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	snapshot_serve(ctx, (const Corral__V1__SnapshotFilesystemRequest *)msg, call);
}

/* ---- table ---------------------------------------------------------------------------------------- */

#define IMAGE_METHOD(name, kind, req, fn) {"/corral.v1.ImageService/" name, kind, &corral__v1__##req##__descriptor, fn}

static const struct grpc_method image_methods[] = {
	IMAGE_METHOD("BuildImage", GRPC_METHOD_SERVER_STREAM, build_image_request, build_image),
	IMAGE_METHOD("ImportImage", GRPC_METHOD_CLIENT_STREAM, import_image_request, import_image),
	IMAGE_METHOD("GetImage", GRPC_METHOD_UNARY, get_image_request, get_image),
	IMAGE_METHOD("ListImages", GRPC_METHOD_UNARY, list_images_request, list_images),
	IMAGE_METHOD("DeleteImage", GRPC_METHOD_UNARY, delete_image_request, delete_image),
	{"/corral.v1.SandboxService/SnapshotFilesystem", GRPC_METHOD_UNARY,
	 &corral__v1__snapshot_filesystem_request__descriptor, snapshot_filesystem},
};

const struct rpc_methods rpc_images_methods = {image_methods, ARRAY_SIZE(image_methods)};
