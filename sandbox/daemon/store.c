#include "daemon/store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "util/cleanup.h"

enum stmt_id {
	ST_SB_INSERT,
	ST_SB_SPEC,
	ST_SB_CLAIM,
	ST_SB_FINISH,
	ST_SB_DELETE,
	ST_SB_DELETE_EXECS,
	ST_SB_ALL,
	ST_EXEC_PUT,
	ST_EXEC_STDIN,
	ST_EXEC_ALL,
	ST_COUNT,
};

static const char *const stmt_sql[ST_COUNT] = {
	[ST_SB_INSERT] = "INSERT INTO sandboxes (id, state, created_at_ms, finished_at_ms, exit_reason, exit_code,"
			 " exit_signal, exit_message, init_pid, init_start_time, uid_slot, spec)"
			 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
	[ST_SB_SPEC] = "UPDATE sandboxes SET spec = ?2 WHERE id = ?1",
	[ST_SB_CLAIM] = "UPDATE sandboxes SET spec = ?2, created_at_ms = ?3 WHERE id = ?1",
	[ST_SB_FINISH] = "UPDATE sandboxes SET state = 2, finished_at_ms = ?2, exit_reason = ?3, exit_code = ?4,"
			 " exit_signal = ?5, exit_message = ?6 WHERE id = ?1",
	[ST_SB_DELETE] = "DELETE FROM sandboxes WHERE id = ?1",
	[ST_SB_DELETE_EXECS] = "DELETE FROM execs WHERE sandbox_id = ?1",
	[ST_SB_ALL] = "SELECT id, state, created_at_ms, finished_at_ms, exit_reason, exit_code, exit_signal,"
		      " exit_message, init_pid, init_start_time, uid_slot, spec FROM sandboxes ORDER BY created_at_ms",
	[ST_EXEC_PUT] = "INSERT OR REPLACE INTO execs (sandbox_id, exec_id, handle, state, pid, started_at_ms,"
			" finished_at_ms, exit_reason, exit_code, exit_signal, exit_message, stdin_offset, stdin_eof,"
			" released, spec) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
	[ST_EXEC_STDIN] = "UPDATE execs SET stdin_offset = ?3, stdin_eof = ?4 WHERE sandbox_id = ?1 AND exec_id = ?2",
	[ST_EXEC_ALL] = "SELECT sandbox_id, exec_id, handle, state, pid, started_at_ms, finished_at_ms, exit_reason,"
			" exit_code, exit_signal, exit_message, stdin_offset, stdin_eof, released, spec FROM execs"
			" WHERE sandbox_id = ?1 ORDER BY handle",
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS sandboxes ("
	" id TEXT PRIMARY KEY, state INTEGER NOT NULL, created_at_ms INTEGER NOT NULL,"
	" finished_at_ms INTEGER NOT NULL DEFAULT 0, exit_reason INTEGER NOT NULL DEFAULT 0,"
	" exit_code INTEGER NOT NULL DEFAULT 0, exit_signal INTEGER NOT NULL DEFAULT 0,"
	" exit_message TEXT NOT NULL DEFAULT '', init_pid INTEGER NOT NULL DEFAULT 0,"
	" init_start_time INTEGER NOT NULL DEFAULT 0, uid_slot INTEGER NOT NULL, spec BLOB NOT NULL);"
	"CREATE TABLE IF NOT EXISTS execs ("
	" sandbox_id TEXT NOT NULL, exec_id TEXT NOT NULL, handle INTEGER NOT NULL, state INTEGER NOT NULL,"
	" pid INTEGER NOT NULL DEFAULT 0, started_at_ms INTEGER NOT NULL, finished_at_ms INTEGER NOT NULL DEFAULT 0,"
	" exit_reason INTEGER NOT NULL DEFAULT 0, exit_code INTEGER NOT NULL DEFAULT 0,"
	" exit_signal INTEGER NOT NULL DEFAULT 0, exit_message TEXT NOT NULL DEFAULT '',"
	" stdin_offset INTEGER NOT NULL DEFAULT 0, stdin_eof INTEGER NOT NULL DEFAULT 0,"
	" released INTEGER NOT NULL DEFAULT 0, spec BLOB NOT NULL, PRIMARY KEY (sandbox_id, exec_id));"
	/* Networking of a sandbox (netpolicy): its pool pair (-1: none), host veth, cgroup id, tunnels. */
	"CREATE TABLE IF NOT EXISTS net_links ("
	" sandbox_id TEXT PRIMARY KEY, slot INTEGER NOT NULL, ifindex INTEGER NOT NULL DEFAULT 0,"
	" cgroup_id INTEGER NOT NULL DEFAULT 0, tunnels TEXT NOT NULL DEFAULT '');";

struct store {
	sqlite3 *db;
	sqlite3_stmt *stmt[ST_COUNT];
};

static int db_error(struct store *s, struct err *e, const char *what)
{
	return err_setx(e, EIO, "sqlite %s: %s", what, sqlite3_errmsg(s->db));
}

int store_open(const char *path, struct store **ret, struct err *e)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(e, ENOMEM, "store");
	int r = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (r != SQLITE_OK) {
		r = err_setx(e, EIO, "open database %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
		store_close(s);
		return r;
	}
	sqlite3_busy_timeout(s->db, 5000);
	/* WAL with synchronous=NORMAL: commits survive a daemon crash (not a power loss) without
	 * an fsync per RPC; images and layers are fsynced separately. */
	char *msg = NULL;
	if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", NULL,
			 NULL, &msg) != SQLITE_OK ||
	    sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
		r = err_setx(e, EIO, "initialise database %s: %s", path, msg ? msg : "?");
		sqlite3_free(msg);
		store_close(s);
		return r;
	}
	for (int i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL) != SQLITE_OK) {
			r = db_error(s, e, "prepare");
			store_close(s);
			return r;
		}
	}
	*ret = s;
	return 0;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	sqlite3_close(s->db);
	free(s);
}

/* Run a prepared, bound statement that returns no rows, then reset it. */
static int step_done(struct store *s, sqlite3_stmt *st, struct err *e, const char *what)
{
	int r = sqlite3_step(st);
	int ret = r == SQLITE_DONE ? 0 : db_error(s, e, what);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

static void bind_exit(sqlite3_stmt *st, int first, const struct exit_info *x)
{
	sqlite3_bind_int(st, first, x->reason);
	sqlite3_bind_int(st, first + 1, x->code);
	sqlite3_bind_int(st, first + 2, x->signal);
	sqlite3_bind_text(st, first + 3, x->message, -1, SQLITE_TRANSIENT);
}

static void column_exit(sqlite3_stmt *st, int first, struct exit_info *x)
{
	x->reason = sqlite3_column_int(st, first);
	x->code = sqlite3_column_int(st, first + 1);
	x->signal = sqlite3_column_int(st, first + 2);
	const unsigned char *m = sqlite3_column_text(st, first + 3);
	snprintf(x->message, sizeof(x->message), "%s", m ? (const char *)m : "");
}

int store_sandbox_insert(struct store *s, const struct store_sandbox_row *row, struct err *e)
{
	sqlite3_stmt *st = s->stmt[ST_SB_INSERT];
	sqlite3_bind_text(st, 1, row->id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, row->state);
	sqlite3_bind_int64(st, 3, row->created_at_ms);
	sqlite3_bind_int64(st, 4, row->finished_at_ms);
	bind_exit(st, 5, &row->exit);
	sqlite3_bind_int(st, 9, row->init_pid);
	sqlite3_bind_int64(st, 10, (sqlite3_int64)row->init_start_time);
	sqlite3_bind_int64(st, 11, row->uid_slot);
	sqlite3_bind_blob(st, 12, row->spec, (int)row->spec_len, SQLITE_STATIC);
	return step_done(s, st, e, "insert sandbox");
}

int store_sandbox_set_spec(struct store *s, const char *id, const void *spec, size_t len, struct err *e)
{
	sqlite3_stmt *st = s->stmt[ST_SB_SPEC];
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, spec, (int)len, SQLITE_STATIC);
	return step_done(s, st, e, "update sandbox");
}

int store_sandbox_claim(struct store *s, const char *id, const void *spec, size_t len, int64_t created_at_ms,
			struct err *e)
{
	sqlite3_stmt *st = s->stmt[ST_SB_CLAIM];
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, spec, (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, created_at_ms);
	return step_done(s, st, e, "claim sandbox");
}

int store_sandbox_finish(struct store *s, const char *id, int64_t finished_at_ms, const struct exit_info *exit,
			 struct err *e)
{
	sqlite3_stmt *st = s->stmt[ST_SB_FINISH];
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, finished_at_ms);
	bind_exit(st, 3, exit);
	return step_done(s, st, e, "finish sandbox");
}

int store_sandbox_delete(struct store *s, const char *id, struct err *e)
{
	sqlite3_stmt *st = s->stmt[ST_SB_DELETE_EXECS];
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	int r = step_done(s, st, e, "delete execs");
	if (r < 0)
		return r;
	st = s->stmt[ST_SB_DELETE];
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	return step_done(s, st, e, "delete sandbox");
}

int store_sandbox_foreach(struct store *s, int (*cb)(const struct store_sandbox_row *row, void *data), void *data,
			  struct err *e)
{
	sqlite3_stmt *st = s->stmt[ST_SB_ALL];
	int r, ret = 0;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_sandbox_row row = {0};
		row.id = (const char *)sqlite3_column_text(st, 0);
		row.state = sqlite3_column_int(st, 1);
		row.created_at_ms = sqlite3_column_int64(st, 2);
		row.finished_at_ms = sqlite3_column_int64(st, 3);
		column_exit(st, 4, &row.exit);
		row.init_pid = sqlite3_column_int(st, 8);
		row.init_start_time = (uint64_t)sqlite3_column_int64(st, 9);
		row.uid_slot = (uint32_t)sqlite3_column_int64(st, 10);
		row.spec = sqlite3_column_blob(st, 11);
		row.spec_len = (size_t)sqlite3_column_bytes(st, 11);
		if (!row.id)
			continue;
		ret = cb(&row, data);
		if (ret < 0)
			break;
	}
	if (ret == 0 && r != SQLITE_DONE)
		ret = db_error(s, e, "list sandboxes");
	sqlite3_reset(st);
	return ret;
}

int store_exec_put(struct store *s, const struct store_exec_row *row, struct err *e)
{
	sqlite3_stmt *st = s->stmt[ST_EXEC_PUT];
	sqlite3_bind_text(st, 1, row->sandbox_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, row->exec_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, row->handle);
	sqlite3_bind_int(st, 4, row->state);
	sqlite3_bind_int(st, 5, row->pid);
	sqlite3_bind_int64(st, 6, row->started_at_ms);
	sqlite3_bind_int64(st, 7, row->finished_at_ms);
	bind_exit(st, 8, &row->exit);
	sqlite3_bind_int64(st, 12, (sqlite3_int64)row->stdin_offset);
	sqlite3_bind_int(st, 13, row->stdin_eof);
	sqlite3_bind_int(st, 14, row->released);
	sqlite3_bind_blob(st, 15, row->spec, (int)row->spec_len, SQLITE_STATIC);
	return step_done(s, st, e, "store exec");
}

int store_exec_set_stdin(struct store *s, const char *sandbox_id, const char *exec_id, uint64_t offset, bool eof,
			 struct err *e)
{
	sqlite3_stmt *st = s->stmt[ST_EXEC_STDIN];
	sqlite3_bind_text(st, 1, sandbox_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, exec_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)offset);
	sqlite3_bind_int(st, 4, eof);
	return step_done(s, st, e, "update exec stdin");
}

int store_exec_foreach(struct store *s, const char *sandbox_id,
		       int (*cb)(const struct store_exec_row *row, void *data), void *data, struct err *e)
{
	sqlite3_stmt *st = s->stmt[ST_EXEC_ALL];
	sqlite3_bind_text(st, 1, sandbox_id, -1, SQLITE_STATIC);
	int r, ret = 0;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_exec_row row = {0};
		row.sandbox_id = (const char *)sqlite3_column_text(st, 0);
		row.exec_id = (const char *)sqlite3_column_text(st, 1);
		row.handle = (uint32_t)sqlite3_column_int64(st, 2);
		row.state = sqlite3_column_int(st, 3);
		row.pid = sqlite3_column_int(st, 4);
		row.started_at_ms = sqlite3_column_int64(st, 5);
		row.finished_at_ms = sqlite3_column_int64(st, 6);
		column_exit(st, 7, &row.exit);
		row.stdin_offset = (uint64_t)sqlite3_column_int64(st, 11);
		row.stdin_eof = sqlite3_column_int(st, 12) != 0;
		row.released = sqlite3_column_int(st, 13) != 0;
		row.spec = sqlite3_column_blob(st, 14);
		row.spec_len = (size_t)sqlite3_column_bytes(st, 14);
		if (!row.exec_id)
			continue;
		ret = cb(&row, data);
		if (ret < 0)
			break;
	}
	if (ret == 0 && r != SQLITE_DONE)
		ret = db_error(s, e, "list execs");
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

/* ---- net_links (netpolicy): rare writes, prepared per call ------------------------------- */

int store_net_put(struct store *s, const struct store_net_row *row, struct err *e)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(s->db,
			       "INSERT OR REPLACE INTO net_links (sandbox_id, slot, ifindex, cgroup_id, tunnels)"
			       " VALUES (?1, ?2, ?3, ?4, ?5)",
			       -1, &st, NULL) != SQLITE_OK)
		return db_error(s, e, "prepare net_links");
	sqlite3_bind_text(st, 1, row->sandbox_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, row->slot);
	sqlite3_bind_int(st, 3, row->ifindex);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)row->cgroup_id);
	sqlite3_bind_text(st, 5, row->tunnels ? row->tunnels : "", -1, SQLITE_STATIC);
	int r = sqlite3_step(st) == SQLITE_DONE ? 0 : db_error(s, e, "write net_links");
	sqlite3_finalize(st);
	return r;
}

int store_net_get(struct store *s, const char *sandbox_id, struct store_net_row *ret, char *tunnels, size_t size,
		  struct err *e)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(s->db, "SELECT slot, ifindex, cgroup_id, tunnels FROM net_links WHERE sandbox_id = ?1",
			       -1, &st, NULL) != SQLITE_OK)
		return db_error(s, e, "prepare net_links");
	sqlite3_bind_text(st, 1, sandbox_id, -1, SQLITE_STATIC);
	int r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		ret->sandbox_id = sandbox_id;
		ret->slot = sqlite3_column_int64(st, 0);
		ret->ifindex = sqlite3_column_int(st, 1);
		ret->cgroup_id = (uint64_t)sqlite3_column_int64(st, 2);
		const unsigned char *t = sqlite3_column_text(st, 3);
		snprintf(tunnels, size, "%s", t ? (const char *)t : "");
		ret->tunnels = tunnels;
		r = 0;
	} else {
		r = r == SQLITE_DONE ? -ENOENT : db_error(s, e, "read net_links");
	}
	sqlite3_finalize(st);
	return r;
}

int store_net_delete(struct store *s, const char *sandbox_id, struct err *e)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(s->db, "DELETE FROM net_links WHERE sandbox_id = ?1", -1, &st, NULL) != SQLITE_OK)
		return db_error(s, e, "prepare net_links");
	sqlite3_bind_text(st, 1, sandbox_id, -1, SQLITE_STATIC);
	int r = sqlite3_step(st) == SQLITE_DONE ? 0 : db_error(s, e, "delete net_links");
	sqlite3_finalize(st);
	return r;
}
