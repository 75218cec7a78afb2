/* Internal objects -> API messages. The messages borrow strings from the objects; the holder
 * structs own the arrays made for them. Send, then release. */
#pragma once
#include "daemon/exec.h"
#include "daemon/sandbox.h"

struct sandbox_pb {
	Corral__V1__Sandbox msg;
	Corral__V1__ExitStatus exit;
	Corral__V1__Resources resources;
	Corral__V1__NetworkCounters counters;
	Corral__V1__Sandbox__TagsEntry *tag_storage;
	Corral__V1__Sandbox__TagsEntry **tags;
};

struct exec_pb {
	Corral__V1__Exec msg;
	Corral__V1__ExitStatus exit;
};

int sandbox_pb_fill(const struct sandbox *sb, struct sandbox_pb *out);
void sandbox_pb_release(struct sandbox_pb *pb);
void exec_pb_fill(const struct exec *ex, struct exec_pb *out);
