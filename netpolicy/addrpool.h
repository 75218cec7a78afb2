/* The address pool of sandbox links: an IPv4 subnet (corrald --net-subnet) cut into /31
 * point-to-point pairs, one per networked sandbox: the host end gets the even address, the
 * sandbox the odd one. Allocation goes round-robin so that a just-released pair (whose veth the
 * kernel may still be tearing down) is the last to be handed out again. In memory only: the
 * daemon persists which sandbox holds which index. */
#pragma once
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

struct addrpool {
	uint32_t base;   /* first address of the subnet, host byte order */
	uint32_t prefix; /* prefix length of the subnet */
	uint32_t n;      /* number of pairs */
	uint32_t next;   /* where the next search starts */
	uint32_t used_count;
	uint8_t *used;   /* n entries: 1 = in use */
};

/* Parse "A.B.C.D/N" (N from 8 to 30) and set up an empty pool. */
int addrpool_init(struct addrpool *p, const char *cidr, struct err *e);
void addrpool_free(struct addrpool *p);
/* Take the next free pair. -ENOSPC when the pool is exhausted. */
int addrpool_alloc(struct addrpool *p, uint32_t *ret_idx);
/* Mark a recorded pair as taken (adoption after a restart). -EINVAL out of range, -EEXIST taken. */
int addrpool_claim(struct addrpool *p, uint32_t idx);
void addrpool_release(struct addrpool *p, uint32_t idx);
/* Addresses of pair idx, network byte order. */
void addrpool_addrs(const struct addrpool *p, uint32_t idx, struct in_addr *ret_host, struct in_addr *ret_sandbox);
