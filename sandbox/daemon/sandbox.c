#include "daemon/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/exec.h"
#include "daemon/pool.h"
#include "daemon/rpc_net.h"
#include "daemon/rpc_files.h"
#include "daemon/uvutil.h"
#include "init/initproto.h"
#include "runtime/devpolicy.h"
#include "runtime/spawn.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/misc.h"

#define CTL_PACKETS_PER_TURN 64   /* fairness: a chatty init cannot starve the loop */
#define ADOPT_WAIT_MS 2000        /* how long a restarted daemon waits for init to park its socket */
#define RW_INODES_PER_MIB 32      /* inodes of the writable layer per MiB of its size (kernel memory) */
#define RW_MIN_INODES 16384

static void sandbox_release_resources(struct sandbox *sb);

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
static int pidfd_getfd_(int pidfd, int fd) { return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0); }
static int pidfd_send_signal_(int pidfd, int sig) { return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0); }

static void sandbox_dir(const struct sandbox *sb, const char *sub, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s%s%s", sb->m->sandboxes_dir, sb->id, sub ? "/" : "", sub ? sub : "");
}

/* The sandbox's directory is its writable layer: a tmpfs of the disk limit's size mounted on it in
 * the daemon's (the host's) mount namespace, holding upper/, work/ and the root mount point. The
 * host can read the upper dir (snapshots), also after a daemon restart, and the size bounds what
 * the sandbox can write. Pages are charged to the memory cgroup of the writer: the sandbox. */
static int rw_mount(const char *path, uint64_t disk_mib, struct err *e)
{
	char opts[128];
	uint64_t inodes = disk_mib * RW_INODES_PER_MIB;
	if (inodes < RW_MIN_INODES)
		inodes = RW_MIN_INODES;
	snprintf(opts, sizeof(opts), "size=%llum,nr_inodes=%llu,mode=0711,uid=0,gid=0", (unsigned long long)disk_mib,
		 (unsigned long long)inodes);
	/* nosuid, nodev, noexec: what the sandbox writes is never run or opened as a device on the host. */
	if (mount("corral-rw", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)
		return err_set(e, errno, "mount the writable layer (tmpfs, %llu MiB) on %s", (unsigned long long)disk_mib,
			       path);
	return 0;
}

/* Unmount the writable layer if it is mounted (EINVAL: it is not). */
static void rw_unmount(const struct sandbox *sb, const char *path)
{
	if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT)
		log_warn("sandbox %s: unmount writable layer %s: %s", sb->id, path, strerror(errno));
}

static void spool_dir(const struct sandbox *sb, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s", sb->m->execs_dir, sb->id);
}

struct exec *sandbox_find_exec(struct sandbox *sb, const char *exec_id)
{
	for (struct exec *ex = sb->execs; ex; ex = ex->next)
		if (!strcmp(ex->id, exec_id))
			return ex;
	return NULL;
}

static struct exec *find_exec_by_handle(struct sandbox *sb, uint32_t handle)
{
	for (struct exec *ex = sb->execs; ex; ex = ex->next)
		if (ex->handle == handle)
			return ex;
	return NULL;
}

/* Control packets to init go out in order. When init's socket buffer is full (init busy, or a
 * burst of large SPAWNs) they wait in a bounded queue drained on UV_WRITABLE: a SIGKILL,
 * CLOSE_STDIN or RELEASE is never silently dropped. */
struct ctl_out {
	struct ctl_out *next;
	size_t len;
	uint8_t data[];
};

#define CTL_QUEUE_MAX (8u * 1024 * 1024)

static void on_ctl(uv_poll_t *p, int status, int events);

static void ctl_queue_free(struct sandbox *sb)
{
	while (sb->outq) {
		struct ctl_out *o = sb->outq;
		sb->outq = o->next;
		free(o);
	}
	sb->outq_tail = NULL;
	sb->outq_bytes = 0;
}

static void ctl_flush(struct sandbox *sb)
{
	while (sb->outq && sb->ctl_fd >= 0) {
		struct ctl_out *o = sb->outq;
		int r = initproto_send_nowait(sb->ctl_fd, o->data, o->len, NULL, 0);
		if (r == -EAGAIN)
			return; /* still full: stay subscribed to UV_WRITABLE */
		if (r < 0) {
			ctl_queue_free(sb); /* the channel is broken; its loss is handled on read */
			break;
		}
		sb->outq = o->next;
		sb->outq_bytes -= o->len;
		free(o);
	}
	if (!sb->outq)
		sb->outq_tail = NULL;
	if (sb->ctl_poll)
		uv_poll_start(sb->ctl_poll, UV_READABLE, on_ctl);
}

int sandbox_send(struct sandbox *sb, const void *pkt, size_t len)
{
	if (sb->ctl_fd < 0)
		return -EPIPE;
	if (!sb->outq) {
		int r = initproto_send_nowait(sb->ctl_fd, pkt, len, NULL, 0);
		if (r != -EAGAIN)
			return r;
	}
	if (sb->outq_bytes + len > CTL_QUEUE_MAX) {
		log_warn("sandbox %s: init is not reading its control channel (%zu bytes queued)", sb->id, sb->outq_bytes);
		return -ENOBUFS;
	}
	struct ctl_out *o = malloc(sizeof(*o) + len);
	if (!o)
		return -ENOMEM;
	o->next = NULL;
	o->len = len;
	memcpy(o->data, pkt, len);
	if (sb->outq_tail)
		sb->outq_tail->next = o;
	else
		sb->outq = o;
	sb->outq_tail = o;
	sb->outq_bytes += len;
	if (sb->ctl_poll)
		uv_poll_start(sb->ctl_poll, UV_READABLE | UV_WRITABLE, on_ctl);
	return 0;
}

/* ---- spec ------------------------------------------------------------------------------------ */

static int spec_pack(const Corral__V1__CreateSandboxRequest *spec, uint8_t **buf, size_t *len)
{
	*len = corral__v1__create_sandbox_request__get_packed_size(spec);
	*buf = malloc(*len ? *len : 1);
	if (!*buf)
		return -ENOMEM;
	corral__v1__create_sandbox_request__pack(spec, *buf);
	return 0;
}

static int spec_copy(const Corral__V1__CreateSandboxRequest *req, Corral__V1__CreateSandboxRequest **ret)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	if (spec_pack(req, &buf, &len) < 0)
		return -ENOMEM;
	*ret = corral__v1__create_sandbox_request__unpack(NULL, len, buf);
	return *ret ? 0 : -ENOMEM;
}

/* The sandbox's own spec, with its image's env and workdir under the request's: the image's
 * ENV and WORKDIR apply unless the request sets the same name or a workdir of its own. */
static int spec_with_image_config(const Corral__V1__CreateSandboxRequest *req, const struct image *img,
				  Corral__V1__CreateSandboxRequest **ret)
{
	Corral__V1__CreateSandboxRequest tmp = *req;
	size_t n = 0;
	_cleanup_free_ Corral__V1__CreateSandboxRequest__EnvEntry *storage =
		calloc(img->n_env + req->n_env + 1, sizeof(*storage));
	_cleanup_free_ Corral__V1__CreateSandboxRequest__EnvEntry **ptrs = calloc(img->n_env + req->n_env + 1, sizeof(*ptrs));
	_cleanup_free_ char *keys = NULL;
	size_t keys_len = 0;
	for (size_t i = 0; i < img->n_env; i++)
		keys_len += strlen(img->env[i]) + 1;
	keys = malloc(keys_len + 1);
	if (!storage || !ptrs || !keys)
		return -ENOMEM;
	char *k = keys;
	for (size_t i = 0; i < img->n_env; i++) {
		const char *eq = strchr(img->env[i], '=');
		if (!eq)
			continue;
		size_t kl = (size_t)(eq - img->env[i]);
		bool overridden = false;
		for (size_t j = 0; j < req->n_env && !overridden; j++)
			overridden = strlen(req->env[j]->key) == kl && !strncmp(req->env[j]->key, img->env[i], kl);
		if (overridden)
			continue;
		memcpy(k, img->env[i], kl);
		k[kl] = '\0';
		corral__v1__create_sandbox_request__env_entry__init(&storage[n]);
		storage[n].key = k;
		storage[n].value = (char *)eq + 1;
		ptrs[n] = &storage[n];
		n++;
		k += kl + 1;
	}
	for (size_t j = 0; j < req->n_env; j++)
		ptrs[n++] = req->env[j];
	tmp.n_env = n;
	tmp.env = ptrs;
	if (!req->workdir[0] && img->workdir[0])
		tmp.workdir = (char *)img->workdir;
	return spec_copy(&tmp, ret);
}

int sandbox_set_tags(struct sandbox *sb, Corral__V1__SetSandboxTagsRequest__TagsEntry *const *tags, size_t n,
		     struct err *e)
{
	/* Same wire layout (key = 1, value = 2) as CreateSandboxRequest's tags entries: build the new
	 * spec through its packed form so the owned copy stays one protobuf-c allocation. */
	Corral__V1__CreateSandboxRequest tmp = *sb->spec;
	_cleanup_free_ Corral__V1__CreateSandboxRequest__TagsEntry *storage = calloc(n ? n : 1, sizeof(*storage));
	_cleanup_free_ Corral__V1__CreateSandboxRequest__TagsEntry **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	if (!storage || !ptrs)
		return err_set(e, ENOMEM, "tags");
	for (size_t i = 0; i < n; i++) {
		corral__v1__create_sandbox_request__tags_entry__init(&storage[i]);
		storage[i].key = tags[i]->key;
		storage[i].value = tags[i]->value;
		ptrs[i] = &storage[i];
	}
	tmp.n_tags = n;
	tmp.tags = ptrs;
	Corral__V1__CreateSandboxRequest *copy;
	if (spec_copy(&tmp, &copy) < 0)
		return err_set(e, ENOMEM, "tags");
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	if (spec_pack(copy, &buf, &len) < 0 || store_sandbox_set_spec(sb->m->store, sb->id, buf, len, e) < 0) {
		corral__v1__create_sandbox_request__free_unpacked(copy, NULL);
		return e->code ? e->code : err_set(e, ENOMEM, "tags");
	}
	corral__v1__create_sandbox_request__free_unpacked(sb->spec, NULL);
	sb->spec = copy;
	return 0;
}

/* ---- timers ---------------------------------------------------------------------------------- */

static void on_lifetime(uv_timer_t *t)
{
	struct sandbox *sb = t->data;
	if (sb)
		sandbox_finish(sb, REASON_TIMEOUT, 0, SIGKILL, "the sandbox reached its lifetime timeout");
}

static void arm_idle_timer(struct sandbox *sb);

static void on_idle(uv_timer_t *t)
{
	struct sandbox *sb = t->data;
	if (!sb || sb->state != SANDBOX_RUNNING)
		return;
	uint64_t idle_ms = (uint64_t)sb->spec->idle_timeout_ms;
	uint64_t now = manager_now(sb->m);
	if (sb->running_user_execs > 0 || rpc_net_sandbox_busy(sb) || now < sb->last_activity + idle_ms) {
		arm_idle_timer(sb);
		return;
	}
	sandbox_finish(sb, REASON_IDLE_TIMEOUT, 0, SIGKILL, "the sandbox was idle for its idle timeout");
}

static void arm_idle_timer(struct sandbox *sb)
{
	if (!sb->idle_timer || sb->state != SANDBOX_RUNNING)
		return;
	uint64_t due = sb->last_activity + (uint64_t)sb->spec->idle_timeout_ms, now = manager_now(sb->m);
	uv_timer_start(sb->idle_timer, on_idle, due > now ? due - now : 1000, 0);
}

void sandbox_touch(struct sandbox *sb) { sb->last_activity = manager_now(sb->m); }

static int start_timers(struct sandbox *sb)
{
	uvutil_close((uv_handle_t *)sb->life_timer); /* restarted when a pooled sandbox is claimed */
	uvutil_close((uv_handle_t *)sb->idle_timer);
	sb->life_timer = sb->idle_timer = NULL;
	int64_t timeout = sb->spec->timeout_ms > 0 ? sb->spec->timeout_ms : DEFAULT_SANDBOX_TIMEOUT_MS;
	int64_t left = sb->created_at_ms + timeout - time_now_ms();
	sb->life_timer = uvutil_timer_new(sb->m->loop, sb);
	if (!sb->life_timer)
		return -ENOMEM;
	uv_timer_start(sb->life_timer, on_lifetime, left > 0 ? (uint64_t)left : 0, 0);
	if (sb->spec->idle_timeout_ms > 0) {
		sb->idle_timer = uvutil_timer_new(sb->m->loop, sb);
		if (!sb->idle_timer)
			return -ENOMEM;
		arm_idle_timer(sb);
	}
	return 0;
}

/* ---- control channel --------------------------------------------------------------------- */

static void protocol_violation(struct sandbox *sb, const char *what)
{
	log_warn("sandbox %s: protocol violation from init: %s; terminating it", sb->id, what);
	char msg[200];
	snprintf(msg, sizeof(msg), "sandbox init misbehaved (%s)", what);
	sandbox_finish(sb, REASON_TERMINATED, 0, SIGKILL, msg);
}

/* Init is inside the sandbox: text from it is made printable and bounded before use. */
static void sanitize_text(char *s, size_t size)
{
	s[size - 1] = '\0';
	for (char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
}

static void finish_adoption(struct sandbox *sb);

static void handle_packet(struct sandbox *sb, const uint8_t *buf, size_t len, int *fds, size_t nfds)
{
	struct initproto_hdr h;
	if (len < sizeof(h))
		goto violation_short;
	memcpy(&h, buf, sizeof(h));
	const uint8_t *body = buf + sizeof(h);
	size_t blen = len - sizeof(h);
	struct exec *ex = h.type == INITPROTO_READY ? NULL : find_exec_by_handle(sb, h.handle);
	struct err e = {0};
	if (h.type != INITPROTO_SPAWNED && h.type != INITPROTO_EXEC_STATE && h.type != INITPROTO_FILE_RESULT && nfds) {
		for (size_t i = 0; i < nfds; i++)
			close(fds[i]);
		protocol_violation(sb, "unexpected file descriptors");
		return;
	}
	switch (h.type) {
	case INITPROTO_READY:
		if (blen != sizeof(struct initproto_hello))
			goto violation_short;
		if (sb->adopting)
			finish_adoption(sb);
		return;
	case INITPROTO_SPAWNED: {
		struct initproto_spawned s;
		if (blen != sizeof(s) || !ex || ex->spawned) {
			for (size_t i = 0; i < nfds; i++)
				close(fds[i]);
			protocol_violation(sb, "SPAWNED for an unknown or started exec");
			return;
		}
		memcpy(&s, body, sizeof(s));
		if (exec_on_spawned(ex, s.pid, s.fd_flags, fds, nfds, &e) < 0)
			protocol_violation(sb, e.msg);
		return;
	}
	case INITPROTO_EXEC_STATE: {
		struct initproto_exec_state s;
		/* Restored execs wait unspawned for this; a second announcement of one is hostile. */
		if (blen != sizeof(s) || !sb->adopting || !ex || ex->released || ex->spawned) {
			for (size_t i = 0; i < nfds; i++)
				close(fds[i]);
			protocol_violation(sb, "EXEC_STATE for an unknown or already announced exec, or outside adoption");
			return;
		}
		memcpy(&s, body, sizeof(s));
		if (exec_on_spawned(ex, s.pid, s.fd_flags, fds, nfds, &e) < 0) {
			protocol_violation(sb, e.msg);
			return;
		}
		if (!s.running)
			exec_on_exited(ex, s.wait_status);
		return;
	}
	case INITPROTO_SPAWN_FAILED: {
		struct initproto_failed f;
		if (blen != sizeof(f) || !ex || ex->spawned)
			goto violation_short;
		memcpy(&f, body, sizeof(f));
		sanitize_text(f.msg, sizeof(f.msg));
		exec_on_spawn_failed(ex, f.error, f.msg);
		return;
	}
	case INITPROTO_EXITED: {
		struct initproto_exited x;
		if (blen != sizeof(x) || !ex || !ex->spawned)
			goto violation_short;
		memcpy(&x, body, sizeof(x));
		if (ex->state == EXEC_RUNNING)
			exec_on_exited(ex, x.wait_status);
		return;
	}
	case INITPROTO_FILE_RESULT:
	case INITPROTO_FILE_ENTRIES: /* the file API's answers: rpc_files.c checks them (ids, fds, sizes) */
		if (rpc_files_on_packet(sb, h.type, h.handle, body, blen, fds, nfds, &e) < 0)
			protocol_violation(sb, e.msg);
		return;
	default:
		protocol_violation(sb, "unknown message type");
		return;
	}
violation_short:
	protocol_violation(sb, "malformed message");
}

static void ctl_close(struct sandbox *sb)
{
	ctl_queue_free(sb);
	uvutil_close((uv_handle_t *)sb->ctl_poll);
	sb->ctl_poll = NULL;
	if (sb->ctl_fd >= 0)
		close(sb->ctl_fd);
	sb->ctl_fd = -1;
}

static void on_ctl(uv_poll_t *p, int status, int events)
{
	struct sandbox *sb = p->data;
	if (!sb)
		return;
	if ((events & UV_WRITABLE) && sb->outq)
		ctl_flush(sb);
	if (!(events & UV_READABLE) && status >= 0)
		return;
	uint8_t buf[INITPROTO_FILE_REPLY_MAX]; /* the largest packet init sends (a file listing chunk) */
	for (int i = 0; i < CTL_PACKETS_PER_TURN && sb->ctl_fd >= 0; i++) {
		int fds[INITPROTO_MAX_FDS];
		size_t nfds = INITPROTO_MAX_FDS;
		ssize_t n = initproto_recv(sb->ctl_fd, buf, sizeof(buf), fds, &nfds);
		if (n == -EAGAIN || n == -EINTR)
			return;
		if (n == -EMSGSIZE) {
			protocol_violation(sb, "oversized message");
			return;
		}
		if (n <= 0) {
			ctl_close(sb);
			if (sb->state == SANDBOX_RUNNING)
				sandbox_finish(sb, REASON_TERMINATED, 0, SIGKILL, "lost the control channel to the sandbox's init");
			return;
		}
		handle_packet(sb, buf, (size_t)n, fds, nfds);
	}
}

static int ctl_open(struct sandbox *sb, int fd, bool adopt)
{
	sb->ctl_fd = fd;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	sb->ctl_poll = uvutil_poll_new(sb->m->loop, fd, sb);
	if (!sb->ctl_poll)
		return -ENOMEM;
	uv_poll_start(sb->ctl_poll, UV_READABLE, on_ctl);
	struct {
		struct initproto_hdr h;
		struct initproto_hello hello;
	} pkt = {{INITPROTO_HELLO, 0}, {INITPROTO_VERSION, adopt}};
	sb->adopting = adopt;
	return sandbox_send(sb, &pkt, sizeof(pkt));
}

/* ---- init process ---------------------------------------------------------------------------- */

static void init_exited(struct sandbox *sb)
{
	siginfo_t si = {0};
	/* Reap it if it is our child; after a restart it is not (ECHILD) and the host reaps it. */
	waitid(P_PIDFD, (id_t)sb->pidfd, &si, WEXITED | WNOHANG);
	uvutil_close((uv_handle_t *)sb->pidfd_poll);
	sb->pidfd_poll = NULL;
	close(sb->pidfd);
	sb->pidfd = -1;
	if (sb->state == SANDBOX_RUNNING) {
		if (sb->cg && cgroup_set_oom_killed(sb->cg))
			sandbox_finish(sb, REASON_OOM_KILLED, 0, SIGKILL, "the sandbox ran out of memory");
		else
			sandbox_finish(sb, REASON_TERMINATED, 0, 0, "the sandbox's init exited unexpectedly");
	}
	sandbox_release_resources(sb);
}

static void on_init_exit(uv_poll_t *p, int status, int events)
{
	if (p->data)
		init_exited(p->data);
}

void sandbox_reap_blocking(struct sandbox *sb, int timeout_ms)
{
	if (sb->pidfd >= 0) {
		struct pollfd p = {.fd = sb->pidfd, .events = POLLIN};
		if (poll(&p, 1, timeout_ms) <= 0)
			return;
		init_exited(sb);
		return;
	}
	sandbox_release_resources(sb);
}

static int watch_init(struct sandbox *sb)
{
	sb->pidfd_poll = uvutil_poll_new(sb->m->loop, sb->pidfd, sb);
	if (!sb->pidfd_poll)
		return -ENOMEM;
	uv_poll_start(sb->pidfd_poll, UV_READABLE, on_init_exit);
	return 0;
}

static int persist_new(struct sandbox *sb, struct err *e)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	if (spec_pack(sb->spec, &buf, &len) < 0)
		return err_set(e, ENOMEM, "sandbox");
	struct store_sandbox_row row = {
		.id = sb->id,
		.state = sb->state,
		.created_at_ms = sb->created_at_ms,
		.init_pid = sb->init_pid,
		.init_start_time = sb->init_start_time,
		.uid_slot = sb->uid_slot,
		.spec = buf,
		.spec_len = len,
	};
	return store_sandbox_insert(sb->m->store, &row, e);
}

static void link_sandbox(struct sandbox *sb)
{
	struct manager *m = sb->m;
	sb->next = m->sandboxes;
	if (m->sandboxes)
		m->sandboxes->prev = sb;
	m->sandboxes = sb;
	if (sb->state == SANDBOX_RUNNING)
		m->n_running++;
}

static struct sandbox *sandbox_alloc(struct manager *m)
{
	struct sandbox *sb = calloc(1, sizeof(*sb));
	if (!sb)
		return NULL;
	sb->m = m;
	sb->pidfd = -1;
	sb->ctl_fd = -1;
	sb->state = SANDBOX_RUNNING;
	sb->last_activity = manager_now(m);
	return sb;
}

static void sandbox_free(struct sandbox *sb)
{
	rpc_files_sandbox_free(sb);
	while (sb->execs) {
		struct exec *ex = sb->execs;
		sb->execs = ex->next;
		exec_free(ex);
	}
	waitlist_wake(&sb->waiters);
	ctl_close(sb);
	uvutil_close((uv_handle_t *)sb->pidfd_poll);
	if (sb->pidfd >= 0)
		close(sb->pidfd);
	uvutil_close((uv_handle_t *)sb->life_timer);
	uvutil_close((uv_handle_t *)sb->idle_timer);
	rpc_net_sandbox_free(sb);
	cgroup_set_free(sb->cg);
	if (sb->spec)
		corral__v1__create_sandbox_request__free_unpacked(sb->spec, NULL);
	free(sb);
}

static int start_entrypoint(struct sandbox *sb, struct err *e)
{
	Corral__V1__StartExecRequest req = CORRAL__V1__START_EXEC_REQUEST__INIT;
	req.sandbox_id = sb->id;
	req.exec_id = (char *)ENTRYPOINT_EXEC_ID;
	req.n_argv = sb->spec->n_command;
	req.argv = sb->spec->command;
	struct exec *ex;
	int r = exec_new(sb, ENTRYPOINT_EXEC_ID, ENTRYPOINT_HANDLE, &req, &ex, e);
	if (r < 0)
		return r;
	return exec_spawn(ex, e);
}

int sandbox_claim(struct sandbox *sb, const Corral__V1__CreateSandboxRequest *req, struct err *e)
{
	struct manager *m = sb->m;
	struct image *img = NULL;
	int r = image_store_resolve(m->images, req->image, &img, e);
	if (r < 0)
		return r;
	Corral__V1__CreateSandboxRequest *spec = NULL;
	r = spec_with_image_config(req, img, &spec);
	image_free(img);
	if (r < 0)
		return err_set(e, ENOMEM, "sandbox");
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	int64_t now = time_now_ms();
	if (spec_pack(spec, &buf, &len) < 0 || store_sandbox_claim(m->store, sb->id, buf, len, now, e) < 0) {
		corral__v1__create_sandbox_request__free_unpacked(spec, NULL);
		return e->code ? e->code : err_set(e, ENOMEM, "sandbox");
	}
	corral__v1__create_sandbox_request__free_unpacked(sb->spec, NULL);
	sb->spec = spec;
	sb->created_at_ms = now;
	sb->pooled = false;
	m->n_running++;
	sandbox_touch(sb);
	if (start_timers(sb) < 0) {
		sandbox_finish(sb, REASON_FAILED_TO_START, 0, SIGKILL, "out of memory starting timers");
		return 0;
	}
	if (sb->spec->n_command > 0) {
		struct err e2 = {0};
		if (start_entrypoint(sb, &e2) < 0)
			sandbox_finish(sb, REASON_FAILED_TO_START, 0, 0, e2.msg);
	}
	return 0;
}

/* Starting a sandbox in three steps, so the slow middle one (spawn_sandbox: clone, mounts,
 * exec of init; 1.5–3 ms) can run on a worker thread when nobody waits on it (the pool):
 * prepare (loop thread: ids, directories, cgroups, device policy), spawn (any thread),
 * complete (loop thread: network, records, watchers, timers). Each step undoes what was done. */
struct sandbox_start {
	struct manager *m;
	struct sandbox *sb;
	struct image *img;
	int sp[2];
	char upper[PATH_MAX], work[PATH_MAX], root[PATH_MAX];
	bool have_dirs, have_cgroup, have_init;
	struct spawn_config cfg;
	struct spawn_result res;
	int r;
	struct err err;
	uv_work_t work_req;
	void (*done)(struct sandbox *sb, const struct err *e, void *data);
	void *data;
};

static void start_undo(struct sandbox_start *st)
{
	struct manager *m = st->m;
	struct sandbox *sb = st->sb;
	char path[PATH_MAX];
	if (sb && st->have_init) {
		image_store_unpin(m->images, sb->id);
		rpc_net_sandbox_release(sb);
		pidfd_send_signal_(sb->pidfd, SIGKILL);
		waitid(P_PIDFD, (id_t)sb->pidfd, &(siginfo_t){0}, WEXITED);
	}
	for (int i = 0; i < 2; i++)
		if (st->sp[i] >= 0) /* sp[0] is ctl_open's once handed over (then -1 here) */
			close(st->sp[i]);
	if (sb && st->have_cgroup) {
		cgroup_set_destroy(sb->cg, NULL);
		sb->cg = NULL;
	}
	if (sb && st->have_dirs) {
		sandbox_dir(sb, NULL, path, sizeof(path));
		rw_unmount(sb, path);
		fs_remove_tree(path, NULL);
		spool_dir(sb, path, sizeof(path));
		fs_remove_tree(path, NULL);
	}
	if (sb && sb->has_uid_slot)
		manager_free_uid_slot(m, sb->uid_slot);
	if (sb)
		sb->has_uid_slot = false;
	image_free(st->img);
	if (sb)
		sandbox_free(sb);
	free(st);
}

static int start_prepare(struct manager *m, const Corral__V1__CreateSandboxRequest *req, struct sandbox_start **ret,
			 struct err *e)
{
	char path[PATH_MAX];
	struct sandbox_start *st = calloc(1, sizeof(*st));
	if (!st)
		return err_set(e, ENOMEM, "sandbox");
	st->m = m;
	st->sp[0] = st->sp[1] = -1;
	int r = image_store_resolve(m->images, req->image, &st->img, e);
	if (r < 0) {
		free(st);
		return r;
	}
	struct sandbox *sb = st->sb = sandbox_alloc(m);
	if (!sb || spec_with_image_config(req, st->img, &sb->spec) < 0) {
		r = err_set(e, ENOMEM, "sandbox");
		goto undo;
	}
	id_random(sb->id, sizeof(sb->id), "sb-", 8);
	snprintf(sb->image_id, sizeof(sb->image_id), "%s", st->img->id);
	sb->created_at_ms = time_now_ms();
	if (manager_alloc_uid_slot(m, &sb->uid_slot) < 0) {
		r = err_setx(e, EUSERS, "no free uid range (max_sandboxes reached)");
		goto undo;
	}
	sb->has_uid_slot = true;
	uid_t uid_base = m->cfg.uid_base + (uid_t)sb->uid_slot * UID_RANGE;

	sandbox_dir(sb, NULL, path, sizeof(path));
	sandbox_dir(sb, "upper", st->upper, sizeof(st->upper));
	sandbox_dir(sb, "work", st->work, sizeof(st->work));
	sandbox_dir(sb, "root", st->root, sizeof(st->root));
	const Corral__V1__Resources *res = req->resources;
	uint64_t disk_mib = res && res->disk_mib ? res->disk_mib : m->cfg.default_disk_mib;
	if (mkdir(path, 0711) < 0) {
		r = err_set(e, errno, "create sandbox directory %s", path);
		goto undo;
	}
	st->have_dirs = true;
	r = rw_mount(path, disk_mib, e);
	if (r < 0)
		goto undo;
	if (mkdir(st->upper, 0755) < 0 || mkdir(st->work, 0700) < 0 || mkdir(st->root, 0755) < 0 ||
	    chown(st->upper, uid_base, uid_base) < 0) {
		r = err_set(e, errno, "create sandbox directories in %s", path);
		goto undo;
	}
	spool_dir(sb, path, sizeof(path));
	if (mkdir(path, 0700) < 0) {
		r = err_set(e, errno, "create %s", path);
		goto undo;
	}
	uint64_t memory_mib = res && res->memory_mib ? res->memory_mib : m->cfg.default_memory_mib;
	struct cgroup_limits limits = {
		.memory_bytes = memory_mib * 1024 * 1024,
		.pids = res && res->pids ? res->pids : m->cfg.default_pids,
		.cpus = res ? res->cpu : 0,
	};
	limits.devices = devpolicy_v1_rules(&limits.n_devices);
	r = cgroup_set_create(&m->cgroups, sb->id, &limits, &sb->cg, e);
	if (r < 0)
		goto undo;
	st->have_cgroup = true;
	/* Before the sandbox's first process exists (it is cloned into this cgroup). Fail closed: a
	 * daemon whose program loaded does not start a sandbox without it. */
	if (m->devpolicy_active) {
		r = devpolicy_attach(m->devpolicy, cgroup_set_v2_fd(sb->cg), e);
		if (r < 0)
			goto undo;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, st->sp) < 0) {
		r = err_set(e, errno, "control socket");
		goto undo;
	}
	st->cfg = (struct spawn_config){
		.hostname = sb->id,
		.lower_dirs = (const char *const *)st->img->layer_dirs,
		.n_lower = st->img->n_layers,
		.upper_dir = st->upper,
		.work_dir = st->work,
		.root_dir = st->root,
		.uid_base = uid_base,
		.uid_count = UID_RANGE,
		.init_fd = m->init_memfd,
		.control_fd = st->sp[1],
		.cgroups = sb->cg,
		.new_netns = true,
		.scratch_bytes = disk_mib * 1024 * 1024,
		.confine = m->confine,
	};
	*ret = st;
	return 0;
undo:
	start_undo(st);
	return r;
}

/* Thread-safe: touches only the start's own state and the kernel. */
static void start_spawn(struct sandbox_start *st)
{
	st->r = spawn_sandbox(&st->cfg, &st->res, &st->err);
	close(st->sp[1]);
	st->sp[1] = -1;
}

static int start_complete(struct sandbox_start *st, struct sandbox **ret, struct err *e)
{
	struct manager *m = st->m;
	struct sandbox *sb = st->sb;
	int r = st->r;
	if (r < 0) {
		*e = st->err;
		goto undo;
	}
	sb->init_pid = st->res.pid;
	sb->pidfd = st->res.pidfd;
	sb->init_start_time = st->res.start_time;
	st->have_init = true;
	/* Init runs, no user process yet: network and tunnels are in place before anything else is. */
	if ((r = rpc_net_sandbox_setup(sb, e)) < 0 || (r = persist_new(sb, e)) < 0)
		goto undo;
	/* While it runs, its image cannot be deleted nor its layers collected. */
	r = image_store_pin(m->images, sb->id, sb->image_id, e);
	if (r < 0) {
		store_sandbox_delete(m->store, sb->id, NULL);
		goto undo;
	}
	if (ctl_open(sb, TAKE_FD(st->sp[0]), false) < 0 || watch_init(sb) < 0 || start_timers(sb) < 0) {
		r = err_set(e, EIO, "start watching sandbox %s", sb->id);
		store_sandbox_delete(m->store, sb->id, NULL);
		goto undo;
	}
	link_sandbox(sb);
	image_free(st->img);
	free(st);
	if (sb->spec->n_command > 0) {
		struct err e2 = {0};
		if (start_entrypoint(sb, &e2) < 0)
			sandbox_finish(sb, REASON_FAILED_TO_START, 0, 0, e2.msg);
	}
	*ret = sb;
	return 0;
undo:
	start_undo(st);
	return r;
}

int sandbox_create(struct manager *m, const Corral__V1__CreateSandboxRequest *req, struct sandbox **ret, struct err *e)
{
	struct sandbox_start *st;
	int r = start_prepare(m, req, &st, e);
	if (r < 0)
		return r;
	start_spawn(st);
	return start_complete(st, ret, e);
}

static void on_spawn_work(uv_work_t *w) { start_spawn(w->data); }

static void on_spawn_done(uv_work_t *w, int status)
{
	struct sandbox_start *st = w->data;
	void (*done)(struct sandbox *, const struct err *, void *) = st->done;
	void *data = st->data;
	struct manager *m = st->m;
	struct sandbox *sb = NULL;
	struct err e = {0};
	if (start_complete(st, &sb, &e) < 0)
		sb = NULL;
	m->starts_in_flight--;
	if (sb && m->stopping) { /* nobody will use it: end it now rather than leave it running */
		sandbox_finish(sb, REASON_TERMINATED, 0, SIGKILL, "the daemon stopped while it started");
		sandbox_reap_blocking(sb, 2000);
		sb = NULL;
		err_setx(&e, ECANCELED, "the daemon is stopping");
	}
	done(sb, &e, data);
	manager_start_done(m);
}

int sandbox_create_async(struct manager *m, const Corral__V1__CreateSandboxRequest *req,
			 void (*done)(struct sandbox *sb, const struct err *e, void *data), void *data, struct err *e)
{
	struct sandbox_start *st;
	int r = start_prepare(m, req, &st, e);
	if (r < 0)
		return r;
	st->done = done;
	st->data = data;
	st->work_req.data = st;
	m->starts_in_flight++;
	r = uv_queue_work(m->loop, &st->work_req, on_spawn_work, on_spawn_done);
	if (r < 0) { /* no thread pool: do it here */
		start_spawn(st);
		on_spawn_done(&st->work_req, 0);
	}
	return 0;
}

/* ---- ending -------------------------------------------------------------------------------- */

void sandbox_finish(struct sandbox *sb, int32_t reason, int32_t code, int32_t sig, const char *message)
{
	if (sb->state != SANDBOX_RUNNING)
		return;
	struct manager *m = sb->m;
	if (sb->pooled) {
		pool_forget(m, sb);
		m->n_running++; /* pooled sandboxes are not counted as running; balance the decrement below */
	}
	sb->state = SANDBOX_FINISHED;
	sb->exit = (struct exit_info){.reason = reason, .code = code, .signal = sig};
	snprintf(sb->exit.message, sizeof(sb->exit.message), "%s", message ? message : "");
	sb->finished_at_ms = time_now_ms();
	if (m->n_running > 0)
		m->n_running--;
	struct err e = {0};
	if (store_sandbox_finish(m->store, sb->id, sb->finished_at_ms, &sb->exit, &e) < 0)
		log_error("sandbox %s: %s", sb->id, e.msg);
	if (sb->life_timer)
		uv_timer_stop(sb->life_timer);
	if (sb->idle_timer)
		uv_timer_stop(sb->idle_timer);
	/* SIGKILL to PID 1 of a pid namespace kills every process in it; the cgroup kill catches
	 * anything that raced out of reach. */
	if (sb->pidfd >= 0)
		pidfd_send_signal_(sb->pidfd, SIGKILL);
	if (sb->cg)
		cgroup_set_kill(sb->cg, NULL);
	for (struct exec *ex = sb->execs; ex; ex = ex->next)
		exec_on_sandbox_end(ex);
	rpc_files_sandbox_end(sb);
	log_info("sandbox %s finished (reason %d%s%s)", sb->id, reason, message && *message ? ": " : "",
		 message ? message : "");
	waitlist_wake(&sb->waiters);
	if (sb->pidfd < 0)
		sandbox_release_resources(sb);
}

/* Once init is gone: every process of the sandbox is dead; remove its cgroups and files. */
static void sandbox_release_resources(struct sandbox *sb)
{
	if (sb->resources_released)
		return;
	sb->resources_released = true;
	rpc_net_sandbox_release(sb);
	ctl_close(sb);
	struct err e = {0};
	if (sb->cg)
		devpolicy_forget(sb->m->devpolicy, cgroup_set_v2_fd(sb->cg));
	/* Removing the v2 cgroup detaches its programs. Without waiting: an init that is not our
	 * child (adopted after a restart) stays a zombie in it until the host's PID 1 reaps it. */
	if (sb->cg && cgroup_set_destroy_nowait(sb->cg, &e) < 0)
		manager_retry_cgroup_removal(sb->m, sb->id);
	sb->cg = NULL;
	char path[PATH_MAX];
	sandbox_dir(sb, NULL, path, sizeof(path));
	rw_unmount(sb, path);
	if (fs_remove_tree(path, &e) < 0)
		log_warn("sandbox %s: %s", sb->id, e.msg);
	if (sb->has_uid_slot)
		manager_free_uid_slot(sb->m, sb->uid_slot);
	sb->has_uid_slot = false;
	image_store_unpin(sb->m->images, sb->id); /* its image may now be deleted or collected */
	for (struct exec *ex = sb->execs; ex; ex = ex->next)
		if (!ex->released) { /* init is gone: nothing of ours is held there any more */
			ex->released = true;
			exec_persist(ex);
		}
	sb->n_live_execs = 0;
}

void sandbox_purge(struct sandbox *sb)
{
	struct manager *m = sb->m;
	struct err e = {0};
	if (store_sandbox_delete(m->store, sb->id, &e) < 0)
		log_error("sandbox %s: %s", sb->id, e.msg);
	char path[PATH_MAX];
	spool_dir(sb, path, sizeof(path));
	fs_remove_tree(path, NULL);
	if (sb->prev)
		sb->prev->next = sb->next;
	else
		m->sandboxes = sb->next;
	if (sb->next)
		sb->next->prev = sb->prev;
	if (sb->state == SANDBOX_RUNNING && m->n_running > 0)
		m->n_running--;
	sandbox_free(sb);
}

void sandbox_detach(struct sandbox *sb)
{
	struct manager *m = sb->m;
	if (sb->prev)
		sb->prev->next = sb->next;
	else
		m->sandboxes = sb->next;
	if (sb->next)
		sb->next->prev = sb->prev;
	sandbox_free(sb);
}

/* ---- adoption after a restart -------------------------------------------------------------- */

static int restore_exec_cb(const struct store_exec_row *row, void *data)
{
	struct sandbox *sb = data;
	struct exec *ex;
	struct err e = {0};
	if (exec_restore(sb, row, &ex, &e) < 0)
		log_warn("sandbox %s: %s", sb->id, e.msg);
	return 0;
}

/* READY after HELLO(adopt): execs init no longer knows of were lost while we were away. */
static void finish_adoption(struct sandbox *sb)
{
	sb->adopting = false;
	for (struct exec *ex = sb->execs; ex; ex = ex->next) {
		if (ex->released || ex->spawned) /* nothing held, or re-announced with its fds */
			continue;
		exec_on_sandbox_end(ex); /* lost while we were away; its streams end here */
		ex->released = true;
		if (sb->n_live_execs > 0)
			sb->n_live_execs--;
		exec_persist(ex);
	}
	log_info("sandbox %s adopted", sb->id);
}

static int reconnect_init(struct sandbox *sb)
{
	/* Init parks a fresh socket at INITPROTO_ADOPT_FD once it sees the old daemon's end close. */
	for (int waited = 0; waited < ADOPT_WAIT_MS; waited += 5) {
		int fd = pidfd_getfd_(sb->pidfd, INITPROTO_ADOPT_FD);
		if (fd >= 0)
			return fd;
		if (errno != EBADF)
			return -errno;
		nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
	}
	return -ETIMEDOUT;
}

int sandbox_adopt(struct manager *m, const struct store_sandbox_row *row, struct err *e)
{
	struct sandbox *sb = sandbox_alloc(m);
	if (!sb)
		return err_set(e, ENOMEM, "sandbox");
	snprintf(sb->id, sizeof(sb->id), "%s", row->id);
	sb->spec = corral__v1__create_sandbox_request__unpack(NULL, row->spec_len, row->spec);
	if (!sb->spec || !name_is_valid(sb->id, sizeof(sb->id) - 1)) {
		sandbox_free(sb);
		return err_setx(e, EIO, "sandbox %s: corrupt record", row->id);
	}
	sb->state = row->state;
	sb->created_at_ms = row->created_at_ms;
	sb->finished_at_ms = row->finished_at_ms;
	sb->exit = row->exit;
	sb->uid_slot = row->uid_slot;
	sb->init_pid = row->init_pid;
	sb->init_start_time = row->init_start_time;
	store_exec_foreach(m->store, sb->id, restore_exec_cb, sb, NULL);
	image_store_pinned(m->images, sb->id, sb->image_id);
	cgroup_set_open(&m->cgroups, sb->id, &sb->cg, NULL);
	rpc_net_sandbox_adopt(sb);
	if (sb->uid_slot < m->cfg.max_sandboxes && !m->uid_slots[sb->uid_slot]) {
		m->uid_slots[sb->uid_slot] = 1;
		sb->has_uid_slot = true;
	}
	link_sandbox(sb);
	if (sb->state != SANDBOX_RUNNING) {
		/* The last daemon may have died between recording the end and killing it, or before it
		 * released its resources: make sure it is dead (same process: same start time), then
		 * release. */
		uint64_t start = 0;
		int pidfd = sb->init_pid > 0 ? pidfd_open_(sb->init_pid) : -1;
		if (pidfd >= 0 && spawn_read_start_time(sb->init_pid, &start, NULL) == 0 && start == sb->init_start_time) {
			pidfd_send_signal_(pidfd, SIGKILL);
			struct pollfd p = {.fd = pidfd, .events = POLLIN};
			poll(&p, 1, 2000);
		}
		if (pidfd >= 0)
			close(pidfd);
		if (sb->cg)
			cgroup_set_kill(sb->cg, NULL);
		sandbox_release_resources(sb);
		return 0;
	}
	/* Is it still the same process? pids are reused; the start time tells them apart. */
	uint64_t start = 0;
	sb->pidfd = pidfd_open_(sb->init_pid);
	if (sb->pidfd < 0 || spawn_read_start_time(sb->init_pid, &start, NULL) < 0 || start != sb->init_start_time) {
		if (sb->pidfd >= 0)
			close(sb->pidfd);
		sb->pidfd = -1;
		bool oom = sb->cg && cgroup_set_oom_killed(sb->cg);
		sandbox_finish(sb, oom ? REASON_OOM_KILLED : REASON_TERMINATED, 0, 0,
			       oom ? "the sandbox ran out of memory" : "the sandbox died while the daemon was down");
		return 0;
	}
	int fd = reconnect_init(sb);
	if (fd < 0 || ctl_open(sb, fd, true) < 0 || watch_init(sb) < 0 || start_timers(sb) < 0) {
		if (fd < 0)
			log_warn("sandbox %s: reconnect to init: %s", sb->id, strerror(-fd));
		if (!sb->pidfd_poll)
			watch_init(sb);
		sandbox_finish(sb, REASON_TERMINATED, 0, SIGKILL, "could not reconnect to the sandbox after a daemon restart");
		return 0;
	}
	return 0;
}
