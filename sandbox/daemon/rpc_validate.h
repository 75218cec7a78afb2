/* Validation of client requests: every field from a client is bounded and checked before use;
 * each failure says which field and why (INVALID_ARGUMENT via -EINVAL). */
#pragma once
#include <stddef.h>

#include "daemon/api.h"
#include "util/err.h"

int validate_create_sandbox(const Corral__V1__CreateSandboxRequest *req, struct err *e);
int validate_start_exec(const Corral__V1__StartExecRequest *req, struct err *e);
int validate_tags(Corral__V1__SetSandboxTagsRequest__TagsEntry *const *tags, size_t n, struct err *e);
int validate_timeout(const char *field, int64_t ms, struct err *e);
