/* The corrald <-> corral-init codec: SPAWN encode/decode (strict), packet send/recv with fds. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "init/initproto.h"
#include "testlib.h"

#define HEAD (sizeof(struct initproto_hdr) + sizeof(struct initproto_spawn))

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* A SPAWN packet built by hand: header, fixed part, then raw string bytes, for malformed cases. */
static size_t raw_spawn(char *buf, uint32_t type, uint32_t argc, uint32_t envc, const void *strings, size_t n)
{
	struct initproto_hdr h = {.type = type, .handle = 7};
	struct initproto_spawn f = {.argc = argc, .envc = envc};
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), &f, sizeof(f));
	memcpy(buf + HEAD, strings, n);
	return HEAD + n;
}

static struct initproto_spawn_req req; /* large (64 KiB of pointers): not on the stack */
static char pkt[INITPROTO_MAX_PACKET + 64];

static void test_roundtrip(void)
{
	const char *argv[] = {"sh", "-c", "echo hi", NULL};
	const char *envp[] = {"A=1", "PATH=/bin", "EMPTY=", NULL};
	struct initproto_spawn f = {.flags = INITPROTO_SPAWN_PTY, .stdout_mode = INITPROTO_STREAM_PIPE,
				    .stderr_mode = INITPROTO_STREAM_DEVNULL, .pty_rows = 30, .pty_cols = 100,
				    .argc = 99 /* ignored: counted from argv */};
	int len = initproto_encode_spawn(pkt, sizeof(pkt), 42, &f, argv, envp, "/tmp");
	CHECK(len > 0);
	CHECK_EQ_INT(initproto_decode_spawn(pkt, (size_t)len, &req), 0);
	struct initproto_hdr h;
	memcpy(&h, pkt, sizeof(h));
	CHECK_EQ_INT(h.type, INITPROTO_SPAWN);
	CHECK_EQ_INT(h.handle, 42);
	CHECK_EQ_INT(req.fixed.flags, INITPROTO_SPAWN_PTY);
	CHECK_EQ_INT(req.fixed.stderr_mode, INITPROTO_STREAM_DEVNULL);
	CHECK_EQ_INT(req.fixed.pty_rows, 30);
	CHECK_EQ_INT(req.fixed.pty_cols, 100);
	CHECK_EQ_INT(req.fixed.argc, 3);
	CHECK_EQ_INT(req.fixed.envc, 3);
	for (int i = 0; i < 3; i++) {
		CHECK_STREQ(req.argv[i], argv[i]);
		CHECK_STREQ(req.envp[i], envp[i]);
	}
	CHECK(req.argv[3] == NULL && req.envp[3] == NULL);
	CHECK_STREQ(req.workdir, "/tmp");

	/* no env, NULL workdir = "" */
	len = initproto_encode_spawn(pkt, sizeof(pkt), 0, &f, argv, NULL, NULL);
	CHECK(len > 0);
	CHECK_EQ_INT(initproto_decode_spawn(pkt, (size_t)len, &req), 0);
	CHECK(req.envp[0] == NULL);
	CHECK_STREQ(req.workdir, "");
}

static void test_encode_rejects(void)
{
	struct initproto_spawn f = {0};
	const char *ok[] = {"true", NULL}, *none[] = {NULL}, *empty0[] = {"", NULL};
	const char *noeq[] = {"A", NULL}, *eqfirst[] = {"=x", NULL};

	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, none, NULL, ""), -EINVAL);
	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, empty0, NULL, ""), -EINVAL);
	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, ok, noeq, ""), -EINVAL);
	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, ok, eqfirst, ""), -EINVAL);
	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, ok, NULL, "tmp"), -EINVAL);
	CHECK_EQ_INT(initproto_encode_spawn(pkt, 10, 1, &f, ok, NULL, ""), -E2BIG);
	f.stdout_mode = 2;
	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, ok, NULL, ""), -EINVAL);
	f.stdout_mode = 0;
	f.flags = 0x2;
	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, ok, NULL, ""), -EINVAL);
	f.flags = 0;

	static const char *many[INITPROTO_MAX_ARGS + 2];
	for (int i = 0; i <= INITPROTO_MAX_ARGS; i++)
		many[i] = "x";
	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, many, NULL, ""), -E2BIG);
	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, ok, many, ""), -E2BIG);
	many[INITPROTO_MAX_ARGS] = NULL; /* exactly the limit is fine */
	CHECK(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, many, NULL, "") > 0);

	static char big[INITPROTO_MAX_STRINGS_BYTES + 1];
	memset(big, 'a', sizeof(big) - 1);
	const char *bigv[] = {big, NULL};
	CHECK_EQ_INT(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, bigv, NULL, ""), -E2BIG);
	big[INITPROTO_MAX_STRINGS_BYTES - 1] = '\0'; /* NUL included: exactly the limit */
	CHECK(initproto_encode_spawn(pkt, sizeof(pkt), 1, &f, bigv, NULL, "") > 0);
}

static void test_decode_rejects(void)
{
	const char *argv[] = {"echo", "a", NULL};
	const char *envp[] = {"K=V", NULL};
	struct initproto_spawn f = {0};
	int len = initproto_encode_spawn(pkt, sizeof(pkt), 3, &f, argv, envp, "/w");
	CHECK(len > 0);
	CHECK_EQ_INT(initproto_decode_spawn(pkt, (size_t)len, &req), 0);

	/* every truncation */
	for (int l = 0; l < len; l++)
		CHECK_MSG(initproto_decode_spawn(pkt, (size_t)l, &req) < 0, "length %d accepted", l);
	/* missing final NUL */
	pkt[len - 1] = 'x';
	CHECK_EQ_INT(initproto_decode_spawn(pkt, (size_t)len, &req), -EINVAL);
	pkt[len - 1] = '\0';
	/* extra bytes, an extra empty string among them */
	pkt[len] = '\0';
	CHECK_EQ_INT(initproto_decode_spawn(pkt, (size_t)len + 1, &req), -EINVAL);
	pkt[len] = 'z';
	CHECK_EQ_INT(initproto_decode_spawn(pkt, (size_t)len + 1, &req), -EINVAL);

	char b[256];
	size_t n;
	static const char good[] = "echo\0K=V\0/w"; /* argc 1, envc 1, workdir (sizeof counts the NUL) */
	n = raw_spawn(b, INITPROTO_SPAWN, 1, 1, good, sizeof(good));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), 0);
	n = raw_spawn(b, INITPROTO_HELLO, 1, 1, good, sizeof(good)); /* wrong type */
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -EINVAL);
	n = raw_spawn(b, INITPROTO_SPAWN, 0, 2, good, sizeof(good)); /* argc 0 */
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -EINVAL);
	n = raw_spawn(b, INITPROTO_SPAWN, 2, 1, good, sizeof(good)); /* more strings claimed than sent */
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -EINVAL);
	static const char trailing[] = "echo\0/w\0/x"; /* argc 1, envc 0: one string too many */
	n = raw_spawn(b, INITPROTO_SPAWN, 1, 0, trailing, sizeof(trailing));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -EINVAL);
	n = raw_spawn(b, INITPROTO_SPAWN, 1, 0, trailing, sizeof(trailing) - 3);
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), 0);
	n = raw_spawn(b, INITPROTO_SPAWN, INITPROTO_MAX_ARGS + 1, 0, good, sizeof(good));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -E2BIG);
	n = raw_spawn(b, INITPROTO_SPAWN, 1, UINT32_MAX, good, sizeof(good));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -E2BIG);
	static const char relwd[] = "echo\0K=V\0w";
	n = raw_spawn(b, INITPROTO_SPAWN, 1, 1, relwd, sizeof(relwd));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -EINVAL);
	static const char noeq[] = "echo\0KV\0/w";
	n = raw_spawn(b, INITPROTO_SPAWN, 1, 1, noeq, sizeof(noeq));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -EINVAL);
	static const char empty0[] = "\0K=V\0/w";
	n = raw_spawn(b, INITPROTO_SPAWN, 1, 1, empty0, sizeof(empty0));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -EINVAL);
	static const char emptywd[] = "echo\0K=V\0";
	n = raw_spawn(b, INITPROTO_SPAWN, 1, 1, emptywd, sizeof(emptywd));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), 0);
	CHECK_STREQ(req.workdir, "");

	/* bad modes and flags in the fixed part */
	struct initproto_spawn bad;
	n = raw_spawn(b, INITPROTO_SPAWN, 1, 1, good, sizeof(good));
	memcpy(&bad, b + sizeof(struct initproto_hdr), sizeof(bad));
	bad.stderr_mode = 7;
	memcpy(b + sizeof(struct initproto_hdr), &bad, sizeof(bad));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -EINVAL);
	bad.stderr_mode = 0;
	bad.flags = 0x80000000u;
	memcpy(b + sizeof(struct initproto_hdr), &bad, sizeof(bad));
	CHECK_EQ_INT(initproto_decode_spawn(b, n, &req), -EINVAL);

	/* argv bytes over the limit, though the packet itself is within bounds */
	static char bigs[2 * 40000 + 16];
	memset(bigs, 'a', sizeof(bigs));
	bigs[39999] = '\0';
	bigs[79999] = '\0';
	memcpy(bigs + 80000, "/", 2);
	n = raw_spawn(pkt, INITPROTO_SPAWN, 2, 0, bigs, 80002);
	CHECK_EQ_INT(initproto_decode_spawn(pkt, n, &req), -E2BIG);
	CHECK_EQ_INT(initproto_decode_spawn(pkt, INITPROTO_MAX_PACKET + 1, &req), -E2BIG);
}

static void test_send_recv_fds(void)
{
	int sp[2], p[2];
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0);
	CHECK(pipe2(p, O_CLOEXEC) == 0);
	int before = count_fds();

	/* the largest legal SPAWN fits one packet (and the default socket buffer) */
	static char a[INITPROTO_MAX_STRINGS_BYTES], e[INITPROTO_MAX_STRINGS_BYTES];
	memset(a, 'a', sizeof(a) - 1);
	memset(e, 'e', sizeof(e) - 1);
	e[1] = '=';
	const char *argv[] = {a, NULL}, *envp[] = {e, NULL};
	struct initproto_spawn f = {0};
	int len = initproto_encode_spawn(pkt, sizeof(pkt), 9, &f, argv, envp, "/");
	CHECK(len > 0 && len <= INITPROTO_MAX_PACKET);
	CHECK_EQ_INT(initproto_send(sp[0], pkt, (size_t)len, NULL, 0), 0);
	static char rbuf[INITPROTO_MAX_PACKET];
	int fds[INITPROTO_MAX_FDS];
	size_t nfds = INITPROTO_MAX_FDS;
	CHECK_EQ_INT(initproto_recv(sp[1], rbuf, sizeof(rbuf), fds, &nfds), len);
	CHECK_EQ_INT(nfds, 0);
	CHECK_EQ_INT(initproto_decode_spawn(rbuf, (size_t)len, &req), 0);

	/* three fds travel, arrive O_CLOEXEC and name the same pipe */
	struct initproto_hdr h = {.type = INITPROTO_SPAWNED, .handle = 5};
	int three[3] = {p[0], p[1], p[1]};
	CHECK_EQ_INT(initproto_send(sp[0], &h, sizeof(h), three, 3), 0);
	nfds = INITPROTO_MAX_FDS;
	CHECK_EQ_INT(initproto_recv(sp[1], rbuf, sizeof(rbuf), fds, &nfds), sizeof(h));
	CHECK_EQ_INT(nfds, 3);
	for (int i = 0; i < 3; i++)
		CHECK(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
	CHECK_EQ_INT(write(fds[1], "x", 1), 1);
	char c = 0;
	CHECK_EQ_INT(read(fds[0], &c, 1), 1);
	CHECK_EQ_INT(c, 'x');
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	CHECK_EQ_INT(count_fds(), before);

	CHECK_EQ_INT(initproto_send(sp[0], &h, sizeof(h), (int[4]){p[0], p[0], p[0], p[0]}, 4), -EINVAL);
	CHECK_EQ_INT(initproto_send(sp[0], &h, 0, NULL, 0), -EINVAL);

	/* orderly EOF reads as 0 */
	close(sp[0]);
	nfds = INITPROTO_MAX_FDS;
	CHECK_EQ_INT(initproto_recv(sp[1], rbuf, sizeof(rbuf), fds, &nfds), 0);
	close(sp[1]);
	close(p[0]);
	close(p[1]);
}

static void test_truncation_no_leak(void)
{
	int sp[2], p[2];
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0);
	CHECK(pipe2(p, O_CLOEXEC) == 0);
	int before = count_fds();
	char big[64] = {0}, small[8];
	int fds[INITPROTO_MAX_FDS];
	size_t nfds;

	/* packet larger than the buffer */
	CHECK_EQ_INT(initproto_send(sp[0], big, sizeof(big), (int[]){p[0], p[1]}, 2), 0);
	nfds = INITPROTO_MAX_FDS;
	CHECK_EQ_INT(initproto_recv(sp[1], small, sizeof(small), fds, &nfds), -EMSGSIZE);
	CHECK_EQ_INT(nfds, 0);
	CHECK_EQ_INT(count_fds(), before);

	/* more fds than the caller has room for */
	CHECK_EQ_INT(initproto_send(sp[0], big, 8, (int[]){p[0], p[1], p[0]}, 3), 0);
	nfds = 1;
	CHECK_EQ_INT(initproto_recv(sp[1], big, sizeof(big), fds, &nfds), -EMSGSIZE);
	CHECK_EQ_INT(count_fds(), before);

	/* more fds than the protocol allows, sent by hand: the kernel truncates the control data */
	union {
		char buf[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} ctl = {{0}};
	struct iovec iov = {.iov_base = big, .iov_len = 8};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * 8);
	for (int i = 0; i < 8; i++)
		memcpy(CMSG_DATA(cm) + i * sizeof(int), &p[i % 2], sizeof(int));
	CHECK_EQ_INT(sendmsg(sp[0], &m, 0), 8);
	nfds = INITPROTO_MAX_FDS;
	CHECK_EQ_INT(initproto_recv(sp[1], big, sizeof(big), fds, &nfds), -EMSGSIZE);
	CHECK_EQ_INT(count_fds(), before);

	/* the socket still works afterwards */
	CHECK_EQ_INT(initproto_send(sp[0], "abcdefgh", 8, NULL, 0), 0);
	nfds = INITPROTO_MAX_FDS;
	CHECK_EQ_INT(initproto_recv(sp[1], big, sizeof(big), fds, &nfds), 8);
	close(sp[0]);
	close(sp[1]);
	close(p[0]);
	close(p[1]);
}

static void test_fd_count(void)
{
	CHECK_EQ_INT(initproto_fd_count(0), 0);
	CHECK_EQ_INT(initproto_fd_count(INITPROTO_FD_STDIN | INITPROTO_FD_STDOUT | INITPROTO_FD_STDERR), 3);
	CHECK_EQ_INT(initproto_fd_count(INITPROTO_FD_STDIN | INITPROTO_FD_STDERR), 2);
	CHECK_EQ_INT(initproto_fd_count(INITPROTO_FD_PTY), 1);
	CHECK_EQ_INT(initproto_fd_count(0xfffffff0u), 0); /* unknown bits name no fd */
}

TEST_MAIN(T(test_roundtrip), T(test_encode_rejects), T(test_decode_rejects), T(test_send_recv_fds),
	  T(test_truncation_no_leak), T(test_fd_count))
