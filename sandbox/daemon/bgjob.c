#include "daemon/bgjob.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BGJOB_MAX_LINES 4096
#define BGJOB_LINE_MAX 1024

struct bgjob {
	const struct bgjob_ops *ops;
	void *data;
	uv_async_t async;
	uv_thread_t thread;
	pthread_mutex_t mu;
	char **lines; /* ring of queued lines */
	size_t head, count;
	bool finished; /* the worker returned */
	atomic_bool cancelled;
};

static void job_closed(uv_handle_t *h)
{
	struct bgjob *j = h->data;
	for (size_t i = 0; i < j->count; i++)
		free(j->lines[(j->head + i) % BGJOB_MAX_LINES]);
	free(j->lines);
	pthread_mutex_destroy(&j->mu);
	free(j);
}

static void job_async(uv_async_t *a)
{
	struct bgjob *j = a->data;
	for (;;) {
		pthread_mutex_lock(&j->mu);
		char *line = NULL;
		if (j->count) {
			line = j->lines[j->head];
			j->head = (j->head + 1) % BGJOB_MAX_LINES;
			j->count--;
		}
		bool finished = j->finished && !line;
		pthread_mutex_unlock(&j->mu);
		if (line) {
			if (j->ops->on_log)
				j->ops->on_log(j, line, j->data);
			free(line);
			continue;
		}
		if (finished) {
			uv_thread_join(&j->thread);
			j->ops->on_done(j, j->data);
			uv_close((uv_handle_t *)&j->async, job_closed);
		}
		return;
	}
}

static void job_main(void *arg)
{
	struct bgjob *j = arg;
	j->ops->work(j, j->data);
	pthread_mutex_lock(&j->mu);
	j->finished = true;
	pthread_mutex_unlock(&j->mu);
	uv_async_send(&j->async);
}

int bgjob_start(uv_loop_t *loop, const struct bgjob_ops *ops, void *data, struct err *e)
{
	struct bgjob *j = calloc(1, sizeof(*j));
	if (!j || !(j->lines = calloc(BGJOB_MAX_LINES, sizeof(char *)))) {
		free(j);
		return err_set(e, ENOMEM, "background job");
	}
	j->ops = ops;
	j->data = data;
	pthread_mutex_init(&j->mu, NULL);
	j->async.data = j;
	if (uv_async_init(loop, &j->async, job_async) < 0) {
		free(j->lines);
		free(j);
		return err_set(e, ENOMEM, "background job");
	}
	/* Builds and copies need a generous stack for deep directory walks. */
	uv_thread_options_t opts = {.flags = UV_THREAD_HAS_STACK_SIZE, .stack_size = 8 << 20};
	int r = uv_thread_create_ex(&j->thread, &opts, job_main, j);
	if (r < 0) {
		uv_close((uv_handle_t *)&j->async, job_closed);
		return err_setx(e, -r, "start worker thread: %s", uv_strerror(r));
	}
	return 0;
}

void bgjob_log(struct bgjob *j, const char *fmt, ...)
{
	char buf[BGJOB_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	char *line = strdup(buf);
	if (!line)
		return;
	pthread_mutex_lock(&j->mu);
	if (j->count == BGJOB_MAX_LINES) {
		free(j->lines[j->head]);
		j->head = (j->head + 1) % BGJOB_MAX_LINES;
		j->count--;
	}
	j->lines[(j->head + j->count) % BGJOB_MAX_LINES] = line;
	j->count++;
	pthread_mutex_unlock(&j->mu);
	uv_async_send(&j->async);
}

bool bgjob_cancelled(struct bgjob *j) { return atomic_load(&j->cancelled); }
void bgjob_cancel(struct bgjob *j) { atomic_store(&j->cancelled, true); }
