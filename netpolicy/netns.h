/* Network namespaces of sandboxes, seen from the daemon. setns() changes only the calling
 * thread, so work that must happen inside a sandbox's namespace (a netlink socket that configures
 * its interface, the upstream socket of a port tunnel) runs in a short-lived thread that enters
 * it; the daemon's own threads never leave the host namespace. */
#pragma once
#include <sys/types.h>

#include "util/err.h"

/* O_CLOEXEC fd of pid's network namespace. */
int netns_open_pid(pid_t pid, int *ret, struct err *e);
/* Run fn(arg, e) in a new thread that first enters the network namespace nsfd (a netns fd, or a
 * pidfd on kernels >= 5.8). Returns what fn returns, or the setns/thread error. */
int netns_run(int nsfd, int (*fn)(void *arg, struct err *e), void *arg, struct err *e);
/* socket(domain, type | SOCK_CLOEXEC, protocol) created inside nsfd's network namespace. */
int netns_socket(int nsfd, int domain, int type, int protocol, int *ret, struct err *e);
