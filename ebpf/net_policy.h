/* Types shared by net_policy.bpf.c and its user-space loader (netpolicy/netbpf.c, policy.c).
 * The BPF side gets __u32/__u64 from vmlinux.h, user space from <linux/types.h>, included first.
 *
 * One set of maps serves every networked sandbox of a daemon. A sandbox is known by its slot (its
 * index in the address pool); its cgroup id and the ifindex of its host-side veth map to the slot.
 * Its policy lives in the allow tries under a policy id (two per slot, alternating, so that an
 * update is published by one atomic store of the slot's policy id). */
#pragma once

#define NETPOL_MAX_SLOTS 65536   /* slots, cgroups and interfaces tracked at once */
#define NETPOL_MAX_ALLOW 64      /* allowlist entries per sandbox (per family) */
#define NETPOL_MAX_DENY 256      /* always-denied prefixes per family, all sandboxes together */
#define NETPOL_MAX_DNS 8         /* resolvers per family */

/* Prefix length of the policy-id part of an allow-trie key. */
#define NETPOL_POLICY_BITS 32

struct netpol_allow4_key {
	__u32 prefixlen; /* NETPOL_POLICY_BITS + prefix length of the CIDR */
	__u32 policy;    /* big-endian policy id: the trie matches it bit by bit */
	__u32 addr;      /* network byte order */
};

struct netpol_allow6_key {
	__u32 prefixlen;
	__u32 policy;
	__u8 addr[16];
};

struct netpol_deny4_key {
	__u32 prefixlen;
	__u32 addr;
};

struct netpol_deny6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Value of every trie: the prefix length of the entry. An allow entry wins over a deny entry only
 * when it is at least as specific (so "0.0.0.0/0" does not open 10.0.0.0/8; "10.1.0.0/16" does). */
struct netpol_match {
	__u32 plen;
};

struct netpol_slot {
	__u32 addr4;   /* the sandbox's own address, network byte order */
	__u32 policy;  /* current policy id (big-endian, as in the allow keys) */
};

struct netpol_counters {
	__u64 allowed_bytes;
	__u64 allowed_packets;
	__u64 denied_bytes;
	__u64 denied_packets;
};
