/* gRPC server transport: HTTP/2 (nghttp2, h2c with prior knowledge) on libuv streams, messages
 * encoded with protobuf-c.
 *
 * Shape: a server owns its listeners and connections; a connection owns one nghttp2 session and
 * the calls (one per HTTP/2 stream) on it. Response messages are queued per call and pulled by
 * nghttp2's data source callback; each connection's output is gathered into one uv_write per loop
 * turn from an idle handle (idle rather than prepare: an active idle handle keeps the loop from
 * blocking in poll while output is still pending).
 *
 * Calls (grpc_call.c) turn each HTTP/2 stream into a gRPC call; this file owns the rest.
 *
 * Lifetimes:
 * - A connection is freed only in its handles' close callbacks, never synchronously, so an
 *   nghttp2 callback further up the stack never sees it vanish. Once `closing` is set nothing
 *   calls into its session again except nghttp2_session_del, and every nghttp2 callback bails out.
 * - A call holds one reference for its stream. Detaching it from the stream (stream close,
 *   connection loss, server close) cancels it if unfinished and drops that reference. A detached
 *   call touches neither connection nor server, so handlers may hold it past grpc_server_close.
 * - The server is freed, and `done` called, once every uv handle it opened has been closed
 *   (listeners, connections, their handshake timers, call deadline timers, the flush handle).
 *
 * The process must ignore SIGPIPE (libuv writes sockets with write(2)); the daemon's main does. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "grpc_internal.h"
#include "util/cleanup.h"

static void conn_close(struct grpc_conn *conn);
static void conn_write_done(uv_write_t *req, int status);
static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

void grpc_server_handle_closed(struct grpc_server *srv)
{
	if (--srv->open_handles > 0 || !srv->closing)
		return;
	void (*done)(void *) = srv->done;
	void *data = srv->done_data;
	nghttp2_session_callbacks_del(srv->callbacks);
	nghttp2_option_del(srv->option);
	free(srv->token);
	free(srv);
	if (done)
		done(data);
}

/* --- connections ------------------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
	struct grpc_conn *conn = h->data;
	struct grpc_server *srv = conn->srv;
	if (--conn->open_handles > 0)
		return;
	/* nghttp2_session_del does not call on_stream_close; the calls were detached in conn_close. */
	nghttp2_session_del(conn->session);
	grpc_link_del(&conn->link);
	srv->n_conns--;
	free(conn);
	grpc_server_handle_closed(srv);
}

/* Best effort: tell the client why we hang up, if the socket takes it right now. */
static void conn_goaway(struct grpc_conn *conn, uint32_t error_code)
{
	const uint8_t *data;
	ssize_t n;
	if (!conn->session || conn->in_nghttp2)
		return; /* nghttp2 is not reentrant */
	if (nghttp2_session_terminate_session(conn->session, error_code) != 0)
		return;
	conn->in_nghttp2++;
	while ((n = nghttp2_session_mem_send(conn->session, &data)) > 0) {
		uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
		if (uv_try_write(&conn->h.stream, &b, 1) != n)
			break;
	}
	conn->in_nghttp2--;
}

static void conn_close(struct grpc_conn *conn)
{
	if (conn->closing)
		return;
	conn->closing = true;
	if (conn->flush_queued) {
		grpc_link_del(&conn->flush_link);
		conn->flush_queued = false;
	}
	/* Cancel the calls first: their cancel callbacks may still send on other connections. */
	while (!grpc_link_empty(&conn->calls))
		grpc_call_detach(container_of(conn->calls.next, struct grpc_call, link));
	uv_close(&conn->h.handle, conn_handle_closed);
	if (conn->handshake_inited)
		uv_close((uv_handle_t *)&conn->handshake, conn_handle_closed);
}

/* Gather what nghttp2 has to send (up to GRPC_WRITE_CHUNK) into one uv_write. Returns the bytes
 * written, or <0 when the connection must close. */
static int conn_write_out(struct grpc_conn *conn)
{
	struct grpc_write *w = NULL;
	size_t len = 0, cap = 0;

	conn->in_nghttp2++;
	while (len < GRPC_WRITE_CHUNK) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(conn->session, &data);
		if (n <= 0 || conn->closing) {
			if (n < 0 || conn->closing) {
				conn->in_nghttp2--;
				free(w);
				return -EPROTO;
			}
			break;
		}
		if (len + (size_t)n > cap) {
			size_t ncap = cap ? cap * 2 : 16384;
			while (ncap < len + (size_t)n)
				ncap *= 2;
			struct grpc_write *nw = realloc(w, sizeof(*w) + ncap);
			if (!nw) {
				conn->in_nghttp2--;
				free(w);
				return -ENOMEM;
			}
			w = nw;
			cap = ncap;
		}
		memcpy(w->data + len, data, (size_t)n); /* data is valid only until the next mem_send */
		len += (size_t)n;
	}
	conn->in_nghttp2--;
	if (!len)
		return 0;
	w->conn = conn;
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
	int r = uv_write(&w->req, &conn->h.stream, &b, 1, conn_write_done);
	if (r < 0) {
		free(w);
		return r;
	}
	conn->writes_inflight++;
	return (int)len;
}

/* Run the writable callbacks that are due, one at a time: each may change the call list. */
static void conn_fire_writable(struct grpc_conn *conn)
{
	while (conn->writable_due && !conn->closing) {
		conn->writable_due = false;
		for (struct grpc_link *l = conn->calls.next; l != &conn->calls; l = l->next) {
			struct grpc_call *call = container_of(l, struct grpc_call, link);
			void (*cb)(struct grpc_call *, void *) = call->writable_cb;
			if (!cb || call->pending >= GRPC_WRITABLE_MARK)
				continue;
			call->writable_cb = NULL;
			grpc_call_ref(call);
			cb(call, call->writable_data);
			grpc_call_unref(call);
			conn->writable_due = true; /* rescan from the start */
			break;
		}
	}
}

/* The session is over (GOAWAY both ways, or a fatal error already sent): hang up once drained. */
static void conn_maybe_end(struct grpc_conn *conn)
{
	if (!conn->closing && !conn->writes_inflight && !nghttp2_session_want_read(conn->session) &&
	    !nghttp2_session_want_write(conn->session))
		conn_close(conn);
}

static void conn_flush(struct grpc_conn *conn)
{
	if (conn->closing || uv_stream_get_write_queue_size(&conn->h.stream) >= GRPC_WRITE_HIGH)
		return; /* conn_write_done schedules us again */
	int n = conn_write_out(conn);
	if (n < 0)
		return conn_close(conn);
	conn_fire_writable(conn);
	if (n == 0 && !conn->flush_queued)
		conn_maybe_end(conn);
}

static void conn_write_done(uv_write_t *req, int status)
{
	struct grpc_write *w = container_of(req, struct grpc_write, req);
	struct grpc_conn *conn = w->conn;
	free(w);
	conn->writes_inflight--;
	if (conn->closing)
		return;
	if (status < 0)
		return conn_close(conn);
	if (conn->read_paused && uv_stream_get_write_queue_size(&conn->h.stream) < GRPC_WRITE_HIGH) {
		conn->read_paused = false;
		uv_read_start(&conn->h.stream, conn_alloc, conn_read);
	}
	/* We may have stopped producing at the backlog mark, or nghttp2 held more than one chunk. */
	grpc_conn_schedule_flush(conn);
}

static void server_flush_cb(uv_idle_t *idle)
{
	struct grpc_server *srv = container_of(idle, struct grpc_server, flusher);
	struct grpc_link batch;

	/* Only the connections queued so far: one queued again while flushing waits a turn, so a busy
	 * stream cannot starve reads; the active idle handle keeps poll from blocking meanwhile. */
	grpc_link_init(&batch);
	if (!grpc_link_empty(&srv->flush_list)) {
		batch.next = srv->flush_list.next;
		batch.prev = srv->flush_list.prev;
		batch.next->prev = &batch;
		batch.prev->next = &batch;
		grpc_link_init(&srv->flush_list);
	}
	while (!grpc_link_empty(&batch)) {
		struct grpc_conn *conn = container_of(batch.next, struct grpc_conn, flush_link);
		grpc_link_del(&conn->flush_link);
		conn->flush_queued = false;
		conn_flush(conn);
	}
	if (grpc_link_empty(&srv->flush_list))
		uv_idle_stop(idle);
}

void grpc_conn_schedule_flush(struct grpc_conn *conn)
{
	if (conn->closing || conn->flush_queued || conn->srv->closing) /* flusher may be closing */
		return;
	conn->flush_queued = true;
	grpc_link_add_tail(&conn->srv->flush_list, &conn->flush_link);
	uv_idle_start(&conn->srv->flusher, server_flush_cb);
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct grpc_conn *conn = h->data;
	*buf = uv_buf_init((char *)conn->srv->rbuf, sizeof(conn->srv->rbuf));
}

static void conn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct grpc_conn *conn = stream->data;

	if (conn->closing || nread == 0)
		return;
	if (nread < 0) /* EOF or error: HTTP/2 has no use for a half-closed connection */
		return conn_close(conn);
	conn->in_nghttp2++;
	ssize_t r = nghttp2_session_mem_recv(conn->session, (const uint8_t *)buf->base, (size_t)nread);
	conn->in_nghttp2--;
	if (conn->closing)
		return;
	if (r < 0) { /* bad client magic (HTTP/1.1, garbage), flooding, a failed callback */
		conn_goaway(conn, NGHTTP2_PROTOCOL_ERROR);
		return conn_close(conn);
	}
	/* The client is not reading what we send: stop reading what it sends. */
	if (uv_stream_get_write_queue_size(stream) >= GRPC_WRITE_HIGH) {
		uv_read_stop(stream);
		conn->read_paused = true;
	}
	grpc_conn_schedule_flush(conn);
}

static void conn_handshake_timeout(uv_timer_t *t)
{
	conn_close(t->data);
}

static int conn_start_session(struct grpc_conn *conn)
{
	struct grpc_server *srv = conn->srv;
	nghttp2_settings_entry settings[] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->max_streams},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, GRPC_STREAM_WINDOW},
		{NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, GRPC_MAX_HEADER_LIST},
	};
	if (nghttp2_session_server_new2(&conn->session, srv->callbacks, conn, srv->option) != 0)
		return -ENOMEM;
	/* The server speaks first: SETTINGS go out without waiting for the client preface. */
	if (nghttp2_submit_settings(conn->session, NGHTTP2_FLAG_NONE, settings, ARRAY_SIZE(settings)) != 0 ||
	    nghttp2_session_set_local_window_size(conn->session, NGHTTP2_FLAG_NONE, 0, GRPC_CONN_WINDOW) != 0)
		return -ENOMEM;
	return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
	struct grpc_listener *l = server->data;
	struct grpc_server *srv = l->srv;
	struct grpc_conn *conn;

	if (status < 0 || srv->closing || !(conn = calloc(1, sizeof(*conn))))
		return;
	conn->srv = srv;
	conn->tcp = l->tcp;
	grpc_link_init(&conn->calls);
	grpc_link_init(&conn->flush_link);
	grpc_link_add_tail(&srv->conns, &conn->link);
	srv->n_conns++;
	srv->open_handles++;
	if (l->tcp)
		uv_tcp_init(srv->loop, &conn->h.tcp);
	else
		uv_pipe_init(srv->loop, &conn->h.pipe, 0);
	conn->h.handle.data = conn;
	conn->open_handles = 1;
	/* Accept even over the limit, then hang up: a connection left in the backlog would stall
	 * the listener (libuv stops polling it until accepted). */
	if (uv_accept(server, &conn->h.stream) < 0 || srv->n_conns > srv->max_connections ||
	    conn_start_session(conn) < 0)
		return conn_close(conn);

	uv_timer_init(srv->loop, &conn->handshake);
	conn->handshake.data = conn;
	conn->handshake_inited = true;
	conn->open_handles++;
	uv_timer_start(&conn->handshake, conn_handshake_timeout, GRPC_HANDSHAKE_MS, 0);
	if (l->tcp) {
		uv_tcp_nodelay(&conn->h.tcp, 1);
		uv_tcp_keepalive(&conn->h.tcp, 1, 60); /* find dead peers of idle connections */
	}
	if (uv_read_start(&conn->h.stream, conn_alloc, conn_read) < 0)
		return conn_close(conn);
	grpc_conn_schedule_flush(conn);
}

/* --- listeners and the server ------------------------------------------------------------ */

static void listener_closed(uv_handle_t *h)
{
	struct grpc_listener *l = h->data;
	struct grpc_server *srv = l->srv;
	free(l->unix_path);
	free(l);
	grpc_server_handle_closed(srv);
}

static void listener_close(struct grpc_listener *l)
{
	grpc_link_del(&l->link);
	if (l->unix_path)
		unlink(l->unix_path);
	uv_close(&l->h.handle, listener_closed);
}

static struct grpc_listener *listener_new(struct grpc_server *srv, bool tcp)
{
	struct grpc_listener *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->srv = srv;
	l->tcp = tcp;
	if (tcp)
		uv_tcp_init(srv->loop, &l->h.tcp);
	else
		uv_pipe_init(srv->loop, &l->h.pipe, 0);
	l->h.handle.data = l;
	grpc_link_add_tail(&srv->listeners, &l->link);
	srv->open_handles++;
	return l;
}

int grpc_server_listen_unix(struct grpc_server *srv, const char *path, mode_t mode, struct err *e)
{
	struct sockaddr_un sa;
	struct stat st;
	int r;

	if (srv->closing)
		return err_setx(e, EINVAL, "listen on %s: server is closing", path);
	/* libuv truncates long paths silently. */
	if (strlen(path) >= sizeof(sa.sun_path))
		return err_setx(e, ENAMETOOLONG, "listen on %s: path longer than %zu bytes", path,
				sizeof(sa.sun_path) - 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return err_setx(e, EEXIST, "listen on %s: exists and is not a socket", path);
		if (unlink(path) < 0 && errno != ENOENT)
			return err_set(e, errno, "remove stale socket %s", path);
	}
	struct grpc_listener *l = listener_new(srv, false);
	if (!l)
		return err_set(e, ENOMEM, "listen on %s", path);
	r = uv_pipe_bind(&l->h.pipe, path);
	if (r < 0) {
		listener_close(l);
		return err_setx(e, -r, "bind %s: %s", path, uv_strerror(r));
	}
	l->unix_path = strdup(path);
	if (!l->unix_path) {
		unlink(path);
		listener_close(l);
		return err_set(e, ENOMEM, "listen on %s", path);
	}
	if (chmod(path, mode) < 0) {
		r = -errno;
		listener_close(l);
		return err_set(e, -r, "chmod %s to %o", path, (unsigned)mode);
	}
	r = uv_listen(&l->h.stream, 128, on_connection);
	if (r < 0) {
		listener_close(l);
		return err_setx(e, -r, "listen on %s: %s", path, uv_strerror(r));
	}
	return 0;
}

int grpc_server_listen_tcp(struct grpc_server *srv, const char *host, uint16_t port, struct err *e)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	char service[8];
	int r;

	if (!srv->token)
		return err_setx(e, EINVAL, "listen on %s:%u: TCP listeners require a token", host, port);
	if (srv->closing)
		return err_setx(e, EINVAL, "listen on %s:%u: server is closing", host, port);
	snprintf(service, sizeof(service), "%u", port);
	r = getaddrinfo(host, service, &hints, &res);
	if (r != 0)
		return err_setx(e, EINVAL, "listen on %s:%u: %s", host, port, gai_strerror(r));
	struct grpc_listener *l = listener_new(srv, true);
	if (!l) {
		freeaddrinfo(res);
		return err_set(e, ENOMEM, "listen on %s:%u", host, port);
	}
	r = uv_tcp_bind(&l->h.tcp, res->ai_addr, 0);
	freeaddrinfo(res);
	if (r == 0)
		r = uv_listen(&l->h.stream, 128, on_connection);
	if (r < 0) {
		listener_close(l);
		return err_setx(e, -r, "listen on %s:%u: %s", host, port, uv_strerror(r));
	}
	return 0;
}

static void server_free_partial(struct grpc_server **srvp)
{
	struct grpc_server *srv = *srvp;
	if (!srv)
		return;
	if (srv->callbacks)
		nghttp2_session_callbacks_del(srv->callbacks);
	if (srv->option)
		nghttp2_option_del(srv->option);
	free(srv->token);
	free(srv);
}

int grpc_server_new(uv_loop_t *loop, const struct grpc_server_config *cfg, struct grpc_server **ret, struct err *e)
{
	_cleanup_(server_free_partial) struct grpc_server *srv = NULL;

	if (!loop || !cfg || !ret || (cfg->n_methods && !cfg->methods))
		return err_setx(e, EINVAL, "grpc server: invalid configuration");
	for (size_t i = 0; i < cfg->n_methods; i++) {
		const struct grpc_method *m = &cfg->methods[i];
		if (!m->path || m->path[0] != '/' || !m->request || !m->handler)
			return err_setx(e, EINVAL, "grpc server: method %zu (%s) is incomplete", i,
					m->path ? m->path : "no path");
	}
	if (cfg->token && !*cfg->token)
		return err_setx(e, EINVAL, "grpc server: empty token");

	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return err_set(e, ENOMEM, "grpc server");
	srv->loop = loop;
	srv->methods = cfg->methods;
	srv->n_methods = cfg->n_methods;
	srv->ctx = cfg->ctx;
	srv->max_recv = cfg->max_recv_message ? cfg->max_recv_message : GRPC_DEFAULT_MAX_RECV;
	srv->max_send = cfg->max_send_message ? cfg->max_send_message : GRPC_DEFAULT_MAX_SEND;
	srv->max_connections = cfg->max_connections ? cfg->max_connections : GRPC_DEFAULT_MAX_CONNECTIONS;
	srv->max_streams = cfg->max_streams_per_connection ? cfg->max_streams_per_connection
							   : GRPC_DEFAULT_MAX_STREAMS;
	grpc_link_init(&srv->listeners);
	grpc_link_init(&srv->conns);
	grpc_link_init(&srv->flush_list);
	if (cfg->token) {
		srv->token = strdup(cfg->token);
		if (!srv->token)
			return err_set(e, ENOMEM, "grpc server");
		srv->token_len = strlen(srv->token);
	}

	if (nghttp2_session_callbacks_new(&srv->callbacks) != 0 || nghttp2_option_new(&srv->option) != 0)
		return err_set(e, ENOMEM, "grpc server");
	grpc_call_set_callbacks(srv->callbacks);

	uv_idle_init(loop, &srv->flusher);
	srv->open_handles = 1;
	*ret = TAKE_PTR(srv);
	return 0;
}

static void server_flusher_closed(uv_handle_t *h)
{
	grpc_server_handle_closed(container_of((uv_idle_t *)h, struct grpc_server, flusher));
}

void grpc_server_close(struct grpc_server *srv, void (*done)(void *data), void *data)
{
	if (srv->closing)
		return;
	srv->closing = true;
	srv->done = done;
	srv->done_data = data;
	while (!grpc_link_empty(&srv->listeners))
		listener_close(container_of(srv->listeners.next, struct grpc_listener, link));
	/* Connections leave the list only when their handles have closed, so this walk is stable. */
	for (struct grpc_link *l = srv->conns.next; l != &srv->conns; l = l->next) {
		struct grpc_conn *conn = container_of(l, struct grpc_conn, link);
		if (!conn->closing)
			conn_goaway(conn, NGHTTP2_NO_ERROR);
		conn_close(conn);
	}
	uv_idle_stop(&srv->flusher);
	uv_close((uv_handle_t *)&srv->flusher, server_flusher_closed);
}

uint32_t grpc_server_connection_count(const struct grpc_server *srv)
{
	return srv->n_conns;
}
