/* The filesystem API's init side: the FILE_* codec (strict), and init/fileops.c served from a
 * temporary directory as the root: round trips, typed errors, and paths that try to leave the
 * root (absolute and relative symlinks, "..", a final symlink, a FIFO). */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "init/fileops.c" /* corral-init's sources are not in libcorral.a: test them directly */
#include "init/park.c"
#include "init/initproto.h"
#include "testlib.h"
#include "util/fs.h"

/* ---- the codec --------------------------------------------------------------------------------- */

static char pkt[INITPROTO_FILE_REPLY_MAX + PATH_MAX];

static size_t raw_req(uint32_t type, uint32_t flags, uint32_t mode, const void *path, size_t n)
{
	struct initproto_hdr h = {.type = type, .handle = 9};
	struct initproto_file_req f = {.flags = flags, .mode = mode};
	memcpy(pkt, &h, sizeof(h));
	memcpy(pkt + sizeof(h), &f, sizeof(f));
	memcpy(pkt + sizeof(h) + sizeof(f), path, n);
	return sizeof(h) + sizeof(f) + n;
}

static void test_req_roundtrip(void)
{
	struct initproto_file_req f;
	const char *path;
	int len = initproto_encode_file_req(pkt, sizeof(pkt), INITPROTO_FILE_MKDIR, 77, INITPROTO_FILE_PARENTS, 0700,
					    "/a/b");
	CHECK(len > 0);
	CHECK_EQ_INT(initproto_decode_file_req(pkt, (size_t)len, &f, &path), 0);
	CHECK_STREQ(path, "/a/b");
	CHECK_EQ_INT(f.flags, INITPROTO_FILE_PARENTS);
	CHECK_EQ_INT(f.mode, 0700);
}

static void test_req_rejects(void)
{
	struct initproto_file_req f;
	const char *path;
	CHECK_EQ_INT(initproto_encode_file_req(pkt, sizeof(pkt), INITPROTO_FILE_STAT, 1, 0, 0, "rel"), -EINVAL);
	CHECK_EQ_INT(initproto_encode_file_req(pkt, sizeof(pkt), INITPROTO_FILE_STAT, 1, 0, 0, ""), -EINVAL);
	CHECK_EQ_INT(initproto_encode_file_req(pkt, sizeof(pkt), INITPROTO_FILE_STAT, 1, 0, 010000, "/x"), -EINVAL);
	CHECK_EQ_INT(initproto_encode_file_req(pkt, sizeof(pkt), INITPROTO_FILE_STAT, 1, 0x80, 0, "/x"), -EINVAL);
	CHECK_EQ_INT(initproto_encode_file_req(pkt, sizeof(pkt), INITPROTO_FILE_COMMIT, 1, 0, 0, "/x"), -EINVAL);
	CHECK_EQ_INT(initproto_encode_file_req(pkt, 10, INITPROTO_FILE_STAT, 1, 0, 0, "/x"), -E2BIG);
	size_t n = raw_req(INITPROTO_FILE_STAT, 0, 0, "/ok", 4);
	CHECK_EQ_INT(initproto_decode_file_req(pkt, n, &f, &path), 0);
	n = raw_req(INITPROTO_FILE_STAT, 0, 0, "/a\0b", 5); /* NUL inside */
	CHECK_EQ_INT(initproto_decode_file_req(pkt, n, &f, &path), -EINVAL);
	n = raw_req(INITPROTO_FILE_STAT, 0, 0, "/ab", 3); /* no NUL */
	CHECK_EQ_INT(initproto_decode_file_req(pkt, n, &f, &path), -EINVAL);
	n = raw_req(INITPROTO_FILE_STAT, 0, 0, "ab", 3); /* relative */
	CHECK_EQ_INT(initproto_decode_file_req(pkt, n, &f, &path), -EINVAL);
	n = raw_req(INITPROTO_FILE_STAT, 4, 0, "/ab", 4); /* unknown flag */
	CHECK_EQ_INT(initproto_decode_file_req(pkt, n, &f, &path), -EINVAL);
	n = raw_req(INITPROTO_SPAWN, 0, 0, "/ab", 4); /* not a file request */
	CHECK_EQ_INT(initproto_decode_file_req(pkt, n, &f, &path), -EINVAL);
	static char longp[PATH_MAX + 2];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	n = raw_req(INITPROTO_FILE_STAT, 0, 0, longp, sizeof(longp));
	CHECK_EQ_INT(initproto_decode_file_req(pkt, n, &f, &path), -EINVAL);
}

static void test_result_codec(void)
{
	struct initproto_file_result r = {.error = 0, .has_stat = 1,
					  .st = {.type = INITPROTO_FTYPE_SYMLINK, .mode = 0777, .target_len = 3}};
	struct initproto_file_result out;
	const char *target;
	memcpy(pkt, &r, sizeof(r));
	memcpy(pkt + sizeof(r), "/up", 4);
	CHECK_EQ_INT(initproto_decode_file_result(pkt, sizeof(r) + 4, &out, &target), 0);
	CHECK_STREQ(target, "/up");
	CHECK_EQ_INT(initproto_decode_file_result(pkt, sizeof(r) + 3, &out, &target), -EINVAL); /* no NUL */
	CHECK_EQ_INT(initproto_decode_file_result(pkt, sizeof(r) + 5, &out, &target), -EINVAL); /* trailing */
	r.st.type = INITPROTO_FTYPE_REGULAR; /* a target on a non-symlink */
	memcpy(pkt, &r, sizeof(r));
	CHECK_EQ_INT(initproto_decode_file_result(pkt, sizeof(r) + 4, &out, &target), -EINVAL);
	r = (struct initproto_file_result){.error = -5};
	memcpy(pkt, &r, sizeof(r));
	pkt[sizeof(r)] = '\0';
	CHECK_EQ_INT(initproto_decode_file_result(pkt, sizeof(r) + 1, &out, &target), -EINVAL);
	r = (struct initproto_file_result){.error = ENOENT};
	memset(r.msg, 'x', sizeof(r.msg)); /* unterminated message: cut, not trusted */
	memcpy(pkt, &r, sizeof(r));
	CHECK_EQ_INT(initproto_decode_file_result(pkt, sizeof(r) + 1, &out, &target), 0);
	CHECK_EQ_INT(strlen(out.msg), sizeof(out.msg) - 1);
}

static void test_entries_codec(void)
{
	struct initproto_file_stat st = {.type = INITPROTO_FTYPE_REGULAR, .mode = 0644, .size = 5};
	struct initproto_file_entries h = {.count = 2};
	size_t pos = sizeof(h);
	uint32_t count;
	CHECK_EQ_INT(initproto_put_file_entry(pkt, sizeof(pkt), &pos, &st, "a.txt", NULL), 0);
	st.type = INITPROTO_FTYPE_SYMLINK;
	CHECK_EQ_INT(initproto_put_file_entry(pkt, sizeof(pkt), &pos, &st, "ln", "/etc"), 0);
	memcpy(pkt, &h, sizeof(h));
	CHECK_EQ_INT(initproto_check_file_entries(pkt, pos, &count), 0);
	CHECK_EQ_INT(count, 2);
	const char *p = pkt + sizeof(h), *name, *target;
	initproto_next_file_entry(&p, &st, &name, &target);
	CHECK_STREQ(name, "a.txt");
	initproto_next_file_entry(&p, &st, &name, &target);
	CHECK_STREQ(target, "/etc");
	CHECK(p == pkt + pos);
	CHECK_EQ_INT(initproto_check_file_entries(pkt, pos - 1, &count), -EINVAL);
	h.count = 3;
	memcpy(pkt, &h, sizeof(h));
	CHECK_EQ_INT(initproto_check_file_entries(pkt, pos, &count), -EINVAL);
	/* bad names: "..", a slash */
	const char *bad[] = {"..", "a/b", "."};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		h.count = 1;
		memcpy(pkt, &h, sizeof(h));
		struct initproto_file_stat s = {.type = 1, .name_len = (uint16_t)strlen(bad[i])};
		memcpy(pkt + sizeof(h), &s, sizeof(s));
		memcpy(pkt + sizeof(h) + sizeof(s), bad[i], strlen(bad[i]) + 1);
		pkt[sizeof(h) + sizeof(s) + strlen(bad[i]) + 1] = '\0';
		CHECK_EQ_INT(initproto_check_file_entries(pkt, sizeof(h) + sizeof(s) + strlen(bad[i]) + 2, &count), -EINVAL);
	}
	CHECK_EQ_INT(initproto_put_file_entry(pkt, sizeof(h) + 10, &(size_t){sizeof(h)}, &st, "x", NULL), -E2BIG);
}

/* ---- fileops in a temporary root ------------------------------------------------------------- */

static char root[64];
static struct fileops fo;
static char reply_buf[INITPROTO_FILE_REPLY_MAX];
static size_t reply_len;
static int reply_fd = -1;
static uint32_t n_entry_pkts, n_entries;

static void capture(void *ctx, const void *p, size_t len, int fd)
{
	struct initproto_hdr h;
	memcpy(&h, p, sizeof(h));
	if (h.type == INITPROTO_FILE_ENTRIES) {
		uint32_t c = 0;
		if (initproto_check_file_entries((const char *)p + sizeof(h), len - sizeof(h), &c) == 0)
			n_entries += c;
		n_entry_pkts++;
		return;
	}
	memcpy(reply_buf, p, len);
	reply_len = len;
	if (reply_fd >= 0)
		close(reply_fd);
	reply_fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1; /* init keeps or closes its own copy */
}

/* Send one request; return the result's errno (or -1 if the reply was malformed). */
static int ask(uint32_t type, uint32_t id, uint32_t flags, uint32_t mode, const char *path, struct initproto_file_result *out)
{
	static char req[sizeof(struct initproto_hdr) + sizeof(struct initproto_file_req) + PATH_MAX];
	struct initproto_file_result tmp;
	const char *target;
	int len;
	if (path) {
		len = initproto_encode_file_req(req, sizeof(req), type, id, flags, mode, path);
		if (len < 0)
			return -2;
	} else {
		struct initproto_hdr h = {.type = type, .handle = id};
		memcpy(req, &h, sizeof(h));
		len = sizeof(h);
	}
	reply_len = 0;
	fileops_request(&fo, req, (size_t)len, capture, NULL);
	if (fo.n_workers) { /* a recursive removal: reap its child as init would */
		int status;
		pid_t pid = waitpid(fo.workers[0].pid, &status, 0);
		fileops_reaped(&fo, pid, status, capture, NULL);
	}
	if (reply_len < sizeof(struct initproto_hdr) ||
	    initproto_decode_file_result(reply_buf + sizeof(struct initproto_hdr), reply_len - sizeof(struct initproto_hdr),
					 out ? out : &tmp, &target) < 0)
		return -1;
	return (out ? out : &tmp)->error;
}

static void write_host(const char *rel, const char *data)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		(void)!write(fd, data, strlen(data));
		close(fd);
	}
}

static int read_host(const char *abs, char *buf, size_t cap)
{
	int fd = open(abs, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return (int)n;
}

static char marker[] = "/tmp/corral-fileops-marker-XXXXXX";

/* A failed CHECK returns before a test's own cleanup: remove what it made when the binary exits. */
static void cleanup_at_exit(void)
{
	if (root[0])
		fs_remove_tree(root, NULL);
	if (strstr(marker, "XXXXXX") == NULL)
		unlink(marker);
}

static bool setup_root(void)
{
	static bool registered;
	if (!registered)
		registered = atexit(cleanup_at_exit) == 0;
	snprintf(root, sizeof(root), "/tmp/corral-fileops-XXXXXX");
	if (!mkdtemp(root))
		return false;
	return fileops_init(&fo, root) == 0;
}

static void teardown_root(void)
{
	fileops_free(&fo);
	if (reply_fd >= 0)
		close(reply_fd);
	reply_fd = -1;
	fs_remove_tree(root, NULL);
	root[0] = '\0';
}

static void test_write_read_roundtrip(void)
{
	struct initproto_file_result r;
	CHECK(setup_root());
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_WRITE, 1, INITPROTO_FILE_PARENTS, 0600, "/a/b/c.txt", &r), 0);
	CHECK(reply_fd >= 0);
	CHECK_EQ_INT(write(reply_fd, "hello\0bin", 9), 9);
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/a/b/c.txt", root);
	CHECK(access(p, F_OK) < 0); /* not there before COMMIT */
	CHECK_EQ_INT(ask(INITPROTO_FILE_COMMIT, 1, 0, 0, NULL, &r), 0);
	CHECK(r.has_stat && r.st.size == 9 && r.st.mode == 0600);
	struct stat s;
	CHECK_EQ_INT(stat(p, &s), 0);
	CHECK_EQ_INT(s.st_size, 9);
	CHECK_EQ_INT(s.st_mode & 07777, 0600);
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_READ, 2, 0, 0, "/a/b/c.txt", &r), 0);
	char buf[16];
	CHECK_EQ_INT(pread(reply_fd, buf, sizeof(buf), 0), 9);
	CHECK(!memcmp(buf, "hello\0bin", 9));
	CHECK_EQ_INT(fcntl(reply_fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	/* No temp file was left beside it. */
	int n = 0;
	snprintf(p, sizeof(p), "%s/a/b", root);
	DIR *d = opendir(p);
	for (struct dirent *de; (de = readdir(d));)
		n += de->d_name[0] != '.';
	closedir(d);
	CHECK_EQ_INT(n, 1);
	teardown_root();
}

static void test_abort_and_reset_drop_temp_files(void)
{
	struct initproto_file_result r;
	CHECK(setup_root());
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_WRITE, 1, 0, 0, "/x", &r), 0);
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_WRITE, 2, 0, 0, "/y", &r), 0);
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_WRITE, 2, 0, 0, "/z", &r), EBUSY); /* id in use */
	CHECK_EQ_INT(fo.n_writes, 2);
	struct initproto_hdr h = {.type = INITPROTO_FILE_ABORT, .handle = 1};
	reply_len = 0;
	fileops_request(&fo, &h, sizeof(h), capture, NULL);
	CHECK_EQ_INT(reply_len, 0); /* ABORT is not answered */
	CHECK_EQ_INT(fo.n_writes, 1);
	fileops_reset(&fo);
	CHECK_EQ_INT(fo.n_writes, 0);
	DIR *d = opendir(root);
	int n = 0;
	for (struct dirent *de; (de = readdir(d));)
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(ask(INITPROTO_FILE_COMMIT, 2, 0, 0, NULL, &r), EINVAL);
	teardown_root();
}

static void test_typed_errors(void)
{
	struct initproto_file_result r;
	CHECK(setup_root());
	write_host("f", "data");
	char dpath[PATH_MAX];
	snprintf(dpath, sizeof(dpath), "%s/d", root);
	CHECK_EQ_INT(mkdir(dpath, 0755), 0);
	write_host("d/inner", "x");
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_READ, 1, 0, 0, "/missing", &r), ENOENT);
	CHECK(strstr(r.msg, "/missing"));
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_READ, 1, 0, 0, "/d", &r), EISDIR);
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_READ, 1, 0, 0, "/f/x", &r), ENOTDIR);
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_WRITE, 1, 0, 0, "/d", &r), EISDIR);
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_WRITE, 1, 0, 0, "/nodir/x", &r), ENOENT);
	CHECK_EQ_INT(ask(INITPROTO_FILE_MKDIR, 1, 0, 0, "/d", &r), EEXIST);
	CHECK_EQ_INT(ask(INITPROTO_FILE_MKDIR, 1, INITPROTO_FILE_PARENTS, 0, "/d", &r), 0); /* -p: fine */
	CHECK_EQ_INT(ask(INITPROTO_FILE_MKDIR, 1, INITPROTO_FILE_PARENTS, 0, "/f", &r), EEXIST);
	CHECK_EQ_INT(ask(INITPROTO_FILE_LIST, 1, 0, 0, "/f", &r), ENOTDIR);
	CHECK_EQ_INT(ask(INITPROTO_FILE_REMOVE, 1, 0, 0, "/d", &r), ENOTEMPTY);
	CHECK_EQ_INT(ask(INITPROTO_FILE_REMOVE, 1, 0, 0, "/", &r), EPERM);
	CHECK_EQ_INT(ask(INITPROTO_FILE_REMOVE, 1, 0, 0, "/d/..", &r), EINVAL);
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_READ, 1, 0, 0, "/", &r), EISDIR);
	char fifo[PATH_MAX];
	snprintf(fifo, sizeof(fifo), "%s/fifo", root);
	CHECK_EQ_INT(mkfifo(fifo, 0644), 0);
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_READ, 1, 0, 0, "/fifo", &r), ENODEV); /* at once, not blocked */
	CHECK(strstr(r.msg, "not a regular file"));
	teardown_root();
}

static void test_mkdir_list_stat_remove(void)
{
	struct initproto_file_result r;
	CHECK(setup_root());
	CHECK_EQ_INT(ask(INITPROTO_FILE_MKDIR, 1, INITPROTO_FILE_PARENTS, 0700, "/p/q/r", &r), 0);
	CHECK_EQ_INT(ask(INITPROTO_FILE_STAT, 1, 0, 0, "/p/q/r", &r), 0);
	CHECK(r.has_stat && r.st.type == INITPROTO_FTYPE_DIRECTORY && r.st.mode == 0700);
	CHECK_EQ_INT(ask(INITPROTO_FILE_STAT, 1, 0, 0, "/", &r), 0);
	CHECK_EQ_INT(r.st.type, INITPROTO_FTYPE_DIRECTORY);
	/* enough entries for several ENTRIES packets */
	char name[64];
	for (int i = 0; i < 600; i++) {
		snprintf(name, sizeof(name), "p/file-with-a-longish-name-%04d", i);
		write_host(name, "x");
	}
	n_entry_pkts = n_entries = 0;
	CHECK_EQ_INT(ask(INITPROTO_FILE_LIST, 1, 0, 0, "/p", &r), 0);
	CHECK_EQ_INT(n_entries, 601);
	CHECK(n_entry_pkts > 1);
	CHECK_EQ_INT(ask(INITPROTO_FILE_REMOVE, 1, INITPROTO_FILE_RECURSIVE, 0, "/p", &r), 0);
	CHECK_EQ_INT(ask(INITPROTO_FILE_STAT, 1, 0, 0, "/p", &r), ENOENT);
	teardown_root();
}

/* Symlinks to the host's / and /etc, "..", and /proc magic links all resolve inside the root. */
static void test_paths_stay_inside(void)
{
	struct initproto_file_result r;
	char buf[64], link[PATH_MAX];
	int mfd = mkstemp(marker);
	CHECK(mfd >= 0);
	CHECK_EQ_INT(write(mfd, "host", 4), 4);
	close(mfd);
	CHECK(setup_root());
	snprintf(link, sizeof(link), "%s/toroot", root);
	CHECK_EQ_INT(symlink("/", link), 0);
	snprintf(link, sizeof(link), "%s/up", root);
	CHECK_EQ_INT(symlink("../../../../../../..", link), 0);
	snprintf(link, sizeof(link), "%s/tmp", root);
	CHECK_EQ_INT(symlink("/tmp", link), 0); /* loops onto itself inside the root */
	snprintf(link, sizeof(link), "%s/final", root);
	CHECK_EQ_INT(symlink(marker, link), 0);
	snprintf(link, sizeof(link), "%s/self", root);
	CHECK_EQ_INT(symlink("/proc/self/root", link), 0);
	const char *reads[] = {"/toroot", "/up", "/toroot/tmp", "/..", "/../../..", "/self"};
	for (size_t i = 0; i < ARRAY_SIZE(reads); i++) {
		char p[PATH_MAX];
		snprintf(p, sizeof(p), "%s%s", reads[i], marker);
		int e = ask(INITPROTO_FILE_OPEN_READ, 1, 0, 0, p, &r);
		CHECK_MSG(e != 0, "%s was readable", p);
		e = ask(INITPROTO_FILE_OPEN_WRITE, 1, INITPROTO_FILE_PARENTS, 0, p, &r);
		if (e == 0) { /* created inside the root, never over the host's file */
			CHECK_EQ_INT(write(reply_fd, "pwned", 5), 5);
			CHECK_EQ_INT(ask(INITPROTO_FILE_COMMIT, 1, 0, 0, NULL, &r), 0);
		}
		CHECK_EQ_INT(read_host(marker, buf, sizeof(buf)), 4);
		CHECK_STREQ(buf, "host");
	}
	/* A final symlink is never followed: not for read, and a write replaces the link itself. */
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_READ, 1, 0, 0, "/final", &r), ELOOP);
	CHECK_EQ_INT(ask(INITPROTO_FILE_STAT, 1, 0, 0, "/final", &r), 0);
	CHECK_EQ_INT(r.st.type, INITPROTO_FTYPE_SYMLINK);
	CHECK_EQ_INT(ask(INITPROTO_FILE_OPEN_WRITE, 1, 0, 0, "/final", &r), 0);
	CHECK_EQ_INT(write(reply_fd, "pwned", 5), 5);
	CHECK_EQ_INT(ask(INITPROTO_FILE_COMMIT, 1, 0, 0, NULL, &r), 0);
	CHECK_EQ_INT(read_host(marker, buf, sizeof(buf)), 4);
	CHECK_STREQ(buf, "host");
	struct stat s;
	snprintf(link, sizeof(link), "%s/final", root);
	CHECK_EQ_INT(lstat(link, &s), 0);
	CHECK(S_ISREG(s.st_mode));
	/* Removing through a symlink to / removes nothing of the host's. */
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "/toroot%s", marker);
	ask(INITPROTO_FILE_REMOVE, 1, INITPROTO_FILE_RECURSIVE, 0, p, &r);
	snprintf(p, sizeof(p), "/toroot/tmp");
	ask(INITPROTO_FILE_REMOVE, 1, INITPROTO_FILE_RECURSIVE, 0, p, &r);
	CHECK_EQ_INT(read_host(marker, buf, sizeof(buf)), 4);
	unlink(marker);
	teardown_root();
}

TEST_MAIN({"req_roundtrip", test_req_roundtrip}, {"req_rejects", test_req_rejects},
	  {"result_codec", test_result_codec}, {"entries_codec", test_entries_codec},
	  {"write_read_roundtrip", test_write_read_roundtrip},
	  {"abort_and_reset_drop_temp_files", test_abort_and_reset_drop_temp_files},
	  {"typed_errors", test_typed_errors}, {"mkdir_list_stat_remove", test_mkdir_list_stat_remove},
	  {"paths_stay_inside", test_paths_stay_inside})
