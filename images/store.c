#include "images/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/busybox.h"
#include "util/cleanup.h"
#include "util/fs.h"

struct image_store {
	char layers_dir[PATH_MAX];
	char busybox_id[65]; /* cached once the host binary has been hashed */
};

static const char *const builtin_names[] = {"busybox", NULL};

const char *const *image_store_builtin_names(void) { return builtin_names; }

int image_store_open(const char *state_dir, struct image_store **ret, struct err *e)
{
	_cleanup_free_ struct image_store *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(e, ENOMEM, "image store");
	if (snprintf(s->layers_dir, sizeof(s->layers_dir), "%s/layers", state_dir) >= (int)sizeof(s->layers_dir))
		return err_setx(e, ENAMETOOLONG, "state dir path too long");
	int r = fs_mkdir_p(s->layers_dir, 0700, e);
	if (r < 0)
		return err_prefix(e, "image store");
	*ret = TAKE_PTR(s);
	return 0;
}

void image_store_free(struct image_store *store) { free(store); }

void image_free(struct image *img)
{
	if (!img)
		return;
	for (size_t i = 0; i < img->n_layers; i++)
		free(img->layer_dirs[i]);
	free(img->layer_dirs);
	free(img);
}

static bool is_hex_id(const char *s)
{
	if (strlen(s) != 64)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static int single_layer_image(const struct image_store *s, const char *id, const char *name, struct image **ret,
			      struct err *e)
{
	_cleanup_free_ struct image *img = calloc(1, sizeof(*img));
	_cleanup_free_ char **dirs = calloc(1, sizeof(char *));
	if (!img || !dirs)
		return err_set(e, ENOMEM, "image");
	if (asprintf(&dirs[0], "%s/%s", s->layers_dir, id) < 0)
		return err_set(e, ENOMEM, "image");
	snprintf(img->id, sizeof(img->id), "%s", id);
	snprintf(img->name, sizeof(img->name), "%s", name);
	img->n_layers = 1;
	img->layer_dirs = TAKE_PTR(dirs);
	*ret = TAKE_PTR(img);
	return 0;
}

static int resolve_busybox(struct image_store *s, struct image **ret, struct err *e)
{
	if (!s->busybox_id[0]) {
		int r = busybox_layer_ensure(s->layers_dir, s->busybox_id, e);
		if (r < 0)
			return err_prefix(e, "build image busybox");
	}
	return single_layer_image(s, s->busybox_id, "busybox", ret, e);
}

int image_store_resolve(struct image_store *s, const char *name_or_id, struct image **ret, struct err *e)
{
	if (!strcmp(name_or_id, "busybox"))
		return resolve_busybox(s, ret, e);
	if (is_hex_id(name_or_id)) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", s->layers_dir, name_or_id);
		struct stat st;
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return single_layer_image(s, name_or_id, "", ret, e);
	}
	return err_setx(e, ENOENT, "unknown image \"%.128s\" (available: busybox)", name_or_id);
}
