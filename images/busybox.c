#include "images/busybox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sha256.h"

/* Bump when the layout below changes, so old layers are not reused. */
#define BUSYBOX_RECIPE "corral-busybox-v1"

static int hash_binary(const char *path, char out[65], struct err *e)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, errno, "open %s (install busybox-static)", path);
	struct sha256 h;
	sha256_init(&h);
	sha256_update(&h, BUSYBOX_RECIPE, sizeof(BUSYBOX_RECIPE));
	char buf[65536];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		sha256_update(&h, buf, (size_t)n);
	if (n < 0)
		return err_set(e, errno, "read %s", path);
	uint8_t digest[32];
	sha256_final(&h, digest);
	sha256_hex(digest, out);
	return 0;
}

/* Ask the binary for its applets ("bin/sh", "usr/bin/env", ...), one per line. */
static int list_applets(char **ret, struct err *e)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return err_set(e, errno, "pipe");
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return err_set(e, errno, "fork");
	}
	if (pid == 0) {
		dup2(p[1], 1);
		execl(BUSYBOX_HOST_BINARY, "busybox", "--list-full", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	ssize_t n = 0;
	while (buf && len + 1 < cap && (n = read(p[0], buf + len, cap - len - 1)) > 0)
		len += (size_t)n;
	close(p[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!buf)
		return err_set(e, ENOMEM, "applet list");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || len == 0) {
		free(buf);
		return err_setx(e, EIO, "%s --list-full failed", BUSYBOX_HOST_BINARY);
	}
	buf[len] = '\0';
	*ret = buf;
	return 0;
}

static int build_layer(const char *dir, struct err *e)
{
	static const char *const dirs[] = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys",
					   "dev", "tmp", "root", "home", "var", "var/tmp", "run", "mnt"};
	char path[PATH_MAX];
	int r;
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, dirs[i]);
		mode_t mode = !strcmp(dirs[i], "tmp") || !strcmp(dirs[i], "var/tmp") ? 01777 : 0755;
		if (mkdir(path, mode) < 0)
			return err_set(e, errno, "mkdir %s", path);
		if (chmod(path, mode) < 0) /* umask must not weaken the sticky, world-writable tmp */
			return err_set(e, errno, "chmod %s", path);
	}
	snprintf(path, sizeof(path), "%s/bin/busybox", dir);
	r = fs_copy_file(BUSYBOX_HOST_BINARY, path, 0755, e);
	if (r < 0)
		return r;
	_cleanup_free_ char *applets = NULL;
	r = list_applets(&applets, e);
	if (r < 0)
		return r;
	for (char *line = applets, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		/* Only plain relative paths inside the dirs made above; never trust odd output. */
		if (!*line || line[0] == '/' || strstr(line, "..") || !strcmp(line, "bin/busybox"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, line);
		if (symlink("/bin/busybox", path) < 0 && errno != EEXIST && errno != ENOENT)
			return err_set(e, errno, "symlink %s", path);
	}
	static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
	static const char group[] = "root:x:0:\nnogroup:x:65534:\n";
	static const char hosts[] = "127.0.0.1 localhost\n::1 localhost\n";
	static const struct {
		const char *name, *text;
	} files[] = {{"etc/passwd", passwd}, {"etc/group", group}, {"etc/hosts", hosts}};
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
		r = fs_write_file_atomic(path, files[i].text, strlen(files[i].text), 0644, e);
		if (r < 0)
			return r;
	}
	return 0;
}

int busybox_layer_ensure(const char *layers_dir, char id_out[65], struct err *e)
{
	char id[65];
	int r = hash_binary(BUSYBOX_HOST_BINARY, id, e);
	if (r < 0)
		return r;
	char final[PATH_MAX], tmp[PATH_MAX];
	snprintf(final, sizeof(final), "%s/%s", layers_dir, id);
	struct stat st;
	if (stat(final, &st) == 0 && S_ISDIR(st.st_mode)) {
		memcpy(id_out, id, 65);
		return 0;
	}
	snprintf(tmp, sizeof(tmp), "%s/.tmp-%s-%d", layers_dir, id, (int)getpid());
	fs_remove_tree(tmp, NULL);
	if (mkdir(tmp, 0755) < 0)
		return err_set(e, errno, "mkdir %s", tmp);
	r = build_layer(tmp, e);
	if (r == 0 && chmod(tmp, 0755) < 0)
		r = err_set(e, errno, "chmod %s", tmp);
	if (r == 0)
		r = fs_sync_dir(tmp, e);
	if (r == 0 && rename(tmp, final) < 0 && errno != ENOTEMPTY && errno != EEXIST)
		r = err_set(e, errno, "rename %s", final);
	fs_remove_tree(tmp, NULL); /* no-op after a successful rename */
	if (r < 0)
		return r;
	r = fs_sync_dir(layers_dir, e);
	if (r < 0)
		return r;
	memcpy(id_out, id, 65);
	return 0;
}
