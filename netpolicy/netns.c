#include "netpolicy/netns.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int netns_open_pid(pid_t pid, int *ret, struct err *e)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, errno, "open %s", path);
	*ret = fd;
	return 0;
}

struct netns_job {
	int nsfd;
	int (*fn)(void *arg, struct err *e);
	void *arg;
	struct err *e;
	int r;
};

static void *netns_thread(void *data)
{
	struct netns_job *j = data;
	/* The thread dies right after fn: it never has to find its way back to the host namespace. */
	if (setns(j->nsfd, CLONE_NEWNET) < 0)
		j->r = err_set(j->e, errno, "enter the sandbox's network namespace");
	else
		j->r = j->fn(j->arg, j->e);
	return NULL;
}

int netns_run(int nsfd, int (*fn)(void *arg, struct err *e), void *arg, struct err *e)
{
	struct netns_job j = {.nsfd = nsfd, .fn = fn, .arg = arg, .e = e};
	pthread_t t;
	int r = pthread_create(&t, NULL, netns_thread, &j);
	if (r)
		return err_set(e, r, "start a thread for the sandbox's network namespace");
	pthread_join(t, NULL);
	return j.r;
}

struct socket_args {
	int domain, type, protocol;
	int fd;
};

static int socket_in_ns(void *arg, struct err *e)
{
	struct socket_args *a = arg;
	a->fd = socket(a->domain, a->type | SOCK_CLOEXEC, a->protocol);
	return a->fd < 0 ? err_set(e, errno, "socket in the sandbox's network namespace") : 0;
}

int netns_socket(int nsfd, int domain, int type, int protocol, int *ret, struct err *e)
{
	struct socket_args a = {domain, type, protocol, -1};
	int r = netns_run(nsfd, socket_in_ns, &a, e);
	if (r < 0)
		return r;
	*ret = a.fd;
	return 0;
}
