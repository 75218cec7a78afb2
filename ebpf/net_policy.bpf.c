/* Network policy of sandboxes with networking (netpolicy/): where a sandbox may send packets.
 *
 * - net_tc_ingress (tc, on the host end of each sandbox's veth: packets *from* the sandbox):
 *   the last word. Drops anything whose source is not the sandbox's own address, anything but
 *   IPv4 and ARP, and destinations the policy does not allow. Checks every packet, so a policy
 *   update cuts established flows at once.
 * - net_connect4/6, net_sendmsg4/6 (the sandbox's v2 cgroup): refuse a forbidden connect() or
 *   sendto() at once with EPERM instead of letting it hang on dropped packets.
 * - net_egress (cgroup_skb/egress): the backstop for what the socket hooks do not see (raw and
 *   ICMP sockets).
 *
 * Loopback traffic inside the sandbox's own namespace is always allowed. A lookup that misses
 * (unknown cgroup, interface or slot) denies: fail closed. */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "net_policy.h"

/* uapi constants that vmlinux.h does not carry. */
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_HLEN 14
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define EPERM_ 1
#define DNS_PORT 53

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct netpol_allow4_key);
	__type(value, struct netpol_match);
} allow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct netpol_allow6_key);
	__type(value, struct netpol_match);
} allow6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NETPOL_MAX_DENY);
	__type(key, struct netpol_deny4_key);
	__type(value, struct netpol_match);
} deny4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NETPOL_MAX_DENY);
	__type(key, struct netpol_deny6_key);
	__type(value, struct netpol_match);
} deny6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NETPOL_MAX_DNS);
	__type(key, __u32);
	__type(value, __u8);
} dns4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NETPOL_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct netpol_slot);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NETPOL_MAX_SLOTS);
	__type(key, __u64);
	__type(value, __u32);
} cg2slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NETPOL_MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} if2slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NETPOL_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct netpol_counters);
} counters SEC(".maps");

static __always_inline void count(__u32 slot, bool allowed, __u64 bytes)
{
	struct netpol_counters *c = bpf_map_lookup_elem(&counters, &slot);
	if (!c)
		return;
	if (allowed) {
		__sync_fetch_and_add(&c->allowed_packets, 1);
		__sync_fetch_and_add(&c->allowed_bytes, bytes);
	} else {
		__sync_fetch_and_add(&c->denied_packets, 1);
		__sync_fetch_and_add(&c->denied_bytes, bytes);
	}
}

/* daddr in network order; dport in host order (0 when there is none). */
static __always_inline bool allowed4(const struct netpol_slot *s, __u32 daddr, __u32 dport, __u32 proto)
{
	if (dport == DNS_PORT && (proto == IPPROTO_UDP_ || proto == IPPROTO_TCP_) && bpf_map_lookup_elem(&dns4, &daddr))
		return true;
	struct netpol_allow4_key ak = {.prefixlen = NETPOL_POLICY_BITS + 32, .policy = s->policy, .addr = daddr};
	struct netpol_match *a = bpf_map_lookup_elem(&allow4, &ak);
	if (!a)
		return false;
	struct netpol_deny4_key dk = {.prefixlen = 32, .addr = daddr};
	struct netpol_match *d = bpf_map_lookup_elem(&deny4, &dk);
	return !d || a->plen >= d->plen;
}

static __always_inline bool allowed6(const struct netpol_slot *s, const __u32 *daddr)
{
	struct netpol_allow6_key ak = {.prefixlen = NETPOL_POLICY_BITS + 128, .policy = s->policy};
	struct netpol_deny6_key dk = {.prefixlen = 128};
	__builtin_memcpy(ak.addr, daddr, 16);
	__builtin_memcpy(dk.addr, daddr, 16);
	struct netpol_match *a = bpf_map_lookup_elem(&allow6, &ak);
	if (!a)
		return false;
	struct netpol_match *d = bpf_map_lookup_elem(&deny6, &dk);
	return !d || a->plen >= d->plen;
}

static __always_inline bool is_loopback4(__u32 daddr) { return (bpf_ntohl(daddr) >> 24) == 127; }

static __always_inline bool is_loopback6(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

static __always_inline bool is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

static __always_inline const struct netpol_slot *slot_of_task(__u32 *slot_ret)
{
	__u64 cg = bpf_get_current_cgroup_id();
	__u32 *slot = bpf_map_lookup_elem(&cg2slot, &cg);
	if (!slot)
		return NULL;
	*slot_ret = *slot;
	return bpf_map_lookup_elem(&slots, slot);
}

/* ---- socket hooks: refuse at once ---------------------------------------------------------- */

static __always_inline int sock_addr4(struct bpf_sock_addr *ctx)
{
	__u32 slot = 0, daddr = ctx->user_ip4;
	const struct netpol_slot *s = slot_of_task(&slot);
	if (!s)
		return 0;
	if (is_loopback4(daddr) || daddr == s->addr4)
		return 1;
	if (allowed4(s, daddr, bpf_ntohs((__u16)ctx->user_port), ctx->protocol))
		return 1;
	count(slot, false, 0);
	return 0;
}

static __always_inline int sock_addr6(struct bpf_sock_addr *ctx)
{
	__u32 slot = 0, a[4];
	const struct netpol_slot *s = slot_of_task(&slot);
	if (!s)
		return 0;
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	if (is_loopback6(a))
		return 1;
	/* ::ffff:a.b.c.d reaches a.b.c.d without passing connect4: judge it as IPv4. */
	if (is_v4mapped(a)) {
		if (is_loopback4(a[3]) || a[3] == s->addr4)
			return 1;
		if (allowed4(s, a[3], bpf_ntohs((__u16)ctx->user_port), ctx->protocol))
			return 1;
	} else if (allowed6(s, a)) {
		return 1;
	}
	count(slot, false, 0);
	return 0;
}

SEC("cgroup/connect4")
int net_connect4(struct bpf_sock_addr *ctx) { return sock_addr4(ctx); }

SEC("cgroup/connect6")
int net_connect6(struct bpf_sock_addr *ctx) { return sock_addr6(ctx); }

SEC("cgroup/sendmsg4")
int net_sendmsg4(struct bpf_sock_addr *ctx) { return sock_addr4(ctx); }

SEC("cgroup/sendmsg6")
int net_sendmsg6(struct bpf_sock_addr *ctx) { return sock_addr6(ctx); }

/* ---- packets --------------------------------------------------------------------------------- */

struct l3 {
	__u32 saddr, daddr;
	__u32 proto, dport;
};

/* Parse the IPv4 header at off (and the ports of a first fragment). */
static __always_inline int parse_ip4(struct __sk_buff *skb, __u32 off, struct l3 *out)
{
	struct iphdr ip;
	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return -1;
	out->saddr = ip.saddr;
	out->daddr = ip.daddr;
	out->proto = ip.protocol;
	out->dport = 0;
	__u32 ihl = ip.ihl * 4;
	if (ihl < sizeof(ip))
		return -1;
	/* Only a first fragment carries ports; later ones get no DNS exemption. */
	if ((ip.frag_off & bpf_htons(0x1fff)) == 0 && (ip.protocol == IPPROTO_TCP_ || ip.protocol == IPPROTO_UDP_)) {
		__u16 ports[2];
		if (bpf_skb_load_bytes(skb, off + ihl, ports, sizeof(ports)) == 0)
			out->dport = bpf_ntohs(ports[1]);
	}
	return 0;
}

SEC("cgroup_skb/egress")
int net_egress(struct __sk_buff *skb)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	__u32 *slot = bpf_map_lookup_elem(&cg2slot, &cg);
	if (!slot)
		return 0;
	const struct netpol_slot *s = bpf_map_lookup_elem(&slots, slot);
	if (!s)
		return 0;
	bool ok = false;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct l3 p;
		if (parse_ip4(skb, 0, &p) == 0)
			ok = is_loopback4(p.daddr) || p.daddr == s->addr4 || allowed4(s, p.daddr, p.dport, p.proto);
	} else if (skb->ifindex == 1) {
		ok = true; /* IPv6 on the sandbox's own loopback */
	} else if (skb->protocol == bpf_htons(0x86DD)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) == 0) {
			__u32 a[4];
			__builtin_memcpy(a, &ip6.daddr, 16);
			ok = is_loopback6(a) || (!is_v4mapped(a) && allowed6(s, a));
		}
	}
	if (!ok)
		count(*slot, false, skb->len);
	return ok;
}

SEC("tc")
int net_tc_ingress(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ingress_ifindex;
	__u32 *slot = bpf_map_lookup_elem(&if2slot, &ifindex);
	if (!slot)
		return TC_ACT_SHOT;
	const struct netpol_slot *s = bpf_map_lookup_elem(&slots, slot);
	if (!s)
		return TC_ACT_SHOT;
	bool ok = false;
	if (skb->protocol == bpf_htons(ETH_P_ARP)) {
		/* Ethernet/IPv4 ARP only, claiming the sandbox's own address. */
		struct {
			__u16 htype, ptype;
			__u8 hlen, plen;
			__u16 op;
			__u8 sha[6];
			__u8 spa[4];
		} __attribute__((packed)) arp;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &arp, sizeof(arp)) == 0) {
			__u32 spa;
			__builtin_memcpy(&spa, arp.spa, 4);
			ok = arp.htype == bpf_htons(1) && arp.ptype == bpf_htons(ETH_P_IP) && arp.hlen == 6 &&
			     arp.plen == 4 && spa == s->addr4;
		}
	} else if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct l3 p;
		if (parse_ip4(skb, ETH_HLEN, &p) == 0)
			ok = p.saddr == s->addr4 && allowed4(s, p.daddr, p.dport, p.proto);
	}
	/* Anything else (IPv6, VLAN tags, other ethertypes) never leaves. */
	count(*slot, ok, skb->len);
	return ok ? TC_ACT_OK : TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
