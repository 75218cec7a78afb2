#include "daemon/manager.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/grpc.h"
#include "daemon/pool.h"
#include "daemon/hardening.h"
#include "daemon/image_build.h"
#include "daemon/rpc.h"
#include "daemon/sandbox.h"
#include "daemon/uvutil.h"
#include "netpolicy/netpolicy.h"
#include "runtime/devpolicy.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/misc.h"

#define PURGE_INTERVAL_MS 500

uint64_t manager_now(const struct manager *m) { return uv_now(m->loop); }

struct sandbox *manager_find_sandbox(struct manager *m, const char *id)
{
	for (struct sandbox *sb = m->sandboxes; sb; sb = sb->next)
		if (!strcmp(sb->id, id))
			return sb;
	return NULL;
}

struct sandbox *manager_find_client_sandbox(struct manager *m, const char *id)
{
	struct sandbox *sb = manager_find_sandbox(m, id);
	return sb && !sb->pooled ? sb : NULL;
}

struct cgroup_retry {
	struct cgroup_retry *next;
	int64_t give_up_ms;
	char name[64];
};

#define CGROUP_RETRY_MS 500
#define CGROUP_RETRY_FOR_MS (120 * 1000)

/* One pass over the pending removals; true when none is left. */
static bool cgroup_retries_pass(struct manager *m)
{
	int64_t now = time_now_ms();
	for (struct cgroup_retry **pp = &m->cgroup_retries, *r; (r = *pp);) {
		struct cgroup_set *set = NULL;
		bool done = cgroup_set_open(&m->cgroups, r->name, &set, NULL) < 0; /* gone already */
		if (!done) {
			cgroup_set_kill(set, NULL);
			done = cgroup_set_destroy_nowait(set, NULL) == 0;
		}
		if (!done && now >= r->give_up_ms) {
			log_warn("giving up removing the cgroups of sandbox %s: still busy", r->name);
			done = true;
		}
		if (done) {
			*pp = r->next;
			free(r);
		} else {
			pp = &r->next;
		}
	}
	return !m->cgroup_retries;
}

static void on_cgroup_retry(uv_timer_t *t)
{
	struct manager *m = t->data;
	if (m && !cgroup_retries_pass(m))
		uv_timer_start(t, on_cgroup_retry, CGROUP_RETRY_MS, 0);
}

void manager_retry_cgroup_removal(struct manager *m, const char *name)
{
	struct cgroup_retry *r = calloc(1, sizeof(*r));
	if (!r)
		return;
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->give_up_ms = time_now_ms() + CGROUP_RETRY_FOR_MS;
	r->next = m->cgroup_retries;
	m->cgroup_retries = r;
	if (!m->cgroup_retry_timer)
		m->cgroup_retry_timer = uvutil_timer_new(m->loop, m);
	if (m->cgroup_retry_timer && !uv_is_active((uv_handle_t *)m->cgroup_retry_timer))
		uv_timer_start(m->cgroup_retry_timer, on_cgroup_retry, CGROUP_RETRY_MS, 0);
}

/* At stop: give zombies a few seconds to be reaped, so no cgroup is left behind. */
static void cgroup_retries_drain(struct manager *m, int timeout_ms)
{
	for (int waited = 0; !cgroup_retries_pass(m) && waited < timeout_ms; waited += 100)
		nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	while (m->cgroup_retries) {
		struct cgroup_retry *r = m->cgroup_retries;
		m->cgroup_retries = r->next;
		log_warn("cgroups of sandbox %s are still busy at exit; the next daemon removes them", r->name);
		free(r);
	}
}

int manager_alloc_uid_slot(struct manager *m, uint32_t *ret)
{
	for (uint32_t i = 0; i < m->cfg.max_sandboxes; i++) {
		if (!m->uid_slots[i]) {
			m->uid_slots[i] = 1;
			*ret = i;
			return 0;
		}
	}
	return -EUSERS;
}

void manager_free_uid_slot(struct manager *m, uint32_t slot)
{
	if (slot < m->cfg.max_sandboxes)
		m->uid_slots[slot] = 0;
}

/* corral-init is copied once into a sealed memfd: every sandbox execs that, so nothing inside a
 * sandbox can ever reach (or overwrite) the binary on the host through /proc/1/exe. */
static int load_init(const char *path, int *ret, struct err *e)
{
	int r = fs_sealed_copy(path, "corral-init", ret, e);
	return r < 0 ? err_prefix(e, "load corral-init") : 0;
}

/* The device program is loaded once; each sandbox gets it attached at create. If the kernel
 * refuses it, sandboxes still start (the v1 devices controller, where mounted, and the
 * user namespace still keep device nodes out of reach), GetInfo says so, and
 * --require-hardening refuses to run. */
static void manager_load_devpolicy(struct manager *m)
{
	struct err e = {0};
	if (!m->cgroups.v2_root[0]) {
		snprintf(m->devpolicy_detail, sizeof(m->devpolicy_detail),
			 "no cgroup2 hierarchy to attach the cgroup_dev program to");
	} else if (devpolicy_load(&m->devpolicy, &e) < 0) {
		snprintf(m->devpolicy_detail, sizeof(m->devpolicy_detail), "%s", e.msg);
	} else {
		m->devpolicy_active = true;
		snprintf(m->devpolicy_detail, sizeof(m->devpolicy_detail),
			 "cgroup_dev program %u on each sandbox's v2 cgroup%s", devpolicy_prog_id(m->devpolicy),
			 m->cgroups.v1_devices[0] ? ", and the v1 devices controller" : "");
	}
	if (m->devpolicy_active)
		log_info("device policy: %s", m->devpolicy_detail);
	else
		log_warn("device policy not active: %s", m->devpolicy_detail);
}

static void on_purge(uv_timer_t *t)
{
	struct manager *m = t->data;
	int64_t now = time_now_ms(), keep = (int64_t)m->cfg.retention_s * 1000;
	for (struct sandbox *sb = m->sandboxes, *next; sb; sb = next) {
		next = sb->next;
		if (sb->state == SANDBOX_FINISHED && sb->resources_released && sb->finished_at_ms + keep <= now)
			sandbox_purge(sb);
	}
}

int manager_init(struct manager *m, uv_loop_t *loop, const struct config *cfg, struct err *e)
{
	memset(m, 0, sizeof(*m));
	m->loop = loop;
	m->cfg = *cfg;
	if (!m->cfg.default_pids)
		m->cfg.default_pids = DEFAULT_PIDS;
	if (!m->cfg.default_disk_mib)
		m->cfg.default_disk_mib = DEFAULT_DISK_MIB;
	m->init_memfd = -1;
	int r = fs_mkdir_p(cfg->state_dir, 0700, e);
	if (r < 0)
		return err_prefix(e, "state dir");
	snprintf(m->sandboxes_dir, sizeof(m->sandboxes_dir), "%s/sandboxes", cfg->state_dir);
	snprintf(m->execs_dir, sizeof(m->execs_dir), "%s/execs", cfg->state_dir);
	if ((r = fs_mkdir_p(m->sandboxes_dir, 0711, e)) < 0 || (r = fs_mkdir_p(m->execs_dir, 0700, e)) < 0)
		return r;
	char db[PATH_MAX];
	snprintf(db, sizeof(db), "%s/corral.db", cfg->state_dir);
	if ((r = store_open(db, &m->store, e)) < 0)
		return r;
	if ((r = image_store_open(cfg->state_dir, &m->images, e)) < 0)
		return r;
	if ((r = cgroup_host_init(cfg->cgroup_parent, &m->cgroups, e)) < 0)
		return err_prefix(e, "cgroups");
	/* Networking only parses its configuration here; the host is touched on first need. */
	struct netpolicy_config ncfg;
	memset(&ncfg, 0, sizeof(ncfg));
	snprintf(ncfg.subnet, sizeof(ncfg.subnet), "%s", cfg->net_subnet);
	snprintf(ncfg.uplink, sizeof(ncfg.uplink), "%s", cfg->net_uplink);
	snprintf(ncfg.dns, sizeof(ncfg.dns), "%s", cfg->net_dns);
	snprintf(ncfg.nat_table, sizeof(ncfg.nat_table), "%s", cfg->cgroup_parent);
	if ((r = netpolicy_new(&ncfg, &m->net, e)) < 0)
		return r;
	manager_load_devpolicy(m);
	if ((r = hardening_init(m, e)) < 0 || (r = hardening_require(m, e)) < 0)
		return r;
	if ((r = load_init(cfg->init_path, &m->init_memfd, e)) < 0)
		return r;
	if ((r = image_service_new(m, &m->imgsvc, e)) < 0)
		return r;
	m->uid_slots = calloc(cfg->max_sandboxes ? cfg->max_sandboxes : 1, 1);
	if (!m->uid_slots)
		return err_set(e, ENOMEM, "manager");
	if ((r = rpc_server_start(m, e)) < 0)
		return r;
	if (pool_init(m) < 0)
		return err_set(e, ENOMEM, "sandbox pool");
	m->purge_timer = uvutil_timer_new(loop, m);
	if (!m->purge_timer)
		return err_set(e, ENOMEM, "manager");
	uv_timer_start(m->purge_timer, on_purge, PURGE_INTERVAL_MS, PURGE_INTERVAL_MS);
	return 0;
}

/* Rows are copied out first: adopting updates the same table. */
struct adopt_rows {
	struct store_sandbox_row *rows;
	size_t n, cap;
};

static int collect_row(const struct store_sandbox_row *row, void *data)
{
	struct adopt_rows *a = data;
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		struct store_sandbox_row *rows = realloc(a->rows, cap * sizeof(*rows));
		if (!rows)
			return -ENOMEM;
		a->rows = rows;
		a->cap = cap;
	}
	struct store_sandbox_row *c = &a->rows[a->n];
	*c = *row;
	c->id = strdup(row->id);
	void *spec = malloc(row->spec_len ? row->spec_len : 1);
	if (!c->id || !spec) {
		free((void *)c->id);
		free(spec);
		return -ENOMEM;
	}
	memcpy(spec, row->spec, row->spec_len);
	c->spec = spec;
	a->n++;
	return 0;
}

/* A daemon killed between creating a sandbox's directory (and mounting its writable layer there)
 * and recording it leaves a directory no record names: unmount and remove it. */
static void manager_sweep_sandbox_dirs(struct manager *m)
{
	DIR *d = opendir(m->sandboxes_dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		char path[PATH_MAX];
		if (de->d_name[0] == '.' || manager_find_sandbox(m, de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", m->sandboxes_dir, de->d_name);
		log_warn("removing %s: no sandbox record names it", path);
		(void)umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW);
		fs_remove_tree(path, NULL);
	}
	closedir(d);
}

/* Cgroups no record accounts for: image build steps (build-*) interrupted by a stop or a crash,
 * and sandboxes (sb-*) whose daemon died between starting them and recording them. Kill what is
 * in them and remove them: at start (after adoption), and build steps again at exit. */
static void manager_sweep_cgroups(struct manager *m, bool sandboxes_too)
{
	char dir[PATH_MAX];
	const struct cgroup_host *h = &m->cgroups;
	const char *root = h->v2_root[0] ? h->v2_root : h->v1_memory[0] ? h->v1_memory : h->v1_pids;
	if (!root[0])
		return;
	snprintf(dir, sizeof(dir), "%s/%s", root, h->parent);
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		struct cgroup_set *set;
		bool build = !strncmp(de->d_name, "build-", 6);
		bool orphan = sandboxes_too && !strncmp(de->d_name, "sb-", 3) && !manager_find_sandbox(m, de->d_name);
		if (!(build || orphan) || cgroup_set_open(h, de->d_name, &set, NULL) < 0)
			continue;
		log_info("removing cgroups no record accounts for: %s", de->d_name);
		cgroup_set_kill(set, NULL);
		if (cgroup_set_destroy(set, NULL) < 0)
			manager_retry_cgroup_removal(m, de->d_name); /* a killed orphan may linger as a zombie */
	}
	closedir(d);
}

static bool manager_sandbox_running(const char *id, void *data)
{
	struct sandbox *sb = manager_find_sandbox(data, id);
	return sb && sb->state == SANDBOX_RUNNING;
}

int manager_adopt(struct manager *m, struct err *e)
{
	struct adopt_rows a = {0};
	int r = store_sandbox_foreach(m->store, collect_row, &a, e);
	for (size_t i = 0; i < a.n; i++) {
		struct err e2 = {0};
		if (r == 0 && sandbox_adopt(m, &a.rows[i], &e2) < 0)
			log_warn("adopt: %s", e2.msg);
		free((void *)a.rows[i].id);
		free((void *)a.rows[i].spec);
	}
	free(a.rows);
	if (r < 0)
		return r == -ENOMEM ? err_set(e, ENOMEM, "adopt") : r;
	manager_sweep_sandbox_dirs(m);
	manager_sweep_cgroups(m, true);
	pool_reap_adopted(m);
	image_store_unpin_stale(m->images, manager_sandbox_running, m); /* pins of sandboxes that are gone */
	if (a.n)
		log_info("found %zu sandbox record(s) from an earlier run; %u running", a.n, m->n_running);
	return 0;
}

static void on_server_closed(void *data)
{
	struct manager *m = data;
	m->server_closed = true;
	if (m->starts_in_flight == 0) /* else once the last start in flight is undone */
		uv_stop(m->loop);
}

void manager_start_done(struct manager *m)
{
	if (m->server_closed && m->starts_in_flight == 0)
		uv_stop(m->loop);
}

/* Stop serving. Sandboxes keep running: a later daemon on the same state dir adopts them. */
void manager_stop(struct manager *m)
{
	if (m->stopping)
		return;
	m->stopping = true;
	log_info("stopping; %u sandbox(es) keep running for the next daemon to adopt", m->n_running);
	pool_drain(m); /* pooled sandboxes belong to no client: end them rather than leave them */
	/* Sandboxes already ended but whose init is still dying: finish their cleanup now rather
	 * than leave cgroups and directories for the next daemon. Bounded: SIGKILL was sent. */
	for (struct sandbox *sb = m->sandboxes; sb; sb = sb->next)
		if (sb->state == SANDBOX_FINISHED && !sb->resources_released)
			sandbox_reap_blocking(sb, 2000);
	cgroup_retries_drain(m, 5000);
	uvutil_close((uv_handle_t *)m->cgroup_retry_timer);
	m->cgroup_retry_timer = NULL;
	uvutil_close((uv_handle_t *)m->purge_timer);
	m->purge_timer = NULL;
	if (m->grpc)
		grpc_server_close(m->grpc, on_server_closed, m);
	else
		uv_stop(m->loop);
}

void manager_free(struct manager *m)
{
	while (m->sandboxes)
		sandbox_detach(m->sandboxes);
	if (m->store) /* initialised: build steps may still be running in worker threads */
		manager_sweep_cgroups(m, false);
	if (m->init_memfd >= 0)
		close(m->init_memfd);
	devpolicy_free(m->devpolicy);
	m->devpolicy = NULL;
	hardening_free(m);
	netpolicy_free(m->net);
	m->net = NULL;
	image_service_free(m->imgsvc);
	image_store_free(m->images);
	store_close(m->store);
	free(m->uid_slots);
	free(m->methods);
	pool_free(m);
}
