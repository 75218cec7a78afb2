#include "daemon/convert.h"

#include "daemon/rpc_net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void exit_fill(const struct exit_info *x, Corral__V1__ExitStatus *out)
{
	corral__v1__exit_status__init(out);
	out->reason = (Corral__V1__ExitReason)x->reason;
	out->exit_code = x->code;
	out->signal = x->signal;
	out->message = (char *)x->message;
}

int sandbox_pb_fill(const struct sandbox *sb, struct sandbox_pb *out)
{
	const Corral__V1__CreateSandboxRequest *spec = sb->spec;
	memset(out, 0, sizeof(*out));
	corral__v1__sandbox__init(&out->msg);
	out->msg.sandbox_id = (char *)sb->id;
	out->msg.state = (Corral__V1__SandboxState)sb->state;
	out->msg.image = spec->image;
	out->msg.image_id = (char *)sb->image_id;
	out->msg.n_command = spec->n_command;
	out->msg.command = spec->command;
	out->msg.name = spec->name;
	out->msg.workdir = spec->workdir;
	out->msg.created_at_ms = sb->created_at_ms;
	out->msg.finished_at_ms = sb->finished_at_ms;
	out->msg.timeout_ms = spec->timeout_ms;
	out->msg.idle_timeout_ms = spec->idle_timeout_ms;
	corral__v1__resources__init(&out->resources);
	if (spec->resources) {
		out->resources.cpu = spec->resources->cpu;
		out->resources.memory_mib = spec->resources->memory_mib;
		out->resources.pids = spec->resources->pids;
		out->resources.disk_mib = spec->resources->disk_mib;
	}
	out->msg.resources = &out->resources;
	/* Network: the policy as currently set (UpdateNetworkPolicy rewrites the spec), the ports,
	 * and the BPF counters while the sandbox has a link. */
	out->msg.network = spec->network;
	out->msg.n_ports = spec->n_ports;
	out->msg.ports = spec->ports;
	corral__v1__network_counters__init(&out->counters);
	if (rpc_net_counters(sb, &out->counters))
		out->msg.network_counters = &out->counters;
	if (sb->state == SANDBOX_FINISHED) {
		exit_fill(&sb->exit, &out->exit);
		out->msg.exit_status = &out->exit;
	}
	if (spec->n_tags) {
		out->tag_storage = calloc(spec->n_tags, sizeof(*out->tag_storage));
		out->tags = calloc(spec->n_tags, sizeof(*out->tags));
		if (!out->tag_storage || !out->tags) {
			sandbox_pb_release(out);
			return -ENOMEM;
		}
		for (size_t i = 0; i < spec->n_tags; i++) {
			corral__v1__sandbox__tags_entry__init(&out->tag_storage[i]);
			out->tag_storage[i].key = spec->tags[i]->key;
			out->tag_storage[i].value = spec->tags[i]->value;
			out->tags[i] = &out->tag_storage[i];
		}
		out->msg.n_tags = spec->n_tags;
		out->msg.tags = out->tags;
	}
	return 0;
}

void sandbox_pb_release(struct sandbox_pb *pb)
{
	free(pb->tag_storage);
	free(pb->tags);
	pb->tag_storage = NULL;
	pb->tags = NULL;
}

void exec_pb_fill(const struct exec *ex, struct exec_pb *out)
{
	memset(out, 0, sizeof(*out));
	corral__v1__exec__init(&out->msg);
	out->msg.exec_id = (char *)ex->id;
	out->msg.sandbox_id = (char *)ex->sb->id;
	out->msg.n_argv = ex->spec->n_argv;
	out->msg.argv = ex->spec->argv;
	out->msg.state = (Corral__V1__ExecState)ex->state;
	out->msg.started_at_ms = ex->started_at_ms;
	out->msg.finished_at_ms = ex->finished_at_ms;
	out->msg.pty = ex->spec->pty;
	out->msg.pid = ex->pid;
	if (ex->state == EXEC_FINISHED) {
		exit_fill(&ex->exit, &out->exit);
		out->msg.exit_status = &out->exit;
	}
}
