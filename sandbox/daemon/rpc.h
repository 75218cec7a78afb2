/* The RPC methods of corrald. Each module (sandboxes and execs, system, files, images, network)
 * exports its own table; rpc_server_start serves them all. */
#pragma once
#include <stddef.h>

#include "daemon/grpc.h"
#include "daemon/manager.h"

struct rpc_methods {
	const struct grpc_method *methods;
	size_t n;
};

extern const struct rpc_methods rpc_sandbox_methods; /* rpc.c: sandboxes, execs, GetInfo */
extern const struct rpc_methods rpc_images_methods;  /* rpc_images.c: ImageService, SnapshotFilesystem */
extern const struct rpc_methods rpc_net_methods;     /* rpc_net.c: UpdateNetworkPolicy, GetSandboxTunnels */
extern const struct rpc_methods rpc_files_methods;   /* rpc_files.c: the filesystem API */

/* The sandbox a client request names; NULL after answering INVALID_ARGUMENT (no id) or
 * NOT_FOUND (unknown, or pooled and not handed out). */
struct sandbox *rpc_lookup_sandbox(struct manager *m, struct grpc_call *call, const char *id);

/* Create the gRPC server with every module's methods and start listening as configured. */
int rpc_server_start(struct manager *m, struct err *e);
