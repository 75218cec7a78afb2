/* The worker-thread side of image builds (daemon/image_build.c runs the loop side): the debian
 * base with mmdebstrap, apt_install (the host downloads the .debs; the step sandbox installs them
 * from an extra read-only lower layer), run_commands in a confined sandbox, copy (safe tar
 * extraction); each step's writable layer becomes a layer. Nothing here touches the manager,
 * SQLite or grpc: a job carries copies of what it needs. */
#pragma once
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/bgjob.h"
#include "runtime/cgroup.h"
#include "runtime/confine.h"
#include "util/err.h"

struct build;

enum job_kind { JOB_DEBIAN, JOB_RUN, JOB_APT, JOB_COPY };

struct build_job {
	struct build *b;
	enum job_kind kind;
	char layers_dir[PATH_MAX];
	char work_dir[PATH_MAX];  /* <state>/builds/<rnd> */
	char layer_id[65];        /* the layer to produce (inputs-derived) */
	char **lowers;            /* topmost first */
	size_t n_lowers;
	char **args;              /* RUN: env then the command; APT: package names */
	size_t n_args, n_env;
	char workdir[256];
	const void *tar;          /* COPY: borrowed from the request, which outlives the job */
	size_t tar_len;
	char dest[256];
	const struct cgroup_host *cg_host;
	const struct confine *confine; /* the same confinement as every sandbox (read-only, shared) */
	uid_t uid_base;
	uint32_t uid_slot;
	int busybox_fd;
	uint64_t size;
	int rc;
	struct err err;
};

/* bgjob work function: runs the job, result in j->rc / j->err / j->size. */
void build_worker_run(struct bgjob *job, void *data);
void build_job_free(struct build_job *j);
