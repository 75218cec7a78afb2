/* A sandbox's network policy, turned into entries of the BPF maps (netbpf.h).
 *
 * Allowed: a destination matched by the sandbox's allowlist, unless an always-denied prefix
 * matches it more specifically than the allowlist entry does. Always denied: the host's own
 * addresses, the pool (every sandbox and every host end), loopback, link-local (169.254.0.0/16,
 * fe80::/10: cloud metadata), RFC 1918, 100.64.0.0/10, ULA fc00::/7, multicast and the other
 * special ranges below. So "0.0.0.0/0" opens the internet but not 10.0.0.0/8, while an entry
 * inside a denied range ("10.1.2.0/24", or "10.0.0.0/8" itself) opens exactly that. DNS (port 53)
 * to the configured resolvers is allowed to every networked sandbox. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netpolicy/netbpf.h"
#include "util/err.h"

struct policy_prefix {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network byte order; host bits cleared */
	uint32_t plen;
};

/* "A.B.C.D/N", "X::Y/N" or a bare address (a host route). */
int policy_parse_cidr(const char *s, struct policy_prefix *ret, struct err *e);
/* Fill the deny tries: the built-in list, the pool's subnet and the addresses of every interface
 * of the calling thread's namespace. */
int policy_load_denied(struct netbpf *b, const char *pool_cidr, struct err *e);
/* Resolvers: a comma-separated list of IPv4 addresses, or "" for the nameservers of
 * /etc/resolv.conf (loopback resolvers are skipped: they are not reachable from a sandbox). */
int policy_load_dns(struct netbpf *b, const char *list, struct err *e);
/* Write the allow entries of policy id `policy` (previous entries under that id are erased). */
int policy_write(struct netbpf *b, uint32_t policy, char *const *cidrs, size_t n, struct err *e);
/* Erase every allow entry of policy id `policy`. */
void policy_erase(struct netbpf *b, uint32_t policy);
