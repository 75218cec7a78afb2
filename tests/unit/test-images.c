/* images/: safe tar extraction (tarx), the manifest JSON reader, layer copies of an upper dir. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "images/json.h"
#include "images/layer.h"
#include "images/tarx.h"
#include "testlib.h"
#include "util/cleanup.h"
#include "util/fs.h"

struct ent {
	const char *name;
	mode_t type; /* AE_IF* */
	const char *data; /* file data or link target */
	mode_t perm;
	int hardlink;
};

/* Build an in-memory tar of ents; returns its size. */
static size_t make_tar(const struct ent *ents, size_t n, char *buf, size_t cap)
{
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	size_t used = 0;
	archive_write_open_memory(a, buf, cap, &used);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, ents[i].name);
		archive_entry_set_perm(e, ents[i].perm ? ents[i].perm : 0644);
		if (ents[i].hardlink) {
			archive_entry_set_hardlink(e, ents[i].data);
		} else {
			archive_entry_set_filetype(e, ents[i].type);
			if (ents[i].type == AE_IFLNK)
				archive_entry_set_symlink(e, ents[i].data);
			if (ents[i].type == AE_IFCHR)
				archive_entry_set_rdev(e, makedev(1, 3));
			if (ents[i].type == AE_IFREG)
				archive_entry_set_size(e, (la_int64_t)strlen(ents[i].data));
		}
		archive_write_header(a, e);
		if (!ents[i].hardlink && ents[i].type == AE_IFREG)
			archive_write_data(a, ents[i].data, strlen(ents[i].data));
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
	return used;
}

static char dir[256];
static const struct tarx_limits lim = {.max_total = 1 << 20, .max_file = 1 << 16, .max_entries = 100};

static int extract(const struct ent *ents, size_t n, bool oci, struct err *e)
{
	static char buf[1 << 20];
	size_t len = make_tar(ents, n, buf, sizeof(buf));
	fs_remove_tree(dir, NULL);
	mkdir(dir, 0755);
	return tarx_extract_mem(buf, len, dir, "", oci, &lim, NULL, e);
}

static void setup(void) { snprintf(dir, sizeof(dir), "/tmp/corral-test-images-%d", (int)getpid()); }

static void test_tarx_ok_whiteouts(void)
{
	setup();
	struct ent ok[] = {{"a/b/c", AE_IFREG, "hello", 04755, 0}, {"a/l", AE_IFLNK, "../a/b/c", 0, 0},
			   {"a/h", 0, "a/b/c", 0, 1},           {"a/.wh.gone", AE_IFREG, "", 0, 0},
			   {"o/.wh..wh..opq", AE_IFREG, "", 0, 0}, {"abs", AE_IFLNK, "/etc/passwd", 0, 0}};
	struct err e = {0};
	CHECK_MSG(extract(ok, ARRAY_SIZE(ok), true, &e) == 0, "%s", e.msg);
	char p[512];
	struct stat st;
	snprintf(p, sizeof(p), "%s/a/b/c", dir);
	CHECK(lstat(p, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0755 && st.st_nlink == 2);
	snprintf(p, sizeof(p), "%s/a/gone", dir);
	CHECK(lstat(p, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
	snprintf(p, sizeof(p), "%s/o", dir);
	char v[8] = "";
	CHECK(getxattr(p, "trusted.overlay.opaque", v, sizeof(v)) == 1 && v[0] == 'y');
	fs_remove_tree(dir, NULL);
}

static void test_tarx_refusals(void)
{
	setup();
	const struct ent cases[][2] = {
		{{"../x", AE_IFREG, "x", 0, 0}, {"ok", AE_IFREG, "x", 0, 0}},
		{{"/abs", AE_IFREG, "x", 0, 0}, {"ok", AE_IFREG, "x", 0, 0}},
		{{"s", AE_IFLNK, "/tmp", 0, 0}, {"s/x", AE_IFREG, "x", 0, 0}},
		{{"s", AE_IFLNK, "../../..", 0, 0}, {"ok", AE_IFREG, "x", 0, 0}},
		{{"h", 0, "/etc/passwd", 0, 1}, {"ok", AE_IFREG, "x", 0, 0}},
		{{"h", 0, "missing", 0, 1}, {"ok", AE_IFREG, "x", 0, 0}},
		{{"d", AE_IFCHR, "", 0, 0}, {"ok", AE_IFREG, "x", 0, 0}},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct err e = {0};
		int r = extract(cases[i], 2, true, &e);
		CHECK_MSG(r == -EINVAL && strstr(e.msg, "refused"), "case %zu: r=%d %s", i, r, e.msg);
	}
	char big[70000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	struct ent toobig[] = {{"big", AE_IFREG, big, 0, 0}};
	struct err e = {0};
	CHECK_EQ_INT(extract(toobig, 1, false, &e), -EDQUOT);
	fs_remove_tree(dir, NULL);
}

static void test_json(void)
{
	const char doc[] = "[{\"Config\":\"c.json\",\"Layers\":[\"a/layer.tar\",\"b\\u002flayer.tar\"],\"n\":1.5,"
			   "\"t\":true,\"z\":null}]";
	struct json *j = NULL;
	CHECK(json_parse(doc, strlen(doc), &j) == 0);
	const struct json *m = j->items[0];
	CHECK_STREQ(json_str(json_get(m, "Config")), "c.json");
	const struct json *l = json_get(m, "Layers");
	CHECK(l && l->n == 2);
	CHECK_STREQ(json_str(l->items[1]), "b/layer.tar");
	json_free(j);
	const char *bad[] = {"[", "{\"a\" 1}", "[1,]x", "\"\x01\"", ""};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct json *b = NULL;
		CHECK_MSG(json_parse(bad[i], strlen(bad[i]), &b) < 0, "accepted %s", bad[i]);
	}
	char deep[200];
	memset(deep, '[', sizeof(deep));
	struct json *d = NULL;
	CHECK(json_parse(deep, sizeof(deep), &d) < 0);
}

static void test_layer_copy_shifts_and_whiteouts(void)
{
	setup();
	char src[300], dst[300], p[400];
	snprintf(src, sizeof(src), "%s-src", dir);
	snprintf(dst, sizeof(dst), "%s-dst", dir);
	fs_remove_tree(src, NULL);
	fs_remove_tree(dst, NULL);
	CHECK(mkdir(src, 0755) == 0 && mkdir(dst, 0755) == 0);
	CHECK(chown(src, 300000, 300000) == 0);
	snprintf(p, sizeof(p), "%s/f", src);
	int fd = open(p, O_CREAT | O_WRONLY, 04755);
	CHECK(fd >= 0 && write(fd, "data", 4) == 4 && ftruncate(fd, 1 << 30) == 0); /* sparse 1 GiB */
	close(fd);
	CHECK(chown(p, 300001, 300002) == 0 && chmod(p, 04755) == 0);
	snprintf(p, sizeof(p), "%s/wh", src);
	CHECK(mknod(p, S_IFCHR | 0, makedev(0, 0)) == 0);
	snprintf(p, sizeof(p), "%s/dev", src);
	CHECK(mknod(p, S_IFCHR | 0600, makedev(1, 3)) == 0);
	snprintf(p, sizeof(p), "%s/d", src);
	CHECK(mkdir(p, 0755) == 0 && setxattr(p, "trusted.overlay.opaque", "y", 1, 0) == 0);
	snprintf(p, sizeof(p), "%s/d/l", src);
	CHECK(symlink("/etc/shadow", p) == 0);
	struct layer_copy_stats st;
	struct err e = {0};
	CHECK_MSG(layer_copy_upper(src, dst, 300000, 65536, &st, &e) == 0, "%s", e.msg);
	struct stat s;
	CHECK(stat(dst, &s) == 0 && s.st_uid == 0);
	snprintf(p, sizeof(p), "%s/f", dst);
	CHECK(lstat(p, &s) == 0 && s.st_uid == 1 && s.st_gid == 2 && (s.st_mode & 07777) == 0755);
	CHECK(s.st_size == 1 << 30 && s.st_blocks < 1024);
	snprintf(p, sizeof(p), "%s/wh", dst);
	CHECK(lstat(p, &s) == 0 && S_ISCHR(s.st_mode) && s.st_rdev == 0);
	snprintf(p, sizeof(p), "%s/dev", dst);
	CHECK(lstat(p, &s) < 0); /* real devices are dropped */
	snprintf(p, sizeof(p), "%s/d", dst);
	char v[4] = "";
	CHECK(getxattr(p, "trusted.overlay.opaque", v, sizeof(v)) == 1);
	snprintf(p, sizeof(p), "%s/d/l", dst);
	char t[64] = "";
	CHECK(readlink(p, t, sizeof(t) - 1) > 0 && !strcmp(t, "/etc/shadow"));
	fs_remove_tree(src, NULL);
	fs_remove_tree(dst, NULL);
}

TEST_MAIN(T(test_tarx_ok_whiteouts), T(test_tarx_refusals), T(test_json), T(test_layer_copy_shifts_and_whiteouts))
