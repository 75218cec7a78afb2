#include "daemon/image_build.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/bgjob.h"
#include "daemon/build_worker.h"
#include "daemon/status.h"
#include "util/log.h"
#include "daemon/uvutil.h"
#include "images/store.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/misc.h"
#include "util/sha256.h"

#define GC_INTERVAL_MS (10 * 1000)
#define STEP_RECIPE "corral-step-v1"
/* python = debian + these (apt, --no-install-recommends): ~31 MB of .debs, ~25 s to build.
 * Not python3-matplotlib: on bookworm its dependencies pull python3-scipy, sympy, pythran, g++ and
 * boost (+170 MB of .debs, +900 MB installed, +100 s); add it with an apt_install step. */
static const char *const python_packages[] = {"python3", "python3-pip", "python3-venv", "python-is-python3",
					      "python3-numpy", "python3-pandas", "python3-requests", NULL};

const char *const image_default_env[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
					 "HOME=/root", "LANG=C.UTF-8", NULL};

struct watcher {
	struct watcher *next;
	struct grpc_call *call;
	struct build *b;
};

struct build {
	struct image_service *svc;
	struct build *next;
	char key[65];
	char label[80]; /* for logs: "debian", "python", "image build" */
	Corral__V1__BuildImageRequest *req; /* owned copy */
	bool builtin_debian;
	size_t step;
	char (*layers)[65]; /* bottom first; each held in the store while the build runs */
	size_t n_layers;
	char **env;
	size_t n_env;
	char workdir[256];
	struct watcher *watchers;
	struct build *dependents; /* builds waiting for this one (their base) */
	struct build *dep_next;
	bool running_job;
};

struct image_service {
	struct manager *m;
	int busybox_fd;
	struct build *builds;
	uv_timer_t *gc_timer;
	bool gc_running;
	char builds_dir[PATH_MAX];
	void *imports;
};

void **image_service_imports(struct image_service *svc) { return &svc->imports; }
const char *image_service_scratch_dir(const struct image_service *svc) { return svc->builds_dir; }

int image_service_busybox_fd(const struct image_service *svc) { return svc->busybox_fd; }

/* ---- Image messages -------------------------------------------------------------------------- */

int image_pb_fill(const struct image *img, struct image_pb *pb)
{
	memset(pb, 0, sizeof(*pb));
	corral__v1__image__init(&pb->msg);
	pb->msg.image_id = (char *)img->id;
	pb->msg.name = (char *)img->name;
	pb->layer_ids = calloc(img->n_layers ? img->n_layers : 1, sizeof(char *));
	pb->env_storage = calloc(img->n_env ? img->n_env : 1, sizeof(*pb->env_storage));
	pb->env = calloc(img->n_env ? img->n_env : 1, sizeof(*pb->env));
	pb->env_keys = calloc(img->n_env ? img->n_env : 1, sizeof(char *));
	if (!pb->layer_ids || !pb->env_storage || !pb->env || !pb->env_keys) {
		image_pb_release(pb);
		return -ENOMEM;
	}
	for (size_t i = 0; i < img->n_layers; i++)
		pb->layer_ids[i] = (char *)img->layer_ids[i];
	pb->msg.n_layer_ids = img->n_layers;
	pb->msg.layer_ids = pb->layer_ids;
	for (size_t i = 0; i < img->n_env; i++) {
		const char *eq = strchr(img->env[i], '=');
		pb->env_keys[i] = strndup(img->env[i], eq ? (size_t)(eq - img->env[i]) : strlen(img->env[i]));
		if (!pb->env_keys[i]) {
			image_pb_release(pb);
			return -ENOMEM;
		}
		corral__v1__image__env_entry__init(&pb->env_storage[i]);
		pb->env_storage[i].key = pb->env_keys[i];
		pb->env_storage[i].value = (char *)(eq ? eq + 1 : "");
		pb->env[i] = &pb->env_storage[i];
	}
	pb->msg.n_env = img->n_env;
	pb->msg.env = pb->env;
	pb->msg.workdir = (char *)img->workdir;
	pb->msg.size_bytes = img->size_bytes;
	pb->msg.created_at_ms = img->created_ms;
	pb->msg.expires_at_ms = img->expires_ms;
	return 0;
}

void image_pb_release(struct image_pb *pb)
{
	for (size_t i = 0; pb->env_keys && i < pb->msg.n_env; i++)
		free(pb->env_keys[i]);
	free(pb->env_keys);
	free(pb->env_storage);
	free(pb->env);
	free(pb->layer_ids);
	memset(pb, 0, sizeof(*pb));
}

/* ---- builds on the loop ---------------------------------------------------------------------- */

static void build_send_log(struct build *b, const char *line)
{
	Corral__V1__BuildImageResponse ev = CORRAL__V1__BUILD_IMAGE_RESPONSE__INIT;
	ev.event_case = CORRAL__V1__BUILD_IMAGE_RESPONSE__EVENT_LOG;
	ev.log = (char *)line;
	for (struct watcher *w = b->watchers; w; w = w->next)
		grpc_call_send(w->call, &ev.base);
}

static void build_logf(struct build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void build_logf(struct build *b, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_debug("build %s: %s", b->label, line);
	build_send_log(b, line);
}

static void build_step_done(struct build *b, uint32_t index, bool cached, const char *layer_id)
{
	Corral__V1__StepDone sd = CORRAL__V1__STEP_DONE__INIT;
	sd.index = index;
	sd.cached = cached;
	sd.layer_id = (char *)layer_id;
	Corral__V1__BuildImageResponse ev = CORRAL__V1__BUILD_IMAGE_RESPONSE__INIT;
	ev.event_case = CORRAL__V1__BUILD_IMAGE_RESPONSE__EVENT_STEP_DONE;
	ev.step_done = &sd;
	for (struct watcher *w = b->watchers; w; w = w->next)
		grpc_call_send(w->call, &ev.base);
}

static void watcher_on_cancel(struct grpc_call *call, void *data)
{
	struct watcher *w = data;
	struct build *b = w->b;
	for (struct watcher **pp = &b->watchers; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	grpc_call_unref(w->call);
	free(w);
}

static void build_free(struct build *b)
{
	struct image_service *svc = b->svc;
	for (struct build **pp = &svc->builds; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	for (size_t i = 0; i < b->n_layers; i++)
		image_store_release(svc->m->images, b->layers[i]);
	free(b->layers);
	for (size_t i = 0; i < b->n_env; i++)
		free(b->env[i]);
	free(b->env);
	if (b->req)
		corral__v1__build_image_request__free_unpacked(b->req, NULL);
	free(b);
}

static void build_continue(struct build *b);

/* End every watcher (image or error), wake dependents, free the build. */
static void build_end(struct build *b, const struct image *img, const struct err *e)
{
	struct image_pb pb;
	bool have_pb = img && image_pb_fill(img, &pb) == 0;
	while (b->watchers) {
		struct watcher *w = b->watchers;
		b->watchers = w->next;
		if (img && have_pb) {
			Corral__V1__BuildImageResponse ev = CORRAL__V1__BUILD_IMAGE_RESPONSE__INIT;
			ev.event_case = CORRAL__V1__BUILD_IMAGE_RESPONSE__EVENT_IMAGE;
			ev.image = &pb.msg;
			if (grpc_call_send(w->call, &ev.base) == 0)
				grpc_call_finish(w->call, GRPC_STATUS_OK, NULL);
		} else if (img) {
			grpc_call_finish(w->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		} else {
			status_reply_err(w->call, e);
		}
		grpc_call_on_cancel(w->call, NULL, NULL);
		grpc_call_unref(w->call);
		free(w);
	}
	if (have_pb)
		image_pb_release(&pb);
	struct build *deps = b->dependents;
	b->dependents = NULL;
	if (img)
		log_info("image build %s: done, image %.12s", b->label, img->id);
	else
		log_warn("image build %s failed: %s", b->label, e->msg);
	struct err copy = {0};
	if (e)
		copy = *e;
	build_free(b);
	while (deps) {
		struct build *d = deps;
		deps = d->dep_next;
		if (img)
			build_continue(d);
		else {
			err_setx(&copy, copy.code ? -copy.code : EIO, "base image build failed: %.400s", e ? e->msg : "?");
			build_end(d, NULL, &copy);
		}
	}
}

static void build_fail(struct build *b, const struct err *e) { build_end(b, NULL, e); }

static int build_push_layer(struct build *b, const char *id, struct err *e)
{
	if (b->n_layers >= IMAGE_MAX_LAYERS)
		return err_setx(e, E2BIG, "an image has at most %d layers", IMAGE_MAX_LAYERS);
	char (*nl)[65] = realloc(b->layers, (b->n_layers + 1) * sizeof(*nl));
	if (!nl)
		return err_set(e, ENOMEM, "build");
	b->layers = nl;
	snprintf(b->layers[b->n_layers++], 65, "%s", id);
	image_store_hold(b->svc->m->images, id);
	return 0;
}

static int build_set_env(struct build *b, const char *key, const char *value, struct err *e)
{
	size_t kl = strlen(key);
	char *kv;
	if (asprintf(&kv, "%s=%s", key, value) < 0)
		return err_set(e, ENOMEM, "env");
	for (size_t i = 0; i < b->n_env; i++)
		if (!strncmp(b->env[i], key, kl) && b->env[i][kl] == '=') {
			free(b->env[i]);
			b->env[i] = kv;
			return 0;
		}
	if (b->n_env >= IMAGE_MAX_ENV) {
		free(kv);
		return err_setx(e, E2BIG, "an image has at most %d env entries", IMAGE_MAX_ENV);
	}
	char **ne = realloc(b->env, (b->n_env + 1) * sizeof(char *));
	if (!ne) {
		free(kv);
		return err_set(e, ENOMEM, "env");
	}
	b->env = ne;
	b->env[b->n_env++] = kv;
	return 0;
}

static void job_on_log(struct bgjob *job, const char *line, void *data)
{
	struct build_job *j = data;
	build_send_log(j->b, line);
}

static void job_on_done(struct bgjob *job, void *data)
{
	struct build_job *j = data;
	struct build *b = j->b;
	struct image_service *svc = b->svc;
	if (j->kind != JOB_DEBIAN && j->kind != JOB_COPY)
		manager_free_uid_slot(svc->m, j->uid_slot);
	b->running_job = false;
	struct err e = {0};
	int r = j->rc;
	if (r < 0)
		e = j->err;
	if (r == 0)
		r = image_store_add_layer(svc->m->images, j->layer_id, j->size, &e);
	if (r == 0 && b->builtin_debian) {
		const char *ids[] = {j->layer_id};
		struct image_spec spec = {.name = "debian", .layer_ids = ids, .n_layers = 1,
					  .env = (const char *const *)image_default_env, .n_env = 3, .workdir = "/"};
		struct image *img = NULL;
		r = image_store_add(svc->m->images, &spec, &img, &e);
		build_job_free(j);
		if (r < 0)
			return build_fail(b, &e);
		build_end(b, img, NULL);
		image_free(img);
		return;
	}
	if (r == 0) {
		char key[65];
		memcpy(key, j->layer_id, sizeof(key));
		if (!b->req->force)
			image_store_step_put(svc->m->images, key, j->layer_id, NULL);
		r = build_push_layer(b, j->layer_id, &e);
	}
	if (r < 0) {
		build_job_free(j);
		return build_fail(b, &e);
	}
	build_step_done(b, (uint32_t)b->step, false, j->layer_id);
	build_job_free(j);
	b->step++;
	build_continue(b);
}

static const struct bgjob_ops build_job_ops = {.work = build_worker_run, .on_log = job_on_log, .on_done = job_on_done};

static void hash_field(struct sha256 *h, const void *p, size_t n)
{
	uint64_t len = n;
	sha256_update(h, &len, sizeof(len));
	sha256_update(h, p, n);
}

/* Cache key of a step: its parent layers, env and workdir (they shape what the command does) and
 * its inputs. It doubles as the id of the layer it makes. */
static void step_key(const struct build *b, const Corral__V1__BuildStep *s, char out[65])
{
	struct sha256 h;
	sha256_init(&h);
	hash_field(&h, STEP_RECIPE, sizeof(STEP_RECIPE));
	for (size_t i = 0; i < b->n_layers; i++)
		hash_field(&h, b->layers[i], 64);
	for (size_t i = 0; i < b->n_env; i++)
		hash_field(&h, b->env[i], strlen(b->env[i]));
	hash_field(&h, b->workdir, strlen(b->workdir));
	uint32_t kind = (uint32_t)s->step_case;
	hash_field(&h, &kind, sizeof(kind));
	if (s->step_case == CORRAL__V1__BUILD_STEP__STEP_APT_INSTALL)
		for (size_t i = 0; i < s->apt_install->n_packages; i++)
			hash_field(&h, s->apt_install->packages[i], strlen(s->apt_install->packages[i]));
	else if (s->step_case == CORRAL__V1__BUILD_STEP__STEP_RUN_COMMANDS)
		for (size_t i = 0; i < s->run_commands->n_commands; i++)
			hash_field(&h, s->run_commands->commands[i], strlen(s->run_commands->commands[i]));
	else if (s->step_case == CORRAL__V1__BUILD_STEP__STEP_COPY) {
		hash_field(&h, s->copy->tar.data, s->copy->tar.len);
		hash_field(&h, s->copy->dest, strlen(s->copy->dest));
	}
	uint8_t d[32];
	sha256_final(&h, d);
	sha256_hex(d, out);
}

static int job_new(struct build *b, enum job_kind kind, struct build_job **ret, struct err *e)
{
	struct image_service *svc = b->svc;
	struct build_job *j = calloc(1, sizeof(*j));
	if (!j)
		return err_set(e, ENOMEM, "build job");
	j->b = b;
	j->kind = kind;
	j->busybox_fd = svc->busybox_fd;
	j->cg_host = &svc->m->cgroups;
	j->confine = svc->m->confine;
	snprintf(j->layers_dir, sizeof(j->layers_dir), "%s", image_store_layers_dir(svc->m->images));
	char rnd[32];
	id_random(rnd, sizeof(rnd), "", 8);
	snprintf(j->work_dir, sizeof(j->work_dir), "%s/%s", svc->builds_dir, rnd);
	snprintf(j->workdir, sizeof(j->workdir), "%s", b->workdir);
	j->lowers = calloc(b->n_layers ? b->n_layers : 1, sizeof(char *));
	if (!j->lowers) {
		free(j);
		return err_set(e, ENOMEM, "build job");
	}
	for (size_t i = 0; i < b->n_layers; i++) {
		if (asprintf(&j->lowers[j->n_lowers], "%s/%s", j->layers_dir, b->layers[b->n_layers - 1 - i]) < 0) {
			build_job_free(j);
			return err_set(e, ENOMEM, "build job");
		}
		j->n_lowers++;
	}
	*ret = j;
	return 0;
}

static int job_add_arg(struct build_job *j, const char *s)
{
	char **na = realloc(j->args, (j->n_args + 1) * sizeof(char *));
	if (!na)
		return -ENOMEM;
	j->args = na;
	if (!(j->args[j->n_args] = strdup(s)))
		return -ENOMEM;
	j->n_args++;
	return 0;
}

static int build_start_step_job(struct build *b, const Corral__V1__BuildStep *s, const char *key, struct err *e)
{
	enum job_kind kind = s->step_case == CORRAL__V1__BUILD_STEP__STEP_APT_INSTALL ? JOB_APT
			     : s->step_case == CORRAL__V1__BUILD_STEP__STEP_COPY     ? JOB_COPY
										     : JOB_RUN;
	struct build_job *j;
	int r = job_new(b, kind, &j, e);
	if (r < 0)
		return r;
	snprintf(j->layer_id, sizeof(j->layer_id), "%s", key);
	if (b->req->force) { /* a fresh layer next to the cached one */
		struct sha256 h;
		char rnd[40];
		uint8_t d[32];
		id_random(rnd, sizeof(rnd), "", 16);
		sha256_init(&h);
		sha256_update(&h, key, 64);
		sha256_update(&h, rnd, strlen(rnd));
		sha256_final(&h, d);
		sha256_hex(d, j->layer_id);
	}
	bool oom = false;
	if (kind == JOB_RUN) {
		for (size_t i = 0; i < b->n_env && !oom; i++)
			oom = job_add_arg(j, b->env[i]) < 0;
		j->n_env = j->n_args;
		/* commands run in order in one shell; the first failure stops the step */
		size_t len = 16;
		for (size_t i = 0; i < s->run_commands->n_commands; i++)
			len += strlen(s->run_commands->commands[i]) + 16;
		_cleanup_free_ char *cmd = calloc(1, len);
		size_t off = 0;
		if (cmd) {
			off += (size_t)snprintf(cmd + off, len - off, "set -e\n");
			for (size_t i = 0; i < s->run_commands->n_commands; i++)
				off += (size_t)snprintf(cmd + off, len - off, "%s\n", s->run_commands->commands[i]);
		}
		oom = oom || !cmd || job_add_arg(j, cmd) < 0;
	} else if (kind == JOB_APT) {
		for (size_t i = 0; i < s->apt_install->n_packages && !oom; i++)
			oom = job_add_arg(j, s->apt_install->packages[i]) < 0;
	} else {
		j->tar = s->copy->tar.data;
		j->tar_len = s->copy->tar.len;
		const char *d = s->copy->dest;
		while (*d == '/')
			d++;
		snprintf(j->dest, sizeof(j->dest), "%s", d);
	}
	if (oom) {
		build_job_free(j);
		return err_set(e, ENOMEM, "build job");
	}
	if (kind != JOB_COPY) {
		if (manager_alloc_uid_slot(b->svc->m, &j->uid_slot) < 0) {
			build_job_free(j);
			return err_setx(e, EUSERS, "no free uid range for a build step (max_sandboxes reached)");
		}
		j->uid_base = b->svc->m->cfg.uid_base + (uid_t)j->uid_slot * UID_RANGE;
	}
	r = bgjob_start(b->svc->m->loop, &build_job_ops, j, e);
	if (r < 0) {
		if (kind != JOB_COPY)
			manager_free_uid_slot(b->svc->m, j->uid_slot);
		build_job_free(j);
		return r;
	}
	b->running_job = true;
	return 0;
}

static struct build *build_find(struct image_service *svc, const char *key)
{
	for (struct build *b = svc->builds; b; b = b->next)
		if (!strcmp(b->key, key))
			return b;
	return NULL;
}

static int build_start(struct image_service *svc, const Corral__V1__BuildImageRequest *req, const char *key,
		       const char *label, struct build **ret, struct err *e);

/* Base resolved (or not yet built): set up layers/env/workdir, then run the steps in order. */
static void build_continue(struct build *b)
{
	struct image_service *svc = b->svc;
	struct err e = {0};
	if (b->step == 0 && b->n_layers == 0) {
		struct image *base = NULL;
		int r = image_store_get(svc->m->images, b->req->base_image, &base, &e);
		if (r == -ENOENT && image_store_is_builtin(b->req->base_image)) {
			char key[65];
			struct build *dep = NULL;
			snprintf(key, sizeof(key), "builtin:%s", b->req->base_image);
			Corral__V1__BuildImageRequest breq = CORRAL__V1__BUILD_IMAGE_REQUEST__INIT;
			breq.base_image = b->req->base_image;
			if (!(dep = build_find(svc, key)) &&
			    build_start(svc, &breq, key, b->req->base_image, &dep, &e) < 0)
				return build_fail(b, &e);
			build_logf(b, "waiting for the base image %s to be built", b->req->base_image);
			b->dep_next = dep->dependents;
			dep->dependents = b;
			return;
		}
		if (r < 0)
			return build_fail(b, &e);
		for (size_t i = 0; i < base->n_layers && r == 0; i++)
			r = build_push_layer(b, base->layer_ids[i], &e);
		for (size_t i = 0; i < base->n_env && r == 0; i++) {
			char *eq = strchr(base->env[i], '=');
			if (!eq)
				continue;
			*eq = '\0';
			r = build_set_env(b, base->env[i], eq + 1, &e);
		}
		snprintf(b->workdir, sizeof(b->workdir), "%s", base->workdir);
		image_free(base);
		if (r < 0)
			return build_fail(b, &e);
	}
	while (b->step < b->req->n_steps) {
		const Corral__V1__BuildStep *s = b->req->steps[b->step];
		int r = 0;
		switch (s->step_case) {
		case CORRAL__V1__BUILD_STEP__STEP_ENV:
			for (size_t i = 0; i < s->env->n_env && r == 0; i++)
				r = build_set_env(b, s->env->env[i]->key, s->env->env[i]->value, &e);
			if (r < 0)
				return build_fail(b, &e);
			build_step_done(b, (uint32_t)b->step, true, "");
			b->step++;
			continue;
		case CORRAL__V1__BUILD_STEP__STEP_WORKDIR:
			snprintf(b->workdir, sizeof(b->workdir), "%s", s->workdir->workdir);
			build_step_done(b, (uint32_t)b->step, true, "");
			b->step++;
			continue;
		default:
			break;
		}
		char key[65], cached[65];
		step_key(b, s, key);
		if (!b->req->force && image_store_step_lookup(svc->m->images, key, cached)) {
			build_logf(b, "step %zu: cached (layer %.12s)", b->step, cached);
			if (build_push_layer(b, cached, &e) < 0)
				return build_fail(b, &e);
			build_step_done(b, (uint32_t)b->step, true, cached);
			b->step++;
			continue;
		}
		build_logf(b, "step %zu: running", b->step);
		if (build_start_step_job(b, s, key, &e) < 0)
			return build_fail(b, &e);
		return; /* job_on_done continues */
	}
	const char *ids[IMAGE_MAX_LAYERS];
	for (size_t i = 0; i < b->n_layers; i++)
		ids[i] = b->layers[i];
	struct image_spec spec = {.name = b->req->name, .layer_ids = ids, .n_layers = b->n_layers,
				  .env = (const char *const *)b->env, .n_env = b->n_env, .workdir = b->workdir};
	struct image *img = NULL;
	if (image_store_add(svc->m->images, &spec, &img, &e) < 0)
		return build_fail(b, &e);
	build_end(b, img, NULL);
	image_free(img);
}

/* python = debian + the data packages, as an ordinary step build named "python". */
static int python_request(Corral__V1__BuildImageRequest **ret)
{
	static Corral__V1__AptInstall apt = CORRAL__V1__APT_INSTALL__INIT;
	static Corral__V1__BuildStep step = CORRAL__V1__BUILD_STEP__INIT;
	static Corral__V1__BuildStep *steps[1];
	Corral__V1__BuildImageRequest req = CORRAL__V1__BUILD_IMAGE_REQUEST__INIT;
	size_t n = 0;
	while (python_packages[n])
		n++;
	apt.n_packages = n;
	apt.packages = (char **)python_packages;
	step.step_case = CORRAL__V1__BUILD_STEP__STEP_APT_INSTALL;
	step.apt_install = &apt;
	steps[0] = &step;
	req.base_image = (char *)"debian";
	req.name = (char *)"python";
	req.n_steps = 1;
	req.steps = steps;
	size_t len = corral__v1__build_image_request__get_packed_size(&req);
	_cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	corral__v1__build_image_request__pack(&req, buf);
	*ret = corral__v1__build_image_request__unpack(NULL, len, buf);
	return *ret ? 0 : -ENOMEM;
}

static int build_start(struct image_service *svc, const Corral__V1__BuildImageRequest *req, const char *key,
		       const char *label, struct build **ret, struct err *e)
{
	struct build *b = calloc(1, sizeof(*b));
	if (!b)
		return err_set(e, ENOMEM, "build");
	b->svc = svc;
	snprintf(b->key, sizeof(b->key), "%s", key);
	snprintf(b->label, sizeof(b->label), "%s", label);
	bool builtin = !strncmp(key, "builtin:", 8);
	int r = 0;
	if (builtin && !strcmp(req->base_image, "python"))
		r = python_request(&b->req);
	else {
		size_t len = corral__v1__build_image_request__get_packed_size(req);
		_cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
		if (buf) {
			corral__v1__build_image_request__pack(req, buf);
			b->req = corral__v1__build_image_request__unpack(NULL, len, buf);
		}
		r = b->req ? 0 : -ENOMEM;
	}
	if (r < 0) {
		free(b);
		return err_set(e, ENOMEM, "build");
	}
	b->next = svc->builds;
	svc->builds = b;
	log_info("image build %s: started", label);
	if (builtin && !strcmp(req->base_image, "debian")) {
		b->builtin_debian = true;
		struct build_job *j;
		if ((r = job_new(b, JOB_DEBIAN, &j, e)) < 0 || (r = bgjob_start(svc->m->loop, &build_job_ops, j, e)) < 0) {
			if (r < 0 && j)
				build_job_free(j);
			build_free(b);
			return r;
		}
		b->running_job = true;
	} else {
		/* Deferred so that the caller can attach watchers before the first event. */
		b->step = 0;
	}
	*ret = b;
	return 0;
}

static void builtin_hook(const char *name, void *data)
{
	struct image_service *svc = data;
	char key[65];
	snprintf(key, sizeof(key), "builtin:%s", name);
	if (build_find(svc, key))
		return;
	Corral__V1__BuildImageRequest req = CORRAL__V1__BUILD_IMAGE_REQUEST__INIT;
	req.base_image = (char *)name;
	struct build *b;
	struct err e = {0};
	if (build_start(svc, &req, key, name, &b, &e) < 0) {
		log_warn("start build of %s: %s", name, e.msg);
		return;
	}
	if (!b->builtin_debian)
		build_continue(b);
}

static void request_key(const Corral__V1__BuildImageRequest *req, char out[65])
{
	size_t len = corral__v1__build_image_request__get_packed_size(req);
	_cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
	struct sha256 h;
	sha256_init(&h);
	if (buf) {
		corral__v1__build_image_request__pack(req, buf);
		sha256_update(&h, buf, len);
	}
	uint8_t d[32];
	sha256_final(&h, d);
	sha256_hex(d, out);
}

void image_build_serve(struct image_service *svc, const Corral__V1__BuildImageRequest *req, struct grpc_call *call)
{
	char key[65];
	const char *label;
	bool builtin = req->n_steps == 0 && image_store_is_builtin(req->base_image) && !req->name[0];
	if (builtin) {
		snprintf(key, sizeof(key), "builtin:%s", req->base_image);
		label = req->base_image;
		struct image *img = NULL;
		struct err e = {0};
		if (!req->force && image_store_get(svc->m->images, req->base_image, &img, &e) == 0) {
			struct image_pb pb;
			if (image_pb_fill(img, &pb) == 0) {
				Corral__V1__BuildImageResponse ev = CORRAL__V1__BUILD_IMAGE_RESPONSE__INIT;
				ev.event_case = CORRAL__V1__BUILD_IMAGE_RESPONSE__EVENT_IMAGE;
				ev.image = &pb.msg;
				if (grpc_call_send(call, &ev.base) == 0)
					grpc_call_finish(call, GRPC_STATUS_OK, NULL);
				image_pb_release(&pb);
			} else {
				grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			}
			image_free(img);
			return;
		}
	} else {
		request_key(req, key);
		label = req->name[0] ? req->name : "image";
	}
	struct build *b = build_find(svc, key);
	bool fresh = false;
	struct err e = {0};
	if (!b) {
		if (build_start(svc, req, key, label, &b, &e) < 0)
			return status_reply_err(call, &e);
		fresh = true;
	}
	struct watcher *w = calloc(1, sizeof(*w));
	if (!w) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	} else {
		w->call = call;
		w->b = b;
		grpc_call_ref(call);
		grpc_call_on_cancel(call, watcher_on_cancel, w);
		w->next = b->watchers;
		b->watchers = w;
		if (!fresh)
			build_logf(b, "joined a build of the same image already in progress");
	}
	if (fresh && !b->builtin_debian)
		build_continue(b);
}

/* ---- garbage collection -------------------------------------------------------------------------- */

struct trash_job {
	struct image_service *svc;
	char **paths;
	size_t n;
};

static void trash_work(struct bgjob *job, void *data)
{
	struct trash_job *t = data;
	for (size_t i = 0; i < t->n; i++)
		fs_remove_tree(t->paths[i], NULL);
}

static void trash_done(struct bgjob *job, void *data)
{
	struct trash_job *t = data;
	t->svc->gc_running = false;
	image_trash_free(t->paths, t->n);
	free(t);
}

static const struct bgjob_ops trash_ops = {.work = trash_work, .on_done = trash_done};

void image_service_gc(struct image_service *svc)
{
	if (svc->gc_running || svc->m->stopping)
		return;
	char **paths;
	size_t n;
	struct err e = {0};
	if (image_store_gc(svc->m->images, time_now_ms(), &paths, &n, &e) < 0) {
		log_warn("image gc: %s", e.msg);
		return;
	}
	if (n == 0) {
		image_trash_free(paths, n);
		return;
	}
	log_info("image gc: removing %zu unreferenced layer(s)", n);
	struct trash_job *t = calloc(1, sizeof(*t));
	if (!t) {
		image_trash_free(paths, n); /* left as .trash-*: removed at the next start */
		return;
	}
	*t = (struct trash_job){svc, paths, n};
	svc->gc_running = true;
	if (bgjob_start(svc->m->loop, &trash_ops, t, &e) < 0) {
		svc->gc_running = false;
		image_trash_free(paths, n);
		free(t);
	}
}

static void on_gc_timer(uv_timer_t *t) { image_service_gc(t->data); }

/* ---- service --------------------------------------------------------------------------------------- */

/* A sealed copy of the host's busybox-static: PID 1 of build steps, unreachable through /proc. */
static int load_busybox(int *ret, struct err *e)
{
	int r = fs_sealed_copy("/bin/busybox", "corral-build-sh", ret, e);
	return r < 0 ? err_prefix(e, "install busybox-static") : 0;
}

int image_service_new(struct manager *m, struct image_service **ret, struct err *e)
{
	struct image_service *svc = calloc(1, sizeof(*svc));
	if (!svc)
		return err_set(e, ENOMEM, "image service");
	svc->m = m;
	svc->busybox_fd = -1;
	snprintf(svc->builds_dir, sizeof(svc->builds_dir), "%s/builds", m->cfg.state_dir);
	fs_remove_tree(svc->builds_dir, NULL); /* steps of a daemon that died mid-build */
	int r = fs_mkdir_p(svc->builds_dir, 0711, e);
	if (r == 0)
		r = load_busybox(&svc->busybox_fd, e);
	if (r == 0 && !(svc->gc_timer = uvutil_timer_new(m->loop, svc)))
		r = err_set(e, ENOMEM, "image service");
	if (r < 0) {
		image_service_free(svc);
		return r;
	}
	uv_timer_start(svc->gc_timer, on_gc_timer, GC_INTERVAL_MS, GC_INTERVAL_MS);
	image_store_set_builtin_hook(m->images, builtin_hook, svc);
	*ret = svc;
	return 0;
}

void image_service_free(struct image_service *svc)
{
	if (!svc)
		return;
	uvutil_close((uv_handle_t *)svc->gc_timer);
	if (svc->busybox_fd >= 0)
		close(svc->busybox_fd);
	/* Builds still running belong to threads that die with the process; their watchers were
	 * cancelled by the server's close. */
	free(svc);
}
