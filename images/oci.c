#include "images/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "images/json.h"
#include "images/layer.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/sha256.h"

#define OCI_JSON_MAX (4 << 20)
#define OCI_RECIPE "corral-oci-layer-v1"

/* Open a path named by the archive's own manifest inside the unpacked outer archive: symlinks
 * there are resolved as if that dir were the root, never outside it. */
static int open_in(int root, const char *path, struct err *e)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
	int fd = (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
	if (fd < 0)
		return err_set(e, errno, "open \"%.200s\" in the archive", path);
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return err_setx(e, EINVAL, "\"%.200s\" in the archive is not a file", path);
	}
	return fd;
}

static int read_json(int root, const char *path, struct json **ret, struct err *e)
{
	_cleanup_close_ int fd = open_in(root, path, e);
	if (fd < 0)
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size > OCI_JSON_MAX)
		return err_setx(e, EDQUOT, "\"%.200s\" in the archive is over %d MiB", path, OCI_JSON_MAX >> 20);
	_cleanup_free_ char *buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return err_set(e, ENOMEM, "read %s", path);
	ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
	if (n != st.st_size)
		return err_set(e, errno ? errno : EIO, "read \"%.200s\"", path);
	int r = json_parse(buf, (size_t)n, ret);
	if (r < 0)
		return err_setx(e, EINVAL, "\"%.200s\" in the archive is not valid JSON", path);
	return 0;
}

/* "sha256:<hex>" -> "blobs/sha256/<hex>" */
static int blob_path(const char *digest, char *out, size_t size, struct err *e)
{
	if (!digest || strncmp(digest, "sha256:", 7) || !layer_id_is_valid(digest + 7))
		return err_setx(e, EINVAL, "archive names an invalid digest");
	snprintf(out, size, "blobs/sha256/%s", digest + 7);
	return 0;
}

/* Layer paths (bottom first) and config path, from manifest.json (docker save) or index.json (OCI). */
static int find_layers(int root, char paths[OCI_MAX_LAYERS][PATH_MAX], size_t *n, char *config, struct err *e)
{
	struct json *doc = NULL;
	*n = 0;
	config[0] = '\0';
	struct stat st;
	int r;
	if (fstatat(root, "manifest.json", &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if ((r = read_json(root, "manifest.json", &doc, e)) < 0)
			return r;
		const struct json *m = doc->type == JSON_ARR && doc->n ? doc->items[0] : NULL;
		const struct json *layers = json_get(m, "Layers");
		if (!layers || layers->type != JSON_ARR) {
			json_free(doc);
			return err_setx(e, EINVAL, "manifest.json has no Layers list");
		}
		for (size_t i = 0; i < layers->n; i++) {
			const char *p = json_str(layers->items[i]);
			if (!p || *n >= OCI_MAX_LAYERS) {
				json_free(doc);
				return err_setx(e, EINVAL, "manifest.json: bad layer list (at most %d layers)", OCI_MAX_LAYERS);
			}
			snprintf(paths[(*n)++], PATH_MAX, "%s", p);
		}
		const char *c = json_str(json_get(m, "Config"));
		if (c)
			snprintf(config, PATH_MAX, "%s", c);
		json_free(doc);
		return 0;
	}
	if ((r = read_json(root, "index.json", &doc, e)) < 0)
		return err_prefix(e, "neither a docker-save archive (manifest.json) nor an OCI layout (index.json)");
	char path[PATH_MAX];
	/* index -> (nested index ->) manifest */
	for (int hop = 0; hop < 3; hop++) {
		const struct json *ms = json_get(doc, "manifests");
		if (!ms) {
			break;
		}
		if (ms->type != JSON_ARR || !ms->n) {
			json_free(doc);
			return err_setx(e, EINVAL, "index.json lists no manifest");
		}
		if ((r = blob_path(json_str(json_get(ms->items[0], "digest")), path, sizeof(path), e)) < 0) {
			json_free(doc);
			return r;
		}
		json_free(doc);
		doc = NULL;
		if ((r = read_json(root, path, &doc, e)) < 0)
			return r;
	}
	const struct json *layers = json_get(doc, "layers");
	if (!layers || layers->type != JSON_ARR) {
		json_free(doc);
		return err_setx(e, EINVAL, "the OCI manifest has no layers list");
	}
	for (size_t i = 0; i < layers->n; i++) {
		if (*n >= OCI_MAX_LAYERS) {
			json_free(doc);
			return err_setx(e, EINVAL, "at most %d layers", OCI_MAX_LAYERS);
		}
		if ((r = blob_path(json_str(json_get(layers->items[i], "digest")), paths[*n], PATH_MAX, e)) < 0) {
			json_free(doc);
			return r;
		}
		(*n)++;
	}
	const char *cd = json_str(json_get(json_get(doc, "config"), "digest"));
	if (cd)
		blob_path(cd, config, PATH_MAX, e);
	json_free(doc);
	err_clear(e);
	return 0;
}

static void read_config(int root, const char *path, struct oci_result *res)
{
	struct json *doc = NULL;
	struct err e = {0};
	if (!path[0] || read_json(root, path, &doc, &e) < 0)
		return;
	const struct json *c = json_get(doc, "config");
	const struct json *env = json_get(c, "Env");
	for (size_t i = 0; env && env->type == JSON_ARR && i < env->n && res->n_env < 256; i++) {
		const char *kv = json_str(env->items[i]);
		if (!kv || !strchr(kv, '=') || strlen(kv) > 4096)
			continue;
		char **ne = realloc(res->env, (res->n_env + 1) * sizeof(char *));
		if (!ne)
			break;
		res->env = ne;
		if ((res->env[res->n_env] = strdup(kv)))
			res->n_env++;
	}
	const char *wd = json_str(json_get(c, "WorkingDir"));
	if (wd && wd[0] == '/' && strlen(wd) < sizeof(res->workdir))
		snprintf(res->workdir, sizeof(res->workdir), "%s", wd);
	json_free(doc);
}

static int hash_fd(int fd, char out[65], struct err *e)
{
	struct sha256 h;
	sha256_init(&h);
	sha256_update(&h, OCI_RECIPE, sizeof(OCI_RECIPE));
	char buf[65536];
	ssize_t n;
	off_t off = 0;
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		sha256_update(&h, buf, (size_t)n);
		off += n;
	}
	if (n < 0)
		return err_set(e, errno, "read layer");
	uint8_t d[32];
	sha256_final(&h, d);
	sha256_hex(d, out);
	return 0;
}

int oci_import(const char *archive_path, const char *work_dir, const char *layers_dir, const struct tarx_limits *lim,
	       void (*log)(const char *line, void *data), void *log_data, struct oci_result *res, struct err *e)
{
	memset(res, 0, sizeof(*res));
	char outer[PATH_MAX];
	snprintf(outer, sizeof(outer), "%s/outer", work_dir);
	if (mkdir(outer, 0700) < 0)
		return err_set(e, errno, "create %s", outer);
	_cleanup_close_ int afd = open(archive_path, O_RDONLY | O_CLOEXEC);
	if (afd < 0)
		return err_set(e, errno, "open %s", archive_path);
	/* The outer archive is unpacked with the same refusals as a layer: its names are hostile too. */
	struct tarx_limits outer_lim = {.max_total = lim->max_total, .max_file = lim->max_total, .max_entries = 10000};
	int r = tarx_extract_fd(afd, outer, "", false, &outer_lim, NULL, e);
	if (r < 0)
		return err_prefix(e, "unpack the image archive");
	_cleanup_close_ int root = open(outer, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return err_set(e, errno, "open %s", outer);
	char (*lp)[PATH_MAX] = calloc(OCI_MAX_LAYERS, PATH_MAX);
	if (!lp)
		return err_set(e, ENOMEM, "import");
	char config[PATH_MAX];
	size_t n;
	if ((r = find_layers(root, lp, &n, config, e)) < 0) {
		free(lp);
		return r;
	}
	if (n == 0) {
		free(lp);
		return err_setx(e, EINVAL, "the image has no layers");
	}
	read_config(root, config, res);
	for (size_t i = 0; i < n && r == 0; i++) {
		_cleanup_close_ int fd = open_in(root, lp[i], e);
		if (fd < 0) {
			r = fd;
			break;
		}
		char id[65], final[PATH_MAX], tmp[PATH_MAX];
		if ((r = hash_fd(fd, id, e)) < 0)
			break;
		snprintf(final, sizeof(final), "%s/%s", layers_dir, id);
		struct stat st;
		if (stat(final, &st) != 0) {
			if ((r = layer_tmp_new(layers_dir, tmp, sizeof(tmp), e)) < 0)
				break;
			struct tarx_stats ts;
			r = tarx_extract_fd(fd, tmp, "", true, lim, &ts, e);
			if (r == 0)
				r = layer_commit(layers_dir, tmp, id, e);
			else
				fs_remove_tree(tmp, NULL);
			if (r < 0) {
				err_prefix(e, "layer %zu", i + 1);
				break;
			}
			if (log) {
				char line[160];
				snprintf(line, sizeof(line), "layer %zu/%zu: %.12s, %llu entries, %llu bytes", i + 1, n, id,
					 (unsigned long long)ts.entries, (unsigned long long)ts.bytes);
				log(line, log_data);
			}
		}
		snprintf(res->layer_ids[res->n_layers], 65, "%s", id);
		layer_disk_usage(final, &res->layer_sizes[res->n_layers], NULL);
		res->n_layers++;
	}
	free(lp);
	if (r < 0)
		oci_result_release(res);
	return r;
}

void oci_result_release(struct oci_result *res)
{
	for (size_t i = 0; i < res->n_env; i++)
		free(res->env[i]);
	free(res->env);
	res->env = NULL;
	res->n_env = 0;
}
