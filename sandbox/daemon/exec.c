#include "daemon/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "daemon/convert.h"
#include "daemon/grpc.h"
#include "daemon/uvutil.h"
#include "init/initproto.h"
#include "util/cleanup.h"
#include "util/misc.h"

#define READ_CHUNK (64 * 1024)          /* bytes per ReadExecOutput message */
#define READ_QUEUE_HIGH (256 * 1024)    /* stop queueing to a slow reader above this */
#define PUMP_BUDGET (1024 * 1024)       /* bytes moved from one pipe per loop turn (fairness) */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct reader {
	struct outstream *os;
	struct grpc_call *call;
	uint64_t offset;
	struct reader *next, **pprev;
};

struct stdin_write {
	struct exec *ex;
	struct grpc_call *call;
	uint8_t *data;
	size_t len, done;
	bool eof;
};

struct start_waiter {
	struct grpc_call *call;
	bool created;
	struct start_waiter *next;
};

static void reader_pump(struct reader *r);
static void out_wake_readers(struct outstream *os);
static void out_resume(struct outstream *os);
static void exec_maybe_release(struct exec *ex);
static void stdin_fail_pending(struct exec *ex, enum grpc_status_code code, const char *msg);

bool exec_is_entrypoint(const struct exec *ex) { return ex->handle == ENTRYPOINT_HANDLE; }

static uint64_t output_cap(const struct exec *ex) { return ex->sb->m->cfg.output_buffer; }

/* ---- records --------------------------------------------------------------------------- */

static int spec_copy(const Corral__V1__StartExecRequest *req, Corral__V1__StartExecRequest **ret, void **packed,
		     size_t *packed_len)
{
	size_t len = corral__v1__start_exec_request__get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	corral__v1__start_exec_request__pack(req, buf);
	*ret = corral__v1__start_exec_request__unpack(NULL, len, buf);
	if (!*ret) {
		free(buf);
		return -ENOMEM;
	}
	if (packed) {
		*packed = buf;
		*packed_len = len;
	} else {
		free(buf);
	}
	return 0;
}

void exec_persist(struct exec *ex)
{
	size_t len = corral__v1__start_exec_request__get_packed_size(ex->spec);
	_cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return;
	corral__v1__start_exec_request__pack(ex->spec, buf);
	struct store_exec_row row = {
		.sandbox_id = ex->sb->id,
		.exec_id = ex->id,
		.handle = ex->handle,
		.state = ex->state,
		.pid = ex->pid,
		.started_at_ms = ex->started_at_ms,
		.finished_at_ms = ex->finished_at_ms,
		.exit = ex->exit,
		.stdin_offset = ex->stdin_offset,
		.stdin_eof = ex->stdin_eof,
		.released = ex->released,
		.spec = buf,
		.spec_len = len,
	};
	struct err e = {0};
	if (store_exec_put(ex->sb->m->store, &row, &e) < 0)
		log_error("sandbox %s exec %s: %s", ex->sb->id, ex->id, e.msg);
}

static void spool_path(const struct exec *ex, int which, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s/%u.%s", ex->sb->m->execs_dir, ex->sb->id, ex->handle, which == 1 ? "out" : "err");
}

/* Open (create=true: create empty) the spool file of a piped stream and find its window. */
static int out_open_spool(struct outstream *os, bool create, struct err *e)
{
	char path[PATH_MAX];
	spool_path(os->ex, os->which, path, sizeof(path));
	int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT | O_TRUNC : 0);
	os->spool_fd = open(path, flags, 0600);
	if (os->spool_fd < 0) {
		if (!create && errno == ENOENT) { /* lost spool: an empty, finished stream */
			os->eof = true;
			return 0;
		}
		return err_set(e, errno, "open output spool %s", path);
	}
	if (!create) {
		struct stat st;
		if (fstat(os->spool_fd, &st) < 0)
			return err_set(e, errno, "stat %s", path);
		os->end = (uint64_t)st.st_size;
		off_t data = lseek(os->spool_fd, 0, SEEK_DATA);
		os->start = data < 0 ? os->end : (uint64_t)data;
		os->delivered = os->start;
	}
	return 0;
}

static void exec_init_streams(struct exec *ex)
{
	for (int i = 0; i < 2; i++) {
		struct outstream *os = &ex->out[i];
		os->ex = ex;
		os->which = i + 1;
		os->fd = -1;
		os->spool_fd = -1;
		Corral__V1__StreamMode mode = i == 0 ? ex->spec->stdout : ex->spec->stderr;
		os->piped = mode != CORRAL__V1__STREAM_MODE__STREAM_MODE_DEVNULL && !(ex->spec->pty && i == 1);
		os->eof = !os->piped;
	}
	ex->stdin_fd = -1;
	ex->pty_fd = -1;
}

static void exec_link(struct sandbox *sb, struct exec *ex)
{
	ex->next = sb->execs;
	sb->execs = ex;
	sb->n_execs++;
	if (!ex->released)
		sb->n_live_execs++;
	if (ex->state == EXEC_RUNNING && !exec_is_entrypoint(ex))
		sb->running_user_execs++;
	if (ex->handle >= sb->next_handle)
		sb->next_handle = ex->handle + 1;
}

int exec_new(struct sandbox *sb, const char *exec_id, uint32_t handle, const Corral__V1__StartExecRequest *req,
	     struct exec **ret, struct err *e)
{
	struct exec *ex = calloc(1, sizeof(*ex));
	if (!ex)
		return err_set(e, ENOMEM, "exec");
	ex->sb = sb;
	snprintf(ex->id, sizeof(ex->id), "%s", exec_id);
	ex->handle = handle;
	if (spec_copy(req, &ex->spec, NULL, NULL) < 0) {
		free(ex);
		return err_set(e, ENOMEM, "exec");
	}
	ex->state = EXEC_RUNNING;
	ex->started_at_ms = time_now_ms();
	ex->oom_kills_at_start = cgroup_set_oom_kill_count(sb->cg);
	exec_init_streams(ex);
	for (int i = 0; i < 2; i++) {
		if (!ex->out[i].piped)
			continue;
		int r = out_open_spool(&ex->out[i], true, e);
		if (r < 0) {
			for (int j = 0; j < 2; j++)
				if (ex->out[j].spool_fd >= 0)
					close(ex->out[j].spool_fd);
			corral__v1__start_exec_request__free_unpacked(ex->spec, NULL);
			free(ex);
			return r;
		}
	}
	exec_link(sb, ex);
	sandbox_touch(sb);
	exec_persist(ex);
	*ret = ex;
	return 0;
}

int exec_restore(struct sandbox *sb, const struct store_exec_row *row, struct exec **ret, struct err *e)
{
	struct exec *ex = calloc(1, sizeof(*ex));
	if (!ex)
		return err_set(e, ENOMEM, "exec");
	ex->sb = sb;
	snprintf(ex->id, sizeof(ex->id), "%s", row->exec_id);
	ex->handle = row->handle;
	ex->spec = corral__v1__start_exec_request__unpack(NULL, row->spec_len, row->spec);
	if (!ex->spec) {
		free(ex);
		return err_setx(e, EIO, "exec %s: corrupt spec in database", row->exec_id);
	}
	ex->state = row->state;
	ex->pid = row->pid;
	/* Until init re-announces it (EXEC_STATE) an exec it may still hold has no fds here. */
	ex->spawned = row->released;
	ex->started_at_ms = row->started_at_ms;
	ex->finished_at_ms = row->finished_at_ms;
	ex->exit = row->exit;
	ex->stdin_offset = row->stdin_offset;
	ex->stdin_eof = row->stdin_eof;
	ex->released = row->released;
	exec_init_streams(ex);
	for (int i = 0; i < 2; i++) {
		if (!ex->out[i].piped)
			continue;
		int r = out_open_spool(&ex->out[i], false, e);
		if (r < 0)
			log_warn("sandbox %s exec %s: %s", sb->id, ex->id, e->msg);
		if (ex->released) /* init dropped the pipes: what the spool holds is all there is */
			ex->out[i].eof = true;
	}
	exec_link(sb, ex);
	*ret = ex;
	return 0;
}

/* ---- spawning ------------------------------------------------------------------------------ */

/* Environment: defaults, then the sandbox's env, then the exec's; later keys win. */
static int env_set(char **env, size_t *n, size_t cap, const char *key, const char *value)
{
	size_t klen = strlen(key);
	char *kv;
	if (asprintf(&kv, "%s=%s", key, value) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < *n; i++) {
		if (!strncmp(env[i], key, klen) && env[i][klen] == '=') {
			free(env[i]);
			env[i] = kv;
			return 0;
		}
	}
	if (*n >= cap) {
		free(kv);
		return -E2BIG;
	}
	env[(*n)++] = kv;
	return 0;
}

static void env_free(char **env, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(env[i]);
	free(env);
}

int exec_spawn(struct exec *ex, struct err *e)
{
	struct sandbox *sb = ex->sb;
	const Corral__V1__StartExecRequest *req = ex->spec;
	size_t cap = 4 + sb->spec->n_env + req->n_env, n = 0;
	if (cap > INITPROTO_MAX_ARGS)
		cap = INITPROTO_MAX_ARGS;
	char **env = calloc(cap + 1, sizeof(char *));
	if (!env)
		return err_set(e, ENOMEM, "exec environment");
	int r = env_set(env, &n, cap, "PATH", DEFAULT_PATH);
	if (r == 0)
		r = env_set(env, &n, cap, "HOME", "/root");
	if (r == 0 && req->pty)
		r = env_set(env, &n, cap, "TERM", "xterm-256color");
	for (size_t i = 0; r == 0 && i < sb->spec->n_env; i++)
		r = env_set(env, &n, cap, sb->spec->env[i]->key, sb->spec->env[i]->value);
	for (size_t i = 0; r == 0 && i < req->n_env; i++)
		r = env_set(env, &n, cap, req->env[i]->key, req->env[i]->value);
	if (r < 0) {
		env_free(env, n);
		return err_setx(e, -r == E2BIG ? EINVAL : ENOMEM, "exec environment too large");
	}
	const char *workdir = req->workdir[0] ? req->workdir : sb->spec->workdir;
	struct initproto_spawn fixed = {
		.flags = req->pty ? INITPROTO_SPAWN_PTY : 0,
		.stdout_mode = ex->out[0].piped || req->pty ? INITPROTO_STREAM_PIPE : INITPROTO_STREAM_DEVNULL,
		.stderr_mode = ex->out[1].piped ? INITPROTO_STREAM_PIPE : INITPROTO_STREAM_DEVNULL,
		.pty_rows = req->pty_size && req->pty_size->rows ? (uint16_t)req->pty_size->rows : 24,
		.pty_cols = req->pty_size && req->pty_size->cols ? (uint16_t)req->pty_size->cols : 80,
	};
	_cleanup_free_ char *pkt = malloc(INITPROTO_MAX_PACKET);
	if (!pkt) {
		env_free(env, n);
		return err_set(e, ENOMEM, "exec");
	}
	/* protobuf-c's repeated strings carry a count, not a NULL terminator. */
	_cleanup_free_ const char **argv = calloc(req->n_argv + 1, sizeof(char *));
	if (!argv) {
		env_free(env, n);
		return err_set(e, ENOMEM, "exec");
	}
	memcpy(argv, req->argv, req->n_argv * sizeof(char *));
	int len = initproto_encode_spawn(pkt, INITPROTO_MAX_PACKET, ex->handle, &fixed, argv,
					 (const char *const *)env, workdir);
	env_free(env, n);
	if (len < 0)
		return err_setx(e, EINVAL, "exec request too large for the sandbox's init (argv, env and workdir together)");
	r = sandbox_send(sb, pkt, (size_t)len);
	if (r < 0)
		return err_set(e, -r, "send exec to sandbox init");
	if (req->timeout_ms > 0) {
		ex->timeout_timer = uvutil_timer_new(sb->m->loop, ex);
	}
	return 0;
}

/* ---- status ---------------------------------------------------------------------------------- */

static void start_waiters_reply(struct exec *ex)
{
	struct start_waiter *w;
	while ((w = ex->start_waiters)) {
		ex->start_waiters = w->next;
		struct exec_pb pb;
		exec_pb_fill(ex, &pb);
		Corral__V1__StartExecResponse resp = CORRAL__V1__START_EXEC_RESPONSE__INIT;
		resp.exec = &pb.msg;
		resp.created = w->created;
		if (grpc_call_send(w->call, &resp.base) == 0)
			grpc_call_finish(w->call, GRPC_STATUS_OK, NULL);
		grpc_call_unref(w->call);
		free(w);
	}
}

void exec_add_start_waiter(struct exec *ex, struct grpc_call *call)
{
	struct start_waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	grpc_call_ref(call);
	w->call = call;
	w->created = !ex->spawned && !ex->start_waiters && ex->state == EXEC_RUNNING;
	w->next = ex->start_waiters;
	ex->start_waiters = w;
	if (ex->spawned || ex->state == EXEC_FINISHED)
		start_waiters_reply(ex);
}

static void on_exec_timeout(uv_timer_t *t)
{
	struct exec *ex = t->data;
	if (ex && ex->state == EXEC_RUNNING)
		exec_kill(ex, REASON_TIMEOUT);
}

static void exec_set_finished(struct exec *ex, const struct exit_info *x)
{
	struct sandbox *sb = ex->sb;
	if (ex->state == EXEC_FINISHED)
		return;
	ex->state = EXEC_FINISHED;
	ex->exit = *x;
	ex->finished_at_ms = time_now_ms();
	if (ex->timeout_timer)
		uv_timer_stop(ex->timeout_timer);
	if (!exec_is_entrypoint(ex) && sb->running_user_execs > 0)
		sb->running_user_execs--;
	sandbox_touch(sb);
	stdin_fail_pending(ex, GRPC_STATUS_FAILED_PRECONDITION, "the process exited before its stdin was written");
	if (ex->stdin_fd >= 0) {
		uvutil_close((uv_handle_t *)ex->stdin_poll);
		ex->stdin_poll = NULL;
		close(ex->stdin_fd);
		ex->stdin_fd = -1;
	}
	exec_persist(ex);
	start_waiters_reply(ex);
	waitlist_wake(&ex->waiters);
	exec_maybe_release(ex);
}

void exec_on_exited(struct exec *ex, int ws)
{
	struct exit_info x = {0};
	if (WIFEXITED(ws)) {
		x.reason = REASON_EXITED;
		x.code = WEXITSTATUS(ws);
	} else if (WIFSIGNALED(ws)) {
		x.signal = WTERMSIG(ws);
		x.reason = ex->kill_reason && x.signal == SIGKILL ? ex->kill_reason : REASON_SIGNALED;
		if (x.reason == REASON_TIMEOUT)
			snprintf(x.message, sizeof(x.message), "exec timed out after %lld ms",
				 (long long)ex->spec->timeout_ms);
		/* A SIGKILL we did not send, while the OOM killer acted in this sandbox: it was the victim
		 * (the kernel counts the kill before the victim can die). */
		if (x.reason == REASON_SIGNALED && x.signal == SIGKILL &&
		    cgroup_set_oom_kill_count(ex->sb->cg) > ex->oom_kills_at_start) {
			x.reason = REASON_OOM_KILLED;
			snprintf(x.message, sizeof(x.message), "killed by the out-of-memory killer at the sandbox's memory limit");
		}
	} else {
		x.reason = REASON_TERMINATED;
		snprintf(x.message, sizeof(x.message), "unexpected wait status 0x%x", (unsigned)ws);
	}
	exec_set_finished(ex, &x);
	if (exec_is_entrypoint(ex))
		sandbox_finish(ex->sb, x.reason, x.code, x.signal, x.message);
}

void exec_on_spawn_failed(struct exec *ex, int error, const char *msg)
{
	struct exit_info x = {.reason = REASON_FAILED_TO_START};
	snprintf(x.message, sizeof(x.message), "%s", msg && *msg ? msg : strerror(error));
	ex->spawned = true;
	ex->released = true; /* init holds nothing for an exec that never started */
	if (ex->sb->n_live_execs > 0)
		ex->sb->n_live_execs--;
	for (int i = 0; i < 2; i++)
		ex->out[i].eof = true;
	exec_set_finished(ex, &x);
	for (int i = 0; i < 2; i++) /* wake readers parked on the (empty) streams */
		for (struct reader *r = ex->out[i].readers, *next; r; r = next) {
			next = r->next;
			reader_pump(r);
		}
	if (exec_is_entrypoint(ex))
		sandbox_finish(ex->sb, x.reason, 0, 0, x.message);
}

void exec_on_sandbox_end(struct exec *ex)
{
	if (ex->state == EXEC_RUNNING) {
		struct exit_info x = {.reason = REASON_TERMINATED, .signal = SIGKILL};
		snprintf(x.message, sizeof(x.message), "the sandbox ended");
		exec_set_finished(ex, &x);
	}
	if (!ex->spawned) { /* never started: nothing will arrive on its streams */
		ex->spawned = true;
		for (int i = 0; i < 2; i++) {
			ex->out[i].eof = true;
			out_wake_readers(&ex->out[i]); /* parked readers get their EOF now */
		}
	}
}

int exec_kill(struct exec *ex, int32_t reason)
{
	struct {
		struct initproto_hdr h;
		struct initproto_signal s;
	} pkt = {{INITPROTO_SIGNAL, ex->handle}, {SIGKILL}};
	ex->kill_reason = reason;
	return sandbox_send(ex->sb, &pkt, sizeof(pkt));
}

/* ---- output -------------------------------------------------------------------------------- */

static void out_wake_readers(struct outstream *os)
{
	for (struct reader *r = os->readers, *next; r; r = next) {
		next = r->next;
		reader_pump(r);
	}
}

static void out_close_fd(struct outstream *os)
{
	uvutil_close((uv_handle_t *)os->poll);
	os->poll = NULL;
	os->polling = false;
	if (os->fd >= 0) {
		if (os->ex->pty_fd == os->fd)
			os->ex->pty_fd = -1;
		close(os->fd);
	}
	os->fd = -1;
}

static void out_set_eof(struct outstream *os)
{
	os->eof = true;
	out_close_fd(os);
	out_wake_readers(os);
	exec_maybe_release(os->ex);
}

/* Drop bytes every reader has already been sent, oldest first, to make room. */
static void out_make_room(struct outstream *os)
{
	uint64_t drop_to = os->delivered < os->end ? os->delivered : os->end;
	if (drop_to <= os->start)
		return;
	uint64_t from = os->start & ~(uint64_t)4095, to = drop_to & ~(uint64_t)4095;
	if (to > from)
		fallocate(os->spool_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)(to - from));
	os->start = drop_to;
}

static ssize_t out_move(struct outstream *os, size_t want)
{
	loff_t off = (loff_t)os->end;
	ssize_t n = splice(os->fd, NULL, os->spool_fd, &off, want, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
	if (n >= 0 || errno != EINVAL)
		return n;
	/* A pty master is not a pipe: copy through a buffer instead. Init shares the master's open
	 * file description (and so its O_NONBLOCK): read only what is there, never block. */
	char buf[65536];
	int avail = 0;
	if (ioctl(os->fd, FIONREAD, &avail) == 0 && avail <= 0) {
		struct pollfd p = {.fd = os->fd, .events = POLLIN};
		if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLHUP | POLLERR))) {
			errno = EAGAIN;
			return -1;
		}
		avail = 1; /* hung up: read reports it (EIO) at once */
	}
	if ((size_t)avail < want)
		want = (size_t)avail;
	n = read(os->fd, buf, want < sizeof(buf) ? want : sizeof(buf));
	if (n <= 0)
		return n;
	ssize_t w = pwrite(os->spool_fd, buf, (size_t)n, (off_t)os->end);
	return w == n ? n : -EIO;
}

static void out_on_readable(uv_poll_t *p, int status, int events)
{
	struct outstream *os = p->data;
	if (!os)
		return;
	size_t budget = PUMP_BUDGET;
	bool grew = false, eof = status < 0;
	uint64_t cap = output_cap(os->ex);
	while (!eof && budget > 0) {
		if (os->end - os->start >= cap)
			out_make_room(os);
		/* May exceed cap after a restart (holes are punched in whole pages, or a smaller
		 * --output-buffer): never let the subtraction wrap. */
		uint64_t used = os->end - os->start, room = used >= cap ? 0 : cap - used;
		if (room == 0) { /* reader behind and buffer full: let the pipe fill (backpressure) */
			uv_poll_stop(os->poll);
			os->polling = false;
			break;
		}
		size_t want = room < budget ? (size_t)room : budget;
		ssize_t n = out_move(os, want);
		if (n > 0) {
			os->end += (uint64_t)n;
			budget -= (size_t)n;
			grew = true;
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			eof = true; /* EOF, or EIO from a pty whose last slave closed */
		} else if (errno == EAGAIN) {
			break;
		}
	}
	if (grew)
		out_wake_readers(os);
	if (eof)
		out_set_eof(os);
}

static int out_attach(struct outstream *os, int fd, struct err *e)
{
	os->fd = fd;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return err_set(e, errno, "set output non-blocking");
	os->poll = uvutil_poll_new(os->ex->sb->m->loop, fd, os);
	if (!os->poll)
		return err_setx(e, ENOMEM, "watch exec output");
	os->eof = false;
	out_resume(os);
	return 0;
}

static void out_resume(struct outstream *os)
{
	if (os->polling || !os->poll || os->eof)
		return;
	os->polling = true;
	uv_poll_start(os->poll, UV_READABLE, out_on_readable);
}

/* ---- readers ----------------------------------------------------------------------------- */

static void reader_free(struct reader *r)
{
	*r->pprev = r->next;
	if (r->next)
		r->next->pprev = r->pprev;
	grpc_call_unref(r->call);
	free(r);
}

static void reader_on_cancel(struct grpc_call *call, void *data) { reader_free(data); }

static void reader_on_writable(struct grpc_call *call, void *data) { reader_pump(data); }

static void reader_finish(struct reader *r, enum grpc_status_code code, const char *msg)
{
	grpc_call_finish(r->call, code, "%s", msg);
	reader_free(r);
}

static void reader_pump(struct reader *r)
{
	struct outstream *os = r->os;
	uint8_t buf[READ_CHUNK];
	for (;;) {
		if (grpc_call_is_done(r->call)) {
			reader_free(r);
			return;
		}
		if (r->offset < os->start) {
			char msg[160];
			snprintf(msg, sizeof(msg), "bytes before offset %llu were dropped from the output buffer (reader at %llu)",
				 (unsigned long long)os->start, (unsigned long long)r->offset);
			reader_finish(r, GRPC_STATUS_OUT_OF_RANGE, msg);
			return;
		}
		if (r->offset < os->end) {
			if (grpc_call_pending_bytes(r->call) >= READ_QUEUE_HIGH) {
				grpc_call_on_writable(r->call, reader_on_writable, r);
				return;
			}
			size_t want = os->end - r->offset < READ_CHUNK ? (size_t)(os->end - r->offset) : READ_CHUNK;
			ssize_t n = pread(os->spool_fd, buf, want, (off_t)r->offset);
			if (n <= 0) {
				reader_finish(r, GRPC_STATUS_DATA_LOSS, "reading the output spool failed");
				return;
			}
			Corral__V1__ReadExecOutputResponse msg = CORRAL__V1__READ_EXEC_OUTPUT_RESPONSE__INIT;
			msg.offset = r->offset;
			msg.data.data = buf;
			msg.data.len = (size_t)n;
			if (grpc_call_send(r->call, &msg.base) < 0) {
				reader_finish(r, GRPC_STATUS_INTERNAL, "sending output failed");
				return;
			}
			r->offset += (uint64_t)n;
			if (r->offset > os->delivered) {
				os->delivered = r->offset;
				out_resume(os); /* room may have opened for a stream held back */
			}
			continue;
		}
		if (os->eof) {
			Corral__V1__ReadExecOutputResponse msg = CORRAL__V1__READ_EXEC_OUTPUT_RESPONSE__INIT;
			msg.offset = r->offset;
			msg.eof = true;
			if (grpc_call_send(r->call, &msg.base) == 0)
				grpc_call_finish(r->call, GRPC_STATUS_OK, NULL);
			else
				grpc_call_finish(r->call, GRPC_STATUS_INTERNAL, "sending output failed");
			reader_free(r);
			return;
		}
		return; /* parked until more output (or EOF) arrives */
	}
}

void exec_read(struct exec *ex, int which, uint64_t offset, struct grpc_call *call)
{
	struct outstream *os = &ex->out[which - 1];
	if (offset < os->start) {
		grpc_call_finish(call, GRPC_STATUS_OUT_OF_RANGE,
				 "offset %llu was dropped from the output buffer; the earliest retained offset is %llu",
				 (unsigned long long)offset, (unsigned long long)os->start);
		return;
	}
	if (offset > os->end && os->eof) {
		grpc_call_finish(call, GRPC_STATUS_OUT_OF_RANGE, "offset %llu is past the end of the stream (%llu bytes)",
				 (unsigned long long)offset, (unsigned long long)os->end);
		return;
	}
	struct reader *r = calloc(1, sizeof(*r));
	if (!r) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	r->os = os;
	r->call = call;
	r->offset = offset;
	grpc_call_ref(call);
	r->next = os->readers;
	if (os->readers)
		os->readers->pprev = &r->next;
	r->pprev = &os->readers;
	os->readers = r;
	grpc_call_on_cancel(call, reader_on_cancel, r);
	reader_pump(r);
}

/* ---- stdin --------------------------------------------------------------------------------- */

static void stdin_reply(struct grpc_call *call, uint64_t next)
{
	Corral__V1__WriteExecStdinResponse resp = CORRAL__V1__WRITE_EXEC_STDIN_RESPONSE__INIT;
	resp.next_offset = next;
	if (grpc_call_send(call, &resp.base) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void stdin_close(struct exec *ex)
{
	if (ex->stdin_fd >= 0) {
		uvutil_close((uv_handle_t *)ex->stdin_poll);
		ex->stdin_poll = NULL;
		close(ex->stdin_fd);
		ex->stdin_fd = -1;
	}
	if (!ex->stdin_eof) {
		ex->stdin_eof = true;
		struct initproto_hdr h = {INITPROTO_CLOSE_STDIN, ex->handle};
		sandbox_send(ex->sb, &h, sizeof(h)); /* init's copy must close too, or no EOF is seen */
	}
}

static void stdin_pending_free(struct exec *ex)
{
	struct stdin_write *w = ex->stdin_pending;
	if (!w)
		return;
	ex->stdin_pending = NULL;
	if (ex->stdin_poll)
		uv_poll_stop(ex->stdin_poll);
	grpc_call_unref(w->call);
	free(w->data);
	free(w);
}

static void stdin_fail_pending(struct exec *ex, enum grpc_status_code code, const char *msg)
{
	if (!ex->stdin_pending)
		return;
	grpc_call_finish(ex->stdin_pending->call, code, "%s (%llu bytes applied)", msg,
			 (unsigned long long)ex->stdin_offset);
	stdin_pending_free(ex);
}

static void stdin_on_cancel(struct grpc_call *call, void *data)
{
	struct exec *ex = data;
	if (ex->stdin_pending && ex->stdin_pending->call == call)
		stdin_pending_free(ex);
}

/* Write what the pipe takes now; returns 1 when all is written, 0 if it would block, <0 error. */
static int stdin_flush(struct exec *ex)
{
	struct stdin_write *w = ex->stdin_pending;
	while (w->done < w->len) {
		size_t chunk = w->len - w->done;
		if (ex->spec->pty) {
			/* The pty master's O_NONBLOCK is shared with init: write only when there is room,
			 * in pieces the line discipline takes whole. */
			struct pollfd p = {.fd = ex->stdin_fd, .events = POLLOUT};
			if (poll(&p, 1, 0) <= 0 || !(p.revents & POLLOUT))
				break;
			if (chunk > 256)
				chunk = 256;
		}
		ssize_t n = write(ex->stdin_fd, w->data + w->done, chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0)
			return -errno;
		w->done += (size_t)n;
		ex->stdin_offset += (uint64_t)n;
	}
	struct err e = {0};
	store_exec_set_stdin(ex->sb->m->store, ex->sb->id, ex->id, ex->stdin_offset, ex->stdin_eof, &e);
	return w->done == w->len;
}

static void stdin_complete(struct exec *ex)
{
	struct stdin_write *w = ex->stdin_pending;
	if (w->eof) {
		stdin_close(ex);
		struct err e = {0};
		store_exec_set_stdin(ex->sb->m->store, ex->sb->id, ex->id, ex->stdin_offset, true, &e);
	}
	stdin_reply(w->call, ex->stdin_offset);
	stdin_pending_free(ex);
}

static void stdin_on_writable(uv_poll_t *p, int status, int events)
{
	struct exec *ex = p->data;
	if (!ex || !ex->stdin_pending)
		return;
	int r = status < 0 ? -EPIPE : stdin_flush(ex);
	if (r < 0)
		stdin_fail_pending(ex, GRPC_STATUS_FAILED_PRECONDITION, "the process closed its stdin");
	else if (r == 1)
		stdin_complete(ex);
}

void exec_write_stdin(struct exec *ex, uint64_t offset, const uint8_t *data, size_t len, bool eof,
		      struct grpc_call *call)
{
	if (ex->stdin_pending) {
		grpc_call_finish(call, GRPC_STATUS_ABORTED, "another stdin write to exec %s is in progress", ex->id);
		return;
	}
	if (offset > ex->stdin_offset) {
		grpc_call_finish(call, GRPC_STATUS_OUT_OF_RANGE,
				 "stdin write at offset %llu leaves a gap: only %llu bytes were applied",
				 (unsigned long long)offset, (unsigned long long)ex->stdin_offset);
		return;
	}
	uint64_t skip = ex->stdin_offset - offset;
	size_t fresh = skip >= len ? 0 : len - (size_t)skip;
	if (fresh == 0 && (!eof || ex->stdin_eof)) { /* a retry of what was already applied */
		stdin_reply(call, ex->stdin_offset);
		return;
	}
	if (ex->stdin_eof) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "stdin of exec %s is closed", ex->id);
		return;
	}
	if (!ex->spawned) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "exec %s has not started yet", ex->id);
		return;
	}
	if (ex->stdin_fd < 0) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "exec %s has finished; its stdin is closed",
				 ex->id);
		return;
	}
	sandbox_touch(ex->sb);
	struct stdin_write *w = calloc(1, sizeof(*w));
	uint8_t *copy = fresh ? malloc(fresh) : NULL;
	if (!w || (fresh && !copy)) {
		free(w);
		free(copy);
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	if (fresh)
		memcpy(copy, data + skip, fresh);
	w->ex = ex;
	w->call = call;
	w->data = copy;
	w->len = fresh;
	w->eof = eof;
	grpc_call_ref(call);
	ex->stdin_pending = w;
	int r = stdin_flush(ex);
	if (r < 0) {
		stdin_fail_pending(ex, GRPC_STATUS_FAILED_PRECONDITION, "the process closed its stdin");
		return;
	}
	if (r == 1) {
		stdin_complete(ex);
		return;
	}
	grpc_call_on_cancel(call, stdin_on_cancel, ex);
	uv_poll_start(ex->stdin_poll, UV_WRITABLE, stdin_on_writable);
}

int exec_resize(struct exec *ex, unsigned rows, unsigned cols, struct err *e)
{
	if (!ex->spec->pty)
		return err_setx(e, ESTALE, "exec %s has no pty", ex->id);
	if (ex->pty_fd < 0)
		return err_setx(e, ESTALE, "exec %s has finished", ex->id);
	struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
	if (ioctl(ex->pty_fd, TIOCSWINSZ, &ws) < 0)
		return err_set(e, errno, "resize pty of exec %s", ex->id);
	return 0;
}

/* ---- fds from init ------------------------------------------------------------------------- */

static uint32_t expected_fd_flags(const struct exec *ex)
{
	if (ex->spec->pty)
		return INITPROTO_FD_PTY;
	return INITPROTO_FD_STDIN | (ex->out[0].piped ? INITPROTO_FD_STDOUT : 0) |
	       (ex->out[1].piped ? INITPROTO_FD_STDERR : 0);
}

static bool fd_is(int fd, mode_t type)
{
	struct stat st;
	return fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == type;
}

/* Take over fds that init sent for this exec (SPAWNED, or EXEC_STATE after a restart). On error
 * every fd is closed. fd_flags may lack the stdin bit after CLOSE_STDIN. */
int exec_on_spawned(struct exec *ex, int32_t pid, uint32_t fd_flags, int *fds, size_t nfds, struct err *e)
{
	uint32_t want = expected_fd_flags(ex);
	int r = 0;
	if ((fd_flags & ~want) || ((fd_flags | INITPROTO_FD_STDIN) & want) != want ||
	    nfds != initproto_fd_count(fd_flags) || pid <= 0) {
		r = err_setx(e, EPROTO, "init sent fds %#x (%zu) for exec %s, expected %#x", fd_flags, nfds, ex->id, want);
		goto fail;
	}
	size_t i = 0;
	int in = -1, out[2] = {-1, -1};
	if (fd_flags & INITPROTO_FD_PTY) {
		if (!fd_is(fds[0], S_IFCHR)) {
			r = err_setx(e, EPROTO, "init sent a pty master that is not a character device");
			goto fail;
		}
		out[0] = fds[0];
		in = ex->stdin_eof ? -1 : fcntl(fds[0], F_DUPFD_CLOEXEC, 3);
	} else {
		for (i = 0; i < nfds; i++) {
			if (!fd_is(fds[i], S_IFIFO)) {
				r = err_setx(e, EPROTO, "init sent an exec fd that is not a pipe");
				goto fail;
			}
		}
		i = 0;
		if (fd_flags & INITPROTO_FD_STDIN)
			in = fds[i++];
		if (fd_flags & INITPROTO_FD_STDOUT)
			out[0] = fds[i++];
		if (fd_flags & INITPROTO_FD_STDERR)
			out[1] = fds[i++];
	}
	ex->pid = pid;
	ex->spawned = true;
	if (in >= 0 && !ex->stdin_eof && ex->state == EXEC_RUNNING) {
		/* Init shares the pipe's open file description and could clear O_NONBLOCK on it,
		 * stalling our writes: reopen the pipe for an open file description of our own. */
		if (!ex->spec->pty) {
			char path[64];
			snprintf(path, sizeof(path), "/proc/self/fd/%d", in);
			int own = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
			if (own >= 0) {
				close(in);
				in = own;
			}
		}
		fcntl(in, F_SETFL, fcntl(in, F_GETFL) | O_NONBLOCK);
		ex->stdin_poll = uvutil_poll_new(ex->sb->m->loop, in, ex);
		if (ex->stdin_poll)
			ex->stdin_fd = in;
		else
			close(in); /* stdin stays closed rather than half set up */
	} else if (in >= 0) {
		close(in);
	}
	if (ex->spec->pty)
		ex->pty_fd = out[0];
	for (int k = 0; k < 2; k++) {
		if (out[k] < 0)
			continue;
		r = out_attach(&ex->out[k], out[k], e);
		if (r < 0) {
			if (k == 0 && out[1] >= 0) /* not handed to its stream yet */
				close(out[1]);
			return r; /* the failed stream owns (and closes) its fd */
		}
	}
	if (ex->spec->timeout_ms > 0 && ex->state == EXEC_RUNNING) {
		if (!ex->timeout_timer) /* restored after a restart */
			ex->timeout_timer = uvutil_timer_new(ex->sb->m->loop, ex);
		/* From when it started: a restart must not give an exec a fresh timeout. */
		int64_t left = ex->started_at_ms + ex->spec->timeout_ms - time_now_ms();
		if (ex->timeout_timer)
			uv_timer_start(ex->timeout_timer, on_exec_timeout, left > 0 ? (uint64_t)left : 0, 0);
	}
	exec_persist(ex);
	start_waiters_reply(ex);
	return 0;
fail:
	for (size_t k = 0; k < nfds; k++)
		close(fds[k]);
	return r;
}

/* ---- release and free ----------------------------------------------------------------------- */

/* Output of finished execs stays readable until the sandbox is purged, but on the host's state
 * disk, outside every sandbox limit: past SPOOL_BUDGET_STREAMS full buffers per sandbox, the
 * oldest finished execs' output is dropped (a read of it then gets OUT_OF_RANGE). */
#define SPOOL_BUDGET_STREAMS 16

static void out_drop_all(struct outstream *os)
{
	if (os->spool_fd >= 0 && os->end > os->start)
		fallocate(os->spool_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)os->end);
	os->start = os->delivered = os->end;
}

static void sandbox_enforce_spool_budget(struct sandbox *sb)
{
	uint64_t budget = (uint64_t)SPOOL_BUDGET_STREAMS * sb->m->cfg.output_buffer, total = 0;
	size_t n = 0;
	for (struct exec *ex = sb->execs; ex; ex = ex->next, n++)
		total += (ex->out[0].end - ex->out[0].start) + (ex->out[1].end - ex->out[1].start);
	if (total <= budget)
		return;
	_cleanup_free_ struct exec **order = calloc(n ? n : 1, sizeof(*order)); /* newest first */
	if (!order)
		return;
	n = 0;
	for (struct exec *ex = sb->execs; ex; ex = ex->next)
		order[n++] = ex;
	for (size_t i = n; i-- > 0 && total > budget;) {
		struct exec *ex = order[i];
		if (!ex->released || ex->out[0].readers || ex->out[1].readers)
			continue; /* running, or someone is reading it right now */
		for (int k = 0; k < 2; k++) {
			total -= ex->out[k].end - ex->out[k].start;
			out_drop_all(&ex->out[k]);
		}
	}
}

static void exec_maybe_release(struct exec *ex)
{
	if (ex->released || !ex->spawned || ex->state != EXEC_FINISHED || !ex->out[0].eof || !ex->out[1].eof)
		return;
	ex->released = true;
	if (ex->sb->n_live_execs > 0)
		ex->sb->n_live_execs--;
	struct initproto_hdr h = {INITPROTO_RELEASE, ex->handle};
	sandbox_send(ex->sb, &h, sizeof(h));
	exec_persist(ex);
	sandbox_enforce_spool_budget(ex->sb);
}

void exec_free(struct exec *ex)
{
	if (!ex)
		return;
	for (int i = 0; i < 2; i++) {
		struct outstream *os = &ex->out[i];
		while (os->readers)
			reader_finish(os->readers, GRPC_STATUS_NOT_FOUND, "the output of this exec was purged");
		out_close_fd(os);
		if (os->spool_fd >= 0)
			close(os->spool_fd);
	}
	stdin_fail_pending(ex, GRPC_STATUS_NOT_FOUND, "the exec was purged");
	if (ex->stdin_fd >= 0)
		close(ex->stdin_fd);
	uvutil_close((uv_handle_t *)ex->stdin_poll);
	uvutil_close((uv_handle_t *)ex->timeout_timer);
	start_waiters_reply(ex);
	waitlist_wake(&ex->waiters);
	corral__v1__start_exec_request__free_unpacked(ex->spec, NULL);
	free(ex);
}
