/* Long-poll RPCs (WaitSandbox, WaitExec): a call parked on an object until it finishes or the
 * call's own timeout passes. The owner calls waitlist_wake when the object finishes. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct grpc_call;
struct waiter;

/* Called exactly once per parked call: finished = the object finished (false: timed out). */
typedef void (*waitlist_reply_fn)(struct grpc_call *call, void *obj, bool finished);

struct waitlist {
	struct waiter *head;
};

/* Park call until waitlist_wake or timeout_ms (> 0) passes. Takes a reference on call. */
int waitlist_add(struct waitlist *wl, uv_loop_t *loop, struct grpc_call *call, uint64_t timeout_ms,
		 waitlist_reply_fn reply, void *obj);
/* Answer every parked call with finished = true. */
void waitlist_wake(struct waitlist *wl);
