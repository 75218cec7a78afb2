/* Scope-bound cleanup helpers (systemd style). Hand ownership over with TAKE_PTR / TAKE_FD. */
#pragma once
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void cleanup_freep(void *p) { free(*(void **)p); }
static inline void cleanup_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno; /* close() must not clobber the errno a caller is about to report */
		close(*fd);
		errno = saved;
	}
}
static inline void cleanup_fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

#define _cleanup_(fn) __attribute__((cleanup(fn)))
#define _cleanup_free_ _cleanup_(cleanup_freep)
#define _cleanup_close_ _cleanup_(cleanup_closep)
#define _cleanup_fclose_ _cleanup_(cleanup_fclosep)

#define TAKE_PTR(p)                          \
	({                                   \
		__typeof__(p) take_tmp_ = (p); \
		(p) = NULL;                    \
		take_tmp_;                     \
	})
#define TAKE_FD(fd)                   \
	({                            \
		int take_fd_ = (fd);  \
		(fd) = -1;            \
		take_fd_;             \
	})

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
