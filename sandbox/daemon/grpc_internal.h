/* Private to daemon/grpc*.c: what the connection code (grpc.c) and the call code (grpc_call.c)
 * share. Other modules use grpc.h. */
#pragma once
#include <nghttp2/nghttp2.h>
#include <stddef.h>

#include "grpc.h"

#define GRPC_DEFAULT_MAX_RECV (4u << 20)
#define GRPC_DEFAULT_MAX_SEND (16u << 20)
#define GRPC_DEFAULT_MAX_CONNECTIONS 1024
#define GRPC_DEFAULT_MAX_STREAMS 1000
#define GRPC_WRITABLE_MARK (64u << 10)   /* grpc_call_on_writable threshold (API contract) */
#define GRPC_WRITE_CHUNK (256u << 10)    /* most bytes gathered into one uv_write */
#define GRPC_WRITE_HIGH (1u << 20)       /* socket backlog above which we stop producing and reading */
#define GRPC_MAX_HEADER_LIST 16384       /* advertised and enforced, per request */
#define GRPC_MAX_HEADER_BLOCK (64u << 10) /* HEADERS + CONTINUATION bytes in one block */
#define GRPC_MAX_CONTINUATIONS 64        /* CONTINUATION frames in one block (CONTINUATION flood) */
#define GRPC_HANDSHAKE_MS 10000          /* a client must send its preface and SETTINGS by then */
#define GRPC_STREAM_WINDOW (1 << 20)
#define GRPC_CONN_WINDOW (8 << 20)
#define GRPC_STATUS_MSG_MAX 1024
#define GRPC_READ_BUF (64u << 10)
#define GRPC_FRAME_HDR 5 /* gRPC message prefix: 1 flag byte + 4-byte big-endian length */

#ifndef container_of
#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))
#endif
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

/* A circular doubly linked list with a sentinel head; a detached node points at itself. */
struct grpc_link {
	struct grpc_link *prev, *next;
};

static inline void grpc_link_init(struct grpc_link *l) { l->prev = l->next = l; }
static inline bool grpc_link_empty(const struct grpc_link *l) { return l->next == l; }
static inline void grpc_link_add_tail(struct grpc_link *head, struct grpc_link *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}
static inline void grpc_link_del(struct grpc_link *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	grpc_link_init(n);
}

/* One framed response message waiting to be pulled by nghttp2. */
struct grpc_out {
	struct grpc_out *next;
	size_t len, off;
	uint8_t data[];
};

/* One uv_write of gathered nghttp2 output. */
struct grpc_write {
	uv_write_t req;
	struct grpc_conn *conn;
	uint8_t data[];
};

union grpc_stream_handle {
	uv_handle_t handle;
	uv_stream_t stream;
	uv_tcp_t tcp;
	uv_pipe_t pipe;
};

struct grpc_listener {
	union grpc_stream_handle h;
	struct grpc_server *srv;
	struct grpc_link link; /* srv->listeners */
	bool tcp;
	char *unix_path; /* set once bound: unlinked when the listener closes */
};

struct grpc_conn {
	union grpc_stream_handle h;
	uv_timer_t handshake;
	struct grpc_server *srv;
	struct grpc_link link;       /* srv->conns, until freed */
	struct grpc_link flush_link; /* srv->flush_list while flush_queued */
	nghttp2_session *session;
	struct grpc_link calls;
	uint32_t n_calls;
	unsigned open_handles;    /* of h and handshake: the conn is freed when both are closed */
	unsigned writes_inflight;
	unsigned in_nghttp2;      /* depth of mem_recv/mem_send on the stack: no GOAWAY from inside */
	uint32_t hblock_bytes, hblock_frames;
	bool tcp, closing, flush_queued, read_paused, writable_due, handshake_inited, handshake_done;
};

enum grpc_timer_state { TIMER_NONE, TIMER_ACTIVE, TIMER_CLOSING, TIMER_CLOSED };

struct grpc_call {
	unsigned refs;
	struct grpc_conn *conn;   /* NULL once detached from its stream */
	struct grpc_server *srv;  /* only for the deadline timer's close callback */
	struct grpc_link link;         /* conn->calls */
	int32_t stream_id;
	const struct grpc_method *method;
	char *path;

	/* Request side. */
	size_t max_recv;
	uint32_t hdr_bytes;
	uint64_t timeout_ms;
	uint8_t rx_hdr[GRPC_FRAME_HDR];
	uint8_t rx_hdr_len;
	bool rx_in_msg;
	size_t rx_want, rx_len, rx_cap;
	uint8_t *rx_buf;
	unsigned n_msgs;
	bool post, ct_ok, authed, has_timeout, remote_closed;

	/* Response side. */
	size_t max_send;
	struct grpc_out *out_head, *out_tail;
	size_t pending;
	bool headers_sent, done, finished;
	enum grpc_status_code status;
	char *status_msg; /* percent-encoded; NULL when empty */

	uint64_t deadline;
	uv_timer_t timer;
	enum grpc_timer_state timer_state;
	void (*cancel_cb)(struct grpc_call *call, void *data);
	void *cancel_data;
	void (*writable_cb)(struct grpc_call *call, void *data);
	void *writable_data;
	void *user_data; /* grpc_call_set_data */
	const uint8_t *req_raw; /* the message being handled, undecoded (grpc_call_request_bytes) */
	size_t req_raw_len;
};

struct grpc_server {
	uv_loop_t *loop;
	const struct grpc_method *methods;
	size_t n_methods;
	void *ctx;
	size_t max_recv, max_send;
	char *token;
	size_t token_len;
	uint32_t max_connections, max_streams;
	nghttp2_session_callbacks *callbacks;
	nghttp2_option *option;
	struct grpc_link listeners, conns, flush_list;
	uint32_t n_conns;
	uv_idle_t flusher;
	unsigned open_handles;
	bool closing;
	void (*done)(void *data);
	void *done_data;
	uint8_t rbuf[GRPC_READ_BUF]; /* shared: libuv reads one stream at a time, consumed at once */
};

/* Every nghttp2 callback returns this: once the connection is closing (a handler may have closed
 * the server), nghttp2 must stop at once; mem_recv/mem_send then fail and the caller gives up. */
static inline int grpc_conn_cb_result(const struct grpc_conn *conn)
{
	return conn->closing ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

/* grpc.c */
/* Queue the connection for the next flush: its output goes out in one write per loop turn. */
void grpc_conn_schedule_flush(struct grpc_conn *conn);
/* One of the server's uv handles finished closing; the last one after grpc_server_close frees it. */
void grpc_server_handle_closed(struct grpc_server *srv);

/* grpc_call.c */
/* Register the nghttp2 callbacks that turn HTTP/2 streams into calls. */
void grpc_call_set_callbacks(nghttp2_session_callbacks *cbs);
/* Cut a call from its stream (closed, or its connection is going): cancel it if unfinished and
 * drop the stream's reference. */
void grpc_call_detach(struct grpc_call *call);
