#include "daemon/pool.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sandbox.h"
#include "daemon/uvutil.h"

/* Pooled sandboxes are started on a worker thread (sandbox_create_async): only the cheap
 * preparation and completion (about a millisecond) run on the loop. A refill starts shortly
 * after a sandbox is handed out — late enough that the client's answer has been written first —
 * and one start at a time keeps the pool from crowding out clients on a small machine. */
#define POOL_REFILL_DELAY_MS 5

struct pool {
	struct sandbox **ready;
	size_t n;
	char image[256];   /* what clients asked for, passed to sandbox_create */
	char image_id[65]; /* what it resolved to */
	uv_timer_t *refill;
	unsigned spawning;  /* starts in flight on a worker thread */
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

static void on_pooled_started(struct sandbox *sb, const struct err *e, void *data)
{
	struct manager *m = data;
	struct pool *p = m->pool;
	p->spawning--;
	if (!sb) {
		if (!m->stopping)
			log_warn("pool: starting a %s sandbox ahead: %s", p->image, e->msg);
		return; /* the next claim schedules another try */
	}
	if (strcmp(sb->image_id, p->image_id) != 0 || sb->state != SANDBOX_RUNNING || p->n >= m->cfg.pool_size) {
		sandbox_finish(sb, REASON_TERMINATED, 0, SIGKILL, "not needed in the pool any more");
		return;
	}
	sb->pooled = true;
	if (m->n_running > 0)
		m->n_running--;
	p->ready[p->n++] = sb;
	pool_schedule_refill(m);
}

static void on_refill(uv_timer_t *t)
{
	struct manager *m = t->data;
	struct pool *p = m ? m->pool : NULL;
	if (!p || m->stopping || p->spawning || p->n >= m->cfg.pool_size || !p->image[0])
		return;
	if (m->n_running + p->n + 1 > m->cfg.max_sandboxes)
		return; /* never take capacity from clients */
	Corral__V1__CreateSandboxRequest__TagsEntry tag = CORRAL__V1__CREATE_SANDBOX_REQUEST__TAGS_ENTRY__INIT;
	Corral__V1__CreateSandboxRequest__TagsEntry *tags[] = {&tag};
	tag.key = (char *)POOL_TAG;
	tag.value = (char *)"1";
	Corral__V1__CreateSandboxRequest tmpl = CORRAL__V1__CREATE_SANDBOX_REQUEST__INIT;
	tmpl.image = p->image;
	tmpl.n_tags = 1;
	tmpl.tags = tags;
	struct err e = {0};
	if (sandbox_create_async(m, &tmpl, on_pooled_started, m, &e) < 0) {
		log_warn("pool: starting a %s sandbox ahead: %s", p->image, e.msg);
		return;
	}
	p->spawning++;
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
