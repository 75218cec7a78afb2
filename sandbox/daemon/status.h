/* The one place where errors become gRPC statuses: a table from errno to status code. */
#pragma once
#include "daemon/grpc.h"
#include "util/err.h"

enum grpc_status_code status_from_errno(int err);
/* Finish call with the status for e->code and e->msg; logs internal errors. */
void status_reply_err(struct grpc_call *call, const struct err *e);
