#include "daemon/uvutil.h"

#include <stdlib.h>

uv_timer_t *uvutil_timer_new(uv_loop_t *loop, void *data)
{
	uv_timer_t *t = malloc(sizeof(*t));
	if (!t)
		return NULL;
	uv_timer_init(loop, t);
	t->data = data;
	return t;
}

uv_poll_t *uvutil_poll_new(uv_loop_t *loop, int fd, void *data)
{
	uv_poll_t *p = malloc(sizeof(*p));
	if (!p)
		return NULL;
	if (uv_poll_init(loop, p, fd) < 0) {
		free(p);
		return NULL;
	}
	p->data = data;
	return p;
}

static void free_handle(uv_handle_t *h) { free(h); }

void uvutil_close(uv_handle_t *h)
{
	if (!h || uv_is_closing(h))
		return;
	h->data = NULL;
	uv_close(h, free_handle);
}
