/* The RPC methods of corrald: the dispatch table and server start-up. */
#pragma once
#include "daemon/manager.h"

/* Create the gRPC server with every method and start listening as configured. */
int rpc_server_start(struct manager *m, struct err *e);
