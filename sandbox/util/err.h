/* Errors are -errno plus a message ("what, on what, why"); callers add context with err_prefix.
 * Library code fills a struct err and returns its negative code; only the daemon logs it or turns it
 * into a gRPC status (see daemon/status.c). */
#pragma once
#include <stdarg.h>

#define ERR_MSG_MAX 512

struct err {
	int code; /* negative errno, 0 when no error was recorded */
	char msg[ERR_MSG_MAX];
};

/* Record -errnum with a formatted message; ": strerror(errnum)" is appended. Returns -errnum. */
int err_set(struct err *e, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like err_set, but without the strerror suffix (for messages that already say why). */
int err_setx(struct err *e, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepend "context: " to the message already recorded; returns e->code. */
int err_prefix(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void err_clear(struct err *e);
