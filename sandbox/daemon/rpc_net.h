/* The daemon's networking module (netpolicy/ underneath): per-sandbox hooks called from
 * sandbox.c, request validation, counters for GetSandbox, and the network RPCs (rpc_net_methods,
 * declared in rpc.h). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/manager.h"

struct sandbox;

/* Check CreateSandbox's network and ports fields. */
int rpc_net_validate(const Corral__V1__NetworkPolicy *net, const uint32_t *ports, size_t n_ports, struct err *e);
/* Right after spawn: veth, addresses, BPF policy, tunnels. On failure nothing is left but what
 * goes with the sandbox's cgroup and namespace. */
int rpc_net_sandbox_setup(struct sandbox *sb, struct err *e);
/* Adoption after a restart (before the init check): reload the record, claim the pool pair,
 * take the BPF maps over, reopen tunnels. */
void rpc_net_sandbox_adopt(struct sandbox *sb);
/* The sandbox's init is gone: close tunnels, drop map entries, give the pool pair back. */
void rpc_net_sandbox_release(struct sandbox *sb);
/* Free in-memory state only (daemon stop: the sandbox keeps running). */
void rpc_net_sandbox_free(struct sandbox *sb);
/* Open tunnel connections count as activity for idle_timeout. */
bool rpc_net_sandbox_busy(const struct sandbox *sb);
/* GetSandbox's network_counters; false when the sandbox has no network. */
bool rpc_net_counters(const struct sandbox *sb, Corral__V1__NetworkCounters *out);
