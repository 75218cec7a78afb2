/* netpolicy: the address pool and CIDR parsing (the BPF decisions are covered end to end by
 * tests/integration/test_network.py and tests/security/test_network_escape.py). */
#include <arpa/inet.h>

#include "netpolicy/addrpool.h"
#include "netpolicy/policy.h"
#include "testlib.h"

static void test_pool_pairs(void)
{
	struct addrpool p;
	struct err e = {0};
	CHECK(addrpool_init(&p, "10.88.0.0/29", &e) == 0);
	CHECK_EQ_INT(p.n, 4);
	uint32_t a, b;
	CHECK(addrpool_alloc(&p, &a) == 0 && addrpool_alloc(&p, &b) == 0);
	CHECK_EQ_INT(a, 0);
	CHECK_EQ_INT(b, 1);
	struct in_addr h, s;
	addrpool_addrs(&p, b, &h, &s);
	char hs[32], ss[32];
	inet_ntop(AF_INET, &h, hs, sizeof(hs));
	inet_ntop(AF_INET, &s, ss, sizeof(ss));
	CHECK_STREQ(hs, "10.88.0.2");
	CHECK_STREQ(ss, "10.88.0.3");
	/* Round robin: a released pair is handed out last. */
	addrpool_release(&p, a);
	uint32_t c;
	CHECK(addrpool_alloc(&p, &c) == 0);
	CHECK_EQ_INT(c, 2);
	CHECK(addrpool_alloc(&p, &c) == 0);
	CHECK_EQ_INT(c, 3);
	CHECK(addrpool_alloc(&p, &c) == 0);
	CHECK_EQ_INT(c, 0);
	CHECK_EQ_INT(addrpool_alloc(&p, &c), -ENOSPC);
	CHECK_EQ_INT(addrpool_claim(&p, 1), -EEXIST);
	CHECK_EQ_INT(addrpool_claim(&p, 9), -EINVAL);
	addrpool_release(&p, 1);
	CHECK_EQ_INT(addrpool_claim(&p, 1), 0);
	addrpool_free(&p);
}

static void test_pool_rejects(void)
{
	struct addrpool p;
	struct err e = {0};
	const char *bad[] = {"10.88.0.0", "10.88.0.0/31", "10.88.0.0/7", "x/16", "10.88.0.0/16x", "::/64", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_MSG(addrpool_init(&p, bad[i], &e) == -EINVAL, "%s", bad[i]);
}

static void test_parse_cidr(void)
{
	struct policy_prefix pp;
	struct err e = {0};
	CHECK(policy_parse_cidr("203.0.113.77/24", &pp, &e) == 0);
	CHECK_EQ_INT(pp.family, AF_INET);
	CHECK_EQ_INT(pp.plen, 24);
	CHECK(pp.addr[0] == 203 && pp.addr[2] == 113 && pp.addr[3] == 0); /* host bits cleared */
	CHECK(policy_parse_cidr("169.254.169.254", &pp, &e) == 0);
	CHECK_EQ_INT(pp.plen, 32);
	CHECK(policy_parse_cidr("fe80::1/10", &pp, &e) == 0);
	CHECK(pp.family == AF_INET6 && pp.plen == 10 && pp.addr[0] == 0xfe && pp.addr[1] == 0x80 && pp.addr[15] == 0);
	CHECK(policy_parse_cidr("0.0.0.0/0", &pp, &e) == 0 && pp.plen == 0);
	const char *bad[] = {"", "1.2.3.4/33", "::/129", "1.2.3/8", "1.2.3.4/-1", "1.2.3.4/", "host.example/8",
			     "1.2.3.4/8/8", "2852039166"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_MSG(policy_parse_cidr(bad[i], &pp, &e) == -EINVAL, "%s", bad[i]);
}

TEST_MAIN(T(test_pool_pairs), T(test_pool_rejects), T(test_parse_cidr))
