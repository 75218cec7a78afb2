/* libuv handles owned by objects that may be freed before the handle's close completes: each
 * handle is its own allocation, freed by its close callback. */
#pragma once
#include <uv.h>

uv_timer_t *uvutil_timer_new(uv_loop_t *loop, void *data);
uv_poll_t *uvutil_poll_new(uv_loop_t *loop, int fd, void *data);
/* Stop callbacks and free the handle once libuv is done with it. Accepts NULL. */
void uvutil_close(uv_handle_t *h);
