/* Starting and holding corral-init's jobs (one per exec handle). */
#include "init/job.h"
#include "init/park.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "util/cleanup.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define STOP_CHECK_MS 100 /* how often a spawn whose child has not exec'd yet checks it is not stopped */
#define EXEC_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* What a child that could not exec writes to init through its CLOEXEC report pipe. */
enum { STAGE_SETUP = 1, STAGE_WORKDIR, STAGE_EXEC };
struct child_report {
	int32_t stage;
	int32_t error;
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int open_pipe(int *ret_child, int *ret_held, int child_reads, struct err *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return err_set(err, errno, "pipe");
	int child = p[child_reads ? 0 : 1];
	int held = park_avoid(p[child_reads ? 1 : 0]); /* it lives on: keep it off the adoption fd */
	if (held < 0) {
		close(child);
		return err_set(err, -held, "pipe");
	}
	*ret_child = child;
	*ret_held = held;
	return 0;
}

static int open_pipes(const struct initproto_spawn *f, struct job *j, int *c_in, int *c_out, int *c_err,
		      struct err *err)
{
	int r = open_pipe(c_in, &j->stdin_fd, 1, err);
	if (r >= 0 && f->stdout_mode == INITPROTO_STREAM_PIPE)
		r = open_pipe(c_out, &j->stdout_fd, 0, err);
	if (r >= 0 && f->stderr_mode == INITPROTO_STREAM_PIPE)
		r = open_pipe(c_err, &j->stderr_fd, 0, err);
	return r;
}

static int open_pty(const struct initproto_spawn *f, int *ret_master, int *ret_slave, struct err *err)
{
	_cleanup_close_ int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	int unlock = 0;

	if (master < 0)
		return err_set(err, errno, "open /dev/ptmx");
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
		return err_set(err, errno, "unlock pty");
	if (f->pty_rows && f->pty_cols) {
		struct winsize ws = {.ws_row = f->pty_rows, .ws_col = f->pty_cols};
		if (ioctl(master, TIOCSWINSZ, &ws) < 0)
			return err_set(err, errno, "set pty size");
	}
	/* TIOCGPTPEER opens the peer of this very master, immune to tricks with /dev/pts paths;
	 * kernels before 4.13 lack it. */
	int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0) {
		unsigned int n;
		char path[32];
		if (ioctl(master, TIOCGPTN, &n) < 0)
			return err_set(err, errno, "get pty number");
		snprintf(path, sizeof(path), "/dev/pts/%u", n);
		if ((slave = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
			return err_set(err, errno, "open %s", path);
	}
	int held = park_avoid(TAKE_FD(master)); /* it lives on: keep it off the adoption fd */
	if (held < 0) {
		close(slave);
		return err_set(err, -held, "open /dev/ptmx");
	}
	*ret_slave = slave;
	*ret_master = held;
	return 0;
}

/* execvpe, but searching the PATH of the exec's own environment (glibc's execvpe uses init's).
 * Returns the errno to report. */
static int search_exec(char *const argv[], char *const envp[])
{
	const char *file = argv[0], *path = EXEC_DEFAULT_PATH;
	char buf[PATH_MAX];
	int eacces = 0;

	if (strchr(file, '/')) {
		execve(file, argv, envp);
		return errno;
	}
	size_t flen = strlen(file);
	if (flen > NAME_MAX)
		return ENAMETOOLONG;
	for (size_t i = 0; envp[i]; i++)
		if (strncmp(envp[i], "PATH=", 5) == 0) {
			path = envp[i] + 5;
			break;
		}
	for (const char *p = path;; p++) {
		const char *end = strchrnul(p, ':');
		size_t dlen = (size_t)(end - p);
		if (dlen + 1 + flen + 1 <= sizeof(buf)) {
			/* an empty element means the working directory, as in execvp */
			size_t off = 0;
			if (dlen) {
				memcpy(buf, p, dlen);
				buf[dlen] = '/';
				off = dlen + 1;
			}
			memcpy(buf + off, file, flen + 1);
			execve(buf, argv, envp);
			switch (errno) {
			case EACCES:
				eacces = 1;
				break;
			case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: case ENAMETOOLONG:
				break;
			default: /* found, but it cannot run (ENOEXEC, E2BIG, ENOMEM, …): say so */
				return errno;
			}
		}
		if (*end == '\0')
			break;
		p = end;
	}
	return eacces ? EACCES : ENOENT;
}

/* The child between fork and exec. fd0..fd2 become its stdio; report is the CLOEXEC pipe that
 * stays silent if the exec succeeds. */
static _Noreturn void child_run(const struct job_ctx *ctx, const struct initproto_spawn_req *req, int fd0,
				int fd1, int fd2, int report)
{
	struct child_report rep = {.stage = STAGE_SETUP};
	sigset_t none;

	/* Its own session and process group, so SIGNAL reaches the whole job via kill(-pid). */
	if (setsid() < 0)
		goto fail;
	if ((req->fixed.flags & INITPROTO_SPAWN_PTY) && ioctl(fd0, TIOCSCTTY, 0) < 0)
		goto fail;
	/* init ignores some signals and blocks SIGCHLD; ignored dispositions and the mask survive exec */
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL); /* fails harmlessly for SIGKILL, SIGSTOP and libc's reserved ones */
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		goto fail;
	rep.stage = STAGE_WORKDIR;
	if (chdir(req->workdir[0] ? req->workdir : "/") < 0)
		goto fail;
	rep.stage = STAGE_SETUP;
	/* All three are >= 3 (init keeps 0-2 open), so no dup2 clobbers another's source. */
	if (dup2(fd0, 0) < 0 || dup2(fd1, 1) < 0 || dup2(fd2, 2) < 0)
		goto fail;
	/* Every fd init opens is O_CLOEXEC already; this also covers anything that slipped through,
	 * while keeping the report pipe usable until exec. */
	close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	if (setrlimit(RLIMIT_NOFILE, &ctx->nofile) < 0)
		goto fail;
	rep.stage = STAGE_EXEC;
	errno = search_exec((char *const *)req->argv, (char *const *)req->envp);
fail:
	rep.error = errno;
	if (write(report, &rep, sizeof(rep)) < 0) {
		/* nothing left to tell: init sees EOF and reports a spawn that exited at once */
	}
	_exit(127);
}

/* Wait until the report pipe has news (data or EOF). A process in the sandbox could SIGSTOP the
 * child before it execs and so wedge init here; a child found stopped gives -ECANCELED. */
static int wait_not_stopped(pid_t pid, int rep_r)
{
	for (;;) {
		struct pollfd p = {.fd = rep_r, .events = POLLIN};
		int k = poll(&p, 1, STOP_CHECK_MS);
		if (k > 0 || (k < 0 && errno != EINTR))
			return 0;
		siginfo_t si = {0};
		if (k == 0 && waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
			return -ECANCELED;
	}
}

/* Fork the child and learn whether its exec worked. The read blocks only until the child execs
 * or fails, which takes microseconds. */
static int run_child(const struct job_ctx *ctx, const struct initproto_spawn_req *req, int fd0, int fd1,
		     int fd2, pid_t *ret_pid, struct err *err)
{
	_cleanup_close_ int rep_r = -1, rep_w = -1;
	struct child_report rep;
	int p[2];
	ssize_t n;

	if (pipe2(p, O_CLOEXEC) < 0)
		return err_set(err, errno, "pipe");
	rep_r = p[0];
	rep_w = p[1];
	pid_t pid = fork();
	if (pid < 0)
		return err_set(err, errno, "fork");
	if (pid == 0)
		child_run(ctx, req, fd0, fd1, fd2, rep_w);
	close_fd(&rep_w);
	if (wait_not_stopped(pid, rep_r) < 0) {
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return err_setx(err, ECANCELED, "exec %s: stopped by a signal before it could start", req->argv[0]);
	}
	do
		n = read(rep_r, &rep, sizeof(rep));
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(rep)) { /* EOF: the exec closed the pipe, it runs */
		*ret_pid = pid;
		return 0;
	}
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	switch (rep.stage) {
	case STAGE_WORKDIR:
		return err_set(err, rep.error, "workdir %s", req->workdir);
	case STAGE_EXEC:
		return err_set(err, rep.error, "exec %s", req->argv[0]);
	default:
		return err_set(err, rep.error, "set up exec %s", req->argv[0]);
	}
}

int job_spawn(const struct job_ctx *ctx, uint32_t handle, const struct initproto_spawn_req *req,
	       struct job *ret, struct err *err)
{
	struct job j = {.handle = handle, .running = true, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1,
			 .pty_fd = -1};
	/* child-side ends: closed here once the child has its copies */
	_cleanup_close_ int c_in = -1, c_out = -1, c_err = -1;
	int fd0, fd1, fd2, r;

	if (req->fixed.flags & INITPROTO_SPAWN_PTY) {
		r = open_pty(&req->fixed, &j.pty_fd, &c_in, err);
		fd0 = fd1 = fd2 = c_in; /* stderr merged into the terminal */
	} else {
		r = open_pipes(&req->fixed, &j, &c_in, &c_out, &c_err, err);
		fd0 = c_in;
		fd1 = c_out >= 0 ? c_out : ctx->devnull;
		fd2 = c_err >= 0 ? c_err : ctx->devnull;
	}
	if (r >= 0)
		r = run_child(ctx, req, fd0, fd1, fd2, &j.pid, err);
	if (r < 0) {
		job_close_fds(&j);
		return r;
	}
	*ret = j;
	return 0;
}

uint32_t job_fd_flags(const struct job *j)
{
	return (j->stdin_fd >= 0 ? INITPROTO_FD_STDIN : 0) | (j->stdout_fd >= 0 ? INITPROTO_FD_STDOUT : 0) |
	       (j->stderr_fd >= 0 ? INITPROTO_FD_STDERR : 0) | (j->pty_fd >= 0 ? INITPROTO_FD_PTY : 0);
}

size_t job_fds(const struct job *j, int fds[INITPROTO_MAX_FDS])
{
	size_t n = 0;
	if (j->pty_fd >= 0) {
		fds[n++] = j->pty_fd;
		return n;
	}
	if (j->stdin_fd >= 0)
		fds[n++] = j->stdin_fd;
	if (j->stdout_fd >= 0)
		fds[n++] = j->stdout_fd;
	if (j->stderr_fd >= 0)
		fds[n++] = j->stderr_fd;
	return n;
}

void job_close_stdin(struct job *j) { close_fd(&j->stdin_fd); }

void job_close_fds(struct job *j)
{
	close_fd(&j->stdin_fd);
	close_fd(&j->stdout_fd);
	close_fd(&j->stderr_fd);
	close_fd(&j->pty_fd);
}

int job_signal(const struct job *j, int signo)
{
	/* After the reap the pid may belong to someone else: never signal an exited exec. */
	if (!j->running)
		return 0;
	if (kill(-j->pid, signo) == 0)
		return 0;
	if (errno == ESRCH && kill(j->pid, signo) == 0)
		return 0;
	return -errno;
}
