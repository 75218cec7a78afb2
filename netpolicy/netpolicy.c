#include "netpolicy/netpolicy.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "netpolicy/addrpool.h"
#include "netpolicy/nat.h"
#include "netpolicy/netns.h"
#include "netpolicy/policy.h"
#include "netpolicy/veth.h"
#include "util/cleanup.h"

struct netpolicy {
	struct netpolicy_config cfg;
	struct addrpool pool;
	struct netbpf *bpf; /* NULL until netpolicy_ready */
	struct nl_sock *nl;
	bool nat_up;            /* our nftables table exists */
	bool forwarding_changed; /* we switched ip_forward on */
};

/* Two policy ids per slot, alternating on update: the new entries are complete before the slot
 * switches to them with one map write. */
static uint32_t policy_id(uint32_t slot, uint32_t gen) { return htonl(slot * 2 + (gen & 1)); }

int netpolicy_new(const struct netpolicy_config *cfg, struct netpolicy **ret, struct err *e)
{
	struct netpolicy *np = calloc(1, sizeof(*np));
	if (!np)
		return err_set(e, ENOMEM, "netpolicy");
	np->cfg = *cfg;
	int r = addrpool_init(&np->pool, cfg->subnet, e);
	if (r < 0) {
		free(np);
		return r;
	}
	*ret = np;
	return 0;
}

void netpolicy_free(struct netpolicy *np)
{
	if (!np)
		return;
	/* No networked sandbox left (they outlive the daemon otherwise): leave the host as found. */
	if (np->pool.used_count == 0) {
		if (np->nat_up)
			nat_teardown(np->cfg.nat_table, NULL);
		if (np->forwarding_changed)
			nat_restore_forwarding();
	}
	netbpf_free(np->bpf);
	veth_socket_free(np->nl);
	addrpool_free(&np->pool);
	free(np);
}

bool netpolicy_is_ready(const struct netpolicy *np) { return np->bpf != NULL; }

int netpolicy_ready(struct netpolicy *np, const int *old_cgroup_fds, size_t n_old, struct err *e)
{
	if (np->bpf)
		return 0;
	int r;
	if (!np->nl && (r = veth_socket_new(&np->nl, e)) < 0)
		return r;
	if (!np->cfg.uplink[0] && (r = nat_default_uplink(np->cfg.uplink, sizeof(np->cfg.uplink), e)) < 0)
		return r;
	if (!np->forwarding_changed && (r = nat_enable_forwarding(&np->forwarding_changed, e)) < 0)
		return r;
	char subnet[64];
	struct in_addr base = {htonl(np->pool.base)};
	snprintf(subnet, sizeof(subnet), "%s/%u", inet_ntoa(base), np->pool.prefix);
	if ((r = nat_setup(np->cfg.nat_table, subnet, np->cfg.uplink, e)) < 0)
		return r;
	np->nat_up = true;
	struct netbpf *b;
	bool reused;
	if ((r = netbpf_open(old_cgroup_fds, n_old, &b, &reused, e)) < 0)
		return r;
	if ((r = policy_load_denied(b, subnet, e)) < 0 || (r = policy_load_dns(b, np->cfg.dns, e)) < 0) {
		netbpf_free(b);
		return r;
	}
	np->bpf = b;
	return 0;
}

/* In the sandbox's namespace. A TCP flow whose packets the policy drops leaves, once its process
 * is killed, an orphaned socket retransmitting into the void; such a socket holds the namespace
 * (and so the veth) for minutes at the default of 8 orphan retries. One retry bounds that to a
 * few seconds. */
static int tune_netns(struct err *e)
{
	_cleanup_close_ int fd = open("/proc/sys/net/ipv4/tcp_orphan_retries", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "1\n", 2) != 2)
		return err_set(e, errno, "set tcp_orphan_retries in the sandbox");
	return 0;
}

static int cgroup_id_of(int cgroup_fd, uint64_t *ret, struct err *e)
{
	struct stat st;
	if (fstat(cgroup_fd, &st) < 0)
		return err_set(e, errno, "stat the sandbox's cgroup");
	*ret = st.st_ino; /* a cgroup's id is its kernfs inode number */
	return 0;
}

static int slot_register(struct netpolicy *np, const struct netpolicy_link *l, uint32_t gen, char *const *allow,
			 size_t n_allow, struct err *e)
{
	struct in_addr host, sb;
	addrpool_addrs(&np->pool, l->slot, &host, &sb);
	struct netpol_slot s = {.addr4 = sb.s_addr, .policy = policy_id(l->slot, gen)};
	struct netpol_counters zero = {0};
	int r = policy_write(np->bpf, s.policy, allow, n_allow, e);
	if (r < 0)
		return r;
	if (bpf_map_update_elem(netbpf_map_fd(np->bpf, NETBPF_COUNTERS), &l->slot, &zero, BPF_NOEXIST) < 0 &&
	    errno != EEXIST)
		return err_set(e, errno, "network counters");
	if (bpf_map_update_elem(netbpf_map_fd(np->bpf, NETBPF_SLOTS), &l->slot, &s, BPF_ANY) < 0 ||
	    bpf_map_update_elem(netbpf_map_fd(np->bpf, NETBPF_CG2SLOT), &l->cgroup_id, &l->slot, BPF_ANY) < 0)
		return err_set(e, errno, "register the sandbox in the policy maps");
	return 0;
}

int netpolicy_attach(struct netpolicy *np, pid_t pid, int cgroup_fd, char *const *allow, size_t n_allow,
		     struct netpolicy_link *ret, struct err *e)
{
	if (!np->bpf)
		return err_setx(e, EIO, "networking is not initialised");
	if (cgroup_fd < 0)
		return err_setx(e, EOPNOTSUPP, "networking needs a cgroup v2 hierarchy (for its BPF policy)");
	struct netpolicy_link l = {.ifindex = 0};
	int r = cgroup_id_of(cgroup_fd, &l.cgroup_id, e);
	if (r < 0)
		return r;
	if (addrpool_alloc(&np->pool, &l.slot) < 0)
		return err_setx(e, ENOSPC, "the network address pool %s is exhausted", np->cfg.subnet);
	if ((r = slot_register(np, &l, 0, allow, n_allow, e)) < 0)
		goto undo_slot;
	/* Before anything in the sandbox can open a socket: every socket it makes is judged. */
	if ((r = netbpf_attach_cgroup(np->bpf, cgroup_fd, e)) < 0)
		goto undo_slot;
	_cleanup_close_ int nsfd = -1;
	if ((r = netns_open_pid(pid, &nsfd, e)) < 0)
		goto undo_slot;
	char name[16];
	snprintf(name, sizeof(name), "crl%x", l.slot);
	struct veth_config vc = {.host_name = name, .peer_name = "eth0", .netns_fd = nsfd, .prefix = 31,
				 .inside = tune_netns};
	addrpool_addrs(&np->pool, l.slot, &vc.host_addr, &vc.peer_addr);
	/* A leftover link of this name (a daemon that died mid-setup) would block the pair. */
	if ((r = veth_create(np->nl, &vc, &l.ifindex, e)) == -EEXIST) {
		veth_delete(np->nl, name, NULL);
		err_clear(e);
		r = veth_create(np->nl, &vc, &l.ifindex, e);
	}
	if (r < 0)
		goto undo_slot;
	if (bpf_map_update_elem(netbpf_map_fd(np->bpf, NETBPF_IF2SLOT), &l.ifindex, &l.slot, BPF_ANY) < 0) {
		r = err_set(e, errno, "register the sandbox's interface");
		goto undo_veth;
	}
	if ((r = netbpf_attach_tc(np->bpf, l.ifindex, e)) < 0 || (r = veth_set_up(np->nl, l.ifindex, e)) < 0)
		goto undo_veth;
	*ret = l;
	return 0;
undo_veth:
	veth_delete(np->nl, name, NULL);
undo_slot:
	netpolicy_release(np, &l); /* the cgroup programs go with the cgroup, which the caller removes */
	return r;
}

int netpolicy_adopt(struct netpolicy *np, const struct netpolicy_link *l, struct err *e)
{
	int r = addrpool_claim(&np->pool, l->slot);
	if (r < 0)
		return err_setx(e, -r, "pool pair %u recorded twice or out of the pool", l->slot);
	if (np->bpf) {
		/* Maps not taken over (say, the programs were replaced): the sandbox's entries go in again
		 * on its next policy update; until then it is denied everything (fail closed). */
		uint8_t dummy[sizeof(struct netpol_slot)];
		if (bpf_map_lookup_elem(netbpf_map_fd(np->bpf, NETBPF_SLOTS), &l->slot, dummy) < 0)
			return err_setx(e, ENOENT, "pool pair %u has no policy in the maps", l->slot);
	}
	return 0;
}

int netpolicy_update(struct netpolicy *np, const struct netpolicy_link *l, char *const *allow, size_t n_allow,
		     struct err *e)
{
	if (!np->bpf)
		return err_setx(e, EIO, "networking is not initialised");
	struct netpol_slot s;
	uint32_t gen = 0;
	if (bpf_map_lookup_elem(netbpf_map_fd(np->bpf, NETBPF_SLOTS), &l->slot, &s) == 0)
		gen = (ntohl(s.policy) & 1) ^ 1;
	int r = slot_register(np, l, gen, allow, n_allow, e);
	if (r < 0)
		return r;
	policy_erase(np->bpf, policy_id(l->slot, gen ^ 1));
	return 0;
}

int netpolicy_counters(struct netpolicy *np, const struct netpolicy_link *l, struct netpol_counters *ret)
{
	memset(ret, 0, sizeof(*ret));
	if (!np->bpf)
		return -EIO;
	return bpf_map_lookup_elem(netbpf_map_fd(np->bpf, NETBPF_COUNTERS), &l->slot, ret) < 0 ? -errno : 0;
}

void netpolicy_release(struct netpolicy *np, const struct netpolicy_link *l)
{
	if (np->bpf) {
		if (l->ifindex)
			bpf_map_delete_elem(netbpf_map_fd(np->bpf, NETBPF_IF2SLOT), &l->ifindex);
		bpf_map_delete_elem(netbpf_map_fd(np->bpf, NETBPF_CG2SLOT), &l->cgroup_id);
		bpf_map_delete_elem(netbpf_map_fd(np->bpf, NETBPF_SLOTS), &l->slot);
		bpf_map_delete_elem(netbpf_map_fd(np->bpf, NETBPF_COUNTERS), &l->slot);
		policy_erase(np->bpf, policy_id(l->slot, 0));
		policy_erase(np->bpf, policy_id(l->slot, 1));
	}
	addrpool_release(&np->pool, l->slot);
}

void netpolicy_sandbox_addr(const struct netpolicy *np, uint32_t slot, char *buf, size_t size)
{
	struct in_addr host, sb;
	addrpool_addrs(&np->pool, slot, &host, &sb);
	inet_ntop(AF_INET, &sb, buf, (socklen_t)size);
}

uint32_t netpolicy_pool_used(const struct netpolicy *np) { return np->pool.used_count; }
