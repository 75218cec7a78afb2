/* NAT of sandbox traffic to the uplink, through libnftables (no shelling out): one table per
 * daemon (named after its cgroup parent) holding a masquerade rule for the pool's subnet, plus
 * IPv4 forwarding. Nothing per sandbox: the rule covers the whole pool, so sandboxes come and go
 * without touching nftables. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

/* Name of the interface of the default IPv4 route (from /proc/net/route). -ENOENT if none. */
int nat_default_uplink(char *buf, size_t size, struct err *e);
/* (Re)create table `ip <table>` with `ip saddr <subnet> oifname <uplink> masquerade`. */
int nat_setup(const char *table, const char *subnet, const char *uplink, struct err *e);
/* Delete the table (-ENOENT if absent). */
int nat_teardown(const char *table, struct err *e);
/* net.ipv4.ip_forward = 1 in the calling thread's namespace; *ret_changed: it was 0 before. */
int nat_enable_forwarding(bool *ret_changed, struct err *e);
/* Put net.ipv4.ip_forward back to 0 (after nat_enable_forwarding changed it). */
void nat_restore_forwarding(void);
