#include "netpolicy/policy.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/cleanup.h"
#include "util/misc.h"

/* Denied unless listed (see policy.h). */
static const char *const policy_builtin_denied[] = {
	"0.0.0.0/8",      "10.0.0.0/8",   "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24",   "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
	"::/128",         "::1/128",      "::ffff:0:0/96", "64:ff9b:1::/48", "fc00::/7", "fe80::/10",
	"fec0::/10",      "ff00::/8",
};

int policy_parse_cidr(const char *s, struct policy_prefix *ret, struct err *e)
{
	char buf[64];
	size_t len = strlen(s);
	if (len == 0 || len >= sizeof(buf))
		return err_setx(e, EINVAL, "CIDR \"%.64s\": expected ADDRESS/PREFIX", s);
	memcpy(buf, s, len + 1);
	char *slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	struct policy_prefix p = {0};
	if (inet_pton(AF_INET, buf, p.addr) == 1) {
		p.family = AF_INET;
		p.plen = 32;
	} else if (inet_pton(AF_INET6, buf, p.addr) == 1) {
		p.family = AF_INET6;
		p.plen = 128;
	} else {
		return err_setx(e, EINVAL, "CIDR \"%s\": not an IPv4 or IPv6 address", s);
	}
	if (slash) {
		uint64_t v;
		if (!parse_u64(slash + 1, &v) || v > p.plen)
			return err_setx(e, EINVAL, "CIDR \"%s\": prefix length must be 0..%u", s, p.plen);
		p.plen = (uint32_t)v;
	}
	size_t bytes = p.family == AF_INET ? 4 : 16;
	for (size_t i = 0; i < bytes; i++) { /* clear host bits: the trie compares only the prefix */
		uint32_t bit0 = (uint32_t)i * 8;
		if (bit0 >= p.plen)
			p.addr[i] = 0;
		else if (bit0 + 8 > p.plen)
			p.addr[i] &= (uint8_t)(0xff << (8 - (p.plen - bit0)));
	}
	*ret = p;
	return 0;
}

static int deny_add(struct netbpf *b, const struct policy_prefix *p, struct err *e)
{
	struct netpol_match v = {.plen = p->plen};
	int r;
	if (p->family == AF_INET) {
		struct netpol_deny4_key k = {.prefixlen = p->plen};
		memcpy(&k.addr, p->addr, 4);
		r = bpf_map_update_elem(netbpf_map_fd(b, NETBPF_DENY4), &k, &v, BPF_ANY);
	} else {
		struct netpol_deny6_key k = {.prefixlen = p->plen};
		memcpy(k.addr, p->addr, 16);
		r = bpf_map_update_elem(netbpf_map_fd(b, NETBPF_DENY6), &k, &v, BPF_ANY);
	}
	return r < 0 ? err_set(e, errno, "write the denied ranges") : 0;
}

int policy_load_denied(struct netbpf *b, const char *pool_cidr, struct err *e)
{
	struct policy_prefix p;
	int r;
	for (size_t i = 0; i < ARRAY_SIZE(policy_builtin_denied); i++)
		if ((r = policy_parse_cidr(policy_builtin_denied[i], &p, e)) < 0 || (r = deny_add(b, &p, e)) < 0)
			return r;
	if ((r = policy_parse_cidr(pool_cidr, &p, e)) < 0 || (r = deny_add(b, &p, e)) < 0)
		return r;
	struct ifaddrs *ifa = NULL;
	if (getifaddrs(&ifa) < 0)
		return err_set(e, errno, "list the host's addresses");
	for (struct ifaddrs *i = ifa; i && r == 0; i = i->ifa_next) {
		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
			continue;
		memset(&p, 0, sizeof(p));
		p.family = i->ifa_addr->sa_family;
		if (p.family == AF_INET) {
			memcpy(p.addr, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
			p.plen = 32;
		} else {
			memcpy(p.addr, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
			p.plen = 128;
		}
		r = deny_add(b, &p, e);
	}
	freeifaddrs(ifa);
	return r;
}

static int dns_add(struct netbpf *b, const char *addr)
{
	struct in_addr a;
	uint8_t one = 1;
	if (inet_pton(AF_INET, addr, &a) != 1 || (ntohl(a.s_addr) >> 24) == 127)
		return 0;
	return bpf_map_update_elem(netbpf_map_fd(b, NETBPF_DNS4), &a.s_addr, &one, BPF_ANY) < 0 ? -errno : 0;
}

int policy_load_dns(struct netbpf *b, const char *list, struct err *e)
{
	char buf[512];
	if (list && *list) {
		snprintf(buf, sizeof(buf), "%s", list);
		for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			if (dns_add(b, tok) < 0)
				return err_set(e, errno, "add resolver %s", tok);
		return 0;
	}
	_cleanup_fclose_ FILE *f = fopen("/etc/resolv.conf", "re");
	if (!f)
		return 0; /* no resolvers: DNS is simply not reachable */
	while (fgets(buf, sizeof(buf), f)) {
		char addr[64];
		if (sscanf(buf, " nameserver %63s", addr) == 1 && dns_add(b, addr) < 0)
			return err_set(e, errno, "add resolver %s", addr);
	}
	return 0;
}

void policy_erase(struct netbpf *b, uint32_t policy)
{
	/* Walk the tries and drop this policy's keys; deleting while walking restarts the walk. */
	int fd4 = netbpf_map_fd(b, NETBPF_ALLOW4), fd6 = netbpf_map_fd(b, NETBPF_ALLOW6);
	struct netpol_allow4_key k4, n4;
	void *prev = NULL;
	while (bpf_map_get_next_key(fd4, prev, &n4) == 0) {
		if (n4.policy == policy) {
			bpf_map_delete_elem(fd4, &n4);
			prev = NULL;
			continue;
		}
		k4 = n4;
		prev = &k4;
	}
	struct netpol_allow6_key k6, n6;
	prev = NULL;
	while (bpf_map_get_next_key(fd6, prev, &n6) == 0) {
		if (n6.policy == policy) {
			bpf_map_delete_elem(fd6, &n6);
			prev = NULL;
			continue;
		}
		k6 = n6;
		prev = &k6;
	}
}

int policy_write(struct netbpf *b, uint32_t policy, char *const *cidrs, size_t n, struct err *e)
{
	policy_erase(b, policy);
	for (size_t i = 0; i < n; i++) {
		struct policy_prefix p;
		int r = policy_parse_cidr(cidrs[i], &p, e);
		if (r < 0)
			return r;
		struct netpol_match v = {.plen = p.plen};
		if (p.family == AF_INET) {
			struct netpol_allow4_key k = {.prefixlen = NETPOL_POLICY_BITS + p.plen, .policy = policy};
			memcpy(&k.addr, p.addr, 4);
			r = bpf_map_update_elem(netbpf_map_fd(b, NETBPF_ALLOW4), &k, &v, BPF_ANY);
		} else {
			struct netpol_allow6_key k = {.prefixlen = NETPOL_POLICY_BITS + p.plen, .policy = policy};
			memcpy(k.addr, p.addr, 16);
			r = bpf_map_update_elem(netbpf_map_fd(b, NETBPF_ALLOW6), &k, &v, BPF_ANY);
		}
		if (r < 0)
			return err_set(e, errno, "write allowlist entry %s", cidrs[i]);
	}
	return 0;
}
