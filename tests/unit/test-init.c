/* corral-init, run on the host as a subreaper child of this test with a socketpair at fd 3, driven
 * through the codec the daemon uses. Needs the built binary (CORRAL_INIT, default
 * build/corral-init); the adoption tests need pidfd_getfd rights over it (root). */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "init/initproto.h"
#include "testlib.h"
#include "util/cleanup.h"

#define TIMEOUT_MS 5000
#define MAX_PIDS 16

struct initp {
	pid_t pid;
	int sock; /* the daemon's end */
	pid_t pids[MAX_PIDS]; /* execs spawned, killed by group at the end */
	int n_pids;
	int fds[16]; /* fds received from init, closed at the end */
	int n_fds;
};

static char buf[INITPROTO_MAX_PACKET + 16];

static const char *init_path(void)
{
	const char *p = getenv("CORRAL_INIT");
	return p && *p ? p : "build/corral-init";
}

static void keep_fd(struct initp *ip, int fd)
{
	if (ip->n_fds < (int)ARRAY_SIZE(ip->fds))
		ip->fds[ip->n_fds++] = fd;
	else
		close(fd);
}

static void drop_fd(struct initp *ip, int fd)
{
	for (int i = 0; i < ip->n_fds; i++)
		if (ip->fds[i] == fd) {
			ip->fds[i] = ip->fds[--ip->n_fds];
			close(fd);
			return;
		}
}

/* Start corral-init. Returns 0, or -1 with errno. */
static int initp_start(struct initp *ip)
{
	int sp[2];
	/* so that init's orphans come to us when init is killed, and we can reap them */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		if (sp[1] == INITPROTO_CONTROL_FD)
			fcntl(sp[1], F_SETFD, 0);
		else
			dup2(sp[1], INITPROTO_CONTROL_FD);
		close_range(INITPROTO_CONTROL_FD + 1, ~0U, 0);
		execl(init_path(), "corral-init", (char *)NULL);
		_exit(127);
	}
	close(sp[1]);
	ip->pid = pid;
	ip->sock = sp[0];
	return 0;
}

/* Kill every exec's process group, then init, then reap whatever comes to us. */
static void initp_stop(struct initp *ip)
{
	for (int i = 0; i < ip->n_pids; i++)
		kill(-ip->pids[i], SIGKILL);
	for (int i = 0; i < ip->n_fds; i++)
		close(ip->fds[i]);
	if (ip->sock >= 0)
		close(ip->sock);
	if (ip->pid > 0) {
		kill(ip->pid, SIGKILL);
		waitpid(ip->pid, NULL, 0);
	}
	/* orphans are reparented to us (a subreaper); give them up to 2 s */
	for (int i = 0; i < 200; i++) {
		pid_t r = waitpid(-1, NULL, WNOHANG);
		if (r < 0 && errno == ECHILD)
			break;
		if (r == 0)
			usleep(10000);
	}
}

/* Receive one message within TIMEOUT_MS; fds received are kept for cleanup. Returns its length,
 * or -ETIMEDOUT / -errno. */
static ssize_t recv_msg(struct initp *ip, int timeout_ms, int *fds, size_t *nfds)
{
	struct pollfd p = {.fd = ip->sock, .events = POLLIN};
	size_t dummy_n = INITPROTO_MAX_FDS;
	int dummy[INITPROTO_MAX_FDS];
	if (!fds) {
		fds = dummy;
		nfds = &dummy_n;
	}
	*nfds = INITPROTO_MAX_FDS;
	if (poll(&p, 1, timeout_ms) <= 0) {
		*nfds = 0;
		return -ETIMEDOUT;
	}
	ssize_t n = initproto_recv(ip->sock, buf, sizeof(buf), fds, nfds);
	for (size_t i = 0; i < *nfds; i++)
		keep_fd(ip, fds[i]);
	return n;
}

/* Receive one message and check its type and handle; payload copied out. Returns 0 or -1. */
static int expect(struct initp *ip, uint32_t type, uint32_t handle, void *payload, size_t size, int *fds,
		  size_t *nfds)
{
	struct initproto_hdr h;
	ssize_t n = recv_msg(ip, TIMEOUT_MS, fds, nfds);
	if (n < (ssize_t)sizeof(h)) {
		fprintf(stderr, "  expected message %u for %u, got length %zd\n", type, handle, n);
		return -1;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.type != type || h.handle != handle || (size_t)n != sizeof(h) + size) {
		fprintf(stderr, "  expected message %u for %u (%zu bytes), got %u for %u (%zd bytes)\n", type,
			handle, size, h.type, h.handle, n - (ssize_t)sizeof(h));
		return -1;
	}
	if (size)
		memcpy(payload, buf + sizeof(h), size);
	return 0;
}

static int send_simple(struct initp *ip, uint32_t type, uint32_t handle, const void *payload, size_t size)
{
	char b[64];
	struct initproto_hdr h = {.type = type, .handle = handle};
	memcpy(b, &h, sizeof(h));
	if (size)
		memcpy(b + sizeof(h), payload, size);
	return initproto_send(ip->sock, b, sizeof(h) + size, NULL, 0);
}

static int hello(struct initp *ip, uint32_t adopt)
{
	struct initproto_hello h = {.version = INITPROTO_VERSION, .adopt = adopt};
	return send_simple(ip, INITPROTO_HELLO, 0, &h, sizeof(h));
}

/* HELLO (adopt 0) and its READY. */
static int handshake(struct initp *ip)
{
	struct initproto_hello r;
	if (hello(ip, 0) < 0 || expect(ip, INITPROTO_READY, 0, &r, sizeof(r), NULL, NULL) < 0)
		return -1;
	return r.version == INITPROTO_VERSION && r.adopt == 0 ? 0 : -1;
}

static int spawn(struct initp *ip, uint32_t handle, uint32_t flags, uint32_t out_mode, const char *const *argv,
		 const char *const *envp, const char *workdir)
{
	static char pkt[INITPROTO_MAX_PACKET];
	struct initproto_spawn f = {.flags = flags, .stdout_mode = out_mode, .stderr_mode = out_mode,
				    .pty_rows = 30, .pty_cols = 100};
	int len = initproto_encode_spawn(pkt, sizeof(pkt), handle, &f, argv, envp, workdir);
	if (len < 0)
		return len;
	return initproto_send(ip->sock, pkt, (size_t)len, NULL, 0);
}

/* SPAWN and expect SPAWNED; the pid is recorded for cleanup. */
static int spawn_ok(struct initp *ip, uint32_t handle, uint32_t flags, uint32_t out_mode, const char *const *argv,
		    struct initproto_spawned *s, int *fds, size_t *nfds)
{
	if (spawn(ip, handle, flags, out_mode, argv, NULL, "/") < 0 ||
	    expect(ip, INITPROTO_SPAWNED, handle, s, sizeof(*s), fds, nfds) < 0)
		return -1;
	if (ip->n_pids < MAX_PIDS)
		ip->pids[ip->n_pids++] = s->pid;
	return initproto_fd_count(s->fd_flags) == *nfds ? 0 : -1;
}

/* Read fd until EOF (or EIO, a pty whose slave side is all closed), at most cap-1 bytes. */
static ssize_t read_all(int fd, char *out, size_t cap)
{
	size_t n = 0;
	while (n < cap - 1) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, TIMEOUT_MS) <= 0)
			return -ETIMEDOUT;
		ssize_t r = read(fd, out + n, cap - 1 - n);
		if (r == 0 || (r < 0 && errno == EIO))
			break;
		if (r < 0)
			return -errno;
		n += (size_t)r;
	}
	out[n] = '\0';
	return (ssize_t)n;
}

static int count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	DIR *d = opendir(path);
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
static int pidfd_getfd_(int pidfd, int fd) { return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0); }

/* Take the parked control socket from init's INITPROTO_ADOPT_FD, waiting (as the daemon does) while
 * that fd is not open yet. */
static int take_parked(pid_t pid)
{
	int pidfd = pidfd_open_(pid);
	if (pidfd < 0)
		return -errno;
	int fd = -1, e = ETIMEDOUT;
	for (int i = 0; i < 200; i++) {
		fd = pidfd_getfd_(pidfd, INITPROTO_ADOPT_FD);
		e = errno;
		if (fd >= 0 || e != EBADF)
			break;
		usleep(10000);
	}
	close(pidfd);
	if (fd < 0)
		return -e;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		close(fd);
		return -ENOTSOCK;
	}
	return fd;
}

/* errno of pidfd_getfd(INITPROTO_ADOPT_FD) on init, 0 if that fd is open. */
static int adopt_fd_errno(pid_t pid)
{
	int pidfd = pidfd_open_(pid);
	if (pidfd < 0)
		return errno;
	int fd = pidfd_getfd_(pidfd, INITPROTO_ADOPT_FD), e = fd < 0 ? errno : 0;
	if (fd >= 0)
		close(fd);
	close(pidfd);
	return e;
}

static ino_t ino_of(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

#define SKIP_WITHOUT_INIT()                                                              \
	do {                                                                             \
		if (access(init_path(), X_OK) < 0)                                       \
			SKIP("corral-init not built (set CORRAL_INIT or build build/corral-init)"); \
	} while (0)

#define START(ip)                                                \
	_cleanup_(initp_stop) struct initp ip = {.pid = -1, .sock = -1}; \
	SKIP_WITHOUT_INIT();                                     \
	CHECK(initp_start(&ip) == 0)

static void test_hello(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	CHECK(handshake(&ip) == 0); /* again: harmless */
	/* while a daemon is connected nothing is parked: the adoption fd is closed */
	int e = adopt_fd_errno(ip.pid);
	if (e == EPERM)
		SKIP("pidfd_getfd on corral-init refused (needs CAP_SYS_PTRACE over it)");
	CHECK_EQ_INT(e, EBADF);
}

static void test_pipes(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	const char *argv[] = {"sh", "-c", "echo out; echo err >&2; read x; echo got $x; exit 3", NULL};
	struct initproto_spawned s;
	int fds[INITPROTO_MAX_FDS];
	size_t nfds;
	CHECK(spawn_ok(&ip, 1, 0, INITPROTO_STREAM_PIPE, argv, &s, fds, &nfds) == 0);
	CHECK_EQ_INT(nfds, 3);
	CHECK_EQ_INT(s.fd_flags, INITPROTO_FD_STDIN | INITPROTO_FD_STDOUT | INITPROTO_FD_STDERR);
	CHECK(s.pid > 0);
	CHECK_EQ_INT(getpgid(s.pid), s.pid); /* its own process group */

	CHECK_EQ_INT(write(fds[0], "hi\n", 3), 3);
	drop_fd(&ip, fds[0]);
	CHECK_EQ_INT(send_simple(&ip, INITPROTO_CLOSE_STDIN, 1, NULL, 0), 0);
	char out[256];
	CHECK(read_all(fds[1], out, sizeof(out)) >= 0);
	CHECK_STREQ(out, "out\ngot hi\n");
	CHECK(read_all(fds[2], out, sizeof(out)) >= 0);
	CHECK_STREQ(out, "err\n");
	struct initproto_exited x;
	CHECK(expect(&ip, INITPROTO_EXITED, 1, &x, sizeof(x), NULL, NULL) == 0);
	CHECK(WIFEXITED(x.wait_status));
	CHECK_EQ_INT(WEXITSTATUS(x.wait_status), 3);

	/* the handle is busy until released, then free again */
	CHECK_EQ_INT(spawn(&ip, 1, 0, 0, argv, NULL, ""), 0);
	struct initproto_failed fail;
	CHECK(expect(&ip, INITPROTO_SPAWN_FAILED, 1, &fail, sizeof(fail), NULL, NULL) == 0);
	CHECK_EQ_INT(fail.error, EEXIST);
	CHECK_EQ_INT(send_simple(&ip, INITPROTO_RELEASE, 1, NULL, 0), 0);

	/* no fd of init's leaks into an exec: ls sees its stdio and its own directory fd only */
	const char *ls[] = {"ls", "/proc/self/fd", NULL};
	CHECK(spawn_ok(&ip, 1, 0, INITPROTO_STREAM_PIPE, ls, &s, fds, &nfds) == 0);
	CHECK(read_all(fds[1], out, sizeof(out)) >= 0);
	CHECK_STREQ(out, "0\n1\n2\n3\n");
	CHECK(expect(&ip, INITPROTO_EXITED, 1, &x, sizeof(x), NULL, NULL) == 0);
	CHECK_EQ_INT(x.wait_status, 0);
}

/* The exec sees stdin EOF only when both the daemon's copy and init's copy are closed. */
static void test_close_stdin(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	const char *argv[] = {"cat", NULL};
	struct initproto_spawned s;
	int fds[INITPROTO_MAX_FDS];
	size_t nfds;
	CHECK(spawn_ok(&ip, 2, 0, INITPROTO_STREAM_DEVNULL, argv, &s, fds, &nfds) == 0);
	CHECK_EQ_INT(nfds, 1);
	CHECK_EQ_INT(s.fd_flags, INITPROTO_FD_STDIN);
	CHECK_EQ_INT(write(fds[0], "abc", 3), 3);
	drop_fd(&ip, fds[0]);
	CHECK_EQ_INT(recv_msg(&ip, 200, NULL, NULL), -ETIMEDOUT); /* init's copy keeps cat waiting */
	CHECK_EQ_INT(send_simple(&ip, INITPROTO_CLOSE_STDIN, 2, NULL, 0), 0);
	struct initproto_exited x;
	CHECK(expect(&ip, INITPROTO_EXITED, 2, &x, sizeof(x), NULL, NULL) == 0);
	CHECK_EQ_INT(x.wait_status, 0);
}

static void test_spawn_failures(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	struct initproto_failed f;
	const char *nope[] = {"no-such-program-xyz", NULL};
	CHECK_EQ_INT(spawn(&ip, 3, 0, 0, nope, NULL, "/"), 0);
	CHECK(expect(&ip, INITPROTO_SPAWN_FAILED, 3, &f, sizeof(f), NULL, NULL) == 0);
	CHECK_EQ_INT(f.error, ENOENT);
	CHECK(memchr(f.msg, '\0', sizeof(f.msg)));
	CHECK_MSG(strncmp(f.msg, "exec no-such-program-xyz: ", 26) == 0, "%s", f.msg);

	/* PATH comes from the exec's environment, not init's */
	const char *sh[] = {"sh", "-c", "true", NULL}, *env[] = {"PATH=/nonexistent", NULL};
	CHECK_EQ_INT(spawn(&ip, 3, 0, 0, sh, env, "/"), 0);
	CHECK(expect(&ip, INITPROTO_SPAWN_FAILED, 3, &f, sizeof(f), NULL, NULL) == 0);
	CHECK_EQ_INT(f.error, ENOENT);

	CHECK_EQ_INT(spawn(&ip, 3, 0, 0, sh, NULL, "/nonexistent-dir"), 0);
	CHECK(expect(&ip, INITPROTO_SPAWN_FAILED, 3, &f, sizeof(f), NULL, NULL) == 0);
	CHECK_EQ_INT(f.error, ENOENT);
	CHECK_MSG(strncmp(f.msg, "workdir /nonexistent-dir: ", 26) == 0, "%s", f.msg);

	/* a relative workdir, built by hand since the encoder refuses it */
	char pkt[128];
	struct initproto_hdr h = {.type = INITPROTO_SPAWN, .handle = 4};
	struct initproto_spawn fx = {.argc = 1};
	static const char strings[] = "sh\0tmp";
	memcpy(pkt, &h, sizeof(h));
	memcpy(pkt + sizeof(h), &fx, sizeof(fx));
	memcpy(pkt + sizeof(h) + sizeof(fx), strings, sizeof(strings));
	CHECK_EQ_INT(initproto_send(ip.sock, pkt, sizeof(h) + sizeof(fx) + sizeof(strings), NULL, 0), 0);
	CHECK(expect(&ip, INITPROTO_SPAWN_FAILED, 4, &f, sizeof(f), NULL, NULL) == 0);
	CHECK_EQ_INT(f.error, EINVAL);

	/* failures hold nothing: the handles are free */
	struct initproto_spawned s;
	int fds[INITPROTO_MAX_FDS];
	size_t nfds;
	struct initproto_exited x;
	CHECK(spawn_ok(&ip, 3, 0, INITPROTO_STREAM_DEVNULL, sh, &s, fds, &nfds) == 0);
	CHECK(expect(&ip, INITPROTO_EXITED, 3, &x, sizeof(x), NULL, NULL) == 0);
	CHECK(spawn_ok(&ip, 4, 0, INITPROTO_STREAM_DEVNULL, sh, &s, fds, &nfds) == 0);
	CHECK(expect(&ip, INITPROTO_EXITED, 4, &x, sizeof(x), NULL, NULL) == 0);
}

static void test_pty(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	if (access("/dev/ptmx", R_OK | W_OK) < 0)
		SKIP("no /dev/ptmx");
	const char *argv[] = {"sh", "-c", "tty; stty size", NULL};
	struct initproto_spawned s;
	int fds[INITPROTO_MAX_FDS];
	size_t nfds;
	CHECK(spawn_ok(&ip, 5, INITPROTO_SPAWN_PTY, 0, argv, &s, fds, &nfds) == 0);
	CHECK_EQ_INT(nfds, 1);
	CHECK_EQ_INT(s.fd_flags, INITPROTO_FD_PTY);
	CHECK_EQ_INT(getsid(s.pid), s.pid);
	char out[512];
	CHECK(read_all(fds[0], out, sizeof(out)) >= 0);
	CHECK_MSG(strstr(out, "/dev/pts/") && strstr(out, "30 100"), "%s", out);
	struct initproto_exited x;
	CHECK(expect(&ip, INITPROTO_EXITED, 5, &x, sizeof(x), NULL, NULL) == 0);
	CHECK_EQ_INT(x.wait_status, 0);
}

static void test_signal(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	/* the signal goes to the group: sh and its sleep both get it */
	const char *argv[] = {"sh", "-c", "sleep 100 & wait", NULL};
	struct initproto_spawned s;
	int fds[INITPROTO_MAX_FDS];
	size_t nfds;
	CHECK(spawn_ok(&ip, 6, 0, INITPROTO_STREAM_PIPE, argv, &s, fds, &nfds) == 0);
	struct initproto_signal sig = {.signo = 0};
	CHECK_EQ_INT(send_simple(&ip, INITPROTO_SIGNAL, 6, &sig, sizeof(sig)), 0); /* invalid: ignored */
	sig.signo = 65;
	CHECK_EQ_INT(send_simple(&ip, INITPROTO_SIGNAL, 6, &sig, sizeof(sig)), 0);
	CHECK_EQ_INT(recv_msg(&ip, 200, NULL, NULL), -ETIMEDOUT);
	sig.signo = SIGTERM;
	CHECK_EQ_INT(send_simple(&ip, INITPROTO_SIGNAL, 6, &sig, sizeof(sig)), 0);
	struct initproto_exited x;
	CHECK(expect(&ip, INITPROTO_EXITED, 6, &x, sizeof(x), NULL, NULL) == 0);
	CHECK(WIFSIGNALED(x.wait_status));
	CHECK_EQ_INT(WTERMSIG(x.wait_status), SIGTERM);
	/* stdout reaches EOF only when the sleep, which shares it, is gone too */
	char out[16];
	CHECK_EQ_INT(read_all(fds[1], out, sizeof(out)), 0);
	/* signalling an exited exec does nothing */
	CHECK_EQ_INT(send_simple(&ip, INITPROTO_SIGNAL, 6, &sig, sizeof(sig)), 0);
	CHECK(handshake(&ip) == 0);
}

/* The daemon goes away; a new one takes the parked socket and the running exec's fds. */
static void test_adopt(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	const char *argv[] = {"sh", "-c", "sleep 0.3; echo late", NULL}, *cat[] = {"cat", NULL};
	struct initproto_spawned s;
	int fds[INITPROTO_MAX_FDS];
	size_t nfds;
	/* a cat first, so that init's held fds pass the adoption fd's number (which they must skip) */
	CHECK(spawn_ok(&ip, 20, 0, INITPROTO_STREAM_PIPE, cat, &s, fds, &nfds) == 0);
	for (size_t i = 0; i < nfds; i++)
		drop_fd(&ip, fds[i]);
	CHECK(spawn_ok(&ip, 7, 0, INITPROTO_STREAM_PIPE, argv, &s, fds, &nfds) == 0);
	/* the daemon dies: its socket and its copies of the fds close */
	for (size_t i = 0; i < nfds; i++)
		drop_fd(&ip, fds[i]);
	close(ip.sock);
	ip.sock = -1;

	int sock = take_parked(ip.pid);
	if (sock == -EPERM)
		SKIP("pidfd_getfd on corral-init refused (needs CAP_SYS_PTRACE over it)");
	CHECK_MSG(sock >= 0, "take parked socket: %s", strerror(-sock));
	/* a daemon that took it and died before saying anything changes nothing */
	ino_t first = ino_of(sock);
	close(sock);
	sock = take_parked(ip.pid);
	CHECK(sock >= 0);
	CHECK(ino_of(sock) == first);
	ip.sock = sock;

	CHECK(hello(&ip, 1) == 0);
	struct initproto_exec_state st;
	int catfds[INITPROTO_MAX_FDS];
	CHECK(expect(&ip, INITPROTO_EXEC_STATE, 20, &st, sizeof(st), catfds, &nfds) == 0);
	CHECK_EQ_INT(st.running, 1);
	CHECK_EQ_INT(nfds, 3);
	CHECK(expect(&ip, INITPROTO_EXEC_STATE, 7, &st, sizeof(st), fds, &nfds) == 0);
	CHECK_EQ_INT(st.pid, s.pid);
	CHECK_EQ_INT(st.running, 1);
	CHECK_EQ_INT(st.fd_flags, INITPROTO_FD_STDIN | INITPROTO_FD_STDOUT | INITPROTO_FD_STDERR);
	CHECK_EQ_INT(nfds, 3);
	struct initproto_hello r;
	CHECK(expect(&ip, INITPROTO_READY, 0, &r, sizeof(r), NULL, NULL) == 0);
	CHECK_EQ_INT(r.adopt, 1);
	char out[64];
	CHECK(read_all(fds[1], out, sizeof(out)) >= 0);
	CHECK_STREQ(out, "late\n");
	struct initproto_exited x;
	CHECK(expect(&ip, INITPROTO_EXITED, 7, &x, sizeof(x), NULL, NULL) == 0);
	CHECK_EQ_INT(x.wait_status, 0);
	/* the cat's adopted fds are its real stdin and stdout */
	CHECK_EQ_INT(write(catfds[0], "meow", 4), 4);
	drop_fd(&ip, catfds[0]);
	CHECK_EQ_INT(send_simple(&ip, INITPROTO_CLOSE_STDIN, 20, NULL, 0), 0);
	CHECK(read_all(catfds[1], out, sizeof(out)) >= 0);
	CHECK_STREQ(out, "meow");
	CHECK(expect(&ip, INITPROTO_EXITED, 20, &x, sizeof(x), NULL, NULL) == 0);

	/* init dropped its copy of the parked end: the fd is closed again */
	CHECK_EQ_INT(adopt_fd_errno(ip.pid), EBADF);

	/* and a second loss parks a fresh socket */
	close(ip.sock);
	ip.sock = take_parked(ip.pid);
	CHECK(ip.sock >= 0);
	CHECK(ino_of(ip.sock) != first);
	CHECK(handshake(&ip) == 0);
}

/* An exec that ends while no daemon is connected is announced as exited on adoption. */
static void test_adopt_exited(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	const char *argv[] = {"sh", "-c", "sleep 0.1; echo bye; exit 5", NULL};
	struct initproto_spawned s;
	int fds[INITPROTO_MAX_FDS];
	size_t nfds;
	CHECK(spawn_ok(&ip, 8, 0, INITPROTO_STREAM_PIPE, argv, &s, fds, &nfds) == 0);
	for (size_t i = 0; i < nfds; i++)
		drop_fd(&ip, fds[i]);
	close(ip.sock);
	ip.sock = -1;
	usleep(400000);

	int sock = take_parked(ip.pid);
	if (sock == -EPERM)
		SKIP("pidfd_getfd on corral-init refused (needs CAP_SYS_PTRACE over it)");
	CHECK(sock >= 0);
	ip.sock = sock;
	CHECK(hello(&ip, 1) == 0);
	struct initproto_exec_state st;
	CHECK(expect(&ip, INITPROTO_EXEC_STATE, 8, &st, sizeof(st), fds, &nfds) == 0);
	CHECK_EQ_INT(st.running, 0);
	CHECK(WIFEXITED(st.wait_status));
	CHECK_EQ_INT(WEXITSTATUS(st.wait_status), 5);
	CHECK_EQ_INT(nfds, 3);
	struct initproto_hello r;
	CHECK(expect(&ip, INITPROTO_READY, 0, &r, sizeof(r), NULL, NULL) == 0);
	/* the output waited in the pipe init held */
	char out[64];
	CHECK(read_all(fds[1], out, sizeof(out)) >= 0);
	CHECK_STREQ(out, "bye\n");

	/* released, it is gone from the next adoption */
	CHECK_EQ_INT(send_simple(&ip, INITPROTO_RELEASE, 8, NULL, 0), 0);
	CHECK(hello(&ip, 1) == 0);
	CHECK(expect(&ip, INITPROTO_READY, 0, &r, sizeof(r), NULL, NULL) == 0);
}

/* Garbage does not kill init, leak fds in it, or get an answer other than SPAWN_FAILED. */
static void test_malformed(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	int before = count_fds(ip.pid); /* -1 unless root: init is not dumpable */

	CHECK_EQ_INT(initproto_send(ip.sock, "abc", 3, NULL, 0), 0);
	struct initproto_hdr h = {.type = INITPROTO_SPAWN, .handle = 9};
	CHECK_EQ_INT(initproto_send(ip.sock, &h, sizeof(h), NULL, 0), 0); /* SPAWN without a body */
	struct initproto_failed f;
	CHECK(expect(&ip, INITPROTO_SPAWN_FAILED, 9, &f, sizeof(f), NULL, NULL) == 0);
	CHECK_EQ_INT(f.error, EINVAL);

	char b[64] = {0};
	struct initproto_hello hl = {.version = 1, .adopt = 1};
	h = (struct initproto_hdr){.type = INITPROTO_HELLO};
	memcpy(b, &h, sizeof(h));
	memcpy(b + sizeof(h), &hl, sizeof(hl));
	CHECK_EQ_INT(initproto_send(ip.sock, b, sizeof(h) + sizeof(hl) + 1, NULL, 0), 0); /* extra byte */
	CHECK_EQ_INT(initproto_send(ip.sock, b, sizeof(h) + sizeof(hl) - 1, NULL, 0), 0); /* short */
	hl.adopt = 2;
	memcpy(b + sizeof(h), &hl, sizeof(hl));
	CHECK_EQ_INT(initproto_send(ip.sock, b, sizeof(h) + sizeof(hl), NULL, 0), 0); /* bad adopt */
	h = (struct initproto_hdr){.type = 999, .handle = 1};
	int p[2];
	CHECK(pipe2(p, O_CLOEXEC) == 0);
	CHECK_EQ_INT(initproto_send(ip.sock, &h, sizeof(h), p, 2), 0); /* unknown type, with fds */
	h = (struct initproto_hdr){.type = INITPROTO_RELEASE, .handle = 12345};
	CHECK_EQ_INT(initproto_send(ip.sock, &h, sizeof(h), p, 1), 0); /* unknown handle, with an fd */
	close(p[0]);
	close(p[1]);
	h = (struct initproto_hdr){.type = INITPROTO_SIGNAL, .handle = 12345};
	memcpy(b, &h, sizeof(h));
	CHECK_EQ_INT(initproto_send(ip.sock, b, sizeof(h) + 4, NULL, 0), 0);
	/* a packet larger than init's buffer (sent raw: the codec refuses to) */
	static char huge[INITPROTO_MAX_PACKET + 8];
	CHECK_EQ_INT(send(ip.sock, huge, sizeof(huge), 0), sizeof(huge));

	CHECK(handshake(&ip) == 0); /* still alive, and nothing else was answered */
	CHECK_EQ_INT(recv_msg(&ip, 100, NULL, NULL), -ETIMEDOUT);
	CHECK(waitpid(ip.pid, NULL, WNOHANG) == 0);
	if (before < 0)
		SKIP("init survived garbage, but its fds could not be counted (needs root)");
	CHECK_EQ_INT(count_fds(ip.pid), before);
}

/* Orphans reparented to init are reaped: no zombie remains once their parent exits. */
static void test_reaps_orphans(void)
{
	START(ip);
	CHECK(handshake(&ip) == 0);
	const char *argv[] = {"sh", "-c", "sleep 0.2 & echo $!", NULL};
	struct initproto_spawned s;
	int fds[INITPROTO_MAX_FDS];
	size_t nfds;
	CHECK(spawn_ok(&ip, 10, 0, INITPROTO_STREAM_PIPE, argv, &s, fds, &nfds) == 0);
	struct initproto_exited x;
	CHECK(expect(&ip, INITPROTO_EXITED, 10, &x, sizeof(x), NULL, NULL) == 0);
	char out[32];
	CHECK(read_all(fds[1], out, sizeof(out)) > 0); /* EOF once the orphaned sleep is gone too */
	pid_t orphan = (pid_t)strtol(out, NULL, 10);
	CHECK(orphan > 0);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d", orphan);
	int gone = 0;
	for (int i = 0; i < 200 && !gone; i++) {
		gone = access(path, F_OK) < 0;
		if (!gone)
			usleep(10000);
	}
	CHECK_MSG(gone, "orphan %d not reaped", orphan);
}

TEST_MAIN(T(test_hello), T(test_pipes), T(test_close_stdin), T(test_spawn_failures), T(test_pty), T(test_signal),
	  T(test_adopt), T(test_adopt_exited), T(test_malformed), T(test_reaps_orphans))
