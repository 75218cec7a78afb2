#include "daemon/waitlist.h"

#include <errno.h>
#include <stdlib.h>

#include "daemon/grpc.h"
#include "daemon/uvutil.h"

struct waiter {
	struct waitlist *wl;
	struct waiter *next, **pprev;
	struct grpc_call *call;
	uv_timer_t *timer;
	waitlist_reply_fn reply;
	void *obj;
};

static void waiter_unlink_free(struct waiter *w)
{
	if (w->pprev) {
		*w->pprev = w->next;
		if (w->next)
			w->next->pprev = w->pprev;
	}
	uvutil_close((uv_handle_t *)w->timer);
	grpc_call_unref(w->call);
	free(w);
}

static void waiter_fire(struct waiter *w, bool finished)
{
	struct grpc_call *call = w->call;
	waitlist_reply_fn reply = w->reply;
	void *obj = w->obj;
	grpc_call_ref(call);
	grpc_call_on_cancel(call, NULL, NULL); /* w is freed now: a later cancel must not reach it */
	waiter_unlink_free(w);
	reply(call, obj, finished);
	grpc_call_unref(call);
}

static void on_timeout(uv_timer_t *t) { waiter_fire(t->data, false); }

static void on_cancel(struct grpc_call *call, void *data) { waiter_unlink_free(data); }

int waitlist_add(struct waitlist *wl, uv_loop_t *loop, struct grpc_call *call, uint64_t timeout_ms,
		 waitlist_reply_fn reply, void *obj)
{
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->timer = uvutil_timer_new(loop, w);
	if (!w->timer) {
		free(w);
		return -ENOMEM;
	}
	w->wl = wl;
	w->call = call;
	w->reply = reply;
	w->obj = obj;
	grpc_call_ref(call);
	w->next = wl->head;
	if (wl->head)
		wl->head->pprev = &w->next;
	w->pprev = &wl->head;
	wl->head = w;
	uv_timer_start(w->timer, on_timeout, timeout_ms, 0);
	grpc_call_on_cancel(call, on_cancel, w);
	return 0;
}

void waitlist_wake(struct waitlist *wl)
{
	while (wl->head)
		waiter_fire(wl->head, true);
}
