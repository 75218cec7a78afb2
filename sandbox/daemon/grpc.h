/* A gRPC server over HTTP/2 (nghttp2) on libuv, with protobuf-c messages. Methods are dispatched
 * from a table. Unix-socket listeners trust the socket's file mode; TCP listeners require
 * "authorization: Bearer <token>" on every call. */
#pragma once
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "util/err.h"

enum grpc_status_code {
	GRPC_STATUS_OK = 0,
	GRPC_STATUS_CANCELLED = 1,
	GRPC_STATUS_UNKNOWN = 2,
	GRPC_STATUS_INVALID_ARGUMENT = 3,
	GRPC_STATUS_DEADLINE_EXCEEDED = 4,
	GRPC_STATUS_NOT_FOUND = 5,
	GRPC_STATUS_ALREADY_EXISTS = 6,
	GRPC_STATUS_PERMISSION_DENIED = 7,
	GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
	GRPC_STATUS_FAILED_PRECONDITION = 9,
	GRPC_STATUS_ABORTED = 10,
	GRPC_STATUS_OUT_OF_RANGE = 11,
	GRPC_STATUS_UNIMPLEMENTED = 12,
	GRPC_STATUS_INTERNAL = 13,
	GRPC_STATUS_UNAVAILABLE = 14,
	GRPC_STATUS_DATA_LOSS = 15,
	GRPC_STATUS_UNAUTHENTICATED = 16,
};

enum grpc_method_kind { GRPC_METHOD_UNARY, GRPC_METHOD_SERVER_STREAM, GRPC_METHOD_CLIENT_STREAM };

struct grpc_call;
struct grpc_server;

struct grpc_method {
	const char *path; /* e.g. "/corral.v1.SandboxService/CreateSandbox" */
	enum grpc_method_kind kind;
	const ProtobufCMessageDescriptor *request;
	/* UNARY and SERVER_STREAM: called once with the decoded request. CLIENT_STREAM: called for each
	 * request message, then once with req == NULL when the client half-closes. `req` is owned by
	 * the server and valid only during the call of the handler: copy what must outlive it.
	 * The handler answers now or later with grpc_call_send / grpc_call_finish. */
	void (*handler)(struct grpc_call *call, const ProtobufCMessage *req, void *ctx);
};

struct grpc_server_config {
	const struct grpc_method *methods;
	size_t n_methods;
	void *ctx;                   /* passed to every handler */
	size_t max_recv_message;     /* larger requests get RESOURCE_EXHAUSTED; 0: 4 MiB */
	size_t max_send_message;     /* 0: 16 MiB */
	const char *token;           /* bearer token required on TCP listeners; copied */
	uint32_t max_connections;    /* 0: 1024 */
	uint32_t max_streams_per_connection; /* 0: 1000 */
};

int grpc_server_new(uv_loop_t *loop, const struct grpc_server_config *cfg, struct grpc_server **ret, struct err *e);
/* Listen on a unix socket path (an existing socket file there is replaced), chmod to mode. */
int grpc_server_listen_unix(struct grpc_server *srv, const char *path, mode_t mode, struct err *e);
/* Listen on TCP host:port; refused (-EINVAL) if the config has no token. */
int grpc_server_listen_tcp(struct grpc_server *srv, const char *host, uint16_t port, struct err *e);
/* Stop listening, cancel every call (cancel callbacks run), close connections, then call done. */
void grpc_server_close(struct grpc_server *srv, void (*done)(void *data), void *data);

/* Calls are reference counted. The server holds one reference until the call is finished or
 * cancelled; take your own to use the call after that point (e.g. from a timer). */
void grpc_call_ref(struct grpc_call *call);
void grpc_call_unref(struct grpc_call *call);
/* Queue one response message (unary: exactly one before finishing OK). Returns 0, -ECANCELED
 * when the call is already finished or cancelled, -EMSGSIZE over max_send_message. */
int grpc_call_send(struct grpc_call *call, const ProtobufCMessage *msg);
/* Bytes of response messages queued for this call and not yet handed to the socket. */
size_t grpc_call_pending_bytes(const struct grpc_call *call);
/* Call cb once, when this call's queue falls below 64 KiB (at once if it already is). */
void grpc_call_on_writable(struct grpc_call *call, void (*cb)(struct grpc_call *call, void *data), void *data);
/* End the call with a status and an optional message (printf format; percent-encoded on the
 * wire). Finishing twice, or after cancellation, does nothing. */
void grpc_call_finish(struct grpc_call *call, enum grpc_status_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* cb runs once if the call dies before grpc_call_finish: client cancel (RST_STREAM), connection
 * loss, deadline (grpc-timeout; the server then answers DEADLINE_EXCEEDED itself), server close. */
void grpc_call_on_cancel(struct grpc_call *call, void (*cb)(struct grpc_call *call, void *data), void *data);
bool grpc_call_is_done(const struct grpc_call *call);
/* One pointer of the handler's own per-call state (e.g. across the messages of a client stream);
 * NULL until set. The server never looks at it: free what it points to from your cancel callback
 * or when you finish the call. */
void grpc_call_set_data(struct grpc_call *call, void *data);
void *grpc_call_get_data(const struct grpc_call *call);
/* The undecoded bytes of the request message the handler was called with (protobuf-c cuts a
 * string at its first NUL; checks that must see the wire form use this). Valid only inside the
 * handler and before it finishes the call; NULL elsewhere. */
const uint8_t *grpc_call_request_bytes(const struct grpc_call *call, size_t *ret_len);
/* Absolute deadline on uv_now()'s clock in ms; 0 when the client sent no grpc-timeout. */
uint64_t grpc_call_deadline(const struct grpc_call *call);
const char *grpc_call_method(const struct grpc_call *call);
/* Transport counters for GetInfo and tests. */
uint32_t grpc_server_connection_count(const struct grpc_server *srv);
