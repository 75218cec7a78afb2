#include "daemon/snapshot.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "daemon/bgjob.h"
#include "daemon/image_build.h"
#include "daemon/sandbox.h"
#include "daemon/status.h"
#include "images/layer.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/misc.h"
#include "util/sha256.h"

#define SNAPSHOT_MAX_TTL_MS (365LL * 24 * 3600 * 1000)

struct snap {
	struct manager *m;
	struct grpc_call *call;
	char sandbox_id[32];
	char image_id[65]; /* the sandbox's image: the parent */
	char name[IMAGE_NAME_MAX + 1];
	int64_t ttl_ms;
	bool frozen;
	/* worker */
	char upper[PATH_MAX];
	char layers_dir[PATH_MAX];
	char layer_id[65];
	uid_t uid_base;
	uint64_t size;
	struct layer_copy_stats stats;
	double copy_ms;
	int rc;
	struct err err;
};

static void snap_work(struct bgjob *job, void *data)
{
	struct snap *s = data;
	char tmp[PATH_MAX];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((s->rc = layer_tmp_new(s->layers_dir, tmp, sizeof(tmp), &s->err)) < 0)
		return;
	s->rc = layer_copy_upper(s->upper, tmp, s->uid_base, UID_RANGE, &s->stats, &s->err);
	if (s->rc == 0)
		s->rc = layer_commit(s->layers_dir, tmp, s->layer_id, &s->err);
	else
		fs_remove_tree(tmp, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s->copy_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	s->size = s->stats.bytes;
}

static void snap_thaw(struct snap *s)
{
	if (!s->frozen)
		return;
	s->frozen = false;
	struct sandbox *sb = manager_find_sandbox(s->m, s->sandbox_id);
	struct err e = {0};
	if (sb && sb->state == SANDBOX_RUNNING && sb->cg && cgroup_set_freeze(sb->cg, false, &e) < 0)
		log_warn("sandbox %s: %s", s->sandbox_id, e.msg);
}

static void snap_done(struct bgjob *job, void *data)
{
	struct snap *s = data;
	snap_thaw(s);
	struct manager *m = s->m;
	struct err e = {0};
	struct image *parent = NULL, *img = NULL;
	int r = s->rc;
	if (r < 0)
		e = s->err;
	if (r == 0)
		r = image_store_add_layer(m->images, s->layer_id, s->size, &e);
	if (r == 0)
		r = image_store_get(m->images, s->image_id, &parent, &e);
	if (r == 0) {
		const char *ids[IMAGE_MAX_LAYERS];
		if (parent->n_layers + 1 > IMAGE_MAX_LAYERS) {
			r = err_setx(&e, E2BIG, "a snapshot would exceed %d layers: build a flattened image instead",
				     IMAGE_MAX_LAYERS);
		} else {
			for (size_t i = 0; i < parent->n_layers; i++)
				ids[i] = parent->layer_ids[i];
			ids[parent->n_layers] = s->layer_id;
			struct image_spec spec = {.name = s->name,
						  .layer_ids = ids,
						  .n_layers = parent->n_layers + 1,
						  .env = (const char *const *)parent->env,
						  .n_env = parent->n_env,
						  .workdir = parent->workdir,
						  .expires_ms = s->ttl_ms > 0 ? time_now_ms() + s->ttl_ms : 0};
			r = image_store_add(m->images, &spec, &img, &e);
		}
	}
	image_store_release(m->images, s->layer_id);
	if (r < 0) {
		status_reply_err(s->call, &e);
	} else {
		log_info("sandbox %s: snapshot %.12s (%llu bytes, %llu entries) in %.1f ms", s->sandbox_id, img->id,
			 (unsigned long long)s->stats.bytes, (unsigned long long)s->stats.entries, s->copy_ms);
		struct image_pb pb;
		if (image_pb_fill(img, &pb) < 0) {
			grpc_call_finish(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		} else {
			Corral__V1__SnapshotFilesystemResponse resp = CORRAL__V1__SNAPSHOT_FILESYSTEM_RESPONSE__INIT;
			resp.image = &pb.msg;
			if (grpc_call_send(s->call, &resp.base) == 0)
				grpc_call_finish(s->call, GRPC_STATUS_OK, NULL);
			image_pb_release(&pb);
		}
	}
	image_free(parent);
	image_free(img);
	grpc_call_unref(s->call);
	free(s);
}

static const struct bgjob_ops snap_ops = {.work = snap_work, .on_done = snap_done};

/* The writable layer of a running sandbox on the host: rw/upper (a per-sandbox tmpfs) where that
 * layout is used, else upper. */
static int find_upper(const struct sandbox *sb, char *out, size_t size, struct err *e)
{
	static const char *const subs[] = {"rw/upper", "upper"};
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		snprintf(out, size, "%s/%s/%s", sb->m->sandboxes_dir, sb->id, subs[i]);
		struct stat st;
		if (lstat(out, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
	}
	return err_setx(e, ENOENT, "sandbox %s has no writable layer on the host", sb->id);
}

void snapshot_serve(struct manager *m, const Corral__V1__SnapshotFilesystemRequest *req, struct grpc_call *call)
{
	struct err e = {0};
	if (req->name[0] && (!name_is_valid(req->name, IMAGE_NAME_MAX) || image_store_is_builtin(req->name))) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
				 "name must match [A-Za-z0-9][A-Za-z0-9._-]{0,62} and not be a built-in image name");
		return;
	}
	if (req->ttl_ms < 0 || req->ttl_ms > SNAPSHOT_MAX_TTL_MS) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "ttl_ms must be 0 (kept) to one year");
		return;
	}
	struct sandbox *sb = req->sandbox_id[0] ? manager_find_client_sandbox(m, req->sandbox_id) : NULL;
	if (!sb) {
		grpc_call_finish(call, req->sandbox_id[0] ? GRPC_STATUS_NOT_FOUND : GRPC_STATUS_INVALID_ARGUMENT,
				 req->sandbox_id[0] ? "sandbox %.64s not found" : "sandbox_id is required", req->sandbox_id);
		return;
	}
	if (sb->state != SANDBOX_RUNNING || !sb->has_uid_slot) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "sandbox %s has finished", sb->id);
		return;
	}
	if (!sb->image_id[0]) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "sandbox %s has no recorded image", sb->id);
		return;
	}
	struct snap *s = calloc(1, sizeof(*s));
	if (!s) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	s->m = m;
	s->call = call;
	snprintf(s->sandbox_id, sizeof(s->sandbox_id), "%s", sb->id);
	snprintf(s->image_id, sizeof(s->image_id), "%s", sb->image_id);
	snprintf(s->name, sizeof(s->name), "%s", req->name);
	snprintf(s->layers_dir, sizeof(s->layers_dir), "%s", image_store_layers_dir(m->images));
	s->ttl_ms = req->ttl_ms;
	s->uid_base = m->cfg.uid_base + (uid_t)sb->uid_slot * UID_RANGE;
	if (find_upper(sb, s->upper, sizeof(s->upper), &e) < 0) {
		free(s);
		return status_reply_err(call, &e);
	}
	/* A snapshot layer is named by its inputs: the sandbox, the moment, and randomness. */
	char rnd[40];
	id_random(rnd, sizeof(rnd), "", 16);
	struct sha256 h;
	uint8_t d[32];
	sha256_init(&h);
	sha256_update(&h, "corral-snapshot-v1", 19);
	sha256_update(&h, sb->id, strlen(sb->id) + 1);
	sha256_update(&h, rnd, strlen(rnd));
	sha256_final(&h, d);
	sha256_hex(d, s->layer_id);
	image_store_hold(m->images, s->layer_id);
	/* Frozen only while the copy runs, so the layer is one consistent moment of the sandbox. */
	if (sb->cg && cgroup_set_freeze(sb->cg, true, &e) == 0)
		s->frozen = true;
	else
		log_debug("sandbox %s: snapshot without freezing: %s", sb->id, e.msg);
	grpc_call_ref(call);
	if (bgjob_start(m->loop, &snap_ops, s, &e) < 0) {
		snap_thaw(s);
		image_store_release(m->images, s->layer_id);
		grpc_call_unref(call);
		free(s);
		return status_reply_err(call, &e);
	}
}
