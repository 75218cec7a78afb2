#include "netpolicy/veth.h"

#include <errno.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <string.h>

#include "netpolicy/netns.h"

static int nl_err(struct err *e, int nlerr, const char *what, const char *on)
{
	int code = nlerr == -NLE_EXIST ? EEXIST : nlerr == -NLE_OBJ_NOTFOUND || nlerr == -NLE_NODEV ? ENOENT
		 : nlerr == -NLE_PERM ? EPERM : nlerr == -NLE_NOMEM ? ENOMEM : EIO;
	return err_setx(e, code, "%s %s: %s", what, on, nl_geterror(nlerr));
}

int veth_socket_new(struct nl_sock **ret, struct err *e)
{
	struct nl_sock *sk = nl_socket_alloc();
	if (!sk)
		return err_set(e, ENOMEM, "netlink socket");
	int r = nl_connect(sk, NETLINK_ROUTE);
	if (r < 0) {
		nl_socket_free(sk);
		return nl_err(e, r, "connect", "rtnetlink");
	}
	*ret = sk;
	return 0;
}

void veth_socket_free(struct nl_sock *sk)
{
	if (sk)
		nl_socket_free(sk);
}

static int add_addr(struct nl_sock *sk, int ifindex, struct in_addr a, unsigned prefix, struct err *e)
{
	struct rtnl_addr *addr = rtnl_addr_alloc();
	struct nl_addr *local = nl_addr_build(AF_INET, &a, sizeof(a));
	int r = -NLE_NOMEM;
	if (addr && local) {
		nl_addr_set_prefixlen(local, (int)prefix);
		rtnl_addr_set_ifindex(addr, ifindex);
		rtnl_addr_set_family(addr, AF_INET);
		r = rtnl_addr_set_local(addr, local);
		if (r == 0)
			r = rtnl_addr_add(sk, addr, 0);
	}
	nl_addr_put(local);
	rtnl_addr_put(addr);
	return r < 0 ? nl_err(e, r, "add address on interface", "") : 0;
}

struct inside_args {
	const struct veth_config *c;
};

/* In the sandbox's namespace: address on its end and a default route through the host end. */
static int configure_inside(void *arg, struct err *e)
{
	const struct veth_config *c = ((struct inside_args *)arg)->c;
	struct nl_sock *sk;
	int r = veth_socket_new(&sk, e);
	if (r < 0)
		return r;
	int ifindex = (int)if_nametoindex(c->peer_name);
	if (ifindex <= 0) {
		r = err_set(e, errno, "find %s in the sandbox", c->peer_name);
		goto out;
	}
	if ((r = add_addr(sk, ifindex, c->peer_addr, c->prefix, e)) < 0 || (r = veth_set_up(sk, ifindex, e)) < 0 ||
	    (c->inside && (r = c->inside(e)) < 0))
		goto out;
	struct rtnl_route *route = rtnl_route_alloc();
	struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
	struct in_addr any = {0};
	struct nl_addr *dst = nl_addr_build(AF_INET, &any, sizeof(any));
	struct nl_addr *gw = nl_addr_build(AF_INET, &c->host_addr, sizeof(c->host_addr));
	if (!route || !nh || !dst || !gw) {
		r = err_set(e, ENOMEM, "default route");
		rtnl_route_nh_free(nh);
	} else {
		nl_addr_set_prefixlen(dst, 0);
		rtnl_route_set_family(route, AF_INET);
		rtnl_route_set_dst(route, dst);
		rtnl_route_nh_set_ifindex(nh, ifindex);
		rtnl_route_nh_set_gateway(nh, gw);
		rtnl_route_add_nexthop(route, nh); /* the route owns nh now */
		int nr = rtnl_route_add(sk, route, NLM_F_CREATE | NLM_F_EXCL);
		r = nr < 0 ? nl_err(e, nr, "add the default route in", "the sandbox") : 0;
	}
	nl_addr_put(dst);
	nl_addr_put(gw);
	rtnl_route_put(route);
out:
	veth_socket_free(sk);
	return r;
}

int veth_create(struct nl_sock *host_sk, const struct veth_config *c, int *ret_ifindex, struct err *e)
{
	if (strlen(c->host_name) >= IFNAMSIZ || strlen(c->peer_name) >= IFNAMSIZ)
		return err_setx(e, EINVAL, "interface name %s too long", c->host_name);
	struct rtnl_link *link = rtnl_link_veth_alloc();
	if (!link)
		return err_set(e, ENOMEM, "veth");
	struct rtnl_link *peer = rtnl_link_veth_get_peer(link);
	/* The host end stays down until its tc program guards it (veth_set_up). */
	rtnl_link_set_name(link, c->host_name);
	/* Not IFF_UP here: veth refuses to open an end before its pair exists (ENOTCONN). */
	rtnl_link_set_name(peer, c->peer_name);
	rtnl_link_set_ns_fd(peer, c->netns_fd);
	int r = rtnl_link_add(host_sk, link, NLM_F_CREATE | NLM_F_EXCL);
	rtnl_link_put(peer);
	rtnl_link_put(link);
	if (r < 0)
		return nl_err(e, r, "create veth", c->host_name);
	int ifindex = (int)if_nametoindex(c->host_name);
	if (ifindex <= 0) {
		r = err_set(e, errno, "find %s", c->host_name);
		goto undo_link;
	}
	if ((r = add_addr(host_sk, ifindex, c->host_addr, c->prefix, e)) < 0)
		goto undo_link;
	struct inside_args a = {c};
	if ((r = netns_run(c->netns_fd, configure_inside, &a, e)) < 0)
		goto undo_link;
	*ret_ifindex = ifindex;
	return 0;
undo_link:
	veth_delete(host_sk, c->host_name, NULL);
	return r;
}

int veth_delete(struct nl_sock *host_sk, const char *name, struct err *e)
{
	struct rtnl_link *link = rtnl_link_alloc();
	if (!link)
		return err_set(e, ENOMEM, "veth");
	rtnl_link_set_name(link, name);
	int r = rtnl_link_delete(host_sk, link);
	rtnl_link_put(link);
	return r < 0 ? nl_err(e, r, "delete link", name) : 0;
}

int veth_set_up(struct nl_sock *host_sk, int ifindex, struct err *e)
{
	struct rtnl_link *orig = rtnl_link_alloc(), *change = rtnl_link_alloc();
	int r = -NLE_NOMEM;
	if (orig && change) {
		rtnl_link_set_ifindex(orig, ifindex);
		rtnl_link_set_flags(change, IFF_UP);
		r = rtnl_link_change(host_sk, orig, change, 0);
	}
	rtnl_link_put(orig);
	rtnl_link_put(change);
	return r < 0 ? nl_err(e, r, "bring up", "the host end of the veth") : 0;
}
