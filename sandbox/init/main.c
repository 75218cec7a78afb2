/* corral-init: PID 1 of every sandbox.
 *
 * One thread, one poll() loop over the control socket (from corrald, at fd 3) and a signalfd for
 * SIGCHLD. It starts execs on the daemon's behalf, keeps its own copy of each exec's daemon-side
 * pipe ends (or pty master) so they outlive a daemon restart, reaps every process in the sandbox,
 * and parks a fresh control socket at INITPROTO_ADOPT_FD whenever the daemon goes away so a
 * restarted daemon can adopt the sandbox (see init/initproto.h for the protocol).
 *
 * It never prints: its stdio is /dev/null, and the daemon learns everything through the protocol.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "init/fileops.h"
#include "init/job.h"
#include "init/park.h"
#include "init/initproto.h"
#include "util/cleanup.h"
#include "util/err.h"

/* The one state of the program, owned by main() and passed explicitly. */
struct init {
	int sock;    /* the control connection; -1 while a new one could not be made (retried) */
	int sigfd;   /* signalfd for SIGCHLD */
	bool hello;  /* HELLO seen on this connection: only then does init send EXITED unasked */
	bool parked; /* the daemon's end of this connection still sits at INITPROTO_ADOPT_FD */
	struct job_ctx ctx;
	struct job *jobs; /* held execs, unordered, at most INITPROTO_MAX_HANDLES */
	size_t n_jobs, cap_jobs;
	void *pkt;                       /* receive buffer of INITPROTO_MAX_PACKET bytes */
	struct initproto_spawn_req *req; /* decoded SPAWN (64 KiB of pointers: kept off the stack) */
	struct fileops fo;               /* the filesystem API (init/fileops.h) */
};

/* Signals init ignores, as a PID 1 does (the daemon ends a sandbox with SIGKILL). */
static const int ignored_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE,
				      SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU};

#define RETRY_MS 1000 /* how soon to retry making a control socket after running out of fds */

static struct job *job_by_handle(struct init *in, uint32_t handle)
{
	for (size_t i = 0; i < in->n_jobs; i++)
		if (in->jobs[i].handle == handle)
			return &in->jobs[i];
	return NULL;
}

static struct job *job_by_pid(struct init *in, pid_t pid)
{
	for (size_t i = 0; i < in->n_jobs; i++)
		if (in->jobs[i].running && in->jobs[i].pid == pid)
			return &in->jobs[i];
	return NULL;
}

/* Send one message on the control socket. A failure means the daemon is gone: the next receive
 * notices, and whatever was lost is re-announced on adoption, so there is nothing to do here. */
static void send_msg(struct init *in, uint32_t type, uint32_t handle, const void *payload, size_t len,
		     const int *fds, size_t nfds)
{
	char buf[sizeof(struct initproto_hdr) + sizeof(struct initproto_failed)];
	struct initproto_hdr hdr = {.type = type, .handle = handle};

	if (in->sock < 0 || len > sizeof(buf) - sizeof(hdr))
		return;
	memcpy(buf, &hdr, sizeof(hdr));
	if (len)
		memcpy(buf + sizeof(hdr), payload, len);
	(void)initproto_send(in->sock, buf, sizeof(hdr) + len, fds, nfds);
}

static void send_failed(struct init *in, uint32_t handle, int error, const char *msg)
{
	struct initproto_failed f = {.error = error};
	/* cut to fit: a long argv[0] or workdir must not cost the reply */
	memcpy(f.msg, msg, strnlen(msg, sizeof(f.msg) - 1));
	send_msg(in, INITPROTO_SPAWN_FAILED, handle, &f, sizeof(f), NULL, 0);
}

static void send_exec_state(struct init *in, const struct job *j)
{
	struct initproto_exec_state st = {.pid = j->pid, .running = j->running, .wait_status = j->wait_status,
					  .fd_flags = job_fd_flags(j)};
	int fds[INITPROTO_MAX_FDS];
	size_t n = job_fds(j, fds);
	send_msg(in, INITPROTO_EXEC_STATE, j->handle, &st, sizeof(st), fds, n);
}

/* --- the daemon going away and coming back ------------------------------------------------ */

/* Make a new connection whose daemon end waits at INITPROTO_ADOPT_FD for a restarted daemon. */
static void park(struct init *in)
{
	if (park_new(&in->sock) == 0) /* on failure (out of fds or memory) the loop retries */
		in->parked = true;
}

static void daemon_lost(struct init *in)
{
	fileops_reset(&in->fo); /* temp files and answers belonged to the daemon that left */
	close(in->sock);
	in->sock = -1;
	in->hello = false;
	park(in);
}

/* A daemon spoke on the parked connection: drop init's copy of its end, so that this daemon's
 * death reads as EOF (and the fd number is free again, as the daemon expects). */
static void unpark(struct init *in)
{
	park_drop();
	in->parked = false;
}

/* --- requests from the daemon ------------------------------------------------------------- */

static void on_hello(struct init *in, uint32_t handle, const void *pkt, size_t len)
{
	struct initproto_hello h;
	memcpy(&h, (const char *)pkt + sizeof(struct initproto_hdr), sizeof(h));
	if (h.adopt > 1)
		return;
	if (h.adopt)
		for (size_t i = 0; i < in->n_jobs; i++)
			send_exec_state(in, &in->jobs[i]);
	in->hello = true;
	struct initproto_hello ready = {.version = INITPROTO_VERSION, .adopt = h.adopt};
	send_msg(in, INITPROTO_READY, 0, &ready, sizeof(ready), NULL, 0);
}

static void on_spawn(struct init *in, uint32_t handle, const void *pkt, size_t len)
{
	struct err err = {0};
	int r = initproto_decode_spawn(pkt, len, in->req);

	if (r < 0)
		err_setx(&err, r, "invalid spawn request");
	else if (job_by_handle(in, handle))
		r = err_setx(&err, EEXIST, "exec handle %u is in use", handle);
	else if (in->n_jobs >= INITPROTO_MAX_HANDLES)
		r = err_setx(&err, EAGAIN, "too many execs (at most %d)", INITPROTO_MAX_HANDLES);
	else if (in->n_jobs == in->cap_jobs) {
		size_t cap = in->cap_jobs ? in->cap_jobs * 2 : 16;
		struct job *a = realloc(in->jobs, cap * sizeof(*a));
		if (a) {
			in->jobs = a;
			in->cap_jobs = cap;
		} else
			r = err_setx(&err, ENOMEM, "out of memory");
	}
	if (r >= 0)
		r = job_spawn(&in->ctx, handle, in->req, &in->jobs[in->n_jobs], &err);
	if (r < 0) {
		send_failed(in, handle, -r, err.msg);
		return;
	}
	struct job *j = &in->jobs[in->n_jobs++];

	struct initproto_spawned s = {.pid = j->pid, .fd_flags = job_fd_flags(j)};
	int fds[INITPROTO_MAX_FDS];
	size_t n = job_fds(j, fds);
	send_msg(in, INITPROTO_SPAWNED, handle, &s, sizeof(s), fds, n);
}

static void on_signal(struct init *in, uint32_t handle, const void *pkt, size_t len)
{
	struct initproto_signal s;
	memcpy(&s, (const char *)pkt + sizeof(struct initproto_hdr), sizeof(s));
	struct job *j = job_by_handle(in, handle);
	if (j && s.signo >= 1 && s.signo <= 64)
		(void)job_signal(j, s.signo);
}

static void on_close_stdin(struct init *in, uint32_t handle, const void *pkt, size_t len)
{
	struct job *j = job_by_handle(in, handle);
	if (j)
		job_close_stdin(j);
}

/* Only a finished exec can be released: a running one is ignored (the daemon SIGNALs it, waits
 * for EXITED, then releases), which keeps every pid init reaps accounted for. */
static void on_release(struct init *in, uint32_t handle, const void *pkt, size_t len)
{
	struct job *j = job_by_handle(in, handle);
	if (!j || j->running)
		return;
	job_close_fds(j);
	*j = in->jobs[--in->n_jobs];
}

/* The filesystem API: replies go out as they are, with at most one fd. */
static void file_send(void *ctx, const void *pkt, size_t len, int fd)
{
	struct init *in = ctx;
	if (in->sock >= 0)
		(void)initproto_send(in->sock, pkt, len, fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0);
}

static void on_file(struct init *in, uint32_t handle, const void *pkt, size_t len)
{
	fileops_request(&in->fo, pkt, len, file_send, in);
}

#define VARIABLE SIZE_MAX
static const struct handler {
	uint32_t type;
	size_t payload; /* exact payload size, or VARIABLE where the handler decodes it */
	void (*fn)(struct init *in, uint32_t handle, const void *pkt, size_t len);
} handlers[] = {
	{INITPROTO_HELLO, sizeof(struct initproto_hello), on_hello},
	{INITPROTO_SPAWN, VARIABLE, on_spawn},
	{INITPROTO_SIGNAL, sizeof(struct initproto_signal), on_signal},
	{INITPROTO_CLOSE_STDIN, 0, on_close_stdin},
	{INITPROTO_RELEASE, 0, on_release},
	{INITPROTO_FILE_OPEN_READ, VARIABLE, on_file},
	{INITPROTO_FILE_OPEN_WRITE, VARIABLE, on_file},
	{INITPROTO_FILE_COMMIT, 0, on_file},
	{INITPROTO_FILE_ABORT, 0, on_file},
	{INITPROTO_FILE_STAT, VARIABLE, on_file},
	{INITPROTO_FILE_LIST, VARIABLE, on_file},
	{INITPROTO_FILE_MKDIR, VARIABLE, on_file},
	{INITPROTO_FILE_REMOVE, VARIABLE, on_file},
};

static void on_control(struct init *in)
{
	int fds[INITPROTO_MAX_FDS];
	size_t nfds = INITPROTO_MAX_FDS;
	struct initproto_hdr hdr;

	ssize_t n = initproto_recv(in->sock, in->pkt, INITPROTO_MAX_PACKET, fds, &nfds);
	if (n == -EAGAIN || n == -EINTR || n == -EMSGSIZE) /* EMSGSIZE: oversized packet, dropped */
		return;
	if (n <= 0) {
		daemon_lost(in);
		return;
	}
	for (size_t i = 0; i < nfds; i++) /* no request carries fds */
		close(fds[i]);
	if (in->parked)
		unpark(in);
	if ((size_t)n < sizeof(hdr))
		return;
	memcpy(&hdr, in->pkt, sizeof(hdr));
	for (size_t i = 0; i < ARRAY_SIZE(handlers); i++) {
		const struct handler *h = &handlers[i];
		if (h->type != hdr.type)
			continue;
		if (h->payload == VARIABLE || (size_t)n == sizeof(hdr) + h->payload)
			h->fn(in, hdr.handle, in->pkt, (size_t)n);
		return;
	}
	/* unknown types are ignored: a newer daemon may speak them */
}

/* --- reaping ------------------------------------------------------------------------------ */

static void on_sigchld(struct init *in)
{
	struct signalfd_siginfo si;
	while (read(in->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		; /* drained; SIGCHLDs coalesce, so reap everything below regardless */
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			break;
		if (fileops_reaped(&in->fo, pid, status, file_send, in))
			continue;
		struct job *j = job_by_pid(in, pid);
		if (!j) /* an orphan reparented to init: reaping it is all there is to do */
			continue;
		j->running = false;
		j->wait_status = status;
		if (in->hello) {
			struct initproto_exited x = {.wait_status = status};
			send_msg(in, INITPROTO_EXITED, j->handle, &x, sizeof(x), NULL, 0);
		}
	}
}

/* --- start -------------------------------------------------------------------------------- */

static int setup(struct init *in)
{
	sigset_t mask;

	/* Not PR_SET_PDEATHSIG: the daemon may die and come back; clear one the runtime left set. */
	prctl(PR_SET_PDEATHSIG, 0);
	/* Reap orphans even when not PID 1 (tests; a sandbox without a pid namespace). */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		return -errno;

	/* Keep 0-2 taken so no pipe lands there (the child's dup2s rely on it). */
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR | O_CLOEXEC) != fd)
			return -EBADF;
	in->sock = INITPROTO_CONTROL_FD;
	int fl = fcntl(in->sock, F_GETFL);
	if (fl < 0 || fcntl(in->sock, F_SETFD, FD_CLOEXEC) < 0 || fcntl(in->sock, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return -EBADF;
	/* Anything else inherited is a leak from the host: no host fd may stay in the sandbox. */
	close_range(INITPROTO_CONTROL_FD + 1, ~0U, 0);
	/* (which also leaves INITPROTO_ADOPT_FD closed: it is open only while a socket is parked) */
	if ((in->ctx.devnull = park_avoid(open("/dev/null", O_RDWR | O_CLOEXEC))) < 0)
		return -errno;

	for (size_t i = 0; i < ARRAY_SIZE(ignored_signals); i++)
		signal(ignored_signals[i], SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	if ((in->sigfd = park_avoid(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK))) < 0)
		return -errno;

	/* Init holds up to three fds per exec; its children get the original limit back. */
	if (getrlimit(RLIMIT_NOFILE, &in->ctx.nofile) < 0)
		return -errno;
	struct rlimit raised = {in->ctx.nofile.rlim_max, in->ctx.nofile.rlim_max};
	setrlimit(RLIMIT_NOFILE, &raised); /* best effort: without it init just holds fewer execs */
	int r = fileops_init(&in->fo, "/");
	if (r < 0)
		return r;
	in->pkt = malloc(INITPROTO_MAX_PACKET);
	in->req = malloc(sizeof(*in->req));
	if (!in->pkt || !in->req)
		return -ENOMEM;
	return 0;
}

int main(void)
{
	struct init in = {.sock = -1, .sigfd = -1, .ctx = {.devnull = -1}};

	/* First, before anything can look: no ptrace, no /proc/1/mem, no core from the sandbox. */
	prctl(PR_SET_DUMPABLE, 0);
	/* Executed from a memfd, the kernel names us "memfd:corral-in"; say what we are. */
	prctl(PR_SET_NAME, "corral-init");
	if (setup(&in) < 0)
		return 1; /* the daemon sees PID 1 exit and fails the sandbox */

	for (;;) {
		struct pollfd p[2] = {{.fd = in.sock, .events = POLLIN}, {.fd = in.sigfd, .events = POLLIN}};
		if (poll(p, 2, in.sock < 0 ? RETRY_MS : -1) < 0)
			continue; /* EINTR (or ENOMEM): just try again */
		if (p[1].revents)
			on_sigchld(&in);
		if (in.sock < 0)
			park(&in);
		else if (p[0].revents)
			on_control(&in);
	}
}
