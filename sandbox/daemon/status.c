#include "daemon/status.h"

#include <errno.h>
#include <stdlib.h>

#include "util/log.h"

static const struct {
	int err;
	enum grpc_status_code code;
} status_table[] = {
	{EINVAL, GRPC_STATUS_INVALID_ARGUMENT},
	{E2BIG, GRPC_STATUS_INVALID_ARGUMENT},
	{ENAMETOOLONG, GRPC_STATUS_INVALID_ARGUMENT},
	{ENOENT, GRPC_STATUS_NOT_FOUND},
	{ESRCH, GRPC_STATUS_NOT_FOUND},
	{EEXIST, GRPC_STATUS_ALREADY_EXISTS},
	{EPERM, GRPC_STATUS_PERMISSION_DENIED},
	{EACCES, GRPC_STATUS_PERMISSION_DENIED},
	{ENOSPC, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{EDQUOT, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{EMFILE, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{ENFILE, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{EUSERS, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{EMSGSIZE, GRPC_STATUS_RESOURCE_EXHAUSTED},
	{ERANGE, GRPC_STATUS_OUT_OF_RANGE},
	{ESTALE, GRPC_STATUS_FAILED_PRECONDITION},   /* object is finished / not running */
	{EPIPE, GRPC_STATUS_FAILED_PRECONDITION},    /* stream already closed */
	{EBUSY, GRPC_STATUS_ABORTED},                /* a conflicting operation is in progress */
	{ECANCELED, GRPC_STATUS_CANCELLED},
	{ETIMEDOUT, GRPC_STATUS_DEADLINE_EXCEEDED},
	{ENOSYS, GRPC_STATUS_UNIMPLEMENTED},
	{EOPNOTSUPP, GRPC_STATUS_UNIMPLEMENTED},
	{EAGAIN, GRPC_STATUS_UNAVAILABLE},
	{ECONNRESET, GRPC_STATUS_UNAVAILABLE},
};

enum grpc_status_code status_from_errno(int err)
{
	err = abs(err);
	for (size_t i = 0; i < sizeof(status_table) / sizeof(status_table[0]); i++)
		if (status_table[i].err == err)
			return status_table[i].code;
	return GRPC_STATUS_INTERNAL;
}

void status_reply_err(struct grpc_call *call, const struct err *e)
{
	enum grpc_status_code code = status_from_errno(e->code);
	if (code == GRPC_STATUS_INTERNAL)
		log_error("%s: %s", grpc_call_method(call), e->msg);
	else
		log_debug("%s: %s", grpc_call_method(call), e->msg);
	grpc_call_finish(call, code, "%s", e->msg[0] ? e->msg : "internal error");
}
