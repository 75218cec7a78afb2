#include "images/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/busybox.h"
#include "images/layer.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/misc.h"
#include "util/sha256.h"

#define IMAGE_ID_RECIPE "corral-image-v1"
#define MAX_HOLDS 256

struct image_store {
	sqlite3 *db;
	char layers_dir[PATH_MAX];
	char busybox_id[65]; /* layer id, cached once the host binary has been hashed */
	image_builtin_hook hook;
	void *hook_data;
	char holds[MAX_HOLDS][65]; /* layers of builds in progress */
	unsigned hold_count[MAX_HOLDS];
};

static const char *const builtin_names[] = {"busybox", "debian", "python", NULL};

const char *const *image_store_builtin_names(void) { return builtin_names; }

bool image_store_is_builtin(const char *name)
{
	for (size_t i = 0; builtin_names[i]; i++)
		if (!strcmp(name, builtin_names[i]))
			return true;
	return false;
}

const char *image_store_layers_dir(const struct image_store *s) { return s->layers_dir; }

void image_store_set_builtin_hook(struct image_store *s, image_builtin_hook hook, void *data)
{
	s->hook = hook;
	s->hook_data = data;
}

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS layers (id TEXT PRIMARY KEY, size INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, name TEXT NOT NULL, layers TEXT NOT NULL,"
	" env BLOB NOT NULL, workdir TEXT NOT NULL, size INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
	" expires_ms INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, image_id TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS steps (key TEXT PRIMARY KEY, layer_id TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS pins (sandbox_id TEXT PRIMARY KEY, image_id TEXT NOT NULL);";

static int db_error(struct image_store *s, struct err *e, const char *what)
{
	return err_setx(e, EIO, "image database: %s: %s", what, sqlite3_errmsg(s->db));
}

static void stmt_finalize(sqlite3_stmt **st)
{
	if (*st)
		sqlite3_finalize(*st);
}
#define _cleanup_stmt_ _cleanup_(stmt_finalize)

static int prep(struct image_store *s, const char *sql, sqlite3_stmt **st, struct err *e)
{
	if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
		return db_error(s, e, "prepare");
	return 0;
}

/* Leftovers of a daemon that died mid-write: temp dirs never renamed, trash never removed. */
static void clean_leftovers(const char *layers_dir)
{
	DIR *d = opendir(layers_dir);
	if (!d)
		return;
	struct dirent *de;
	char path[PATH_MAX];
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, ".tmp-", 5) || !strncmp(de->d_name, ".trash-", 7)) {
			snprintf(path, sizeof(path), "%s/%s", layers_dir, de->d_name);
			fs_remove_tree(path, NULL);
		}
	closedir(d);
}

int image_store_open(const char *state_dir, struct image_store **ret, struct err *e)
{
	_cleanup_free_ struct image_store *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(e, ENOMEM, "image store");
	if (snprintf(s->layers_dir, sizeof(s->layers_dir), "%s/layers", state_dir) >= (int)sizeof(s->layers_dir))
		return err_setx(e, ENAMETOOLONG, "state dir path too long");
	int r = fs_mkdir_p(s->layers_dir, 0711, e);
	if (r < 0)
		return err_prefix(e, "image store");
	clean_leftovers(s->layers_dir);
	char db[PATH_MAX];
	snprintf(db, sizeof(db), "%s/images.db", state_dir);
	if (sqlite3_open_v2(db, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		r = err_setx(e, EIO, "open %s: %s", db, s->db ? sqlite3_errmsg(s->db) : "out of memory");
		sqlite3_close(s->db);
		return r;
	}
	sqlite3_busy_timeout(s->db, 5000);
	if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(s->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
		r = db_error(s, e, "schema");
		sqlite3_close(s->db);
		return r;
	}
	*ret = TAKE_PTR(s);
	return 0;
}

void image_store_free(struct image_store *s)
{
	if (!s)
		return;
	sqlite3_close(s->db);
	free(s);
}

void image_free(struct image *img)
{
	if (!img)
		return;
	for (size_t i = 0; i < img->n_layers; i++)
		free(img->layer_dirs ? img->layer_dirs[i] : NULL);
	free(img->layer_dirs);
	free(img->layer_ids);
	for (size_t i = 0; i < img->n_env; i++)
		free(img->env[i]);
	free(img->env);
	free(img);
}

void image_list_free(struct image **imgs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		image_free(imgs[i]);
	free(imgs);
}

/* ---- rows <-> struct image ----------------------------------------------------------------- */

/* Columns: id, name, layers, env, workdir, size, created_ms, expires_ms. */
#define IMAGE_COLS "id, name, layers, env, workdir, size, created_ms, expires_ms"

static int image_from_row(struct image_store *s, sqlite3_stmt *st, struct image **ret, struct err *e)
{
	_cleanup_free_ struct image *img = calloc(1, sizeof(*img));
	if (!img)
		return err_set(e, ENOMEM, "image");
	snprintf(img->id, sizeof(img->id), "%s", (const char *)sqlite3_column_text(st, 0));
	snprintf(img->name, sizeof(img->name), "%s", (const char *)sqlite3_column_text(st, 1));
	const char *layers = (const char *)sqlite3_column_text(st, 2);
	size_t n = layers[0] ? 1 : 0;
	for (const char *p = layers; *p; p++)
		n += *p == ' ';
	if (n == 0 || n > IMAGE_MAX_LAYERS)
		return err_setx(e, EIO, "image %s: corrupt layer list", img->id);
	img->layer_ids = calloc(n, sizeof(*img->layer_ids));
	img->layer_dirs = calloc(n, sizeof(char *));
	if (!img->layer_ids || !img->layer_dirs) {
		image_free(TAKE_PTR(img));
		return err_set(e, ENOMEM, "image");
	}
	img->n_layers = n;
	const char *p = layers;
	for (size_t i = 0; i < n; i++) {
		size_t len = strcspn(p, " ");
		if (len != 64) {
			image_free(TAKE_PTR(img));
			return err_setx(e, EIO, "corrupt layer list");
		}
		memcpy(img->layer_ids[i], p, 64);
		img->layer_ids[i][64] = '\0';
		p += len + (p[len] == ' ');
		/* dirs are topmost first, ids bottom first */
		if (asprintf(&img->layer_dirs[n - 1 - i], "%s/%s", s->layers_dir, img->layer_ids[i]) < 0) {
			img->layer_dirs[n - 1 - i] = NULL;
			image_free(TAKE_PTR(img));
			return err_set(e, ENOMEM, "image");
		}
	}
	const char *env = sqlite3_column_blob(st, 3);
	size_t env_len = (size_t)sqlite3_column_bytes(st, 3);
	for (size_t off = 0; env && off < env_len;) {
		size_t len = strnlen(env + off, env_len - off);
		char **ne = realloc(img->env, (img->n_env + 1) * sizeof(char *));
		if (!ne || !(ne[img->n_env] = strndup(env + off, len))) {
			if (ne)
				img->env = ne;
			image_free(TAKE_PTR(img));
			return err_set(e, ENOMEM, "image");
		}
		img->env = ne;
		img->n_env++;
		off += len + 1;
	}
	snprintf(img->workdir, sizeof(img->workdir), "%s", (const char *)sqlite3_column_text(st, 4));
	img->size_bytes = (uint64_t)sqlite3_column_int64(st, 5);
	img->created_ms = sqlite3_column_int64(st, 6);
	img->expires_ms = sqlite3_column_int64(st, 7);
	*ret = TAKE_PTR(img);
	return 0;
}


/* Find by name (names table), then by id. Expired images are gone for lookups. */
static int lookup(struct image_store *s, const char *name_or_id, struct image **ret, struct err *e)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prep(s, "SELECT " IMAGE_COLS " FROM images WHERE id = (SELECT image_id FROM names WHERE name = ?1)"
			" OR id = ?1 ORDER BY id = ?1 LIMIT 1", &st, e);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, name_or_id, -1, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		int64_t expires = sqlite3_column_int64(st, 7);
		if (expires && expires <= time_now_ms())
			return -ENOENT;
		return image_from_row(s, st, ret, e);
	}
	if (r != SQLITE_DONE)
		return db_error(s, e, "find image");
	return -ENOENT;
}

static int not_found(const char *name_or_id, struct err *e)
{
	return err_setx(e, ENOENT, "unknown image \"%.128s\" (built-in: busybox, debian, python; see ListImages)",
			name_or_id);
}

static int ensure_busybox(struct image_store *s, struct image **ret, struct err *e)
{
	if (!s->busybox_id[0]) {
		int r = busybox_layer_ensure(s->layers_dir, s->busybox_id, e);
		if (r < 0)
			return err_prefix(e, "build image busybox");
		uint64_t size = 0;
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s/%s", s->layers_dir, s->busybox_id);
		layer_disk_usage(dir, &size, NULL);
		if ((r = image_store_add_layer(s, s->busybox_id, size, e)) < 0)
			return r;
	}
	const char *ids[] = {s->busybox_id};
	static const char *const env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
	struct image_spec spec = {.name = "busybox", .layer_ids = ids, .n_layers = 1, .env = env, .n_env = 1,
				  .workdir = "/"};
	return image_store_add(s, &spec, ret, e);
}

int image_store_get(struct image_store *s, const char *name_or_id, struct image **ret, struct err *e)
{
	if (!strcmp(name_or_id, "busybox"))
		return ensure_busybox(s, ret, e);
	int r = lookup(s, name_or_id, ret, e);
	if (r == -ENOENT)
		return not_found(name_or_id, e);
	return r;
}

int image_store_resolve(struct image_store *s, const char *name_or_id, struct image **ret, struct err *e)
{
	if (!strcmp(name_or_id, "busybox"))
		return ensure_busybox(s, ret, e);
	int r = lookup(s, name_or_id, ret, e);
	if (r != -ENOENT)
		return r;
	if (image_store_is_builtin(name_or_id)) {
		if (s->hook)
			s->hook(name_or_id, s->hook_data);
		return err_setx(e, EAGAIN,
				"image %s is being built (first use; takes 15-60 s): retry, or follow it with "
				"ImageService.BuildImage",
				name_or_id);
	}
	return not_found(name_or_id, e);
}

int image_store_list(struct image_store *s, struct image ***ret, size_t *n, struct err *e)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prep(s, "SELECT " IMAGE_COLS " FROM images WHERE expires_ms = 0 OR expires_ms > ?1"
			" ORDER BY created_ms DESC", &st, e);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, time_now_ms());
	struct image **list = NULL;
	size_t count = 0;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct image **nl = realloc(list, (count + 1) * sizeof(*nl));
		if (!nl) {
			image_list_free(list, count);
			return err_set(e, ENOMEM, "list images");
		}
		list = nl;
		if ((r = image_from_row(s, st, &list[count], e)) < 0) {
			image_list_free(list, count);
			return r;
		}
		count++;
	}
	if (r != SQLITE_DONE) {
		image_list_free(list, count);
		return db_error(s, e, "list images");
	}
	*ret = list;
	*n = count;
	return 0;
}

/* ---- writing ------------------------------------------------------------------------------- */

int image_store_add_layer(struct image_store *s, const char *layer_id, uint64_t size, struct err *e)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prep(s, "INSERT OR IGNORE INTO layers (id, size, created_ms) VALUES (?1, ?2, ?3)", &st, e);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, layer_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)size);
	sqlite3_bind_int64(st, 3, time_now_ms());
	if (sqlite3_step(st) != SQLITE_DONE)
		return db_error(s, e, "add layer");
	return 0;
}

static int layer_size(struct image_store *s, const char *id, uint64_t *size, struct err *e)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prep(s, "SELECT size FROM layers WHERE id = ?1", &st, e);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW)
		return err_setx(e, ENOENT, "layer %s is not in the store", id);
	*size = (uint64_t)sqlite3_column_int64(st, 0);
	return 0;
}

static void hash_str(struct sha256 *h, const char *s) { sha256_update(h, s, strlen(s) + 1); }

int image_store_add(struct image_store *s, const struct image_spec *spec, struct image **ret, struct err *e)
{
	if (spec->n_layers == 0 || spec->n_layers > IMAGE_MAX_LAYERS)
		return err_setx(e, EINVAL, "an image has 1 to %d layers (got %zu)", IMAGE_MAX_LAYERS, spec->n_layers);
	if (spec->n_env > IMAGE_MAX_ENV)
		return err_setx(e, EINVAL, "an image has at most %d env entries", IMAGE_MAX_ENV);
	const char *name = spec->name ? spec->name : "";
	/* id = sha256(recipe, layers bottom first, env, workdir): the same content is the same image. */
	struct sha256 h;
	sha256_init(&h);
	hash_str(&h, IMAGE_ID_RECIPE);
	size_t layers_len = 0, env_len = 0;
	uint64_t size = 0;
	for (size_t i = 0; i < spec->n_layers; i++) {
		if (!layer_id_is_valid(spec->layer_ids[i]))
			return err_setx(e, EINVAL, "invalid layer id");
		uint64_t ls = 0;
		int r = layer_size(s, spec->layer_ids[i], &ls, e);
		if (r < 0)
			return r;
		size += ls;
		hash_str(&h, spec->layer_ids[i]);
		layers_len += 65;
	}
	hash_str(&h, "env");
	for (size_t i = 0; i < spec->n_env; i++) {
		hash_str(&h, spec->env[i]);
		env_len += strlen(spec->env[i]) + 1;
	}
	hash_str(&h, spec->workdir ? spec->workdir : "");
	char expires[32];
	snprintf(expires, sizeof(expires), "%lld", (long long)spec->expires_ms);
	hash_str(&h, expires); /* a snapshot with a TTL is its own image: it must not expire another */
	uint8_t digest[32];
	char id[65];
	sha256_final(&h, digest);
	sha256_hex(digest, id);

	_cleanup_free_ char *layers = calloc(1, layers_len + 1);
	_cleanup_free_ char *env = malloc(env_len ? env_len : 1);
	if (!layers || !env)
		return err_set(e, ENOMEM, "image");
	for (size_t i = 0; i < spec->n_layers; i++) {
		memcpy(layers + i * 65, spec->layer_ids[i], 64);
		layers[i * 65 + 64] = i + 1 < spec->n_layers ? ' ' : '\0';
	}
	size_t off = 0;
	for (size_t i = 0; i < spec->n_env; i++) {
		size_t len = strlen(spec->env[i]) + 1;
		memcpy(env + off, spec->env[i], len);
		off += len;
	}
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return db_error(s, e, "begin");
	_cleanup_stmt_ sqlite3_stmt *ins = NULL, *nm = NULL;
	int r = prep(s, "INSERT INTO images (" IMAGE_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
			" ON CONFLICT(id) DO UPDATE SET name = CASE WHEN ?2 = '' THEN name ELSE ?2 END", &ins, e);
	if (r == 0) {
		sqlite3_bind_text(ins, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 2, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 3, layers, -1, SQLITE_STATIC);
		sqlite3_bind_blob(ins, 4, env, (int)env_len, SQLITE_STATIC);
		sqlite3_bind_text(ins, 5, spec->workdir ? spec->workdir : "", -1, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 6, (int64_t)size);
		sqlite3_bind_int64(ins, 7, time_now_ms());
		sqlite3_bind_int64(ins, 8, spec->expires_ms);
		if (sqlite3_step(ins) != SQLITE_DONE)
			r = db_error(s, e, "add image");
	}
	if (r == 0 && name[0]) {
		r = prep(s, "INSERT OR REPLACE INTO names (name, image_id) VALUES (?1, ?2)", &nm, e);
		if (r == 0) {
			sqlite3_bind_text(nm, 1, name, -1, SQLITE_STATIC);
			sqlite3_bind_text(nm, 2, id, -1, SQLITE_STATIC);
			if (sqlite3_step(nm) != SQLITE_DONE)
				r = db_error(s, e, "name image");
		}
	}
	if (r < 0 || sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return r < 0 ? r : db_error(s, e, "commit");
	}
	if (!ret)
		return 0;
	r = lookup(s, id, ret, e);
	return r == -ENOENT ? err_setx(e, ENOENT, "image %s expired at once", id) : r;
}

static bool image_pinned(struct image_store *s, const char *id)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	if (prep(s, "SELECT 1 FROM pins WHERE image_id = ?1 LIMIT 1", &st, NULL) < 0)
		return true; /* cannot tell: keep it */
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	return sqlite3_step(st) == SQLITE_ROW;
}

static int exec_id_stmt(struct image_store *s, const char *sql, const char *id, struct err *e)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prep(s, sql, &st, e);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return db_error(s, e, "delete");
	return 0;
}

static int delete_image_rows(struct image_store *s, const char *id, struct err *e)
{
	int r = exec_id_stmt(s, "DELETE FROM names WHERE image_id = ?1", id, e);
	if (r == 0)
		r = exec_id_stmt(s, "DELETE FROM images WHERE id = ?1", id, e);
	return r;
}

int image_store_delete(struct image_store *s, const char *name_or_id, struct err *e)
{
	struct image *img = NULL;
	int r = lookup(s, name_or_id, &img, e);
	if (r == -ENOENT)
		return not_found(name_or_id, e);
	if (r < 0)
		return r;
	char id[65];
	memcpy(id, img->id, sizeof(id));
	image_free(img);
	if (image_pinned(s, id))
		return err_setx(e, EBUSY, "image %s is used by a running sandbox", name_or_id);
	if (!strcmp(name_or_id, "busybox"))
		s->busybox_id[0] = '\0'; /* its layer may go: re-create it on next use */
	return delete_image_rows(s, id, e);
}

/* ---- step cache, pins, holds ----------------------------------------------------------------- */

bool image_store_step_lookup(struct image_store *s, const char *key, char layer_id[65])
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	if (prep(s, "SELECT layer_id FROM steps WHERE key = ?1 AND layer_id IN (SELECT id FROM layers)", &st, NULL) < 0)
		return false;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW)
		return false;
	snprintf(layer_id, 65, "%s", (const char *)sqlite3_column_text(st, 0));
	char dir[PATH_MAX];
	struct stat sbuf;
	snprintf(dir, sizeof(dir), "%s/%s", s->layers_dir, layer_id);
	return stat(dir, &sbuf) == 0 && S_ISDIR(sbuf.st_mode);
}

int image_store_step_put(struct image_store *s, const char *key, const char *layer_id, struct err *e)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prep(s, "INSERT OR REPLACE INTO steps (key, layer_id) VALUES (?1, ?2)", &st, e);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, layer_id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return db_error(s, e, "cache step");
	return 0;
}

int image_store_pin(struct image_store *s, const char *sandbox_id, const char *image_id, struct err *e)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prep(s, "INSERT OR REPLACE INTO pins (sandbox_id, image_id) VALUES (?1, ?2)", &st, e);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, sandbox_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, image_id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return db_error(s, e, "pin image");
	return 0;
}

void image_store_unpin(struct image_store *s, const char *sandbox_id)
{
	exec_id_stmt(s, "DELETE FROM pins WHERE sandbox_id = ?1", sandbox_id, NULL);
}

bool image_store_pinned(struct image_store *s, const char *sandbox_id, char image_id[65])
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	if (prep(s, "SELECT image_id FROM pins WHERE sandbox_id = ?1", &st, NULL) < 0)
		return false;
	sqlite3_bind_text(st, 1, sandbox_id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW)
		return false;
	snprintf(image_id, 65, "%s", (const char *)sqlite3_column_text(st, 0));
	return true;
}

void image_store_unpin_stale(struct image_store *s, bool (*keep)(const char *sandbox_id, void *data), void *data)
{
	char ids[256][32];
	size_t n = 0;
	{
		_cleanup_stmt_ sqlite3_stmt *st = NULL;
		if (prep(s, "SELECT sandbox_id FROM pins", &st, NULL) < 0)
			return;
		while (sqlite3_step(st) == SQLITE_ROW && n < ARRAY_SIZE(ids)) {
			const char *id = (const char *)sqlite3_column_text(st, 0);
			if (!keep(id, data))
				snprintf(ids[n++], sizeof(ids[0]), "%s", id);
		}
	}
	for (size_t i = 0; i < n; i++)
		image_store_unpin(s, ids[i]);
}

int image_store_hold(struct image_store *s, const char *layer_id)
{
	int free_slot = -1;
	for (int i = 0; i < MAX_HOLDS; i++) {
		if (s->hold_count[i] && !strcmp(s->holds[i], layer_id)) {
			s->hold_count[i]++;
			return 0;
		}
		if (!s->hold_count[i] && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0)
		return -ENOSPC;
	snprintf(s->holds[free_slot], sizeof(s->holds[0]), "%s", layer_id);
	s->hold_count[free_slot] = 1;
	return 0;
}

void image_store_release(struct image_store *s, const char *layer_id)
{
	for (int i = 0; i < MAX_HOLDS; i++)
		if (s->hold_count[i] && !strcmp(s->holds[i], layer_id)) {
			s->hold_count[i]--;
			return;
		}
}

static bool held(const struct image_store *s, const char *layer_id)
{
	for (int i = 0; i < MAX_HOLDS; i++)
		if (s->hold_count[i] && !strcmp(s->holds[i], layer_id))
			return true;
	return false;
}

/* ---- garbage collection ------------------------------------------------------------------------ */

void image_trash_free(char **trash, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(trash[i]);
	free(trash);
}

int image_store_gc(struct image_store *s, int64_t now_ms, char ***trash, size_t *n_trash, struct err *e)
{
	*trash = NULL;
	*n_trash = 0;
	/* Expired images nobody runs. */
	{
		_cleanup_stmt_ sqlite3_stmt *st = NULL;
		int r = prep(s, "SELECT id FROM images WHERE expires_ms != 0 AND expires_ms <= ?1"
				" AND id NOT IN (SELECT image_id FROM pins)", &st, e);
		if (r < 0)
			return r;
		sqlite3_bind_int64(st, 1, now_ms);
		char ids[64][65];
		size_t n = 0;
		while (n < ARRAY_SIZE(ids) && sqlite3_step(st) == SQLITE_ROW)
			snprintf(ids[n++], 65, "%s", (const char *)sqlite3_column_text(st, 0));
		for (size_t i = 0; i < n; i++)
			if ((r = delete_image_rows(s, ids[i], e)) < 0)
				return r;
	}
	/* Layers no image lists. instr on the space-separated list: ids are fixed-length hex. */
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prep(s, "SELECT id FROM layers l WHERE NOT EXISTS"
			" (SELECT 1 FROM images i WHERE instr(i.layers, l.id) > 0)", &st, e);
	if (r < 0)
		return r;
	char (*doomed)[65] = NULL;
	size_t n = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);
		if (held(s, id) || (s->busybox_id[0] && !strcmp(id, s->busybox_id)))
			continue;
		char (*nd)[65] = realloc(doomed, (n + 1) * sizeof(*nd));
		if (!nd)
			break;
		doomed = nd;
		snprintf(doomed[n++], 65, "%s", id);
	}
	char **paths = calloc(n ? n : 1, sizeof(char *));
	size_t np = 0;
	for (size_t i = 0; paths && i < n; i++) {
		exec_id_stmt(s, "DELETE FROM steps WHERE layer_id = ?1", doomed[i], NULL);
		if (exec_id_stmt(s, "DELETE FROM layers WHERE id = ?1", doomed[i], e) < 0)
			break;
		char from[PATH_MAX], to[PATH_MAX], rnd[24];
		id_random(rnd, sizeof(rnd), "", 6);
		snprintf(from, sizeof(from), "%s/%s", s->layers_dir, doomed[i]);
		snprintf(to, sizeof(to), "%s/.trash-%s-%s", s->layers_dir, doomed[i], rnd);
		if (rename(from, to) == 0 && (paths[np] = strdup(to)))
			np++;
	}
	free(doomed);
	*trash = paths;
	*n_trash = paths ? np : 0;
	return 0;
}

int image_store_names(struct image_store *s, char ***ret, size_t *n)
{
	size_t cap = 16, count = 0;
	char **names = calloc(cap, sizeof(char *));
	if (!names)
		return -ENOMEM;
	for (size_t i = 0; builtin_names[i]; i++)
		if ((names[count] = strdup(builtin_names[i])))
			count++;
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	if (prep(s, "SELECT name FROM names ORDER BY name LIMIT 1000", &st, NULL) == 0) {
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *name = (const char *)sqlite3_column_text(st, 0);
			if (image_store_is_builtin(name))
				continue;
			if (count == cap) {
				char **nn = realloc(names, (cap *= 2) * sizeof(char *));
				if (!nn)
					break;
				names = nn;
			}
			if ((names[count] = strdup(name)))
				count++;
		}
	}
	*ret = names;
	*n = count;
	return 0;
}

void image_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}
