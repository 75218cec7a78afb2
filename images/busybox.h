/* The built-in `busybox` image: one layer made from the host's busybox-static. */
#pragma once
#include "util/err.h"

#define BUSYBOX_HOST_BINARY "/bin/busybox"

/* Make sure the busybox layer exists under layers_dir; its id (hex sha256 of the recipe version
 * and the host binary) goes to id_out. Built in a temp dir, fsynced, renamed into place. */
int busybox_layer_ensure(const char *layers_dir, char id_out[65], struct err *e);
