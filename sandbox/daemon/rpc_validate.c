#include "daemon/rpc_validate.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "daemon/manager.h"
#include "daemon/rpc_net.h"
#include "init/initproto.h"
#include "util/misc.h"

#define MAX_PATH_LEN 4096
#define MAX_IMAGE_LEN 256
#define MAX_NAME_LEN 128
#define MAX_CPU 1024.0
#define MAX_MEMORY_MIB (1024ULL * 1024 * 1024)
#define MAX_PIDS (4u * 1024 * 1024)
#define MAX_DISK_MIB (1024ULL * 1024) /* 1 TiB: the writable layer is a tmpfs, charged as memory */

static int validate_argv(const char *field, char *const *argv, size_t n, bool required, struct err *e)
{
	if (required && n == 0)
		return err_setx(e, EINVAL, "%s must not be empty", field);
	if (n > INITPROTO_MAX_ARGS)
		return err_setx(e, EINVAL, "%s has %zu entries (at most %d)", field, n, INITPROTO_MAX_ARGS);
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += strlen(argv[i]) + 1;
	if (total > MAX_STRINGS_BYTES)
		return err_setx(e, EINVAL, "%s is %zu bytes (at most %d)", field, total, MAX_STRINGS_BYTES);
	if (required && argv[0][0] == '\0')
		return err_setx(e, EINVAL, "%s[0] (the program) must not be empty", field);
	return 0;
}

/* Map entries of every request type share this layout (base, key, value). */
struct kv {
	ProtobufCMessage base;
	char *key;
	char *value;
};

static int validate_env(struct kv *const *env, size_t n, struct err *e)
{
	if (n > INITPROTO_MAX_ARGS)
		return err_setx(e, EINVAL, "env has %zu entries (at most %d)", n, INITPROTO_MAX_ARGS);
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		const char *k = env[i]->key;
		if (!k[0] || strchr(k, '='))
			return err_setx(e, EINVAL, "env name \"%.64s\" is empty or contains '='", k);
		total += strlen(k) + strlen(env[i]->value) + 2;
	}
	if (total > MAX_STRINGS_BYTES)
		return err_setx(e, EINVAL, "env is %zu bytes (at most %d)", total, MAX_STRINGS_BYTES);
	return 0;
}

static int validate_workdir(const char *w, struct err *e)
{
	if (!w[0])
		return 0;
	if (w[0] != '/')
		return err_setx(e, EINVAL, "workdir \"%.128s\" must be an absolute path", w);
	if (strlen(w) > MAX_PATH_LEN)
		return err_setx(e, EINVAL, "workdir is longer than %d bytes", MAX_PATH_LEN);
	return 0;
}

int validate_timeout(const char *field, int64_t ms, struct err *e)
{
	if (ms < 0)
		return err_setx(e, EINVAL, "%s must not be negative (got %lld)", field, (long long)ms);
	if (ms > 365LL * 24 * 3600 * 1000)
		return err_setx(e, EINVAL, "%s of %lld ms is longer than a year", field, (long long)ms);
	return 0;
}

static int validate_kv_tags(struct kv *const *tags, size_t n, struct err *e)
{
	if (n > MAX_TAGS)
		return err_setx(e, EINVAL, "%zu tags (at most %d)", n, MAX_TAGS);
	for (size_t i = 0; i < n; i++) {
		size_t kl = strlen(tags[i]->key), vl = strlen(tags[i]->value);
		if (kl == 0 || kl > MAX_TAG_KEY)
			return err_setx(e, EINVAL, "tag name must be 1 to %d bytes", MAX_TAG_KEY);
		if (!strncmp(tags[i]->key, "corral.internal/", 16))
			return err_setx(e, EINVAL, "tag names starting with corral.internal/ are reserved");
		if (vl > MAX_TAG_VALUE)
			return err_setx(e, EINVAL, "tag \"%.64s\" value is over %d bytes", tags[i]->key, MAX_TAG_VALUE);
	}
	return 0;
}

int validate_tags(Corral__V1__SetSandboxTagsRequest__TagsEntry *const *tags, size_t n, struct err *e)
{
	return validate_kv_tags((struct kv *const *)tags, n, e);
}

int validate_create_sandbox(const Corral__V1__CreateSandboxRequest *req, struct err *e)
{
	int r;
	if (strlen(req->image) > MAX_IMAGE_LEN)
		return err_setx(e, EINVAL, "image name is longer than %d bytes", MAX_IMAGE_LEN);
	if ((r = validate_argv("command", req->command, req->n_command, false, e)) < 0)
		return r;
	if (req->n_command && !req->command[0][0])
		return err_setx(e, EINVAL, "command[0] (the program) must not be empty");
	if ((r = validate_env((struct kv *const *)req->env, req->n_env, e)) < 0)
		return r;
	if ((r = validate_workdir(req->workdir, e)) < 0)
		return r;
	if ((r = validate_timeout("timeout_ms", req->timeout_ms, e)) < 0 ||
	    (r = validate_timeout("idle_timeout_ms", req->idle_timeout_ms, e)) < 0)
		return r;
	if ((r = validate_kv_tags((struct kv *const *)req->tags, req->n_tags, e)) < 0)
		return r;
	if (req->name[0] && !name_is_valid(req->name, MAX_NAME_LEN))
		return err_setx(e, EINVAL, "name \"%.64s\" must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}", req->name);
	/* Fields the API has but this daemon does not implement yet: refuse, never ignore. */
	if ((r = rpc_net_validate(req->network, req->ports, req->n_ports, e)) < 0)
		return r;
	const Corral__V1__Resources *res = req->resources;
	if (res) {
		if (!isfinite(res->cpu) || res->cpu < 0 || res->cpu > MAX_CPU)
			return err_setx(e, EINVAL, "resources.cpu must be between 0 and %g cores", MAX_CPU);
		if (res->memory_mib > MAX_MEMORY_MIB)
			return err_setx(e, EINVAL, "resources.memory_mib is too large");
		if (res->memory_mib && res->memory_mib < 8)
			return err_setx(e, EINVAL, "resources.memory_mib must be at least 8");
		if (res->pids > MAX_PIDS)
			return err_setx(e, EINVAL, "resources.pids is too large (at most %u)", MAX_PIDS);
		if (res->disk_mib > MAX_DISK_MIB)
			return err_setx(e, EINVAL, "resources.disk_mib is too large (at most %llu)", MAX_DISK_MIB);
	}
	return 0;
}

int validate_start_exec(const Corral__V1__StartExecRequest *req, struct err *e)
{
	int r;
	if (req->exec_id[0] && !name_is_valid(req->exec_id, 64))
		return err_setx(e, EINVAL, "exec_id \"%.64s\" must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", req->exec_id);
	if ((r = validate_argv("argv", req->argv, req->n_argv, true, e)) < 0)
		return r;
	if ((r = validate_env((struct kv *const *)req->env, req->n_env, e)) < 0)
		return r;
	if ((r = validate_workdir(req->workdir, e)) < 0)
		return r;
	if ((r = validate_timeout("timeout_ms", req->timeout_ms, e)) < 0)
		return r;
	if (req->pty_size && (req->pty_size->rows > 65535 || req->pty_size->cols > 65535))
		return err_setx(e, EINVAL, "pty_size rows and cols must be at most 65535");
	if ((int)req->stdout > 2 || (int)req->stderr > 2 || (int)req->stdout < 0 || (int)req->stderr < 0)
		return err_setx(e, EINVAL, "unknown stream mode");
	return 0;
}
