/* RPC handlers of ImageService and SandboxService/SnapshotFilesystem; the table is
 * rpc_images_methods (declared in daemon/rpc.h). */
#pragma once
#include "daemon/rpc.h"
