#include "netpolicy/ports.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "netpolicy/netns.h"

#define PORTS_BUF 65536

struct ports_listener {
	uv_tcp_t tcp;
	struct ports *p;
	uint32_t container_port;
};

struct ports_side {
	uv_tcp_t tcp;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	char *buf;   /* in flight toward the other side, or NULL */
	bool eof;    /* this side sent EOF */
	bool open;
};

struct ports_conn {
	struct ports *p;
	struct ports_conn *next, *prev;
	struct ports_side side[2]; /* 0: host client, 1: sandbox upstream */
	uv_connect_t creq;
	int handles;               /* uv handles not yet closed */
	bool closing;
};

struct ports {
	struct ports_listener l[PORTS_MAX];
	struct ports_tunnel t[PORTS_MAX];
	size_t n;
	int pidfd;
	int handles;               /* listener handles not yet closed */
	uint32_t n_conns;
	struct ports_conn *conns;
	bool closed;
	void (*activity)(void *data);
	void *data;
};

static void ports_maybe_free(struct ports *p)
{
	if (p->closed && p->handles == 0 && !p->conns) {
		if (p->pidfd >= 0)
			close(p->pidfd);
		free(p);
	}
}

static void conn_handle_closed(uv_handle_t *h)
{
	struct ports_conn *c = h->data;
	if (--c->handles > 0)
		return;
	struct ports *p = c->p;
	for (int i = 0; i < 2; i++)
		free(c->side[i].buf);
	if (c->prev)
		c->prev->next = c->next;
	else
		p->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	p->n_conns--;
	free(c);
	ports_maybe_free(p);
}

static void conn_close(struct ports_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	for (int i = 0; i < 2; i++)
		if (c->side[i].open && !uv_is_closing((uv_handle_t *)&c->side[i].tcp))
			uv_close((uv_handle_t *)&c->side[i].tcp, conn_handle_closed);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct ports_conn *c = h->data;
	int i = (uv_tcp_t *)h == &c->side[0].tcp ? 0 : 1;
	/* Reading stops while a buffer is in flight, so at most one exists per direction. */
	if (!c->side[i].buf)
		c->side[i].buf = malloc(PORTS_BUF);
	*buf = uv_buf_init(c->side[i].buf, c->side[i].buf ? PORTS_BUF : 0);
}

static void on_written(uv_write_t *w, int status)
{
	struct ports_conn *c = w->data;
	int from = w == &c->side[0].wreq ? 0 : 1;
	free(c->side[from].buf);
	c->side[from].buf = NULL;
	if (status < 0 || c->closing) {
		conn_close(c);
		return;
	}
	uv_read_start((uv_stream_t *)&c->side[from].tcp, alloc_cb, on_read);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
	struct ports_conn *c = s->data;
	if (status < 0 || (c->side[0].eof && c->side[1].eof))
		conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct ports_conn *c = s->data;
	int from = (uv_tcp_t *)s == &c->side[0].tcp ? 0 : 1, to = 1 - from;
	if (n == 0)
		return;
	if (c->p->activity)
		c->p->activity(c->p->data);
	if (n < 0) {
		free(c->side[from].buf);
		c->side[from].buf = NULL;
		if (n != UV_EOF) {
			conn_close(c);
			return;
		}
		c->side[from].eof = true;
		uv_read_stop(s);
		c->side[to].sreq.data = c;
		if (uv_shutdown(&c->side[to].sreq, (uv_stream_t *)&c->side[to].tcp, on_shutdown) < 0)
			conn_close(c);
		return;
	}
	uv_read_stop(s);
	uv_buf_t out = uv_buf_init(buf->base, (unsigned)n);
	c->side[from].wreq.data = c;
	if (uv_write(&c->side[from].wreq, (uv_stream_t *)&c->side[to].tcp, &out, 1, on_written) < 0)
		conn_close(c);
}

static void on_upstream(uv_connect_t *req, int status)
{
	struct ports_conn *c = req->data;
	if (status < 0 || c->closing) {
		conn_close(c);
		return;
	}
	for (int i = 0; i < 2; i++)
		uv_read_start((uv_stream_t *)&c->side[i].tcp, alloc_cb, on_read);
}

static void on_accept(uv_stream_t *server, int status)
{
	struct ports_listener *l = server->data;
	struct ports *p = l->p;
	if (status < 0 || p->closed)
		return;
	struct ports_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->p = p;
	uv_tcp_init(server->loop, &c->side[0].tcp);
	c->side[0].tcp.data = c;
	c->side[0].open = true;
	c->handles = 1;
	c->next = p->conns;
	if (p->conns)
		p->conns->prev = c;
	p->conns = c;
	p->n_conns++;
	if (uv_accept(server, (uv_stream_t *)&c->side[0].tcp) < 0 || p->n_conns > PORTS_MAX_CONNS) {
		conn_close(c);
		return;
	}
	if (p->activity)
		p->activity(p->data);
	int fd;
	struct err e = {0};
	if (netns_socket(p->pidfd, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0, &fd, &e) < 0) {
		conn_close(c);
		return;
	}
	uv_tcp_init(server->loop, &c->side[1].tcp);
	c->side[1].tcp.data = c;
	c->side[1].open = true;
	c->handles++;
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)l->container_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	c->creq.data = c;
	if (uv_tcp_open(&c->side[1].tcp, fd) < 0) {
		close(fd);
		conn_close(c);
		return;
	}
	if (uv_tcp_connect(&c->creq, &c->side[1].tcp, (const struct sockaddr *)&to, on_upstream) < 0)
		conn_close(c);
}

static void listener_closed(uv_handle_t *h)
{
	struct ports_listener *l = h->data;
	l->p->handles--;
	ports_maybe_free(l->p);
}

int ports_open(uv_loop_t *loop, const struct ports_config *cfg, struct ports **ret, struct err *e)
{
	if (cfg->n > PORTS_MAX)
		return err_setx(e, EINVAL, "at most %d ports", PORTS_MAX);
	struct sockaddr_storage ss;
	if (uv_ip4_addr(cfg->bind, 0, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(cfg->bind, 0, (struct sockaddr_in6 *)&ss) != 0)
		return err_setx(e, EINVAL, "port bind address %s is not an IP address", cfg->bind);
	struct ports *p = calloc(1, sizeof(*p));
	if (!p)
		return err_set(e, ENOMEM, "ports");
	p->activity = cfg->activity;
	p->data = cfg->data;
	p->pidfd = fcntl(cfg->pidfd, F_DUPFD_CLOEXEC, 3);
	int r = 0;
	if (p->pidfd < 0) {
		r = err_set(e, errno, "ports: duplicate pidfd");
		goto fail;
	}
	for (size_t i = 0; i < cfg->n; i++) {
		struct ports_listener *l = &p->l[i];
		uint16_t want = cfg->host_ports ? cfg->host_ports[i] : 0;
		l->p = p;
		l->container_port = cfg->container_ports[i];
		uv_tcp_init(loop, &l->tcp);
		l->tcp.data = l;
		p->handles++;
		p->n = i + 1;
		for (int attempt = 0; attempt < 2; attempt++) {
			if (ss.ss_family == AF_INET)
				((struct sockaddr_in *)&ss)->sin_port = htons(attempt ? 0 : want);
			else
				((struct sockaddr_in6 *)&ss)->sin6_port = htons(attempt ? 0 : want);
			r = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
			if (r == 0)
				r = uv_listen((uv_stream_t *)&l->tcp, 128, on_accept);
			if (r == 0 || !want)
				break; /* a port wanted back but taken meanwhile: take any free one */
		}
		if (r < 0) {
			r = err_setx(e, -r == EADDRINUSE ? EBUSY : -r, "listen on %s for port %u: %s", cfg->bind,
				     l->container_port, uv_strerror(r));
			goto fail;
		}
		struct sockaddr_storage got;
		int len = sizeof(got);
		uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&got, &len);
		p->t[i].container_port = l->container_port;
		snprintf(p->t[i].host, sizeof(p->t[i].host), "%s", cfg->bind);
		p->t[i].host_port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
								    : ((struct sockaddr_in6 *)&got)->sin6_port);
	}
	*ret = p;
	return 0;
fail:
	ports_close(p);
	return r;
}

size_t ports_tunnels(const struct ports *p, const struct ports_tunnel **ret)
{
	*ret = p ? p->t : NULL;
	return p ? p->n : 0;
}

uint32_t ports_open_connections(const struct ports *p) { return p ? p->n_conns : 0; }

void ports_close(struct ports *p)
{
	if (!p || p->closed)
		return;
	p->closed = true;
	for (size_t i = 0; i < p->n; i++)
		uv_close((uv_handle_t *)&p->l[i].tcp, listener_closed);
	for (struct ports_conn *c = p->conns; c; c = c->next)
		conn_close(c);
	ports_maybe_free(p);
}
