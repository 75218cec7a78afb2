/* Slow work off the event loop: a job runs a function on its own thread (image builds, layer
 * copies, tree removal) and streams log lines back; the loop gets each line and, once the thread
 * has ended, the result. The thread must not touch the manager, SQLite or grpc: it works on what
 * the job carries and reports through bgjob_log and its own fields. */
#pragma once
#include <stdbool.h>
#include <uv.h>

#include "util/err.h"

struct bgjob;

struct bgjob_ops {
	void (*work)(struct bgjob *job, void *data);                  /* worker thread */
	void (*on_log)(struct bgjob *job, const char *line, void *data); /* loop; may be NULL */
	void (*on_done)(struct bgjob *job, void *data);               /* loop, once; then the job is freed */
};

/* Start the thread. The job frees itself after on_done. */
int bgjob_start(uv_loop_t *loop, const struct bgjob_ops *ops, void *data, struct err *e);
/* From the worker: queue one line (bounded: beyond 4096 queued lines the oldest are dropped). */
void bgjob_log(struct bgjob *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* From the worker: true once bgjob_cancel was called (check between steps). */
bool bgjob_cancelled(struct bgjob *job);
void bgjob_cancel(struct bgjob *job);
