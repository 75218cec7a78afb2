/* The routed point-to-point link of a networked sandbox: a veth pair whose sandbox end is created
 * directly inside the sandbox's network namespace (IFLA_NET_NS_FD on the peer: moving a link
 * between namespaces costs ~10x more), addresses on both ends and a default route inside. The
 * pair disappears with the sandbox's namespace; nothing needs deleting at teardown. */
#pragma once
#include <netinet/in.h>

#include "util/err.h"

struct nl_sock;

struct veth_config {
	const char *host_name;   /* host end, <= 15 bytes */
	const char *peer_name;   /* sandbox end, e.g. "eth0" */
	int netns_fd;            /* the sandbox's network namespace */
	struct in_addr host_addr, peer_addr; /* network byte order */
	unsigned prefix;         /* of both addresses (31: a point-to-point pair) */
	int (*inside)(struct err *e); /* optional, run in the sandbox's namespace after the link is up */
};

/* A NETLINK_ROUTE socket of the calling thread's namespace, for veth_create. */
int veth_socket_new(struct nl_sock **ret, struct err *e);
void veth_socket_free(struct nl_sock *sk);
/* Create and configure the pair; returns the host end's ifindex. On failure the pair is gone. */
int veth_create(struct nl_sock *host_sk, const struct veth_config *c, int *ret_ifindex, struct err *e);
/* Delete a host-side link by name (rollback; -ENOENT if it is already gone). */
int veth_delete(struct nl_sock *host_sk, const char *name, struct err *e);
/* Bring a host-side link up (after its tc program is attached). */
int veth_set_up(struct nl_sock *host_sk, int ifindex, struct err *e);
