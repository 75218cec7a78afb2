/* Loader of ebpf/net_policy.bpf.c through its libbpf skeleton: one load per daemon, programs
 * attached per sandbox, per-sandbox state in the programs' shared maps.
 *
 * Attachments outlive the daemon on purpose: the cgroup programs are attached the legacy way
 * (BPF_PROG_ATTACH, BPF_F_ALLOW_MULTI), which stays with the cgroup until it is removed, and the
 * tc program is a classifier on the host veth's clsact qdisc, which stays with the interface. A
 * restarted daemon takes the maps over from the programs still attached to an adopted sandbox's
 * cgroup (prog query -> map ids), so policies and counters survive and no bpffs mount is needed. */
#pragma once
#include <linux/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ebpf/net_policy.h"
#include "util/err.h"

struct netbpf;

enum netbpf_map { NETBPF_ALLOW4, NETBPF_ALLOW6, NETBPF_DENY4, NETBPF_DENY6, NETBPF_DNS4, NETBPF_SLOTS,
		  NETBPF_CG2SLOT, NETBPF_IF2SLOT, NETBPF_COUNTERS, NETBPF_NMAPS };

/* Load the programs. old_cgroup_fds: v2 cgroups of adopted sandboxes whose attached programs' maps
 * are taken over (the first that works); none or none usable: fresh maps. *ret_reused tells. */
int netbpf_open(const int *old_cgroup_fds, size_t n_old, struct netbpf **ret, bool *ret_reused, struct err *e);
void netbpf_free(struct netbpf *b);
int netbpf_map_fd(const struct netbpf *b, enum netbpf_map m);
/* connect4/6, sendmsg4/6 and cgroup_skb egress on a v2 cgroup. */
int netbpf_attach_cgroup(struct netbpf *b, int cgroup_fd, struct err *e);
/* The tc classifier on ingress of a host-side interface (packets coming from the sandbox). */
int netbpf_attach_tc(struct netbpf *b, int ifindex, struct err *e);
