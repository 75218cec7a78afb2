/* The daemon's view of confinement: build the in-sandbox policy once (runtime/confine.h), probe
 * what the kernel offers (user namespaces, Landlock, BPF LSM), list every layer for GetInfo, and
 * enforce --require-hardening. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

struct manager;

struct hardening_layer {
	const char *name;
	bool active;
	char detail[256];
};

#define HARDENING_MAX_LAYERS 16

/* Build m->confine (disabled with --no-confinement) and run the probes. Fails only when the policy
 * cannot be built at all (libseccomp/libcap errors). Call after cgroups and the device policy. */
int hardening_init(struct manager *m, struct err *e);
/* With --require-hardening: -EPERM and a message naming what is missing, else 0. */
int hardening_require(const struct manager *m, struct err *e);
/* Every layer, active or not, with a detail. Returns how many were written (<= max). */
size_t hardening_layers(const struct manager *m, struct hardening_layer *out, size_t max);
void hardening_free(struct manager *m);
