/* Tests for daemon/grpc.c: a real server on a libuv loop in this process, driven by unmodified
 * clients in child processes (Python grpcio through tests/unit/grpc_client.py, and a short
 * @grpc/grpc-js script). Test methods are bound to the real generated descriptors. */
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <uv.h>

#include "corral/v1/sandbox.pb-c.h"
#include "corral/v1/system.pb-c.h"
#include "daemon/grpc.h"
#include "testlib.h"
#include "util/cleanup.h"

#define PYTHON "/usr/bin/python3"
#define NODE "/usr/bin/node"
#define GRPCIO_MARK "/usr/lib/python3/dist-packages/grpc/__init__.py"
#define GRPC_JS "tests/node/node_modules/@grpc/grpc-js"
#define MAX_RECV (1u << 20)
#define CLIENT_TIMEOUT_MS 120000
#define TOKEN "s3cret-t0ken"

struct tstate {
	uv_loop_t loop;
	struct grpc_server *srv;
	char dir[64], sock[128], target[160], out_path[160];
	char out[16384];
	uv_process_t proc;
	uv_timer_t watchdog;
	int64_t exit_status;
	int term_signal;
	bool server_closed, server_done, close_in_wait;
	int cancels, deadline_cancels;
	size_t max_pending, stream_msg_size;
	uint64_t stdin_bytes;
	unsigned stdin_msgs;
};

/* --- test methods ------------------------------------------------------------------------ */

static void server_done(void *data)
{
	((struct tstate *)data)->server_done = true;
}

static void close_server(struct tstate *st)
{
	if (st->server_closed)
		return;
	st->server_closed = true;
	grpc_server_close(st->srv, server_done, st);
}

/* GetInfo: version is fixed, kernel_release reports the cancel callbacks run so far. */
static void h_get_info(struct grpc_call *call, const ProtobufCMessage *req, void *ctx)
{
	struct tstate *st = ctx;
	char cancels[32];
	Corral__V1__GetInfoResponse resp = CORRAL__V1__GET_INFO_RESPONSE__INIT;
	snprintf(cancels, sizeof(cancels), "cancels=%d", st->cancels);
	resp.version = "corral-test";
	resp.kernel_release = cancels;
	grpc_call_send(call, &resp.base);
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* GetSandbox: echoes sandbox_id. */
static void h_echo(struct grpc_call *call, const ProtobufCMessage *req, void *ctx)
{
	const Corral__V1__GetSandboxRequest *r = (const Corral__V1__GetSandboxRequest *)req;
	Corral__V1__Sandbox sandbox = CORRAL__V1__SANDBOX__INIT;
	Corral__V1__GetSandboxResponse resp = CORRAL__V1__GET_SANDBOX_RESPONSE__INIT;
	sandbox.sandbox_id = r->sandbox_id;
	resp.sandbox = &sandbox;
	if (grpc_call_send(call, &resp.base) < 0)
		return grpc_call_finish(call, GRPC_STATUS_INTERNAL, "send failed");
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* TerminateSandbox: an error whose message needs percent-encoding. */
static void h_error(struct grpc_call *call, const ProtobufCMessage *req, void *ctx)
{
	const Corral__V1__TerminateSandboxRequest *r = (const Corral__V1__TerminateSandboxRequest *)req;
	grpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "sandbox \"%s\" is 100%% gone: café ✓\tnext line\nend",
			 r->sandbox_id);
}

/* WaitSandbox: answers timeout_ms (default 50 ms) later from a timer, holding its own reference
 * meanwhile: also after the server is closed, when send and finish must be harmless no-ops. */
struct late {
	uv_timer_t timer;
	struct grpc_call *call;
};

static void late_free(uv_handle_t *h)
{
	free(h->data);
}

static void late_fire(uv_timer_t *t)
{
	struct late *l = t->data;
	Corral__V1__WaitSandboxResponse resp = CORRAL__V1__WAIT_SANDBOX_RESPONSE__INIT;
	resp.finished = 1;
	grpc_call_send(l->call, &resp.base); /* -ECANCELED if the client went away: fine */
	grpc_call_finish(l->call, GRPC_STATUS_OK, NULL);
	grpc_call_unref(l->call);
	uv_close((uv_handle_t *)&l->timer, late_free);
}

static void h_late(struct grpc_call *call, const ProtobufCMessage *req, void *ctx)
{
	struct tstate *st = ctx;
	struct late *l = calloc(1, sizeof(*l));
	l->call = call;
	grpc_call_ref(call);
	uv_timer_init(&st->loop, &l->timer);
	l->timer.data = l;
	const Corral__V1__WaitSandboxRequest *r = (const Corral__V1__WaitSandboxRequest *)req;
	uv_timer_start(&l->timer, late_fire, r->timeout_ms > 0 ? (uint64_t)r->timeout_ms : 50, 0);
}

/* WaitExec: never finishes; counts cancellations (deadline, client cancel, server close). */
static void wait_cancelled(struct grpc_call *call, void *data)
{
	struct tstate *st = data;
	st->cancels++;
	if (grpc_call_deadline(call))
		st->deadline_cancels++;
	grpc_call_unref(call);
}

static void h_wait(struct grpc_call *call, const ProtobufCMessage *req, void *ctx)
{
	struct tstate *st = ctx;
	grpc_call_ref(call);
	grpc_call_on_cancel(call, wait_cancelled, st);
	if (st->close_in_wait)
		close_server(st); /* from inside the handler, i.e. inside nghttp2's callbacks */
}

/* ReadExecOutput (server stream): exec_id "N:S" asks for N messages of S bytes, byte k of the
 * stream being k % 251; sent with backpressure through grpc_call_on_writable. */
struct pump {
	struct tstate *st;
	unsigned n, sent;
	size_t size;
	uint8_t *buf;
};

static void pump_free(struct grpc_call *call, struct pump *p)
{
	free(p->buf);
	free(p);
	grpc_call_unref(call);
}

static void pump_cancelled(struct grpc_call *call, void *data)
{
	struct pump *p = data;
	p->st->cancels++;
	pump_free(call, p);
}

static void pump_run(struct grpc_call *call, void *data)
{
	struct pump *p = data;
	Corral__V1__ReadExecOutputResponse resp = CORRAL__V1__READ_EXEC_OUTPUT_RESPONSE__INIT;

	while (p->sent < p->n && grpc_call_pending_bytes(call) < 64 * 1024) {
		uint64_t off = (uint64_t)p->sent * p->size;
		for (size_t i = 0; i < p->size; i++)
			p->buf[i] = (uint8_t)((off + i) % 251);
		resp.offset = off;
		resp.data.data = p->buf;
		resp.data.len = p->size;
		resp.eof = p->sent + 1 == p->n;
		if (grpc_call_send(call, &resp.base) < 0)
			break;
		p->sent++;
		if (grpc_call_pending_bytes(call) > p->st->max_pending)
			p->st->max_pending = grpc_call_pending_bytes(call);
	}
	if (p->sent == p->n) {
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
		return pump_free(call, p);
	}
	grpc_call_on_writable(call, pump_run, p);
}

static void h_stream(struct grpc_call *call, const ProtobufCMessage *req, void *ctx)
{
	const Corral__V1__ReadExecOutputRequest *r = (const Corral__V1__ReadExecOutputRequest *)req;
	struct tstate *st = ctx;
	unsigned n = 0;
	size_t size = 0;
	if (sscanf(r->exec_id, "%u:%zu", &n, &size) != 2 || !n || !size || size > (1u << 20))
		return grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "exec_id must be N:S");
	struct pump *p = calloc(1, sizeof(*p));
	p->st = st;
	p->n = n;
	p->size = st->stream_msg_size = size;
	p->buf = malloc(size);
	grpc_call_ref(call);
	grpc_call_on_cancel(call, pump_cancelled, p);
	pump_run(call, p);
}

/* WriteExecStdin as a client stream: counts bytes, answers the total at half-close. */
static void h_client_stream(struct grpc_call *call, const ProtobufCMessage *req, void *ctx)
{
	const Corral__V1__WriteExecStdinRequest *r = (const Corral__V1__WriteExecStdinRequest *)req;
	struct tstate *st = ctx;
	if (!r) {
		Corral__V1__WriteExecStdinResponse resp = CORRAL__V1__WRITE_EXEC_STDIN_RESPONSE__INIT;
		resp.next_offset = st->stdin_bytes;
		grpc_call_send(call, &resp.base);
		return grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	}
	if (r->offset != st->stdin_bytes)
		return grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "gap at %llu",
					(unsigned long long)r->offset);
	st->stdin_bytes += r->data.len;
	st->stdin_msgs++;
}

static const struct grpc_method test_methods[] = {
	{"/corral.v1.SystemService/GetInfo", GRPC_METHOD_UNARY, &corral__v1__get_info_request__descriptor, h_get_info},
	{"/corral.v1.SandboxService/GetSandbox", GRPC_METHOD_UNARY, &corral__v1__get_sandbox_request__descriptor, h_echo},
	{"/corral.v1.SandboxService/TerminateSandbox", GRPC_METHOD_UNARY,
	 &corral__v1__terminate_sandbox_request__descriptor, h_error},
	{"/corral.v1.SandboxService/WaitSandbox", GRPC_METHOD_UNARY, &corral__v1__wait_sandbox_request__descriptor, h_late},
	{"/corral.v1.SandboxService/WaitExec", GRPC_METHOD_UNARY, &corral__v1__wait_exec_request__descriptor, h_wait},
	{"/corral.v1.SandboxService/ReadExecOutput", GRPC_METHOD_SERVER_STREAM,
	 &corral__v1__read_exec_output_request__descriptor, h_stream},
	{"/corral.v1.SandboxService/WriteExecStdin", GRPC_METHOD_CLIENT_STREAM,
	 &corral__v1__write_exec_stdin_request__descriptor, h_client_stream},
};

/* --- fixture ----------------------------------------------------------------------------- */

static bool setup(struct tstate *st, uint32_t max_connections, const char *token)
{
	struct err e = {0};
	memset(st, 0, sizeof(*st));
	struct grpc_server_config cfg = {
		.methods = test_methods,
		.n_methods = ARRAY_SIZE(test_methods),
		.ctx = st,
		.max_recv_message = MAX_RECV,
		.token = token,
		.max_connections = max_connections,
	};
	/* libuv writes sockets with write(2): a peer that hangs up must not kill the process. The
	 * daemon's main does the same. */
	signal(SIGPIPE, SIG_IGN);
	if (uv_loop_init(&st->loop) < 0)
		return false;
	snprintf(st->dir, sizeof(st->dir), "/tmp/corral-grpc-XXXXXX");
	if (!mkdtemp(st->dir))
		return false;
	snprintf(st->sock, sizeof(st->sock), "%s/grpc.sock", st->dir);
	snprintf(st->target, sizeof(st->target), "unix:%s", st->sock);
	snprintf(st->out_path, sizeof(st->out_path), "%s/client.out", st->dir);
	if (grpc_server_new(&st->loop, &cfg, &st->srv, &e) < 0 ||
	    grpc_server_listen_unix(st->srv, st->sock, 0660, &e) < 0) {
		fprintf(stderr, "  setup: %s\n", e.msg);
		return false;
	}
	return true;
}

static void on_client_exit(uv_process_t *proc, int64_t status, int sig)
{
	struct tstate *st = proc->data;
	st->exit_status = status;
	st->term_signal = sig;
	uv_close((uv_handle_t *)proc, NULL);
	uv_close((uv_handle_t *)&st->watchdog, NULL);
	close_server(st);
}

static void on_watchdog(uv_timer_t *t)
{
	struct tstate *st = t->data;
	fprintf(stderr, "  client timed out: killing it\n");
	uv_process_kill(&st->proc, SIGKILL);
}

/* Run a client (argv, NULL-terminated) against the server until it exits, then close the server
 * and run the loop dry. Returns the client's exit status (-1: could not run it). */
static int run_client(struct tstate *st, char **argv)
{
	int fd = open(st->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	uv_stdio_container_t stdio[3] = {
		{.flags = UV_IGNORE},
		{.flags = UV_INHERIT_FD, .data.fd = fd},
		{.flags = UV_INHERIT_FD, .data.fd = 2},
	};
	uv_process_options_t opts = {.file = argv[0], .args = argv, .exit_cb = on_client_exit,
				     .stdio = stdio, .stdio_count = 3};
	st->exit_status = -1;
	st->proc.data = st;
	int r = uv_spawn(&st->loop, &st->proc, &opts);
	close(fd);
	if (r < 0) {
		fprintf(stderr, "  spawn %s: %s\n", argv[0], uv_strerror(r));
		uv_close((uv_handle_t *)&st->proc, NULL);
		close_server(st);
	} else {
		uv_timer_init(&st->loop, &st->watchdog);
		st->watchdog.data = st;
		uv_timer_start(&st->watchdog, on_watchdog, CLIENT_TIMEOUT_MS, 0);
	}
	uv_run(&st->loop, UV_RUN_DEFAULT);

	FILE *f = fopen(st->out_path, "re");
	size_t n = f ? fread(st->out, 1, sizeof(st->out) - 1, f) : 0;
	st->out[n] = '\0';
	if (f)
		fclose(f);
	/* Show what the client checked, indented under the test's line. */
	for (char *line = st->out, *nl; *line; line = nl + 1) {
		nl = strchrnul(line, '\n');
		fprintf(stderr, "    %.*s\n", (int)(nl - line), line);
		if (!*nl)
			break;
	}
	return r < 0 ? -1 : (int)st->exit_status;
}

static int run_python(struct tstate *st, const char *target, const char *scenario, const char *arg)
{
	char script[512];
	snprintf(script, sizeof(script), "%s", __FILE__);
	char *slash = strrchr(script, '/');
	snprintf(slash ? slash + 1 : script, sizeof(script) - (size_t)(slash ? slash + 1 - script : 0),
		 "grpc_client.py");
	char *argv[] = {PYTHON, script, (char *)target, (char *)scenario, (char *)arg, NULL};
	return run_client(st, argv);
}

/* The server closed, done ran, and no handle of it is left on the loop. Then clean the dir. */
static bool teardown(struct tstate *st)
{
	close_server(st);
	uv_run(&st->loop, UV_RUN_DEFAULT);
	bool ok = st->server_done && uv_loop_close(&st->loop) == 0;
	if (!ok)
		fprintf(stderr, "  teardown: server_done=%d, handles left on the loop\n", st->server_done);
	unlink(st->out_path);
	unlink(st->sock);
	rmdir(st->dir);
	return ok;
}

static bool have_grpcio(void)
{
	return access(PYTHON, X_OK) == 0 && access(GRPCIO_MARK, R_OK) == 0;
}

#define NEED_GRPCIO()                                                       \
	do {                                                                \
		if (!have_grpcio())                                         \
			SKIP("needs Python grpcio (" PYTHON ", python3-grpcio)"); \
	} while (0)

/* --- tests ------------------------------------------------------------------------------- */

static void test_unary(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "unary", ""), 0);
	CHECK(teardown(&st));
}

static void test_server_stream_10mib(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "stream", "160:65536"), 0);
	/* Backpressure: the handler never queued past the mark by more than one message. */
	CHECK_MSG(st.max_pending <= 64 * 1024 + st.stream_msg_size + 16, "max pending %zu", st.max_pending);
	CHECK(teardown(&st));
}

static void test_server_stream_small_messages(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "stream", "20000:10"), 0);
	CHECK(teardown(&st));
}

static void test_client_stream(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "client_stream", ""), 0);
	CHECK_EQ_INT(st.stdin_msgs, 6);
	CHECK_EQ_INT(st.stdin_bytes, 371006);
	CHECK(teardown(&st));
}

static void test_errors(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "errors", ""), 0);
	CHECK(teardown(&st));
}

static void test_deadline(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "deadline", ""), 0);
	CHECK_EQ_INT(st.cancels, 1);
	CHECK_EQ_INT(st.deadline_cancels, 1);
	CHECK(teardown(&st));
}

static void test_client_cancel(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "cancel", ""), 0);
	CHECK_EQ_INT(st.cancels, 1);
	CHECK_EQ_INT(st.deadline_cancels, 0);
	CHECK(teardown(&st));
}

static void test_server_close_cancels_calls(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	st.close_in_wait = true;
	CHECK_EQ_INT(run_python(&st, st.target, "close", ""), 0);
	CHECK_EQ_INT(st.cancels, 1);
	CHECK(st.server_done);
	CHECK(access(st.sock, F_OK) < 0); /* the listener removed its socket */
	CHECK(teardown(&st));
}

static void test_client_cancel_mid_stream(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "stream_cancel", ""), 0);
	CHECK_EQ_INT(st.cancels, 1);
	CHECK(teardown(&st));
}

static uint16_t free_tcp_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint16_t port = 0;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void test_tcp_token(void)
{
	struct tstate st;
	struct err e = {0};
	char target[64];
	NEED_GRPCIO();

	CHECK(setup(&st, 0, NULL));
	/* Without a token in the config, TCP is refused. */
	CHECK_EQ_INT(grpc_server_listen_tcp(st.srv, "127.0.0.1", 1, &e), -EINVAL);
	CHECK(teardown(&st));

	CHECK(setup(&st, 0, TOKEN));
	uint16_t port = free_tcp_port();
	CHECK(port);
	CHECK_MSG(grpc_server_listen_tcp(st.srv, "127.0.0.1", port, &e) == 0, "%s", e.msg);
	snprintf(target, sizeof(target), "127.0.0.1:%u", port);
	CHECK_EQ_INT(run_python(&st, target, "tcp", TOKEN), 0);
	CHECK(teardown(&st));
}

static void test_hostile_input(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "garbage", ""), 0);
	CHECK(teardown(&st));
}

static void test_max_connections(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 2, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "maxconn", ""), 0);
	CHECK(teardown(&st));
}

static void test_listen_errors(void)
{
	struct tstate st;
	struct err e = {0};
	char path[256];
	CHECK(setup(&st, 0, NULL));
	/* A non-socket file in the way is not replaced. */
	snprintf(path, sizeof(path), "%s/file", st.dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	close(fd);
	CHECK_EQ_INT(grpc_server_listen_unix(st.srv, path, 0600, &e), -EEXIST);
	unlink(path);
	/* A stale socket is replaced; the mode is applied. */
	struct stat sb;
	snprintf(path, sizeof(path), "%s/again.sock", st.dir);
	CHECK_MSG(grpc_server_listen_unix(st.srv, path, 0600, &e) == 0, "%s", e.msg);
	CHECK(stat(st.sock, &sb) == 0 && (sb.st_mode & 07777) == 0660);
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 07777) == 0600);
	CHECK_EQ_INT(grpc_server_connection_count(st.srv), 0);
	CHECK(teardown(&st));
	CHECK(access(path, F_OK) < 0);
}

/* An unmodified @grpc/grpc-js client: unary, server stream, an error status. */
static const char node_script[] =
	"const grpc = require(process.argv[1]);\n"
	"const c = new grpc.Client(process.argv[2], grpc.credentials.createInsecure());\n"
	"const id = (b) => b;\n"
	"const S = '/corral.v1.SandboxService/';\n"
	"const fail = (m) => { console.log('FAIL ' + m); process.exit(1); };\n"
	"const str = (n, s) => Buffer.concat([Buffer.from([n << 3 | 2, s.length]), Buffer.from(s)]);\n"
	"c.makeUnaryRequest(S + 'GetSandbox', id, id, str(1, 'abc'), (err, resp) => {\n"
	"  if (err) fail('unary: ' + err.details);\n"
	"  if (!resp.equals(Buffer.concat([Buffer.from([10, 5]), str(1, 'abc')]))) fail('unary body ' + resp.toString('hex'));\n"
	"  console.log('ok   grpc-js unary');\n"
	"  let n = 0;\n"
	"  const s = c.makeServerStreamRequest(S + 'ReadExecOutput', id, id, str(2, '300:1000'));\n"
	"  s.on('data', () => n++);\n"
	"  s.on('error', (e) => fail('stream: ' + e.details));\n"
	"  s.on('status', (st) => {\n"
	"    if (st.code !== 0 || n !== 300) fail('stream status ' + st.code + ' after ' + n);\n"
	"    console.log('ok   grpc-js server stream');\n"
	"    c.makeUnaryRequest(S + 'TerminateSandbox', id, id, str(1, 'x'), (e2) => {\n"
	"      if (!e2 || e2.code !== 5 || !e2.details.includes('100% gone: caf\\u00e9 \\u2713')) fail('error ' + (e2 && e2.details));\n"
	"      console.log('ok   grpc-js error status');\n"
	"      c.close();\n"
	"    });\n"
	"  });\n"
	"});\n";

static void test_grpc_js(void)
{
	struct tstate st;
	char module[512];
	if (access(NODE, X_OK) < 0 || !realpath(GRPC_JS, module))
		SKIP("needs " NODE " and " GRPC_JS " (run from the repository root after make deps)");
	CHECK(setup(&st, 0, NULL));
	char *argv[] = {NODE, "-e", (char *)node_script, module, st.target, NULL};
	CHECK_EQ_INT(run_client(&st, argv), 0);
	CHECK(teardown(&st));
}

/* Plain HTTP/2 requests that gRPC clients never send, from node's built-in http2 module. */
static const char http2_script[] =
	"const http2 = require('http2'), net = require('net');\n"
	"const c = http2.connect('http://localhost', { createConnection: () => net.connect(process.argv[1]) });\n"
	"let failed = 0;\n"
	"const check = (name, ok, d) => { console.log((ok ? 'ok   ' : 'FAIL ') + name + (d ? ': ' + d : '')); if (!ok) failed++; };\n"
	"function req(headers, parts) {\n"
	"  return new Promise((resolve) => {\n"
	"    const r = c.request(Object.assign({ ':path': '/corral.v1.SandboxService/GetSandbox', ':method': 'POST',\n"
	"                                        'content-type': 'application/grpc', te: 'trailers' }, headers));\n"
	"    const out = { headers: {}, trailers: {}, body: Buffer.alloc(0) };\n"
	"    r.on('response', (h) => { out.headers = h; });\n"
	"    r.on('trailers', (t) => { out.trailers = t; });\n"
	"    r.on('data', (d) => { out.body = Buffer.concat([out.body, d]); });\n"
	"    r.on('error', (e) => { out.error = e.code; });\n"
	"    r.on('close', () => { out.rst = r.rstCode; resolve(out); });\n"
	"    let i = 0;\n"
	"    const next = () => { if (i < parts.length - 1) { r.write(parts[i++]); setTimeout(next, 20); } else r.end(parts[i]); };\n"
	"    next();\n"
	"  });\n"
	"}\n"
	"const msg = Buffer.from([0, 0, 0, 0, 5, 10, 3, 97, 98, 99]);\n"
	"(async () => {\n"
	"  let r = await req({ 'content-type': 'text/plain' }, [msg]);\n"
	"  check('other content-type gets HTTP 415', r.headers[':status'] === 415, JSON.stringify(r.headers));\n"
	"  r = await req({ ':method': 'PUT' }, [msg]);\n"
	"  check('PUT gets HTTP 405', r.headers[':status'] === 405);\n"
	"  r = await req({ 'content-type': 'application/grpc+proto' }, [msg.subarray(0, 2), msg.subarray(2, 7), msg.subarray(7)]);\n"
	"  check('application/grpc+proto, prefix split over DATA frames', r.headers[':status'] === 200 &&\n"
	"        r.headers['content-type'] === 'application/grpc' && r.headers['grpc-accept-encoding'] === 'identity' &&\n"
	"        r.trailers['grpc-status'] === '0' && r.body.subarray(5).equals(Buffer.from([10, 5, 10, 3, 97, 98, 99])),\n"
	"        JSON.stringify([r.headers, r.trailers, r.body.toString('hex')]));\n"
	"  r = await req({ 'x-big': 'a'.repeat(20000) }, [msg]);\n"
	"  check('20 kB of headers refused', r.headers[':status'] === undefined, JSON.stringify(r));\n"
	"  r = await req({ 'grpc-timeout': '100m', ':path': '/corral.v1.SandboxService/WaitExec' }, [Buffer.from([0, 0, 0, 0, 0])]);\n"
	"  check('grpc-timeout 100m', r.headers['grpc-status'] === '4', JSON.stringify(r.headers));\n"
	"  r = await req({}, [msg.subarray(0, 7)]);\n"
	"  check('truncated message', r.headers['grpc-status'] === '3', JSON.stringify(r.headers));\n"
	"  r = await req({}, [Buffer.from([1, 0, 0, 0, 1, 0])]);\n"
	"  check('compressed flag', r.headers['grpc-status'] === '12', JSON.stringify(r.headers));\n"
	"  r = await req({}, [msg]);\n"
	"  check('connection still usable', r.trailers['grpc-status'] === '0');\n"
	"  c.close();\n"
	"  process.exitCode = failed ? 1 : 0;\n"
	"})();\n";

static void test_http2_edge_cases(void)
{
	struct tstate st;
	if (access(NODE, X_OK) < 0)
		SKIP("needs " NODE);
	CHECK(setup(&st, 0, NULL));
	char *argv[] = {NODE, "-e", (char *)http2_script, st.sock, NULL};
	CHECK_EQ_INT(run_client(&st, argv), 0);
	CHECK_EQ_INT(st.cancels, 1); /* the grpc-timeout call */
	CHECK(teardown(&st));
}

static void test_slow_reader(void)
{
	struct tstate st;
	NEED_GRPCIO();
	CHECK(setup(&st, 0, NULL));
	CHECK_EQ_INT(run_python(&st, st.target, "slow", "300:65536"), 0);
	CHECK_MSG(st.max_pending <= 64 * 1024 + st.stream_msg_size + 16, "max pending %zu", st.max_pending);
	CHECK(teardown(&st));
}

TEST_MAIN(T(test_listen_errors), T(test_unary), T(test_server_stream_10mib), T(test_server_stream_small_messages),
	  T(test_client_stream), T(test_errors), T(test_deadline), T(test_client_cancel), T(test_client_cancel_mid_stream),
	  T(test_server_close_cancels_calls), T(test_tcp_token), T(test_hostile_input), T(test_max_connections),
	  T(test_grpc_js), T(test_http2_edge_cases), T(test_slow_reader))
