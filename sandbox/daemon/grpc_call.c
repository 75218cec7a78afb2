/* gRPC calls on HTTP/2 streams: request headers and body in (nghttp2 callbacks), response
 * messages and status out (a data source that nghttp2 pulls, trailers, trailers-only answers),
 * deadlines, cancellation and the reference count. Connections and I/O are in grpc.c.
 *
 * A call holds one reference for its stream. grpc_call_detach (stream closed, connection lost,
 * server closed) cancels it if unfinished and drops that reference. A detached call touches
 * neither connection nor server, so handlers may hold it past grpc_server_close. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "grpc_internal.h"
#include "util/cleanup.h"

/* --- small helpers ---------------------------------------------------------------------- */

/* Per the gRPC spec: bytes outside 0x20-0x7E, and '%' itself, become %XX. */
static char *percent_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 1;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += (*p < 0x20 || *p > 0x7e || *p == '%') ? 3 : 1;
	char *out = malloc(n), *o = out;
	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p > 0x7e || *p == '%') {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		} else {
			*o++ = (char)*p;
		}
	}
	*o = '\0';
	return out;
}

/* grpc-timeout: 1-8 ASCII digits and a unit (Hours, Minutes, Seconds, milli, micro, nano). */
static bool parse_timeout(const char *v, size_t len, uint64_t *ret_ms)
{
	uint64_t n = 0;
	if (len < 2 || len > 9)
		return false;
	for (size_t i = 0; i + 1 < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	switch (v[len - 1]) {
	case 'H': n *= 3600000; break;
	case 'M': n *= 60000; break;
	case 'S': n *= 1000; break;
	case 'm': break;
	case 'u': n = (n + 999) / 1000; break;
	case 'n': n = (n + 999999) / 1000000; break;
	default: return false;
	}
	*ret_ms = n;
	return true;
}

/* "application/grpc", optionally followed by "+codec" or parameters. */
static bool grpc_content_type(const char *v, size_t len)
{
	static const char ct[] = "application/grpc";
	size_t n = sizeof(ct) - 1;
	return len >= n && strncasecmp(v, ct, n) == 0 && (len == n || v[n] == '+' || v[n] == ';');
}

/* "Bearer <token>", compared without a data-dependent early exit (the length may leak). */
static bool grpc_token_ok(const struct grpc_server *srv, const char *v, size_t len)
{
	static const char bearer[] = "Bearer ";
	size_t n = sizeof(bearer) - 1;
	if (!srv->token || len < n || strncasecmp(v, bearer, n) != 0)
		return false;
	v += n;
	len -= n;
	volatile unsigned char diff = len != srv->token_len;
	for (size_t i = 0; i < srv->token_len; i++)
		diff |= (unsigned char)srv->token[i] ^ (unsigned char)(i < len ? v[i] : 0);
	return diff == 0;
}

/* --- calls: lifetime --------------------------------------------------------------------- */

static void call_drop_output(struct grpc_call *call, bool keep_started)
{
	struct grpc_out **pp = &call->out_head;
	/* A message nghttp2 has begun to copy must be completed, or the client sees a torn frame. */
	if (keep_started && *pp && (*pp)->off > 0)
		pp = &(*pp)->next;
	while (*pp) {
		struct grpc_out *o = *pp;
		*pp = o->next;
		call->pending -= o->len - o->off;
		free(o);
	}
	call->out_tail = NULL;
	for (struct grpc_out *o = call->out_head; o; o = o->next)
		call->out_tail = o;
}

static void call_free(struct grpc_call *call)
{
	call_drop_output(call, false);
	free(call->rx_buf);
	free(call->path);
	free(call->status_msg);
	free(call);
}

void grpc_call_ref(struct grpc_call *call)
{
	call->refs++;
}

void grpc_call_unref(struct grpc_call *call)
{
	if (!call || --call->refs > 0)
		return;
	/* The deadline timer is closed when the call ends; its close callback frees the call if the
	 * last reference went first. */
	if (call->timer_state == TIMER_CLOSING)
		return;
	call_free(call);
}

static void call_timer_closed(uv_handle_t *h)
{
	struct grpc_call *call = h->data;
	struct grpc_server *srv = call->srv;
	call->timer_state = TIMER_CLOSED;
	call->srv = NULL;
	if (call->refs == 0)
		call_free(call);
	grpc_server_handle_closed(srv);
}

static void call_stop_timer(struct grpc_call *call)
{
	if (call->timer_state != TIMER_ACTIVE)
		return;
	call->timer_state = TIMER_CLOSING;
	uv_close((uv_handle_t *)&call->timer, call_timer_closed);
}

/* The call dies unfinished: no more sends, and the handler's cancel callback runs once. */
static void call_cancel(struct grpc_call *call)
{
	void (*cb)(struct grpc_call *, void *) = call->cancel_cb;
	call->done = true;
	call->cancel_cb = NULL;
	call->writable_cb = NULL;
	call_stop_timer(call);
	if (cb) {
		grpc_call_ref(call);
		cb(call, call->cancel_data);
		grpc_call_unref(call);
	}
}

void grpc_call_detach(struct grpc_call *call)
{
	struct grpc_conn *conn = call->conn;
	if (!conn)
		return;
	grpc_link_del(&call->link);
	conn->n_calls--;
	nghttp2_session_set_stream_user_data(conn->session, call->stream_id, NULL);
	call->conn = NULL;
	call_drop_output(call, false);
	if (!call->done)
		call_cancel(call);
	grpc_call_unref(call);
}

/* --- calls: responses -------------------------------------------------------------------- */

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

/* The grpc-status / grpc-message pair; code_buf must hold 12 bytes. Returns the count. */
static size_t call_status_nva(const struct grpc_call *call, nghttp2_nv *nva, char *code_buf)
{
	snprintf(code_buf, 12, "%d", (int)call->status);
	nva[0] = (nghttp2_nv)NV("grpc-status", code_buf);
	if (!call->status_msg)
		return 1;
	nva[1] = (nghttp2_nv)NV("grpc-message", call->status_msg);
	return 2;
}

static ssize_t call_data_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
			      uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
	struct grpc_call *call = source->ptr;
	struct grpc_conn *conn = user_data;
	size_t n = 0;

	while (n < length && call->out_head) {
		struct grpc_out *o = call->out_head;
		size_t k = MIN(length - n, o->len - o->off);
		memcpy(buf + n, o->data + o->off, k);
		o->off += k;
		n += k;
		if (o->off == o->len) {
			call->out_head = o->next;
			if (!call->out_head)
				call->out_tail = NULL;
			free(o);
		}
	}
	call->pending -= n;
	if (call->writable_cb && call->pending < GRPC_WRITABLE_MARK)
		conn->writable_due = true; /* fired after mem_send, never from inside nghttp2 */

	if (!call->out_head && call->finished) {
		nghttp2_nv nva[2];
		char code[12];
		size_t nv = call_status_nva(call, nva, code);
		*flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(session, stream_id, nva, nv) != 0)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		return (ssize_t)n;
	}
	return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
}

static int call_submit_headers(struct grpc_call *call)
{
	nghttp2_nv nva[] = {
		NV(":status", "200"),
		NV("content-type", "application/grpc"),
		NV("grpc-accept-encoding", "identity"),
	};
	nghttp2_data_provider prd = {.source.ptr = call, .read_callback = call_data_read};
	call->headers_sent = true;
	return nghttp2_submit_response(call->conn->session, call->stream_id, nva, ARRAY_SIZE(nva), &prd);
}

/* Send the final status: trailers after any queued messages, or a trailers-only response. With
 * discard, queued messages not yet started are dropped (the deadline passed: nobody waits). */
static void call_submit_status(struct grpc_call *call, int http_status, enum grpc_status_code code,
			       const char *msg, bool discard)
{
	struct grpc_conn *conn = call->conn;
	call->finished = true;
	call->status = code;
	free(call->status_msg);
	call->status_msg = msg && *msg ? percent_encode(msg) : NULL;
	/* The request body is of no further use. */
	free(call->rx_buf);
	call->rx_buf = NULL;
	call->rx_cap = call->rx_len = 0;

	if (call->headers_sent) {
		if (discard)
			call_drop_output(call, true);
		nghttp2_session_resume_data(conn->session, call->stream_id);
	} else {
		char status[8], code_buf[12];
		nghttp2_nv nva[5] = {
			NV(":status", status),
			NV("content-type", "application/grpc"),
			NV("grpc-accept-encoding", "identity"),
		};
		snprintf(status, sizeof(status), "%d", http_status);
		nva[0].valuelen = strlen(status);
		size_t n = 3 + call_status_nva(call, nva + 3, code_buf);
		call->headers_sent = true;
		/* No data provider: one HEADERS frame with END_STREAM ("trailers-only"). */
		if (nghttp2_submit_response(conn->session, call->stream_id, nva, n, NULL) != 0)
			nghttp2_submit_rst_stream(conn->session, NGHTTP2_FLAG_NONE, call->stream_id,
						  NGHTTP2_INTERNAL_ERROR);
	}
	grpc_conn_schedule_flush(conn);
}

static void call_vfinish(struct grpc_call *call, int http_status, enum grpc_status_code code, const char *fmt,
			 va_list ap)
{
	char msg[GRPC_STATUS_MSG_MAX] = "";
	if (call->done || !call->conn)
		return;
	call->done = true;
	call->cancel_cb = NULL;
	call->writable_cb = NULL;
	call_stop_timer(call);
	if (fmt)
		vsnprintf(msg, sizeof(msg), fmt, ap);
	call_submit_status(call, http_status, code, msg, false);
}

void grpc_call_finish(struct grpc_call *call, enum grpc_status_code code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	call_vfinish(call, 200, code, fmt, ap);
	va_end(ap);
}

/* Server-side refusal before or during the request (bad headers, bad body). */
static void __attribute__((format(printf, 4, 5)))
call_fail(struct grpc_call *call, int http_status, enum grpc_status_code code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	call_vfinish(call, http_status, code, fmt, ap);
	va_end(ap);
}

int grpc_call_send(struct grpc_call *call, const ProtobufCMessage *msg)
{
	if (call->done || !call->conn)
		return -ECANCELED;
	size_t size = protobuf_c_message_get_packed_size(msg);
	if (size > call->max_send || size > UINT32_MAX)
		return -EMSGSIZE;
	struct grpc_out *o = malloc(sizeof(*o) + GRPC_FRAME_HDR + size);
	if (!o)
		return -ENOMEM;
	o->next = NULL;
	o->off = 0;
	o->len = GRPC_FRAME_HDR + size;
	o->data[0] = 0; /* not compressed */
	o->data[1] = (uint8_t)(size >> 24);
	o->data[2] = (uint8_t)(size >> 16);
	o->data[3] = (uint8_t)(size >> 8);
	o->data[4] = (uint8_t)size;
	protobuf_c_message_pack(msg, o->data + GRPC_FRAME_HDR);

	if (!call->headers_sent && call_submit_headers(call) != 0) {
		call->headers_sent = false;
		free(o);
		return -ENOMEM;
	}
	if (call->out_tail)
		call->out_tail->next = o;
	else
		call->out_head = o;
	call->out_tail = o;
	call->pending += o->len;
	nghttp2_session_resume_data(call->conn->session, call->stream_id); /* harmless if not deferred */
	grpc_conn_schedule_flush(call->conn);
	return 0;
}

size_t grpc_call_pending_bytes(const struct grpc_call *call)
{
	return call->pending;
}

void grpc_call_on_writable(struct grpc_call *call, void (*cb)(struct grpc_call *call, void *data), void *data)
{
	if (call->done || !call->conn)
		return;
	call->writable_cb = cb;
	call->writable_data = data;
	/* "At once" means on the next flush, not re-entrantly: a handler that sends from its
	 * writable callback would otherwise recurse once per message. */
	if (call->pending < GRPC_WRITABLE_MARK) {
		call->conn->writable_due = true;
		grpc_conn_schedule_flush(call->conn);
	}
}

void grpc_call_on_cancel(struct grpc_call *call, void (*cb)(struct grpc_call *call, void *data), void *data)
{
	if (call->done)
		return;
	call->cancel_cb = cb;
	call->cancel_data = data;
}

bool grpc_call_is_done(const struct grpc_call *call)
{
	return call->done;
}

void grpc_call_set_data(struct grpc_call *call, void *data)
{
	call->user_data = data;
}

void *grpc_call_get_data(const struct grpc_call *call)
{
	return call->user_data;
}

const uint8_t *grpc_call_request_bytes(const struct grpc_call *call, size_t *ret_len)
{
	*ret_len = call->req_raw ? call->req_raw_len : 0;
	return call->req_raw;
}

uint64_t grpc_call_deadline(const struct grpc_call *call)
{
	return call->deadline;
}

const char *grpc_call_method(const struct grpc_call *call)
{
	return call->path ? call->path : "";
}

/* --- calls: requests --------------------------------------------------------------------- */

static void call_deadline_cb(uv_timer_t *t)
{
	struct grpc_call *call = t->data;
	if (call->done)
		return;
	grpc_call_ref(call);
	call_cancel(call);
	if (call->conn) /* the cancel callback may have closed the server */
		call_submit_status(call, 200, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded", true);
	grpc_call_unref(call);
}

static void call_dispatch(struct grpc_call *call, const ProtobufCMessage *req)
{
	grpc_call_ref(call);
	call->method->handler(call, req, call->conn->srv->ctx);
	grpc_call_unref(call);
}

static const struct grpc_method *server_find_method(const struct grpc_server *srv, const char *path)
{
	for (size_t i = 0; path && i < srv->n_methods; i++)
		if (strcmp(srv->methods[i].path, path) == 0)
			return &srv->methods[i];
	return NULL;
}

/* All request headers are in: check them, find the method, arm the deadline. */
static void call_start(struct grpc_call *call)
{
	struct grpc_conn *conn = call->conn;
	struct grpc_server *srv = conn->srv;

	if (!call->post)
		return call_fail(call, 405, GRPC_STATUS_UNIMPLEMENTED, "method must be POST");
	if (!call->ct_ok)
		return call_fail(call, 415, GRPC_STATUS_UNKNOWN, "content-type must be application/grpc");
	if (conn->tcp && !call->authed)
		return call_fail(call, 200, GRPC_STATUS_UNAUTHENTICATED, "missing or invalid bearer token");
	call->method = server_find_method(srv, call->path);
	if (!call->method)
		return call_fail(call, 200, GRPC_STATUS_UNIMPLEMENTED, "unknown method %s",
				 call->path ? call->path : "");
	if (call->has_timeout) {
		call->deadline = uv_now(srv->loop) + call->timeout_ms;
		uv_timer_init(srv->loop, &call->timer);
		call->timer.data = call;
		call->srv = srv;
		call->timer_state = TIMER_ACTIVE;
		srv->open_handles++;
		uv_timer_start(&call->timer, call_deadline_cb, call->timeout_ms, 0);
	}
}

static void call_message_done(struct grpc_call *call)
{
	static const uint8_t empty[1];
	const ProtobufCMessageDescriptor *desc = call->method->request;

	call->n_msgs++;
	if (call->method->kind != GRPC_METHOD_CLIENT_STREAM)
		return; /* kept until END_STREAM, when the count is known */

	ProtobufCMessage *req = protobuf_c_message_unpack(desc, NULL, call->rx_len, call->rx_buf ? call->rx_buf : empty);
	if (req) { /* the raw bytes stay readable during the handler (grpc_call_request_bytes) */
		call->req_raw = call->rx_buf ? call->rx_buf : empty;
		call->req_raw_len = call->rx_len;
		call_dispatch(call, req);
		call->req_raw = NULL;
		protobuf_c_message_free_unpacked(req, NULL);
	}
	call->rx_len = 0;
	if (call->rx_cap > GRPC_WRITABLE_MARK) { /* do not hold a large buffer between messages */
		free(call->rx_buf);
		call->rx_buf = NULL;
		call->rx_cap = 0;
	}
	if (!req)
		return call_fail(call, 200, GRPC_STATUS_INVALID_ARGUMENT, "malformed request: cannot decode %s",
				 desc->name);
}

/* The 5-byte prefix of a request message is in: check flag and length before taking any body. */
static bool call_begin_message(struct grpc_call *call)
{
	uint8_t flag = call->rx_hdr[0];
	uint32_t size = (uint32_t)call->rx_hdr[1] << 24 | (uint32_t)call->rx_hdr[2] << 16 |
			(uint32_t)call->rx_hdr[3] << 8 | call->rx_hdr[4];

	if (flag & 1) {
		call_fail(call, 200, GRPC_STATUS_UNIMPLEMENTED, "compression not supported");
		return false;
	}
	if (flag) {
		call_fail(call, 200, GRPC_STATUS_INVALID_ARGUMENT, "malformed request: bad message flags 0x%x", flag);
		return false;
	}
	if (size > call->max_recv) {
		/* Answer now; the rest of the body is discarded as it arrives, never buffered. */
		call_fail(call, 200, GRPC_STATUS_RESOURCE_EXHAUSTED,
			  "received message larger than max (%u vs. %zu)", size, call->max_recv);
		return false;
	}
	if (call->method->kind != GRPC_METHOD_CLIENT_STREAM && call->n_msgs > 0) {
		call_fail(call, 200, GRPC_STATUS_INVALID_ARGUMENT,
			  "malformed request: more than one message for a unary request");
		return false;
	}
	call->rx_in_msg = true;
	call->rx_want = size;
	call->rx_len = 0;
	return true;
}

static bool call_grow(struct grpc_call *call, size_t need)
{
	if (need <= call->rx_cap)
		return true;
	/* Grow with what arrives, not with what the prefix claims: a client that announces a large
	 * message and sends a few bytes does not get max_recv allocated per stream. */
	size_t cap = call->rx_cap ? call->rx_cap * 2 : 4096;
	if (cap < need)
		cap = need;
	if (cap > call->rx_want)
		cap = call->rx_want;
	uint8_t *p = realloc(call->rx_buf, cap);
	if (!p)
		return false;
	call->rx_buf = p;
	call->rx_cap = cap;
	return true;
}

/* Body bytes of the request stream: split them into gRPC messages. */
static void call_consume(struct grpc_call *call, const uint8_t *p, size_t len)
{
	while (!call->done) {
		if (!call->rx_in_msg) {
			if (!len)
				return;
			size_t k = MIN(len, (size_t)(GRPC_FRAME_HDR - call->rx_hdr_len));
			memcpy(call->rx_hdr + call->rx_hdr_len, p, k);
			call->rx_hdr_len += k;
			p += k;
			len -= k;
			if (call->rx_hdr_len < GRPC_FRAME_HDR)
				return;
			call->rx_hdr_len = 0;
			if (!call_begin_message(call))
				return;
		}
		size_t k = MIN(len, call->rx_want - call->rx_len);
		if (k) {
			if (!call_grow(call, call->rx_len + k))
				return call_fail(call, 200, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			memcpy(call->rx_buf + call->rx_len, p, k);
			call->rx_len += k;
			p += k;
			len -= k;
		}
		if (call->rx_len < call->rx_want)
			return;
		call->rx_in_msg = false;
		call_message_done(call);
	}
}

/* The client half-closed: dispatch unary and server-streaming calls, end client streams. */
static void call_end_of_request(struct grpc_call *call)
{
	static const uint8_t empty[1];
	call->remote_closed = true;
	if (call->done || !call->method)
		return;
	if (call->rx_in_msg || call->rx_hdr_len)
		return call_fail(call, 200, GRPC_STATUS_INVALID_ARGUMENT, "malformed request: truncated message");
	if (call->method->kind == GRPC_METHOD_CLIENT_STREAM)
		return call_dispatch(call, NULL);
	if (call->n_msgs != 1)
		return call_fail(call, 200, GRPC_STATUS_INVALID_ARGUMENT,
				 "malformed request: expected one request message, got %u", call->n_msgs);

	const ProtobufCMessageDescriptor *desc = call->method->request;
	ProtobufCMessage *req = protobuf_c_message_unpack(desc, NULL, call->rx_len, call->rx_buf ? call->rx_buf : empty);
	if (req) { /* the raw bytes stay readable during the handler (grpc_call_request_bytes) */
		call->req_raw = call->rx_buf ? call->rx_buf : empty;
		call->req_raw_len = call->rx_len;
		call_dispatch(call, req);
		call->req_raw = NULL;
		protobuf_c_message_free_unpacked(req, NULL);
	}
	free(call->rx_buf); /* (already NULL if the handler finished the call) */
	call->rx_buf = NULL;
	call->rx_cap = call->rx_len = 0;
	if (!req)
		return call_fail(call, 200, GRPC_STATUS_INVALID_ARGUMENT, "malformed request: cannot decode %s",
				 desc->name);
}

/* --- nghttp2 callbacks ------------------------------------------------------------------- */

static struct grpc_call *stream_call(nghttp2_session *session, int32_t stream_id)
{
	return nghttp2_session_get_stream_user_data(session, stream_id);
}

static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user_data)
{
	struct grpc_conn *conn = user_data;
	if (hd->type == NGHTTP2_HEADERS) {
		conn->hblock_bytes = (uint32_t)hd->length;
		conn->hblock_frames = 0;
	} else if (hd->type == NGHTTP2_CONTINUATION) {
		conn->hblock_bytes += (uint32_t)hd->length;
		/* nghttp2 1.52 keeps decoding an endless header block: end the connection instead. */
		if (conn->hblock_bytes > GRPC_MAX_HEADER_BLOCK || ++conn->hblock_frames > GRPC_MAX_CONTINUATIONS)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	return grpc_conn_cb_result(conn);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_server *srv = conn->srv;

	if (conn->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (conn->n_calls >= srv->max_streams)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
	struct grpc_call *call = calloc(1, sizeof(*call));
	if (!call)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	call->refs = 1; /* the stream's */
	call->conn = conn;
	call->stream_id = frame->hd.stream_id;
	call->max_recv = srv->max_recv;
	call->max_send = srv->max_send;
	grpc_link_add_tail(&conn->calls, &call->link);
	conn->n_calls++;
	nghttp2_session_set_stream_user_data(session, call->stream_id, call);
	return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
		     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
	struct grpc_conn *conn = user_data;
	const char *n = (const char *)name, *v = (const char *)value; /* nghttp2 NUL-terminates both */

	if (conn->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0; /* client trailers carry nothing gRPC needs */
	struct grpc_call *call = stream_call(session, frame->hd.stream_id);
	if (!call)
		return 0;
	call->hdr_bytes += (uint32_t)(namelen + valuelen + 32); /* RFC 9113 header list size */
	if (call->hdr_bytes > GRPC_MAX_HEADER_LIST)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;

	if (strcmp(n, ":method") == 0) {
		call->post = strcmp(v, "POST") == 0;
	} else if (strcmp(n, ":path") == 0) {
		free(call->path);
		call->path = strndup(v, valuelen);
		if (!call->path)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	} else if (strcmp(n, "content-type") == 0) {
		call->ct_ok = grpc_content_type(v, valuelen);
	} else if (strcmp(n, "grpc-timeout") == 0) {
		call->has_timeout = parse_timeout(v, valuelen, &call->timeout_ms); /* malformed: none */
	} else if (strcmp(n, "authorization") == 0) {
		call->authed = grpc_token_ok(conn->srv, v, valuelen);
	}
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call;

	if (conn->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	switch (frame->hd.type) {
	case NGHTTP2_SETTINGS:
		if (!conn->handshake_done) { /* the preface and the first SETTINGS arrived */
			conn->handshake_done = true;
			uv_timer_stop(&conn->handshake);
		}
		break;
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA:
		call = stream_call(session, frame->hd.stream_id);
		if (!call)
			break;
		grpc_call_ref(call); /* a handler may close the server, detaching the call */
		if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
			call_start(call);
		if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && call->conn)
			call_end_of_request(call);
		grpc_call_unref(call);
		break;
	}
	return grpc_conn_cb_result(conn);
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
			      size_t len, void *user_data)
{
	struct grpc_conn *conn = user_data;
	if (conn->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	struct grpc_call *call = stream_call(session, stream_id);
	if (!call || call->done || !call->method)
		return 0; /* discarded; nghttp2 still returns the flow-control window */
	grpc_call_ref(call);
	call_consume(call, data, len);
	grpc_call_unref(call);
	return grpc_conn_cb_result(conn);
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_conn *conn = user_data;
	if (conn->closing)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	/* Our status went out but the client is still sending (an early error, say): reset its half
	 * so the stream, and the body it would still push, end now (as grpc-go does). */
	if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		struct grpc_call *call = stream_call(session, frame->hd.stream_id);
		if (call && !call->remote_closed)
			nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
	}
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
	struct grpc_conn *conn = user_data;
	struct grpc_call *call = stream_call(session, stream_id);
	if (call)
		grpc_call_detach(call); /* unfinished: client RST_STREAM or our own reset → cancel */
	return grpc_conn_cb_result(conn);
}

void grpc_call_set_callbacks(nghttp2_session_callbacks *cbs)
{
	nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
}
