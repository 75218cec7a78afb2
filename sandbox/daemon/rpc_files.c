/* The filesystem API (see daemon/rpc_files.h).
 *
 * Each call becomes one file_op: a request to the sandbox's init (init/initproto.h, "Files")
 * with a per-sandbox request id, and then, for ReadFile and WriteFile, a transfer through the
 * regular file init handed over. What init sends is hostile input: answers for unknown ids, fds
 * that are not regular files on a disk or memory file system, and malformed listings are protocol
 * violations that terminate the sandbox.
 *
 * Memory stays bounded per call: ReadFile reads READ_CHUNK at a time on the libuv threadpool and
 * reads ahead at most one chunk while the client's queue is above READ_QUEUE_HIGH (a 1 TiB
 * sparse file streams at the client's pace, or until it cancels). WriteFile writes each message
 * as it arrives: the gRPC transport has no per-call receive window to pause, so consuming in the
 * handler is what bounds the daemon; the bytes go to page cache, not to a device, so the write
 * is short. Only the messages that arrive before init has opened the temp file are buffered, up
 * to WRITE_EARLY_MAX.
 */
#include "daemon/rpc_files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "daemon/grpc.h"
#include "daemon/rpc.h"
#include "daemon/sandbox.h"
#include "daemon/status.h"
#include "init/initproto.h"
#include "util/cleanup.h"
#include "util/log.h"

#define FILES_MAX_OPS 64             /* file calls in progress per sandbox */
#define READ_CHUNK (256u << 10)      /* bytes per ReadFile message */
#define READ_QUEUE_HIGH (512u << 10) /* ReadFile waits while more than this is queued to the client */
#define WRITE_EARLY_MAX (8u << 20)   /* WriteFile bytes buffered before init opened the file */
#define REQ_PKT_MAX (sizeof(struct initproto_hdr) + sizeof(struct initproto_file_req) + PATH_MAX)

enum op_kind { OP_READ, OP_WRITE, OP_LIST, OP_STAT, OP_MKDIR, OP_REMOVE };

struct chunk {
	struct chunk *next;
	size_t len;
	uint8_t data[];
};

struct files_state {
	struct sandbox *sb;
	struct file_op *ops; /* every op of the sandbox still alive */
	uint32_t n_ops;
	uint32_t next_id;
};

struct file_op {
	struct file_op *next;
	struct files_state *fs; /* NULL once the sandbox ended */
	struct manager *m;
	enum op_kind kind;
	uint32_t id;
	bool owed;              /* init owes an answer for id */
	struct grpc_call *call; /* our reference; NULL once the call finished or died */
	char *path;
	int fd;                 /* the file init handed over */
	/* ReadFile */
	uint64_t offset, end;
	bool info_sent, reading;
	struct initproto_file_stat st;
	uv_fs_t fsreq;
	uint8_t *buf;
	size_t buf_len;
	/* WriteFile */
	bool opened, half_closed, committing;
	uint64_t written;
	struct chunk *early, *early_tail;
	size_t early_bytes;
	/* ListFiles */
	Corral__V1__FileInfo *entries;
	size_t n_entries, cap_entries, list_bytes;
};

/* ---- errors --------------------------------------------------------------------------------- */

/* File errors that mean something more precise than daemon/status.c's general table. */
static const struct {
	int err;
	enum grpc_status_code code;
} file_status_table[] = {
	{ENOENT, GRPC_STATUS_NOT_FOUND},
	{ENOTDIR, GRPC_STATUS_FAILED_PRECONDITION},
	{EISDIR, GRPC_STATUS_FAILED_PRECONDITION},
	{ELOOP, GRPC_STATUS_FAILED_PRECONDITION},
	{ENOTEMPTY, GRPC_STATUS_FAILED_PRECONDITION},
	{ENODEV, GRPC_STATUS_FAILED_PRECONDITION}, /* not a regular file */
	{EBUSY, GRPC_STATUS_FAILED_PRECONDITION},
	{EXDEV, GRPC_STATUS_FAILED_PRECONDITION},
	{EROFS, GRPC_STATUS_FAILED_PRECONDITION},
	{ETXTBSY, GRPC_STATUS_FAILED_PRECONDITION},
	{EACCES, GRPC_STATUS_PERMISSION_DENIED},
	{EPERM, GRPC_STATUS_PERMISSION_DENIED},
	{EFBIG, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{ENOSPC, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{EDQUOT, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{E2BIG, GRPC_STATUS_RESOURCE_EXHAUSTED}, /* a listing over its caps */
	{EAGAIN, GRPC_STATUS_RESOURCE_EXHAUSTED}, /* too many writes or removals at once in init */
	{EEXIST, GRPC_STATUS_ALREADY_EXISTS},
	{EINVAL, GRPC_STATUS_INVALID_ARGUMENT},
	{ENAMETOOLONG, GRPC_STATUS_INVALID_ARGUMENT},
	{EINTR, GRPC_STATUS_ABORTED},
	{EIO, GRPC_STATUS_ABORTED},
};

static enum grpc_status_code file_status(int err)
{
	for (size_t i = 0; i < ARRAY_SIZE(file_status_table); i++)
		if (file_status_table[i].err == err)
			return file_status_table[i].code;
	return status_from_errno(err);
}

/* Text from init is made printable before it reaches a client or a log. */
static void sanitize(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

/* ---- op lifetime ------------------------------------------------------------------------------ */

static void chunks_free(struct file_op *op)
{
	while (op->early) {
		struct chunk *c = op->early;
		op->early = c->next;
		free(c);
	}
	op->early_tail = NULL;
	op->early_bytes = 0;
}

static void entries_free(struct file_op *op)
{
	for (size_t i = 0; i < op->n_entries; i++) {
		free(op->entries[i].name);
		free(op->entries[i].symlink_target);
	}
	free(op->entries);
	op->entries = NULL;
	op->n_entries = op->cap_entries = 0;
}

static void op_unlink(struct file_op *op)
{
	struct files_state *fs = op->fs;
	if (!fs)
		return;
	for (struct file_op **pp = &fs->ops; *pp; pp = &(*pp)->next)
		if (*pp == op) {
			*pp = op->next;
			fs->n_ops--;
			break;
		}
	op->fs = NULL;
}

/* Free the op once nothing refers to it: no call, no answer owed by init, no read in flight. */
static void op_maybe_free(struct file_op *op)
{
	if (op->call || op->owed || op->reading)
		return;
	op_unlink(op);
	if (op->fd >= 0)
		close(op->fd);
	chunks_free(op);
	entries_free(op);
	free(op->buf);
	free(op->path);
	free(op);
}

static int op_send(struct file_op *op, const void *pkt, size_t len)
{
	if (!op->fs)
		return -EPIPE;
	return sandbox_send(op->fs->sb, pkt, len);
}

/* A write that will not be committed: init drops its temp file. Nothing to do while init still
 * owes the open (that answer's handler does it) or the commit (it is done either way). */
static void write_abort(struct file_op *op)
{
	if (op->kind != OP_WRITE || !op->opened || op->owed)
		return;
	struct initproto_hdr h = {.type = INITPROTO_FILE_ABORT, .handle = op->id};
	(void)op_send(op, &h, sizeof(h)); /* a dead channel drops the temp file anyway */
	op->opened = false;
}

/* The call is over (finished by us, or died): let go of it. */
static void op_drop_call(struct file_op *op)
{
	struct grpc_call *call = TAKE_PTR(op->call);
	if (call) {
		grpc_call_set_data(call, NULL);
		grpc_call_unref(call);
	}
	write_abort(op);
	op_maybe_free(op);
}

static void __attribute__((format(printf, 3, 4)))
op_finish(struct file_op *op, enum grpc_status_code code, const char *fmt, ...)
{
	if (op->call) {
		char msg[1024] = "";
		if (fmt) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(msg, sizeof(msg), fmt, ap);
			va_end(ap);
		}
		if (code != GRPC_STATUS_OK)
			log_debug("%s %s: %s", grpc_call_method(op->call), op->path, msg);
		grpc_call_finish(op->call, code, "%s", msg);
	}
	op_drop_call(op);
}

static void op_on_cancel(struct grpc_call *call, void *data)
{
	op_drop_call(data);
}

static struct file_op *find_op(struct files_state *fs, uint32_t id)
{
	for (struct file_op *op = fs ? fs->ops : NULL; op; op = op->next)
		if (op->id == id)
			return op;
	return NULL;
}

static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *ret)
{
	uint64_t v = 0;
	for (int shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*ret = v;
			return true;
		}
	}
	return false;
}

/* protobuf-c cuts a string at its first NUL, so "/etc/passwd\0x" would arrive as "/etc/passwd".
 * Every file request has sandbox_id = 1 and path = 2: look for a NUL in their wire form. */
static bool request_has_nul(const struct grpc_call *call)
{
	size_t len;
	const uint8_t *p = grpc_call_request_bytes(call, &len), *end = p + len;
	uint64_t key, v;
	while (p && p < end) {
		if (!varint(&p, end, &key))
			return false; /* (protobuf-c decoded it: cannot happen) */
		switch (key & 7) {
		case 0:
			if (!varint(&p, end, &v))
				return false;
			break;
		case 1:
		case 5:
			if ((size_t)(end - p) < ((key & 7) == 1 ? 8u : 4u))
				return false;
			p += (key & 7) == 1 ? 8 : 4;
			break;
		case 2:
			if (!varint(&p, end, &v) || v > (uint64_t)(end - p))
				return false;
			if ((key >> 3 == 1 || key >> 3 == 2) && memchr(p, '\0', (size_t)v))
				return true;
			p += v;
			break;
		default:
			return false;
		}
	}
	return false;
}

/* Check the request, find its running sandbox, and make the op (the call is answered on failure). */
static struct file_op *op_start(struct manager *m, struct grpc_call *call, const char *sandbox_id, const char *path,
				enum op_kind kind)
{
	size_t plen = strlen(path);
	if (request_has_nul(call)) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "path and sandbox_id must not contain NUL bytes");
		return NULL;
	}
	if (!sandbox_id[0]) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "sandbox_id is required");
		return NULL;
	}
	if (!plen) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "path is required");
		return NULL;
	}
	if (plen >= PATH_MAX || !initproto_file_path_ok(path, plen)) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "path must be absolute and shorter than %d bytes: %.200s",
				 PATH_MAX, path);
		return NULL;
	}
	struct sandbox *sb = manager_find_client_sandbox(m, sandbox_id);
	if (!sb) {
		grpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "sandbox %.64s not found", sandbox_id);
		return NULL;
	}
	if (sb->state != SANDBOX_RUNNING) {
		grpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "sandbox %s has finished", sb->id);
		return NULL;
	}
	if (sb->adopting || sb->ctl_fd < 0) {
		grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "sandbox %s is reconnecting; retry", sb->id);
		return NULL;
	}
	if (!sb->files) {
		sb->files = calloc(1, sizeof(*sb->files));
		if (!sb->files) {
			grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			return NULL;
		}
		sb->files->sb = sb;
	}
	struct files_state *fs = sb->files;
	if (fs->n_ops >= FILES_MAX_OPS) {
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "sandbox %s has %d file calls in progress; retry later",
				 sb->id, FILES_MAX_OPS);
		return NULL;
	}
	struct file_op *op = calloc(1, sizeof(*op));
	if (!op || !(op->path = strdup(path))) {
		free(op);
		grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return NULL;
	}
	do /* ids are unique among the sandbox's live ops; 0 is never used */
		op->id = ++fs->next_id;
	while (op->id == 0 || find_op(fs, op->id));
	op->m = m;
	op->kind = kind;
	op->fd = -1;
	op->fs = fs;
	op->next = fs->ops;
	fs->ops = op;
	fs->n_ops++;
	grpc_call_ref(call);
	op->call = call;
	grpc_call_on_cancel(call, op_on_cancel, op);
	sandbox_touch(sb);
	return op;
}

/* Ask init; the answer comes to rpc_files_on_packet. */
static bool op_request(struct file_op *op, uint32_t type, uint32_t flags, uint32_t mode)
{
	char pkt[REQ_PKT_MAX];
	int len = initproto_encode_file_req(pkt, sizeof(pkt), type, op->id, flags, mode, op->path);
	int r = len < 0 ? len : op_send(op, pkt, (size_t)len);
	if (r < 0) {
		op_finish(op, r == -EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_UNAVAILABLE,
			  "cannot ask the sandbox's init about %s: %s", op->path, strerror(-r));
		return false;
	}
	op->owed = true;
	return true;
}

static void fill_info(const struct initproto_file_stat *st, const char *name, const char *target,
		      Corral__V1__FileInfo *info)
{
	corral__v1__file_info__init(info);
	info->name = (char *)name;
	info->type = (Corral__V1__FileType)st->type; /* initproto_file_type mirrors FileType */
	info->size = st->size;
	info->mode = st->mode;
	info->modified_at_ms = st->mtime_ms;
	info->symlink_target = (char *)(target ? target : "");
	info->uid = st->uid;
	info->gid = st->gid;
}

/* The fd init handed over must be what the protocol says: a regular file on a disk or memory
 * file system, open for the direction we need. Anything else is init misbehaving. */
static int check_fd(int fd, bool write, struct err *e)
{
	struct stat s;
	struct statfs sf;
	if (fstat(fd, &s) < 0 || fstatfs(fd, &sf) < 0)
		return err_set(e, errno, "stat of a file fd from init");
	if (!S_ISREG(s.st_mode))
		return err_setx(e, EPROTO, "file fd from init is not a regular file");
	if (!initproto_file_fs_ok(sf.f_type))
		return err_setx(e, EPROTO, "file fd from init is on an unexpected file system type 0x%lx", (long)sf.f_type);
	int fl = fcntl(fd, F_GETFL);
	int acc = fl & O_ACCMODE;
	if (fl < 0 || (write ? acc == O_RDONLY : acc == O_WRONLY) || (fl & O_PATH))
		return err_setx(e, EPROTO, "file fd from init has the wrong access mode");
	return 0;
}

/* ---- ReadFile --------------------------------------------------------------------------------- */

static void read_next(struct file_op *op);

static bool read_send(struct file_op *op, const uint8_t *data, size_t len)
{
	Corral__V1__ReadFileResponse resp = CORRAL__V1__READ_FILE_RESPONSE__INIT;
	Corral__V1__FileInfo info;
	resp.offset = op->offset;
	resp.data.data = (uint8_t *)data;
	resp.data.len = len;
	if (!op->info_sent) {
		fill_info(&op->st, op->path, NULL, &info);
		resp.info = &info;
	}
	int r = grpc_call_send(op->call, &resp.base);
	if (r < 0) {
		op_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot queue a chunk of %s: %s", op->path, strerror(-r));
		return false;
	}
	op->info_sent = true;
	op->offset += len;
	return true;
}

static void read_done(struct file_op *op)
{
	if (!op->info_sent && !read_send(op, NULL, 0))
		return;
	op_finish(op, GRPC_STATUS_OK, NULL);
}

static void read_on_writable(struct grpc_call *call, void *data);

/* Send the chunk read ahead once the client's queue allows it, then read the next one. */
static void read_flush(struct file_op *op)
{
	if (!op->call)
		return op_maybe_free(op);
	if (grpc_call_pending_bytes(op->call) > READ_QUEUE_HIGH) {
		grpc_call_on_writable(op->call, read_on_writable, op);
		return;
	}
	size_t n = op->buf_len;
	op->buf_len = 0;
	if (read_send(op, op->buf, n))
		read_next(op);
}

static void read_on_writable(struct grpc_call *call, void *data)
{
	read_flush(data);
}

static void read_cb(uv_fs_t *req)
{
	struct file_op *op = req->data;
	ssize_t n = req->result;
	uv_fs_req_cleanup(req);
	op->reading = false;
	if (!op->call)
		return op_maybe_free(op);
	if (n < 0)
		return op_finish(op, file_status(-(int)n), "read %s: %s", op->path, uv_strerror((int)n));
	if (n == 0)
		return read_done(op);
	op->buf_len = (size_t)n;
	read_flush(op);
}

static void read_next(struct file_op *op)
{
	uint64_t want = op->end - op->offset;
	if (want > READ_CHUNK)
		want = READ_CHUNK;
	if (want == 0)
		return read_done(op);
	uv_buf_t b = uv_buf_init((char *)op->buf, (unsigned)want);
	op->fsreq.data = op;
	int r = uv_fs_read(op->m->loop, &op->fsreq, op->fd, &b, 1, (int64_t)op->offset, read_cb);
	if (r < 0)
		return op_finish(op, GRPC_STATUS_INTERNAL, "read %s: %s", op->path, uv_strerror(r));
	op->reading = true;
}

static int read_opened(struct file_op *op, const struct initproto_file_result *res, int fd, struct err *e)
{
	if (!res->has_stat || res->st.type != INITPROTO_FTYPE_REGULAR) {
		close(fd);
		return err_setx(e, EPROTO, "OPEN_READ answer without a regular file's stat");
	}
	int r = check_fd(fd, false, e);
	if (r < 0) {
		close(fd);
		return r;
	}
	op->fd = fd;
	op->st = res->st;
	if (!op->call) { /* cancelled meanwhile */
		op_maybe_free(op);
		return 0;
	}
	op->buf = malloc(READ_CHUNK);
	if (!op->buf) {
		op_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return 0;
	}
	read_next(op);
	return 0;
}

static void read_file(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__ReadFileRequest *req = (const Corral__V1__ReadFileRequest *)msg;
	if (req->offset > INT64_MAX) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "offset %llu is too large",
				 (unsigned long long)req->offset);
		return;
	}
	struct file_op *op = op_start(ctx, call, req->sandbox_id, req->path, OP_READ);
	if (!op)
		return;
	op->offset = req->offset;
	op->end = req->length && req->length <= (uint64_t)INT64_MAX - req->offset ? req->offset + req->length
										      : (uint64_t)INT64_MAX;
	op_request(op, INITPROTO_FILE_OPEN_READ, 0, 0);
}

/* ---- WriteFile -------------------------------------------------------------------------------- */

static bool write_all(struct file_op *op, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = pwrite(op->fd, p, len, (off_t)op->written);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;
			if (err == ENOSPC || err == EDQUOT || err == EFBIG)
				op_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED,
					  "write %s: %s (the sandbox's disk limit is reached, or the file is too large)",
					  op->path, strerror(err));
			else
				op_finish(op, file_status(err), "write %s: %s", op->path, strerror(err));
			return false;
		}
		p += n;
		len -= (size_t)n;
		op->written += (uint64_t)n;
	}
	return true;
}

static void write_commit(struct file_op *op)
{
	struct initproto_hdr h = {.type = INITPROTO_FILE_COMMIT, .handle = op->id};
	int r = op_send(op, &h, sizeof(h));
	if (r < 0)
		return op_finish(op, GRPC_STATUS_UNAVAILABLE, "cannot reach the sandbox's init: %s", strerror(-r));
	op->owed = true;
	op->committing = true;
}

static void write_data(struct file_op *op, const uint8_t *data, size_t len)
{
	if (op->opened) {
		write_all(op, data, len);
		return;
	}
	if (op->early_bytes + len > WRITE_EARLY_MAX)
		return op_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED,
				 "more than %u bytes sent before the sandbox opened %s; slow down", WRITE_EARLY_MAX, op->path);
	struct chunk *c = malloc(sizeof(*c) + len);
	if (!c)
		return op_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	c->next = NULL;
	c->len = len;
	memcpy(c->data, data, len);
	if (op->early_tail)
		op->early_tail->next = c;
	else
		op->early = c;
	op->early_tail = c;
	op->early_bytes += len;
}

static int write_opened(struct file_op *op, int fd, struct err *e)
{
	int r = check_fd(fd, true, e);
	if (r < 0) {
		close(fd);
		return r;
	}
	op->fd = fd;
	op->opened = true;
	if (!op->call) { /* cancelled meanwhile */
		write_abort(op);
		op_maybe_free(op);
		return 0;
	}
	while (op->early) {
		struct chunk *c = op->early;
		op->early = c->next;
		bool ok = write_all(op, c->data, c->len);
		free(c);
		if (!ok)
			return 0;
	}
	chunks_free(op);
	if (op->half_closed)
		write_commit(op);
	return 0;
}

static void write_file(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__WriteFileRequest *req = (const Corral__V1__WriteFileRequest *)msg;
	struct file_op *op = grpc_call_get_data(call);
	if (!req) { /* the client half-closed */
		if (!op) {
			grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
					 "WriteFile needs a first message with sandbox_id and path");
			return;
		}
		op->half_closed = true;
		if (op->opened)
			write_commit(op);
		return;
	}
	if (!op) {
		if (req->mode > 07777) {
			grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "mode %#o has bits beyond 07777", req->mode);
			return;
		}
		op = op_start(ctx, call, req->sandbox_id, req->path, OP_WRITE);
		if (!op)
			return;
		grpc_call_set_data(call, op);
		if (!op_request(op, INITPROTO_FILE_OPEN_WRITE, req->make_parents ? INITPROTO_FILE_PARENTS : 0, req->mode))
			return;
	} else if (request_has_nul(call) || (req->path[0] && strcmp(req->path, op->path)) ||
		   (req->sandbox_id[0] && op->fs && strcmp(req->sandbox_id, op->fs->sb->id))) {
		return op_finish(op, GRPC_STATUS_INVALID_ARGUMENT,
				 "a later WriteFile message names another path or sandbox than the first");
	}
	if (req->data.len)
		write_data(op, req->data.data, req->data.len);
}

/* ---- ListFiles, StatFile, MakeDirectory, RemovePath ------------------------------------------- */

static int list_add(struct file_op *op, const void *body, size_t len, struct err *e)
{
	uint32_t count;
	if (initproto_check_file_entries(body, len, &count) < 0)
		return err_setx(e, EPROTO, "malformed FILE_ENTRIES");
	if (op->n_entries + count > INITPROTO_FILE_MAX_ENTRIES)
		return err_setx(e, EPROTO, "FILE_ENTRIES beyond %d entries", INITPROTO_FILE_MAX_ENTRIES);
	if (op->n_entries + count > op->cap_entries) {
		size_t cap = op->cap_entries ? op->cap_entries : 64;
		while (cap < op->n_entries + count)
			cap *= 2;
		Corral__V1__FileInfo *a = realloc(op->entries, cap * sizeof(*a));
		if (!a)
			return err_setx(e, ENOMEM, "out of memory for a listing");
		op->entries = a;
		op->cap_entries = cap;
	}
	const char *pos = (const char *)body + sizeof(struct initproto_file_entries);
	for (uint32_t i = 0; i < count; i++) {
		struct initproto_file_stat st;
		const char *name, *target;
		initproto_next_file_entry(&pos, &st, &name, &target);
		op->list_bytes += st.name_len + st.target_len + sizeof(st);
		if (op->list_bytes > INITPROTO_FILE_MAX_LIST_BYTES + INITPROTO_FILE_MAX_ENTRIES * sizeof(st))
			return err_setx(e, EPROTO, "FILE_ENTRIES beyond %u bytes", INITPROTO_FILE_MAX_LIST_BYTES);
		char *n = strdup(name), *t = strdup(target);
		if (!n || !t) {
			free(n);
			free(t);
			return err_setx(e, ENOMEM, "out of memory for a listing");
		}
		sanitize(n); /* names reach clients as proto3 strings: keep them printable ASCII-safe */
		sanitize(t);
		fill_info(&st, n, t, &op->entries[op->n_entries++]);
	}
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp((*(Corral__V1__FileInfo *const *)a)->name, (*(Corral__V1__FileInfo *const *)b)->name);
}

static void list_reply(struct file_op *op)
{
	_cleanup_free_ Corral__V1__FileInfo **ptrs = calloc(op->n_entries ? op->n_entries : 1, sizeof(*ptrs));
	if (!ptrs)
		return op_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	for (size_t i = 0; i < op->n_entries; i++)
		ptrs[i] = &op->entries[i];
	qsort(ptrs, op->n_entries, sizeof(*ptrs), entry_cmp);
	Corral__V1__ListFilesResponse resp = CORRAL__V1__LIST_FILES_RESPONSE__INIT;
	resp.n_entries = op->n_entries;
	resp.entries = ptrs;
	int r = grpc_call_send(op->call, &resp.base);
	if (r < 0)
		return op_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED, "listing of %s too large to send", op->path);
	op_finish(op, GRPC_STATUS_OK, NULL);
}

static void reply_one(struct file_op *op, const ProtobufCMessage *resp)
{
	int r = grpc_call_send(op->call, resp);
	if (r < 0)
		return op_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot send the answer: %s", strerror(-r));
	op_finish(op, GRPC_STATUS_OK, NULL);
}

/* The answer of StatFile, MakeDirectory, RemovePath and a committed WriteFile. */
static void simple_reply(struct file_op *op, const struct initproto_file_result *res, const char *target)
{
	Corral__V1__StatFileResponse stat = CORRAL__V1__STAT_FILE_RESPONSE__INIT;
	Corral__V1__MakeDirectoryResponse mkdir = CORRAL__V1__MAKE_DIRECTORY_RESPONSE__INIT;
	Corral__V1__RemovePathResponse remove = CORRAL__V1__REMOVE_PATH_RESPONSE__INIT;
	Corral__V1__WriteFileResponse write = CORRAL__V1__WRITE_FILE_RESPONSE__INIT;
	Corral__V1__FileInfo info;
	switch (op->kind) {
	case OP_STAT: {
		_cleanup_free_ char *t = strdup(target);
		if (!t)
			return op_finish(op, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		sanitize(t);
		fill_info(&res->st, op->path, t, &info);
		stat.info = &info;
		return reply_one(op, &stat.base);
	}
	case OP_MKDIR: return reply_one(op, &mkdir.base);
	case OP_REMOVE: return reply_one(op, &remove.base);
	case OP_WRITE:
		write.bytes_written = op->written;
		return reply_one(op, &write.base);
	default: return op_finish(op, GRPC_STATUS_INTERNAL, "unexpected answer");
	}
}

static void list_files(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__ListFilesRequest *req = (const Corral__V1__ListFilesRequest *)msg;
	struct file_op *op = op_start(ctx, call, req->sandbox_id, req->path, OP_LIST);
	if (op)
		op_request(op, INITPROTO_FILE_LIST, 0, 0);
}

static void stat_file(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__StatFileRequest *req = (const Corral__V1__StatFileRequest *)msg;
	struct file_op *op = op_start(ctx, call, req->sandbox_id, req->path, OP_STAT);
	if (op)
		op_request(op, INITPROTO_FILE_STAT, 0, 0);
}

static void make_directory(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__MakeDirectoryRequest *req = (const Corral__V1__MakeDirectoryRequest *)msg;
	if (req->mode > 07777) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "mode %#o has bits beyond 07777", req->mode);
		return;
	}
	struct file_op *op = op_start(ctx, call, req->sandbox_id, req->path, OP_MKDIR);
	if (op)
		op_request(op, INITPROTO_FILE_MKDIR, req->parents ? INITPROTO_FILE_PARENTS : 0, req->mode);
}

static void remove_path(struct grpc_call *call, const ProtobufCMessage *msg, void *ctx)
{
	const Corral__V1__RemovePathRequest *req = (const Corral__V1__RemovePathRequest *)msg;
	struct file_op *op = op_start(ctx, call, req->sandbox_id, req->path, OP_REMOVE);
	if (op)
		op_request(op, INITPROTO_FILE_REMOVE, req->recursive ? INITPROTO_FILE_RECURSIVE : 0, 0);
}

/* ---- answers from init ------------------------------------------------------------------------ */

static void close_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
}

static int on_result(struct file_op *op, const void *body, size_t len, int *fds, size_t nfds, struct err *e)
{
	struct initproto_file_result res;
	const char *target;
	if (initproto_decode_file_result(body, len, &res, &target) < 0) {
		close_fds(fds, nfds);
		return err_setx(e, EPROTO, "malformed FILE_RESULT");
	}
	bool opening = op->kind == OP_READ || (op->kind == OP_WRITE && !op->committing);
	if (nfds != (res.error == 0 && opening ? 1u : 0u)) {
		close_fds(fds, nfds);
		return err_setx(e, EPROTO, "FILE_RESULT with %zu fds", nfds);
	}
	op->owed = false;
	if (res.error) {
		if (op->kind == OP_WRITE)
			op->opened = false; /* init dropped the temp file, if there was one */
		sanitize(res.msg);
		op_finish(op, file_status(res.error), "%s", res.msg[0] ? res.msg : strerror(res.error));
		return 0;
	}
	/* Each branch ends the op or leaves it with work pending; op may be freed after it. */
	if (op->kind == OP_READ)
		return read_opened(op, &res, fds[0], e);
	if (op->kind == OP_WRITE && !op->committing)
		return write_opened(op, fds[0], e);
	if (op->kind == OP_STAT && !res.has_stat)
		return err_setx(e, EPROTO, "STAT answer without a stat");
	if (op->kind == OP_WRITE)
		op->opened = false; /* renamed into place: nothing to abort */
	if (!op->call) {
		op_maybe_free(op);
		return 0;
	}
	if (op->kind == OP_LIST)
		list_reply(op);
	else
		simple_reply(op, &res, target);
	return 0;
}

int rpc_files_on_packet(struct sandbox *sb, uint32_t type, uint32_t id, const void *body, size_t len, int *fds,
			size_t nfds, struct err *e)
{
	if (sb->state != SANDBOX_RUNNING) { /* a dying init's last words: nobody waits for them */
		close_fds(fds, nfds);
		return 0;
	}
	struct file_op *op = find_op(sb->files, id);
	if (!op || !op->owed) {
		close_fds(fds, nfds);
		return err_setx(e, EPROTO, "file answer for unknown request %u", id);
	}
	if (type == INITPROTO_FILE_RESULT)
		return on_result(op, body, len, fds, nfds, e);
	if (type != INITPROTO_FILE_ENTRIES || op->kind != OP_LIST || nfds) {
		close_fds(fds, nfds);
		return err_setx(e, EPROTO, "unexpected file message type %u", type);
	}
	return list_add(op, body, len, e);
}

void rpc_files_sandbox_end(struct sandbox *sb)
{
	struct files_state *fs = sb->files;
	if (!fs)
		return;
	while (fs->ops) {
		struct file_op *op = fs->ops;
		op_unlink(op);
		op->owed = false;
		op->opened = false; /* init is gone: its temp files with it */
		op_finish(op, GRPC_STATUS_FAILED_PRECONDITION, "sandbox %s has finished", sb->id);
	}
}

void rpc_files_sandbox_free(struct sandbox *sb)
{
	rpc_files_sandbox_end(sb);
	free(sb->files);
	sb->files = NULL;
}

/* ---- table -------------------------------------------------------------------------------------- */

#define FILE_METHOD(name, kind, req, fn) \
	{"/corral.v1.SandboxService/" name, kind, &corral__v1__##req##__descriptor, fn}

static const struct grpc_method file_methods[] = {
	FILE_METHOD("ReadFile", GRPC_METHOD_SERVER_STREAM, read_file_request, read_file),
	FILE_METHOD("WriteFile", GRPC_METHOD_CLIENT_STREAM, write_file_request, write_file),
	FILE_METHOD("ListFiles", GRPC_METHOD_UNARY, list_files_request, list_files),
	FILE_METHOD("StatFile", GRPC_METHOD_UNARY, stat_file_request, stat_file),
	FILE_METHOD("MakeDirectory", GRPC_METHOD_UNARY, make_directory_request, make_directory),
	FILE_METHOD("RemovePath", GRPC_METHOD_UNARY, remove_path_request, remove_path),
};

const struct rpc_methods rpc_files_methods = {file_methods, ARRAY_SIZE(file_methods)};
