#include "daemon/rpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "daemon/convert.h"
#include "daemon/exec.h"
#include "daemon/grpc.h"
#include "daemon/pool.h"
#include "daemon/hardening.h"
#include "daemon/rpc_validate.h"
#include "init/initproto.h"
#include "daemon/sandbox.h"
#include "daemon/status.h"
#include "util/cleanup.h"
#include "util/misc.h"

#define MAX_RECV_MESSAGE (4 * 1024 * 1024)

/* ---- helpers ------------------------------------------------------------------------------- */

static void reply_sandbox(struct grpc_call *call, const struct sandbox *sb, ProtobufCMessage *resp,
			  Corral__V1__Sandbox **slot)
{
	struct sandbox_pb pb;
	if (sandbox_pb_fill(sb, &pb) < 0) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	*slot = &pb.msg;
	if (grpc_call_send(call, resp) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	sandbox_pb_release(&pb);
}

struct sandbox *rpc_lookup_sandbox(struct manager *m, struct grpc_call *call, const char *id)
{
	struct sandbox *sb = id[0] ? manager_find_client_sandbox(m, id) : NULL;
	if (!sb) {
		if (!id[0])
			grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "sandbox_id is required");
		else
			grpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "sandbox %.64s not found", id);
	}
	return sb;
}

static struct exec *lookup_exec(struct manager *m, struct grpc_call *call, const char *sandbox_id,
				const char *exec_id)
{
	struct sandbox *sb = rpc_lookup_sandbox(m, call, sandbox_id);
	if (!sb)
		return NULL;
	struct exec *ex = exec_id[0] ? sandbox_find_exec(sb, exec_id) : NULL;
	if (!ex) {
		if (!exec_id[0])
			grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "exec_id is required");
		else
			grpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "exec %.64s not found in sandbox %s", exec_id, sb->id);
	}
	return ex;
}

static uint64_t wait_timeout(int64_t ms) { return ms > MAX_WAIT_MS ? MAX_WAIT_MS : (uint64_t)ms; }

/* ---- SandboxService: sandboxes ------------------------------------------------------------- */

/* A CreateSandbox whose start runs on a worker thread (the event loop serves other calls
 * meanwhile). It holds its name, and a place under max_sandboxes, until the start ends. */
struct pending_create {
	struct pending_create *next;
	struct manager *m;
	struct grpc_call *call;
	char name[129];
};

static void pending_unlink(struct pending_create *pc)
{
	struct manager *m = pc->m;
	for (struct pending_create **pp = &m->pending_creates; *pp; pp = &(*pp)->next)
		if (*pp == pc) {
			*pp = pc->next;
			m->n_pending_creates--;
			break;
		}
}

static void on_created(struct sandbox *sb, const struct err *e, void *data)
{
	struct pending_create *pc = data;
	pending_unlink(pc);
	if (!sb) {
		if (!grpc_call_is_done(pc->call))
			status_reply_err(pc->call, e);
	} else if (grpc_call_is_done(pc->call)) {
		/* The client left (or its deadline passed): the sandbox stays, findable by its tags and
		 * name, and ends at its timeout like any other. */
		log_info("sandbox %s started for a client that is gone", sb->id);
	} else {
		log_debug("sandbox %s created", sb->id);
		Corral__V1__CreateSandboxResponse resp = CORRAL__V1__CREATE_SANDBOX_RESPONSE__INIT;
		reply_sandbox(pc->call, sb, &resp.base, &resp.sandbox);
	}
	grpc_call_unref(pc->call);
	free(pc);
}

static bool name_taken(struct manager *m, const char *name, const char **by)
{
	for (struct sandbox *o = m->sandboxes; o; o = o->next)
		if (o->state == SANDBOX_RUNNING && !o->pooled && !strcmp(o->spec->name, name)) {
			*by = o->id;
			return true;
		}
	for (struct pending_create *pc = m->pending_creates; pc; pc = pc->next)
		if (!strcmp(pc->name, name)) {
			*by = "a sandbox being created";
			return true;
		}
	return false;
}

static void create_sandbox(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	const Corral__V1__CreateSandboxRequest *req = (const Corral__V1__CreateSandboxRequest *)msg;
	struct err e = {0};
	if (validate_create_sandbox(req, &e) < 0)
		return status_reply_err(call, &e);
	if (m->n_running + m->n_pending_creates >= m->cfg.max_sandboxes) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "the daemon runs its maximum of %u sandboxes",
				 m->cfg.max_sandboxes);
		return;
	}
	const char *holder = NULL;
	if (req->name[0] && name_taken(m, req->name, &holder)) {
		grpc_call_finish(call, GRPC_STATUS_ALREADY_EXISTS, "a running sandbox is named %s (%s)", req->name, holder);
		return;
	}
	if (req->network && m->cfg.no_network) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
				 "outbound networking is disabled on this daemon (--no-network)");
		return;
	}
	Corral__V1__CreateSandboxRequest fixed = *req;
	if (!fixed.image[0])
		fixed.image = (char *)"busybox";
	struct sandbox *sb = NULL;
	if (pool_compatible(m, &fixed)) {
		struct image *img = NULL;
		if (image_store_resolve(m->images, fixed.image, &img, &e) < 0)
			return status_reply_err(call, &e);
		sb = pool_claim(m, &fixed, img->id, &e);
		pool_note_demand(m, fixed.image, img->id);
		image_free(img);
		err_clear(&e);
	}
	if (sb) {
		log_debug("sandbox %s created (from the pool)", sb->id);
		Corral__V1__CreateSandboxResponse resp = CORRAL__V1__CREATE_SANDBOX_RESPONSE__INIT;
		reply_sandbox(call, sb, &resp.base, &resp.sandbox);
		return;
	}
	struct pending_create *pc = calloc(1, sizeof(*pc));
	if (!pc) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	pc->m = m;
	pc->call = call;
	snprintf(pc->name, sizeof(pc->name), "%s", req->name);
	grpc_call_ref(call);
	pc->next = m->pending_creates;
	m->pending_creates = pc;
	m->n_pending_creates++;
	if (sandbox_create_async(m, &fixed, on_created, pc, &e) < 0) {
		pending_unlink(pc);
		status_reply_err(call, &e);
		grpc_call_unref(call);
		free(pc);
	}
}

static void get_sandbox(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__GetSandboxRequest *req = (const Corral__V1__GetSandboxRequest *)msg;
	struct sandbox *sb = rpc_lookup_sandbox(ctx, call, req->sandbox_id);
	if (!sb)
		return;
	Corral__V1__GetSandboxResponse resp = CORRAL__V1__GET_SANDBOX_RESPONSE__INIT;
	reply_sandbox(call, sb, &resp.base, &resp.sandbox);
}

static bool has_tags(const struct sandbox *sb, Corral__V1__ListSandboxesRequest__TagsEntry *const *want, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		bool found = false;
		for (size_t j = 0; j < sb->spec->n_tags && !found; j++)
			found = !strcmp(sb->spec->tags[j]->key, want[i]->key) &&
				!strcmp(sb->spec->tags[j]->value, want[i]->value);
		if (!found)
			return false;
	}
	return true;
}

static void list_sandboxes(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	const Corral__V1__ListSandboxesRequest *req = (const Corral__V1__ListSandboxesRequest *)msg;
	size_t n = 0, cap = 0;
	for (struct sandbox *sb = m->sandboxes; sb; sb = sb->next)
		cap++;
	_cleanup_free_ struct sandbox_pb *pbs = calloc(cap ? cap : 1, sizeof(*pbs));
	_cleanup_free_ Corral__V1__Sandbox **ptrs = calloc(cap ? cap : 1, sizeof(*ptrs));
	if (!pbs || !ptrs) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	for (struct sandbox *sb = m->sandboxes; sb; sb = sb->next) {
		if (sb->pooled || (sb->state != SANDBOX_RUNNING && !req->include_finished))
			continue;
		if (!has_tags(sb, req->tags, req->n_tags))
			continue;
		if (sandbox_pb_fill(sb, &pbs[n]) < 0)
			break;
		ptrs[n] = &pbs[n].msg;
		n++;
	}
	Corral__V1__ListSandboxesResponse resp = CORRAL__V1__LIST_SANDBOXES_RESPONSE__INIT;
	resp.n_sandboxes = n;
	resp.sandboxes = ptrs;
	if (grpc_call_send(call, &resp.base) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	for (size_t i = 0; i < n; i++)
		sandbox_pb_release(&pbs[i]);
}

static void wait_sandbox_reply(struct grpc_call *call, void *obj, bool finished)
{
	struct sandbox *sb = obj;
	Corral__V1__WaitSandboxResponse resp = CORRAL__V1__WAIT_SANDBOX_RESPONSE__INIT;
	resp.finished = finished || sb->state == SANDBOX_FINISHED;
	reply_sandbox(call, sb, &resp.base, &resp.sandbox);
}

static void wait_sandbox(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	const Corral__V1__WaitSandboxRequest *req = (const Corral__V1__WaitSandboxRequest *)msg;
	struct err e = {0};
	if (validate_timeout("timeout_ms", req->timeout_ms, &e) < 0)
		return status_reply_err(call, &e);
	struct sandbox *sb = rpc_lookup_sandbox(m, call, req->sandbox_id);
	if (!sb)
		return;
	if (sb->state == SANDBOX_FINISHED || req->timeout_ms == 0)
		return wait_sandbox_reply(call, sb, sb->state == SANDBOX_FINISHED);
	if (waitlist_add(&sb->waiters, m->loop, call, wait_timeout(req->timeout_ms), wait_sandbox_reply, sb) < 0)
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

static void terminate_sandbox(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__TerminateSandboxRequest *req = (const Corral__V1__TerminateSandboxRequest *)msg;
	struct sandbox *sb = rpc_lookup_sandbox(ctx, call, req->sandbox_id);
	if (!sb)
		return;
	sandbox_finish(sb, REASON_TERMINATED, 0, SIGKILL, "terminated by a client");
	Corral__V1__TerminateSandboxResponse resp = CORRAL__V1__TERMINATE_SANDBOX_RESPONSE__INIT;
	reply_sandbox(call, sb, &resp.base, &resp.sandbox);
}

static void set_sandbox_tags(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__SetSandboxTagsRequest *req = (const Corral__V1__SetSandboxTagsRequest *)msg;
	struct err e = {0};
	if (validate_tags(req->tags, req->n_tags, &e) < 0)
		return status_reply_err(call, &e);
	struct sandbox *sb = rpc_lookup_sandbox(ctx, call, req->sandbox_id);
	if (!sb)
		return;
	if (sandbox_set_tags(sb, req->tags, req->n_tags, &e) < 0)
		return status_reply_err(call, &e);
	Corral__V1__SetSandboxTagsResponse resp = CORRAL__V1__SET_SANDBOX_TAGS_RESPONSE__INIT;
	reply_sandbox(call, sb, &resp.base, &resp.sandbox);
}

/* ---- SandboxService: execs ---------------------------------------------------------------- */

static void start_exec(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__StartExecRequest *req = (const Corral__V1__StartExecRequest *)msg;
	struct err e = {0};
	if (validate_start_exec(req, &e) < 0)
		return status_reply_err(call, &e);
	struct sandbox *sb = rpc_lookup_sandbox(ctx, call, req->sandbox_id);
	if (!sb)
		return;
	if (req->exec_id[0]) {
		struct exec *old = sandbox_find_exec(sb, req->exec_id);
		if (old) { /* idempotent retry: answer with the exec that exists, start nothing */
			exec_add_start_waiter(old, call);
			return;
		}
		if (!strcmp(req->exec_id, ENTRYPOINT_EXEC_ID)) {
			grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "exec_id \"%s\" is reserved", ENTRYPOINT_EXEC_ID);
			return;
		}
	}
	if (sb->state != SANDBOX_RUNNING) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "sandbox %s has finished", sb->id);
		return;
	}
	if (sb->adopting || sb->ctl_fd < 0) {
		grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "sandbox %s is reconnecting; retry", sb->id);
		return;
	}
	if (sb->n_live_execs >= MAX_LIVE_EXECS || sb->n_execs >= MAX_EXEC_RECORDS) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "sandbox %s has too many execs (%u live, %u recorded)",
				 sb->id, sb->n_live_execs, sb->n_execs);
		return;
	}
	char id[65];
	if (req->exec_id[0])
		snprintf(id, sizeof(id), "%s", req->exec_id);
	else
		id_random(id, sizeof(id), "ex-", 8);
	uint32_t handle = sb->next_handle ? sb->next_handle : 1;
	struct exec *ex;
	if (exec_new(sb, id, handle, req, &ex, &e) < 0)
		return status_reply_err(call, &e);
	exec_add_start_waiter(ex, call);
	if (exec_spawn(ex, &e) < 0)
		exec_on_spawn_failed(ex, EIO, e.msg);
}

static void read_exec_output(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__ReadExecOutputRequest *req = (const Corral__V1__ReadExecOutputRequest *)msg;
	if (req->stream != CORRAL__V1__EXEC_STREAM__EXEC_STREAM_STDOUT &&
	    req->stream != CORRAL__V1__EXEC_STREAM__EXEC_STREAM_STDERR) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "stream must be EXEC_STREAM_STDOUT or EXEC_STREAM_STDERR");
		return;
	}
	struct exec *ex = lookup_exec(ctx, call, req->sandbox_id, req->exec_id);
	if (ex)
		exec_read(ex, (int)req->stream, req->offset, call);
}

static void write_exec_stdin(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__WriteExecStdinRequest *req = (const Corral__V1__WriteExecStdinRequest *)msg;
	struct exec *ex = lookup_exec(ctx, call, req->sandbox_id, req->exec_id);
	if (ex)
		exec_write_stdin(ex, req->offset, req->data.data, req->data.len, req->eof, call);
}

static void wait_exec_reply(struct grpc_call *call, void *obj, bool finished)
{
	struct exec *ex = obj;
	struct exec_pb pb;
	exec_pb_fill(ex, &pb);
	Corral__V1__WaitExecResponse resp = CORRAL__V1__WAIT_EXEC_RESPONSE__INIT;
	resp.finished = ex->state == EXEC_FINISHED;
	resp.exec = &pb.msg;
	if (grpc_call_send(call, &resp.base) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void wait_exec(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	const Corral__V1__WaitExecRequest *req = (const Corral__V1__WaitExecRequest *)msg;
	struct err e = {0};
	if (validate_timeout("timeout_ms", req->timeout_ms, &e) < 0)
		return status_reply_err(call, &e);
	struct exec *ex = lookup_exec(m, call, req->sandbox_id, req->exec_id);
	if (!ex)
		return;
	if (ex->state == EXEC_FINISHED || req->timeout_ms == 0)
		return wait_exec_reply(call, ex, false);
	if (waitlist_add(&ex->waiters, m->loop, call, wait_timeout(req->timeout_ms), wait_exec_reply, ex) < 0)
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

static void signal_exec(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__SignalExecRequest *req = (const Corral__V1__SignalExecRequest *)msg;
	if (req->signal < 1 || req->signal > 64) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "signal %d is not between 1 and 64", req->signal);
		return;
	}
	struct exec *ex = lookup_exec(ctx, call, req->sandbox_id, req->exec_id);
	if (!ex)
		return;
	if (ex->state != EXEC_RUNNING || !ex->spawned) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "exec %s is not running", ex->id);
		return;
	}
	struct {
		struct initproto_hdr h;
		struct initproto_signal s;
	} pkt = {{INITPROTO_SIGNAL, ex->handle}, {req->signal}};
	int r = sandbox_send(ex->sb, &pkt, sizeof(pkt));
	if (r < 0) {
		grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "cannot reach the sandbox's init: %s", strerror(-r));
		return;
	}
	Corral__V1__SignalExecResponse resp = CORRAL__V1__SIGNAL_EXEC_RESPONSE__INIT;
	if (grpc_call_send(call, &resp.base) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void resize_exec_pty(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__ResizeExecPtyRequest *req = (const Corral__V1__ResizeExecPtyRequest *)msg;
	if (!req->size || !req->size->rows || !req->size->cols || req->size->rows > 65535 || req->size->cols > 65535) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "size.rows and size.cols must be 1 to 65535");
		return;
	}
	struct exec *ex = lookup_exec(ctx, call, req->sandbox_id, req->exec_id);
	if (!ex)
		return;
	struct err e = {0};
	if (exec_resize(ex, req->size->rows, req->size->cols, &e) < 0)
		return status_reply_err(call, &e);
	Corral__V1__ResizeExecPtyResponse resp = CORRAL__V1__RESIZE_EXEC_PTY_RESPONSE__INIT;
	if (grpc_call_send(call, &resp.base) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* ---- SystemService ------------------------------------------------------------------------- */

static void get_info(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	struct utsname u;
	uname(&u);
	/* Every layer, driven by what was built and probed at start (daemon/hardening.c). */
	struct hardening_layer layers[HARDENING_MAX_LAYERS];
	size_t nf = hardening_layers(m, layers, ARRAY_SIZE(layers));
	Corral__V1__Feature feats[HARDENING_MAX_LAYERS], *fptrs[HARDENING_MAX_LAYERS];
	for (size_t i = 0; i < nf; i++) {
		corral__v1__feature__init(&feats[i]);
		feats[i].name = (char *)layers[i].name;
		feats[i].active = layers[i].active;
		feats[i].detail = layers[i].detail;
		fptrs[i] = &feats[i];
	}
	Corral__V1__Capacity cap = CORRAL__V1__CAPACITY__INIT;
	cap.max_sandboxes = m->cfg.max_sandboxes;
	cap.running_sandboxes = m->n_running;
	cap.cpus = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
	cap.memory_bytes = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
	char **names = NULL; /* built-ins, then named images */
	size_t ni = 0;
	if (image_store_names(m->images, &names, &ni) < 0) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	Corral__V1__GetInfoResponse resp = CORRAL__V1__GET_INFO_RESPONSE__INIT;
	resp.version = (char *)CORRAL_VERSION;
	resp.kernel_release = u.release;
	resp.n_features = nf;
	resp.features = fptrs;
	resp.capacity = &cap;
	resp.n_images = ni;
	resp.images = names;
	resp.cgroup_mode = (char *)cgroup_mode_name(m->cgroups.mode);
	if (grpc_call_send(call, &resp.base) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	image_names_free(names, ni);
}

/* ---- table ------------------------------------------------------------------------------------ */

#define SANDBOX_METHOD(name, kind, req, fn) \
	{"/corral.v1.SandboxService/" name, kind, &corral__v1__##req##__descriptor, fn}

static const struct grpc_method sandbox_methods[] = {
	SANDBOX_METHOD("CreateSandbox", GRPC_METHOD_UNARY, create_sandbox_request, create_sandbox),
	SANDBOX_METHOD("GetSandbox", GRPC_METHOD_UNARY, get_sandbox_request, get_sandbox),
	SANDBOX_METHOD("ListSandboxes", GRPC_METHOD_UNARY, list_sandboxes_request, list_sandboxes),
	SANDBOX_METHOD("WaitSandbox", GRPC_METHOD_UNARY, wait_sandbox_request, wait_sandbox),
	SANDBOX_METHOD("TerminateSandbox", GRPC_METHOD_UNARY, terminate_sandbox_request, terminate_sandbox),
	SANDBOX_METHOD("SetSandboxTags", GRPC_METHOD_UNARY, set_sandbox_tags_request, set_sandbox_tags),
	SANDBOX_METHOD("StartExec", GRPC_METHOD_UNARY, start_exec_request, start_exec),
	SANDBOX_METHOD("ReadExecOutput", GRPC_METHOD_SERVER_STREAM, read_exec_output_request, read_exec_output),
	SANDBOX_METHOD("WriteExecStdin", GRPC_METHOD_UNARY, write_exec_stdin_request, write_exec_stdin),
	SANDBOX_METHOD("WaitExec", GRPC_METHOD_UNARY, wait_exec_request, wait_exec),
	SANDBOX_METHOD("SignalExec", GRPC_METHOD_UNARY, signal_exec_request, signal_exec),
	SANDBOX_METHOD("ResizeExecPty", GRPC_METHOD_UNARY, resize_exec_pty_request, resize_exec_pty),
	{"/corral.v1.SystemService/GetInfo", GRPC_METHOD_UNARY, &corral__v1__get_info_request__descriptor, get_info},
};

const struct rpc_methods rpc_sandbox_methods = {sandbox_methods, ARRAY_SIZE(sandbox_methods)};

/* Every module's table; add a line here for a new service. */
static const struct rpc_methods *const modules[] = {
	&rpc_sandbox_methods,
	&rpc_net_methods,
	&rpc_files_methods,
	&rpc_images_methods,
};

static int read_token(const char *path, char *buf, size_t size, struct err *e)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return err_set(e, errno, "open token file %s", path);
	if (!fgets(buf, (int)size, f))
		return err_setx(e, EINVAL, "token file %s is empty", path);
	buf[strcspn(buf, "\r\n")] = '\0';
	if (strlen(buf) < 16)
		return err_setx(e, EINVAL, "token in %s is shorter than 16 characters", path);
	return 0;
}

int rpc_server_start(struct manager *m, struct err *e)
{
	char token[512] = "";
	int r;
	if (m->cfg.listen[0]) {
		if (!m->cfg.token_file[0])
			return err_setx(e, EINVAL, "--listen needs --token-file");
		if ((r = read_token(m->cfg.token_file, token, sizeof(token), e)) < 0)
			return r;
	}
	size_t n = 0, k = 0;
	for (size_t i = 0; i < ARRAY_SIZE(modules); i++)
		n += modules[i]->n;
	/* The server borrows the table for its lifetime: the manager owns it. */
	struct grpc_method *all = calloc(n, sizeof(*all));
	if (!all)
		return err_set(e, ENOMEM, "method table");
	for (size_t i = 0; i < ARRAY_SIZE(modules); i++)
		for (size_t j = 0; j < modules[i]->n; j++)
			all[k++] = modules[i]->methods[j];
	m->methods = all;
	struct grpc_server_config cfg = {
		.methods = all,
		.n_methods = n,
		.ctx = m,
		.max_recv_message = MAX_RECV_MESSAGE,
		.token = token[0] ? token : NULL,
	};
	if ((r = grpc_server_new(m->loop, &cfg, &m->grpc, e)) < 0)
		return r;
	if ((r = grpc_server_listen_unix(m->grpc, m->cfg.socket_path, 0660, e)) < 0)
		return r;
	if (m->cfg.listen[0]) {
		char host[256];
		snprintf(host, sizeof(host), "%s", m->cfg.listen);
		char *colon = strrchr(host, ':');
		uint64_t port;
		if (!colon || !parse_u64(colon + 1, &port) || port == 0 || port > 65535)
			return err_setx(e, EINVAL, "--listen %s: expected HOST:PORT", m->cfg.listen);
		*colon = '\0';
		if ((r = grpc_server_listen_tcp(m->grpc, host, (uint16_t)port, e)) < 0)
			return r;
	}
	return 0;
}
