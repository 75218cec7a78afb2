/* The corrald <-> corral-init control protocol: SPAWN codec and packet send/receive with fds.
 * Compiled into both the daemon library and corral-init, so both ends validate the same way. */
#include "init/initproto.h"

#include <errno.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SPAWN_HEAD (sizeof(struct initproto_hdr) + sizeof(struct initproto_spawn))

/* Checks shared by encode and decode, so the daemon can never build a packet init refuses. */
static bool env_entry_ok(const char *s) { return s[0] != '=' && strchr(s, '=') != NULL; }
static bool workdir_ok(const char *s, size_t len) { return len == 0 || (s[0] == '/' && len < PATH_MAX); }
static bool fixed_ok(const struct initproto_spawn *f)
{
	if (f->flags & ~INITPROTO_SPAWN_PTY)
		return false;
	return f->stdout_mode <= INITPROTO_STREAM_DEVNULL && f->stderr_mode <= INITPROTO_STREAM_DEVNULL;
}

/* Count a NULL-terminated string list and its bytes (NULs included); -E2BIG past the limits. */
static int list_measure(const char *const *list, uint32_t *ret_n, size_t *ret_bytes)
{
	size_t n = 0, bytes = 0;
	for (; list && list[n]; n++) {
		if (n >= INITPROTO_MAX_ARGS)
			return -E2BIG;
		bytes += strlen(list[n]) + 1;
		if (bytes > INITPROTO_MAX_STRINGS_BYTES)
			return -E2BIG;
	}
	*ret_n = (uint32_t)n;
	*ret_bytes = bytes;
	return 0;
}

static char *put_string(char *p, const char *s)
{
	size_t l = strlen(s) + 1;
	memcpy(p, s, l);
	return p + l;
}

int initproto_encode_spawn(void *buf, size_t cap, uint32_t handle, const struct initproto_spawn *fixed,
			   const char *const *argv, const char *const *envp, const char *workdir)
{
	uint32_t argc, envc;
	size_t argv_bytes, env_bytes;
	int r;

	if (!workdir)
		workdir = "";
	if (!fixed || !argv || !fixed_ok(fixed))
		return -EINVAL;
	if ((r = list_measure(argv, &argc, &argv_bytes)) < 0 || (r = list_measure(envp, &envc, &env_bytes)) < 0)
		return r;
	if (argc == 0 || argv[0][0] == '\0')
		return -EINVAL;
	for (uint32_t i = 0; i < envc; i++)
		if (!env_entry_ok(envp[i]))
			return -EINVAL;
	size_t wd_len = strlen(workdir);
	if (!workdir_ok(workdir, wd_len))
		return -EINVAL;

	size_t len = SPAWN_HEAD + argv_bytes + env_bytes + wd_len + 1;
	if (len > cap || len > INITPROTO_MAX_PACKET)
		return -E2BIG;

	struct initproto_hdr hdr = {.type = INITPROTO_SPAWN, .handle = handle};
	struct initproto_spawn f = *fixed;
	f.argc = argc;
	f.envc = envc;
	char *p = buf;
	memcpy(p, &hdr, sizeof(hdr));
	memcpy(p + sizeof(hdr), &f, sizeof(f));
	p += SPAWN_HEAD;
	for (uint32_t i = 0; i < argc; i++)
		p = put_string(p, argv[i]);
	for (uint32_t i = 0; i < envc; i++)
		p = put_string(p, envp[i]);
	put_string(p, workdir);
	return (int)len;
}

/* Take the next NUL-terminated string from [*pos, end); NULL if there is no NUL before end. */
static const char *take_string(const char **pos, const char *end, size_t *ret_len)
{
	const char *s = *pos;
	const char *nul = memchr(s, '\0', (size_t)(end - s));
	if (!nul)
		return NULL;
	*ret_len = (size_t)(nul - s);
	*pos = nul + 1;
	return s;
}

/* Decode count strings into list (NULL-terminated) with at most INITPROTO_MAX_STRINGS_BYTES. */
static int take_list(const char **pos, const char *end, uint32_t count, const char **list)
{
	size_t bytes = 0, l;
	for (uint32_t i = 0; i < count; i++) {
		if (!(list[i] = take_string(pos, end, &l)))
			return -EINVAL;
		bytes += l + 1;
		if (bytes > INITPROTO_MAX_STRINGS_BYTES)
			return -E2BIG;
	}
	list[count] = NULL;
	return 0;
}

int initproto_decode_spawn(const void *pkt, size_t len, struct initproto_spawn_req *out)
{
	struct initproto_hdr hdr;
	struct initproto_spawn f;
	size_t l;
	int r;

	if (!pkt || !out || len < SPAWN_HEAD)
		return -EINVAL;
	if (len > INITPROTO_MAX_PACKET)
		return -E2BIG;
	memcpy(&hdr, pkt, sizeof(hdr));
	memcpy(&f, (const char *)pkt + sizeof(hdr), sizeof(f));
	if (hdr.type != INITPROTO_SPAWN || !fixed_ok(&f))
		return -EINVAL;
	if (f.argc == 0)
		return -EINVAL;
	if (f.argc > INITPROTO_MAX_ARGS || f.envc > INITPROTO_MAX_ARGS)
		return -E2BIG;

	const char *pos = (const char *)pkt + SPAWN_HEAD, *end = (const char *)pkt + len;
	if ((r = take_list(&pos, end, f.argc, out->argv)) < 0 || (r = take_list(&pos, end, f.envc, out->envp)) < 0)
		return r;
	if (out->argv[0][0] == '\0')
		return -EINVAL;
	for (uint32_t i = 0; i < f.envc; i++)
		if (!env_entry_ok(out->envp[i]))
			return -EINVAL;
	if (!(out->workdir = take_string(&pos, end, &l)) || !workdir_ok(out->workdir, l))
		return -EINVAL;
	if (pos != end) /* exactly argc + envc + 1 strings: trailing bytes are an error */
		return -EINVAL;
	out->fixed = f;
	return 0;
}

static int send_flags(int sock, const void *pkt, size_t len, const int *fds, size_t nfds, int flags)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * INITPROTO_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = (void *)pkt, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

	if (nfds > INITPROTO_MAX_FDS || len == 0 || len > INITPROTO_MAX_PACKET)
		return -EINVAL;
	if (nfds > 0) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	ssize_t n;
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EMSGSIZE; /* a seqpacket send is all or nothing; be sure */
}

int initproto_send(int sock, const void *pkt, size_t len, const int *fds, size_t nfds)
{
	return send_flags(sock, pkt, len, fds, nfds, 0);
}

int initproto_send_nowait(int sock, const void *pkt, size_t len, const int *fds, size_t nfds)
{
	return send_flags(sock, pkt, len, fds, nfds, MSG_DONTWAIT);
}

static void close_all(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
}

ssize_t initproto_recv(int sock, void *buf, size_t cap, int *fds, size_t *nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * INITPROTO_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf)};
	size_t want = *nfds, got = 0;
	bool overflow = false;
	ssize_t n;

	*nfds = 0;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;

	/* Collect every fd the kernel installed, even past the caller's capacity, so none leaks. */
	int tmp[INITPROTO_MAX_FDS];
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (got < INITPROTO_MAX_FDS)
				tmp[got++] = fd;
			else { /* cannot happen with our control buffer size; never leak regardless */
				close(fd);
				overflow = true;
			}
		}
	}
	if (overflow || got > want || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		close_all(tmp, got);
		return -EMSGSIZE;
	}
	if (n == 0) { /* orderly EOF (our packets are never empty): fds on it have no meaning */
		close_all(tmp, got);
		return 0;
	}
	if (got)
		memcpy(fds, tmp, sizeof(int) * got);
	*nfds = got;
	return n;
}

size_t initproto_fd_count(uint32_t fd_flags)
{
	return (size_t)__builtin_popcount(fd_flags & (INITPROTO_FD_STDIN | INITPROTO_FD_STDOUT | INITPROTO_FD_STDERR |
						      INITPROTO_FD_PTY));
}

/* --- files ------------------------------------------------------------------------------- */

#define FILE_REQ_HEAD (sizeof(struct initproto_hdr) + sizeof(struct initproto_file_req))

bool initproto_file_fs_ok(long f_type)
{
	static const unsigned long ok[] = {OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, RAMFS_MAGIC, EXT4_SUPER_MAGIC,
					    XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC, F2FS_SUPER_MAGIC};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if ((unsigned long)f_type == ok[i])
			return true;
	return false;
}

bool initproto_file_path_ok(const char *path, size_t len)
{
	return len >= 1 && len < PATH_MAX && path[0] == '/' && !memchr(path, '\0', len);
}

static bool file_req_type_ok(uint32_t type)
{
	return type >= INITPROTO_FILE_OPEN_READ && type <= INITPROTO_FILE_REMOVE && type != INITPROTO_FILE_COMMIT &&
	       type != INITPROTO_FILE_ABORT;
}

int initproto_encode_file_req(void *buf, size_t cap, uint32_t type, uint32_t id, uint32_t flags, uint32_t mode,
			      const char *path)
{
	if (!path || !file_req_type_ok(type) || (flags & ~(INITPROTO_FILE_PARENTS | INITPROTO_FILE_RECURSIVE)) ||
	    mode > 07777)
		return -EINVAL;
	size_t plen = strlen(path);
	if (!initproto_file_path_ok(path, plen))
		return -EINVAL;
	size_t len = FILE_REQ_HEAD + plen + 1;
	if (len > cap)
		return -E2BIG;
	struct initproto_hdr hdr = {.type = type, .handle = id};
	struct initproto_file_req f = {.flags = flags, .mode = mode};
	memcpy(buf, &hdr, sizeof(hdr));
	memcpy((char *)buf + sizeof(hdr), &f, sizeof(f));
	memcpy((char *)buf + FILE_REQ_HEAD, path, plen + 1);
	return (int)len;
}

int initproto_decode_file_req(const void *pkt, size_t len, struct initproto_file_req *ret, const char **ret_path)
{
	struct initproto_hdr hdr;
	struct initproto_file_req f;
	if (!pkt || len < FILE_REQ_HEAD + 2 || len > FILE_REQ_HEAD + PATH_MAX)
		return -EINVAL;
	memcpy(&hdr, pkt, sizeof(hdr));
	memcpy(&f, (const char *)pkt + sizeof(hdr), sizeof(f));
	if (!file_req_type_ok(hdr.type) || (f.flags & ~(INITPROTO_FILE_PARENTS | INITPROTO_FILE_RECURSIVE)) ||
	    f.mode > 07777)
		return -EINVAL;
	const char *path = (const char *)pkt + FILE_REQ_HEAD;
	size_t plen = len - FILE_REQ_HEAD - 1;
	if (path[plen] != '\0' || !initproto_file_path_ok(path, plen)) /* exactly one NUL, at the end */
		return -EINVAL;
	*ret = f;
	*ret_path = path;
	return 0;
}

static bool file_stat_ok(const struct initproto_file_stat *st)
{
	return st->type >= INITPROTO_FTYPE_REGULAR && st->type <= INITPROTO_FTYPE_OTHER && st->mode <= 07777 &&
	       st->reserved == 0 && st->target_len < PATH_MAX &&
	       (st->target_len == 0 || st->type == INITPROTO_FTYPE_SYMLINK);
}

/* A string of exactly len bytes followed by a NUL, with no NUL inside, at p within [p, end). */
static bool counted_string_ok(const char *p, const char *end, size_t len)
{
	return (size_t)(end - p) > len && p[len] == '\0' && !memchr(p, '\0', len);
}

int initproto_decode_file_result(const void *body, size_t len, struct initproto_file_result *ret,
				 const char **ret_target)
{
	struct initproto_file_result r;
	if (!body || len < sizeof(r) + 1)
		return -EINVAL;
	memcpy(&r, body, sizeof(r));
	const char *p = (const char *)body + sizeof(r), *end = (const char *)body + len;
	if (r.error < 0 || r.error > 4095 || r.has_stat > 1 || r.st.name_len != 0)
		return -EINVAL;
	if (r.has_stat ? !file_stat_ok(&r.st) : r.st.target_len != 0)
		return -EINVAL;
	if (!counted_string_ok(p, end, r.st.target_len) || p + r.st.target_len + 1 != end)
		return -EINVAL;
	r.msg[sizeof(r.msg) - 1] = '\0';
	*ret = r;
	*ret_target = p;
	return 0;
}

int initproto_put_file_entry(void *buf, size_t cap, size_t *pos, const struct initproto_file_stat *st,
			     const char *name, const char *target)
{
	size_t nl = strlen(name), tl = target ? strlen(target) : 0;
	size_t need = sizeof(*st) + nl + 1 + tl + 1;
	if (nl == 0 || nl > 255 || tl >= PATH_MAX)
		return -EINVAL;
	if (*pos > cap || cap - *pos < need)
		return -E2BIG;
	struct initproto_file_stat s = *st;
	s.name_len = (uint16_t)nl;
	s.target_len = (uint16_t)tl;
	s.reserved = 0;
	char *p = (char *)buf + *pos;
	memcpy(p, &s, sizeof(s));
	memcpy(p + sizeof(s), name, nl + 1);
	memcpy(p + sizeof(s) + nl + 1, target ? target : "", tl + 1);
	*pos += need;
	return 0;
}

static bool entry_name_ok(const char *name, size_t len)
{
	if (len == 0 || len > 255 || memchr(name, '/', len))
		return false;
	return !(len == 1 && name[0] == '.') && !(len == 2 && name[0] == '.' && name[1] == '.');
}

int initproto_check_file_entries(const void *body, size_t len, uint32_t *ret_count)
{
	struct initproto_file_entries h;
	if (!body || len < sizeof(h) || len > INITPROTO_FILE_REPLY_MAX)
		return -EINVAL;
	memcpy(&h, body, sizeof(h));
	const char *p = (const char *)body + sizeof(h), *end = (const char *)body + len;
	for (uint32_t i = 0; i < h.count; i++) {
		struct initproto_file_stat st;
		if ((size_t)(end - p) < sizeof(st))
			return -EINVAL;
		memcpy(&st, p, sizeof(st));
		p += sizeof(st);
		if (!file_stat_ok(&st) || !counted_string_ok(p, end, st.name_len) || !entry_name_ok(p, st.name_len))
			return -EINVAL;
		p += st.name_len + 1;
		if (!counted_string_ok(p, end, st.target_len))
			return -EINVAL;
		p += st.target_len + 1;
	}
	if (p != end)
		return -EINVAL;
	*ret_count = h.count;
	return 0;
}

void initproto_next_file_entry(const char **pos, struct initproto_file_stat *st, const char **name,
			       const char **target)
{
	memcpy(st, *pos, sizeof(*st));
	*name = *pos + sizeof(*st);
	*target = *name + st->name_len + 1;
	*pos = *target + st->target_len + 1;
}
