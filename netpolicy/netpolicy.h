/* Per-sandbox networking: what the daemon calls. Ties together the address pool (addrpool),
 * the veth link (veth, netns), NAT (nat) and the eBPF enforcement (netbpf, policy).
 *
 * Setup of a networked sandbox, right after its init is spawned (no user process yet):
 * a pool pair -> its policy in the maps -> the cgroup programs on its v2 cgroup -> the veth, host
 * end down -> the tc program on the host end -> host end up. Teardown: the kernel removes the veth
 * with the sandbox's namespace; netpolicy_release drops the map entries and the pool pair. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "netpolicy/netbpf.h"
#include "util/err.h"

struct netpolicy_config {
	char subnet[64];    /* the pool, e.g. "10.88.0.0/16" */
	char uplink[16];    /* "" : the interface of the default route */
	char dns[256];      /* comma-separated resolvers; "": the host's /etc/resolv.conf */
	char nat_table[64]; /* nftables table of this daemon */
};

struct netpolicy;

/* A networked sandbox's link, as recorded for adoption. */
struct netpolicy_link {
	uint32_t slot;      /* index in the pool */
	int ifindex;        /* host end */
	uint64_t cgroup_id; /* its v2 cgroup */
};

/* Parse the configuration; nothing is touched on the host until netpolicy_ready. */
int netpolicy_new(const struct netpolicy_config *cfg, struct netpolicy **ret, struct err *e);
/* Free; with no networked sandbox left, also remove the NAT table and switch forwarding back
 * off if netpolicy_ready switched it on. */
void netpolicy_free(struct netpolicy *np);
/* Load the BPF programs (taking maps over from old_cgroup_fds, see netbpf_open), fill the
 * denied and DNS maps, set up NAT and forwarding. Idempotent; done on first need. */
int netpolicy_ready(struct netpolicy *np, const int *old_cgroup_fds, size_t n_old, struct err *e);
bool netpolicy_is_ready(const struct netpolicy *np);
/* Set up networking for a sandbox whose init is pid (our child) in v2 cgroup cgroup_fd. */
int netpolicy_attach(struct netpolicy *np, pid_t pid, int cgroup_fd, char *const *allow, size_t n_allow,
		     struct netpolicy_link *ret, struct err *e);
/* Re-register a sandbox set up by an earlier daemon (its pool pair). */
int netpolicy_adopt(struct netpolicy *np, const struct netpolicy_link *l, struct err *e);
/* Replace the allowlist; takes effect for the next packet. */
int netpolicy_update(struct netpolicy *np, const struct netpolicy_link *l, char *const *allow, size_t n_allow,
		     struct err *e);
int netpolicy_counters(struct netpolicy *np, const struct netpolicy_link *l, struct netpol_counters *ret);
/* Forget the sandbox: map entries and pool pair (its veth goes with its namespace). */
void netpolicy_release(struct netpolicy *np, const struct netpolicy_link *l);
/* The sandbox's address ("10.88.0.3"). */
void netpolicy_sandbox_addr(const struct netpolicy *np, uint32_t slot, char *buf, size_t size);
uint32_t netpolicy_pool_used(const struct netpolicy *np);
