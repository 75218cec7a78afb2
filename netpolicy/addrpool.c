#include "netpolicy/addrpool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/misc.h"

int addrpool_init(struct addrpool *p, const char *cidr, struct err *e)
{
	char buf[64];
	memset(p, 0, sizeof(*p));
	if (strlen(cidr) >= sizeof(buf))
		return err_setx(e, EINVAL, "--net-subnet %.64s: expected A.B.C.D/N", cidr);
	memcpy(buf, cidr, strlen(cidr) + 1);
	char *slash = strchr(buf, '/');
	uint64_t plen;
	struct in_addr a;
	if (!slash)
		return err_setx(e, EINVAL, "--net-subnet %s: expected A.B.C.D/N", cidr);
	*slash = '\0';
	if (inet_pton(AF_INET, buf, &a) != 1 || !parse_u64(slash + 1, &plen) || plen < 8 || plen > 30)
		return err_setx(e, EINVAL, "--net-subnet %s: expected A.B.C.D/N with N from 8 to 30", cidr);
	uint32_t mask = (uint32_t)(0xffffffffULL << (32 - plen));
	p->base = ntohl(a.s_addr) & mask;
	p->prefix = (uint32_t)plen;
	p->n = (uint32_t)(1ULL << (32 - plen)) / 2;
	p->used = calloc(p->n, 1);
	if (!p->used)
		return err_set(e, ENOMEM, "address pool");
	return 0;
}

void addrpool_free(struct addrpool *p)
{
	free(p->used);
	p->used = NULL;
	p->n = 0;
}

int addrpool_alloc(struct addrpool *p, uint32_t *ret_idx)
{
	for (uint32_t i = 0; i < p->n; i++) {
		uint32_t idx = (p->next + i) % p->n;
		if (!p->used[idx]) {
			p->used[idx] = 1;
			p->used_count++;
			p->next = (idx + 1) % p->n;
			*ret_idx = idx;
			return 0;
		}
	}
	return -ENOSPC;
}

int addrpool_claim(struct addrpool *p, uint32_t idx)
{
	if (idx >= p->n)
		return -EINVAL;
	if (p->used[idx])
		return -EEXIST;
	p->used[idx] = 1;
	p->used_count++;
	if (idx >= p->next)
		p->next = (idx + 1) % p->n;
	return 0;
}

void addrpool_release(struct addrpool *p, uint32_t idx)
{
	if (idx < p->n && p->used[idx]) {
		p->used[idx] = 0;
		p->used_count--;
	}
}

void addrpool_addrs(const struct addrpool *p, uint32_t idx, struct in_addr *ret_host, struct in_addr *ret_sandbox)
{
	ret_host->s_addr = htonl(p->base + 2 * idx);
	ret_sandbox->s_addr = htonl(p->base + 2 * idx + 1);
}
