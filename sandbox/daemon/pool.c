#include "daemon/pool.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sandbox.h"
#include "daemon/uvutil.h"

/* Refills wait for this much quiet after the last create: starting a sandbox takes the loop for
 * a few milliseconds, which must not land on the path of a client's next request. Under
 * back-to-back load the pool simply runs dry and sandboxes are created on demand. */
#define POOL_REFILL_DELAY_MS 25

struct pool {
	struct sandbox **ready;
	size_t n;
	char image[256];   /* what clients asked for, passed to sandbox_create */
	char image_id[65]; /* what it resolved to */
	uv_timer_t *refill;
};

static void pool_schedule_refill(struct manager *m);

int pool_init(struct manager *m)
{
	if (m->cfg.pool_size == 0)
		return 0;
	struct pool *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->ready = calloc(m->cfg.pool_size, sizeof(*p->ready));
	p->refill = uvutil_timer_new(m->loop, m);
	if (!p->ready || !p->refill) {
		uvutil_close((uv_handle_t *)p->refill);
		free(p->ready);
		free(p);
		return -ENOMEM;
	}
	m->pool = p;
	return 0;
}

void pool_free(struct manager *m)
{
	struct pool *p = m->pool;
	if (!p)
		return;
	uvutil_close((uv_handle_t *)p->refill);
	free(p->ready);
	free(p);
	m->pool = NULL;
}

static bool resources_default(const Corral__V1__Resources *r)
{
	return !r || (r->cpu == 0 && r->memory_mib == 0 && r->pids == 0 && r->disk_mib == 0);
}

bool pool_compatible(const struct manager *m, const Corral__V1__CreateSandboxRequest *req)
{
	return m->pool && !m->stopping && !req->network && req->n_ports == 0 && resources_default(req->resources);
}

struct sandbox *pool_claim(struct manager *m, const Corral__V1__CreateSandboxRequest *req, const char *image_id,
			   struct err *e)
{
	struct pool *p = m->pool;
	if (!p || !pool_compatible(m, req) || p->n == 0 || strcmp(p->image_id, image_id) != 0)
		return NULL;
	struct sandbox *sb = p->ready[--p->n];
	pool_schedule_refill(m);
	if (sandbox_claim(sb, req, e) < 0) { /* still pooled, so still invisible: just end it */
		sandbox_finish(sb, REASON_FAILED_TO_START, 0, SIGKILL, e->msg);
		return NULL;
	}
	return sb;
}

void pool_forget(struct manager *m, struct sandbox *sb)
{
	struct pool *p = m->pool;
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++) {
		if (p->ready[i] == sb) {
			p->ready[i] = p->ready[--p->n];
			pool_schedule_refill(m);
			return;
		}
	}
}

/* Start one pooled sandbox; false when none can or should be started now. */
static bool refill_one(struct manager *m, struct pool *p)
{
	if (m->stopping || p->n >= m->cfg.pool_size || !p->image[0])
		return false;
	if (m->n_running + p->n >= m->cfg.max_sandboxes)
		return false; /* never take capacity from clients */
	Corral__V1__CreateSandboxRequest__TagsEntry tag = CORRAL__V1__CREATE_SANDBOX_REQUEST__TAGS_ENTRY__INIT;
	Corral__V1__CreateSandboxRequest__TagsEntry *tags[] = {&tag};
	tag.key = (char *)POOL_TAG;
	tag.value = (char *)"1";
	Corral__V1__CreateSandboxRequest tmpl = CORRAL__V1__CREATE_SANDBOX_REQUEST__INIT;
	tmpl.image = p->image;
	tmpl.n_tags = 1;
	tmpl.tags = tags;
	struct sandbox *sb;
	struct err e = {0};
	if (sandbox_create(m, &tmpl, &sb, &e) < 0) {
		log_warn("pool: starting a %s sandbox ahead: %s", p->image, e.msg);
		return false; /* the next claim schedules another try */
	}
	if (strcmp(sb->image_id, p->image_id) != 0 || sb->state != SANDBOX_RUNNING) {
		sandbox_finish(sb, REASON_TERMINATED, 0, SIGKILL, "pool image changed");
		return false;
	}
	sb->pooled = true;
	if (m->n_running > 0)
		m->n_running--;
	p->ready[p->n++] = sb;
	return true;
}

/* After a quiet spell (see POOL_REFILL_DELAY_MS), fill the whole pool at once: one window of a
 * few milliseconds rather than several that could each meet a client's request. */
static void on_refill(uv_timer_t *t)
{
	struct manager *m = t->data;
	struct pool *p = m ? m->pool : NULL;
	while (p && refill_one(m, p))
		;
}

static void pool_schedule_refill(struct manager *m)
{
	struct pool *p = m->pool;
	if (p && !m->stopping) /* restarts the delay: refill once creates pause */
		uv_timer_start(p->refill, on_refill, POOL_REFILL_DELAY_MS, 0);
}

static void pool_finish_all(struct manager *m, const char *why)
{
	struct pool *p = m->pool;
	while (p && p->n > 0) {
		struct sandbox *sb = p->ready[p->n - 1];
		sandbox_finish(sb, REASON_TERMINATED, 0, SIGKILL, why); /* calls pool_forget */
	}
}

void pool_note_demand(struct manager *m, const char *image, const char *image_id)
{
	struct pool *p = m->pool;
	if (!p || m->stopping)
		return;
	if (strcmp(p->image_id, image_id) != 0) { /* follow demand: the pool serves the last image asked for */
		pool_finish_all(m, "the pool now serves another image");
		snprintf(p->image, sizeof(p->image), "%s", image);
		snprintf(p->image_id, sizeof(p->image_id), "%s", image_id);
	}
	pool_schedule_refill(m);
}

void pool_release_image(struct manager *m, const char *image_id)
{
	struct pool *p = m->pool;
	if (!p || strcmp(p->image_id, image_id) != 0)
		return;
	p->image[0] = p->image_id[0] = '\0'; /* no refill from an image being deleted */
	pool_finish_all(m, "its image is being deleted");
}

void pool_drain(struct manager *m)
{
	pool_finish_all(m, "the daemon stopped");
}

static bool has_pool_tag(const struct sandbox *sb)
{
	for (size_t i = 0; i < sb->spec->n_tags; i++)
		if (!strcmp(sb->spec->tags[i]->key, POOL_TAG))
			return true;
	return false;
}

void pool_reap_adopted(struct manager *m)
{
	for (struct sandbox *sb = m->sandboxes; sb; sb = sb->next) {
		if (!has_pool_tag(sb))
			continue;
		sb->pooled = true; /* never shown to clients, also once finished */
		if (sb->state == SANDBOX_RUNNING) {
			if (m->n_running > 0)
				m->n_running--;
			sandbox_finish(sb, REASON_TERMINATED, 0, SIGKILL, "pooled by an earlier daemon");
		}
	}
}
