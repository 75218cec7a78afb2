/* Networking in the daemon: glue between sandboxes, SQLite and netpolicy/, plus the
 * UpdateNetworkPolicy and GetSandboxTunnels RPCs. */
#include "daemon/rpc_net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon/convert.h"
#include "daemon/rpc.h"
#include "daemon/sandbox.h"
#include "daemon/status.h"
#include "netpolicy/netpolicy.h"
#include "netpolicy/policy.h"
#include "netpolicy/ports.h"
#include "util/cleanup.h"
#include "util/log.h"

#define NET_MAX_ALLOW NETPOL_MAX_ALLOW
#define NET_MAX_CIDR_LEN 64

struct sandbox_net {
	bool networked;
	struct netpolicy_link link;
	struct ports *ports;
};

int rpc_net_validate(const Corral__V1__NetworkPolicy *net, const uint32_t *ports, size_t n_ports, struct err *e)
{
	if (net) {
		if (net->n_cidr_allowlist > NET_MAX_ALLOW)
			return err_setx(e, EINVAL, "network.cidr_allowlist has more than %d entries", NET_MAX_ALLOW);
		for (size_t i = 0; i < net->n_cidr_allowlist; i++) {
			struct policy_prefix p;
			if (strlen(net->cidr_allowlist[i]) > NET_MAX_CIDR_LEN ||
			    policy_parse_cidr(net->cidr_allowlist[i], &p, e) < 0)
				return err_setx(e, EINVAL, "network.cidr_allowlist[%zu] \"%.64s\": expected a CIDR like "
					       "203.0.113.0/24 or 2001:db8::/32", i, net->cidr_allowlist[i]);
		}
	}
	if (n_ports > PORTS_MAX)
		return err_setx(e, EINVAL, "at most %d ports", PORTS_MAX);
	for (size_t i = 0; i < n_ports; i++) {
		if (ports[i] == 0 || ports[i] > 65535)
			return err_setx(e, EINVAL, "ports[%zu] = %u: expected 1..65535", i, ports[i]);
		for (size_t j = 0; j < i; j++)
			if (ports[j] == ports[i])
				return err_setx(e, EINVAL, "port %u listed twice", ports[i]);
	}
	return 0;
}

static void on_tunnel_activity(void *data) { sandbox_touch(data); }

static int open_ports(struct sandbox *sb, int pidfd, const uint16_t *want, struct err *e)
{
	const Corral__V1__CreateSandboxRequest *spec = sb->spec;
	if (!spec->n_ports)
		return 0;
	struct ports_config pc = {
		.bind = sb->m->cfg.port_bind,
		.container_ports = spec->ports,
		.host_ports = want,
		.n = spec->n_ports,
		.pidfd = pidfd,
		.activity = on_tunnel_activity,
		.data = sb,
	};
	return ports_open(sb->m->loop, &pc, &sb->net->ports, e);
}

static int persist(struct sandbox *sb, struct err *e)
{
	char tunnels[PORTS_MAX * 16] = "";
	const struct ports_tunnel *t;
	size_t n = ports_tunnels(sb->net->ports, &t), len = 0;
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(tunnels + len, sizeof(tunnels) - len, "%s%u:%u", i ? "," : "",
					t[i].container_port, t[i].host_port);
	struct store_net_row row = {
		.sandbox_id = sb->id,
		.slot = sb->net->networked ? (int64_t)sb->net->link.slot : -1,
		.ifindex = sb->net->link.ifindex,
		.cgroup_id = sb->net->link.cgroup_id,
		.tunnels = tunnels,
	};
	return store_net_put(sb->m->store, &row, e);
}

int rpc_net_sandbox_setup(struct sandbox *sb, struct err *e)
{
	struct manager *m = sb->m;
	const Corral__V1__CreateSandboxRequest *spec = sb->spec;
	if (!spec->network && !spec->n_ports)
		return 0;
	sb->net = calloc(1, sizeof(*sb->net));
	if (!sb->net)
		return err_set(e, ENOMEM, "sandbox network");
	int r;
	if (spec->network) {
		int cgfd = sb->cg ? cgroup_set_v2_fd(sb->cg) : -1;
		if ((r = netpolicy_ready(m->net, NULL, 0, e)) < 0)
			goto fail;
		r = netpolicy_attach(m->net, sb->init_pid, cgfd, spec->network->cidr_allowlist,
				     spec->network->n_cidr_allowlist, &sb->net->link, e);
		if (r < 0)
			goto fail;
		sb->net->networked = true;
	}
	if ((r = open_ports(sb, sb->pidfd, NULL, e)) < 0 || (r = persist(sb, e)) < 0)
		goto fail;
	return 0;
fail:
	err_prefix(e, "sandbox network");
	rpc_net_sandbox_release(sb);
	return r;
}

static uint16_t *parse_tunnels(const char *s, const Corral__V1__CreateSandboxRequest *spec)
{
	uint16_t *want = calloc(spec->n_ports ? spec->n_ports : 1, sizeof(*want));
	if (!want)
		return NULL;
	while (*s) {
		unsigned cport, hport;
		if (sscanf(s, "%u:%u", &cport, &hport) == 2)
			for (size_t i = 0; i < spec->n_ports; i++)
				if (spec->ports[i] == cport && hport <= 65535)
					want[i] = (uint16_t)hport;
		const char *comma = strchr(s, ',');
		if (!comma)
			break;
		s = comma + 1;
	}
	return want;
}

void rpc_net_sandbox_adopt(struct sandbox *sb)
{
	struct manager *m = sb->m;
	char tunnels[PORTS_MAX * 16];
	struct store_net_row row;
	struct err e = {0};
	if (store_net_get(m->store, sb->id, &row, tunnels, sizeof(tunnels), &e) < 0)
		return;
	sb->net = calloc(1, sizeof(*sb->net));
	if (!sb->net)
		return;
	if (row.slot >= 0) {
		sb->net->networked = true;
		sb->net->link = (struct netpolicy_link){(uint32_t)row.slot, row.ifindex, row.cgroup_id};
		int cgfd = sb->cg ? cgroup_set_v2_fd(sb->cg) : -1;
		/* The first adopted sandbox lends its programs' maps to the new daemon. */
		if (sb->state == SANDBOX_RUNNING && cgfd >= 0 && netpolicy_ready(m->net, &cgfd, 1, &e) < 0)
			log_warn("sandbox %s: networking: %s", sb->id, e.msg);
		if (netpolicy_adopt(m->net, &sb->net->link, &e) < 0)
			log_warn("sandbox %s: networking: %s", sb->id, e.msg);
	}
	if (sb->state != SANDBOX_RUNNING || !sb->spec->n_ports)
		return;
	_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, sb->init_pid, 0);
	_cleanup_free_ uint16_t *want = parse_tunnels(row.tunnels, sb->spec);
	if (pidfd < 0 || !want || open_ports(sb, pidfd, want, &e) < 0 || persist(sb, &e) < 0)
		log_warn("sandbox %s: reopen tunnels: %s", sb->id, e.msg[0] ? e.msg : "init is gone");
}

void rpc_net_sandbox_release(struct sandbox *sb)
{
	struct sandbox_net *n = sb->net;
	if (!n)
		return;
	ports_close(n->ports);
	n->ports = NULL;
	if (n->networked)
		netpolicy_release(sb->m->net, &n->link);
	n->networked = false;
	struct err e = {0};
	if (store_net_delete(sb->m->store, sb->id, &e) < 0)
		log_warn("sandbox %s: %s", sb->id, e.msg);
	free(n);
	sb->net = NULL;
}

void rpc_net_sandbox_free(struct sandbox *sb)
{
	if (!sb->net)
		return;
	ports_close(sb->net->ports);
	free(sb->net);
	sb->net = NULL;
}

bool rpc_net_sandbox_busy(const struct sandbox *sb)
{
	return sb->net && ports_open_connections(sb->net->ports) > 0;
}

bool rpc_net_counters(const struct sandbox *sb, Corral__V1__NetworkCounters *out)
{
	if (!sb->net || !sb->net->networked)
		return false;
	struct netpol_counters c;
	if (netpolicy_counters(sb->m->net, &sb->net->link, &c) < 0)
		return false;
	out->allowed_bytes = c.allowed_bytes;
	out->allowed_packets = c.allowed_packets;
	out->denied_bytes = c.denied_bytes;
	out->denied_packets = c.denied_packets;
	return true;
}

/* ---- RPCs ------------------------------------------------------------------------------------ */


/* The spec with a new network policy, persisted (GetSandbox shows it; adoption keeps it). */
static int spec_set_network(struct sandbox *sb, Corral__V1__NetworkPolicy *net, struct err *e)
{
	Corral__V1__CreateSandboxRequest tmp = *sb->spec;
	tmp.network = net;
	size_t len = corral__v1__create_sandbox_request__get_packed_size(&tmp);
	_cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return err_set(e, ENOMEM, "network policy");
	corral__v1__create_sandbox_request__pack(&tmp, buf);
	Corral__V1__CreateSandboxRequest *copy = corral__v1__create_sandbox_request__unpack(NULL, len, buf);
	if (!copy)
		return err_set(e, ENOMEM, "network policy");
	int r = store_sandbox_set_spec(sb->m->store, sb->id, buf, len, e);
	if (r < 0) {
		corral__v1__create_sandbox_request__free_unpacked(copy, NULL);
		return r;
	}
	corral__v1__create_sandbox_request__free_unpacked(sb->spec, NULL);
	sb->spec = copy;
	return 0;
}

static void update_network_policy(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	struct manager *m = ctx;
	const Corral__V1__UpdateNetworkPolicyRequest *req = (const Corral__V1__UpdateNetworkPolicyRequest *)msg;
	struct sandbox *sb = rpc_lookup_sandbox(m, call, req->sandbox_id);
	if (!sb)
		return;
	struct err e = {0};
	if (!req->network) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
				 "network is required (an empty cidr_allowlist denies all outbound traffic)");
		return;
	}
	if (rpc_net_validate(req->network, NULL, 0, &e) < 0)
		return status_reply_err(call, &e);
	if (sb->state != SANDBOX_RUNNING) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "sandbox %s is not running", sb->id);
		return;
	}
	if (!sb->net || !sb->net->networked) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
				 "sandbox %s was created without network; networking is chosen at creation", sb->id);
		return;
	}
	if (netpolicy_update(m->net, &sb->net->link, req->network->cidr_allowlist, req->network->n_cidr_allowlist,
			     &e) < 0 ||
	    spec_set_network(sb, req->network, &e) < 0)
		return status_reply_err(call, &e);
	struct sandbox_pb pb;
	if (sandbox_pb_fill(sb, &pb) < 0) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	Corral__V1__UpdateNetworkPolicyResponse resp = CORRAL__V1__UPDATE_NETWORK_POLICY_RESPONSE__INIT;
	resp.sandbox = &pb.msg;
	if (grpc_call_send(call, &resp.base) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	sandbox_pb_release(&pb);
}

static void get_sandbox_tunnels(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__GetSandboxTunnelsRequest *req = (const Corral__V1__GetSandboxTunnelsRequest *)msg;
	struct sandbox *sb = rpc_lookup_sandbox(ctx, call, req->sandbox_id);
	if (!sb)
		return;
	const struct ports_tunnel *t;
	size_t n = sb->state == SANDBOX_RUNNING && sb->net ? ports_tunnels(sb->net->ports, &t) : 0;
	Corral__V1__Tunnel tun[PORTS_MAX], *ptrs[PORTS_MAX];
	for (size_t i = 0; i < n; i++) {
		corral__v1__tunnel__init(&tun[i]);
		tun[i].container_port = t[i].container_port;
		tun[i].host = (char *)t[i].host;
		tun[i].host_port = t[i].host_port;
		ptrs[i] = &tun[i];
	}
	Corral__V1__GetSandboxTunnelsResponse resp = CORRAL__V1__GET_SANDBOX_TUNNELS_RESPONSE__INIT;
	resp.n_tunnels = n;
	resp.tunnels = ptrs;
	if (grpc_call_send(call, &resp.base) == 0)
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

#define NET_METHOD(name, req, fn) \
	{"/corral.v1.SandboxService/" name, GRPC_METHOD_UNARY, &corral__v1__##req##__descriptor, fn}

static const struct grpc_method net_methods[] = {
	NET_METHOD("UpdateNetworkPolicy", update_network_policy_request, update_network_policy),
	NET_METHOD("GetSandboxTunnels", get_sandbox_tunnels_request, get_sandbox_tunnels),
};

const struct rpc_methods rpc_net_methods = {net_methods, ARRAY_SIZE(net_methods)};
