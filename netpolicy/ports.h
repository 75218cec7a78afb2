/* Port exposure: for each exposed sandbox port, a listener on the host (default 127.0.0.1, a free
 * port) whose connections are relayed to 127.0.0.1:<port> *inside* the sandbox. The upstream
 * socket is created in the sandbox's network namespace (netns_socket through its pidfd), so this
 * works for sandboxes without any network and never routes through the policy: it is inbound
 * only, started from the host. Runs on the daemon's libuv loop; one buffer in flight per
 * direction (the slower side throttles the faster). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "util/err.h"

#define PORTS_MAX 16               /* exposed ports per sandbox */
#define PORTS_MAX_CONNS 256        /* open tunnel connections per sandbox */

struct ports;

struct ports_tunnel {
	uint32_t container_port;
	char host[64];
	uint16_t host_port;
};

struct ports_config {
	const char *bind;                /* host address to listen on */
	const uint32_t *container_ports;
	const uint16_t *host_ports;      /* wanted host ports (after a restart), 0 or NULL: any free */
	size_t n;
	int pidfd;                       /* the sandbox's PID 1 (duplicated; its netns is entered per connection) */
	void (*activity)(void *data);    /* called on every connection and transfer */
	void *data;
};

int ports_open(uv_loop_t *loop, const struct ports_config *cfg, struct ports **ret, struct err *e);
size_t ports_tunnels(const struct ports *p, const struct ports_tunnel **ret);
uint32_t ports_open_connections(const struct ports *p);
/* Close the listeners and every connection; memory goes once libuv has closed the handles.
 * Accepts NULL. */
void ports_close(struct ports *p);
