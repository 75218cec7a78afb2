/* SnapshotFilesystem: freeze the sandbox, copy its writable layer (the overlay upper dir on the
 * host) into a new layer on a worker thread, thaw, and register an image = the sandbox's image's
 * layers + the new one. Cost grows with what the sandbox changed, not with its image. */
#pragma once
#include "corral/v1/sandbox.pb-c.h"
#include "daemon/grpc.h"
#include "daemon/manager.h"

void snapshot_serve(struct manager *m, const Corral__V1__SnapshotFilesystemRequest *req, struct grpc_call *call);
