/* Small helpers: wall-clock time, random ids, bounded parsing, name validation. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the Unix epoch (CLOCK_REALTIME), for timestamps shown to users. */
int64_t time_now_ms(void);
/* Fill out (size >= prefix + 2*nbytes + 1) with prefix + nbytes random bytes in hex. */
int id_random(char *out, size_t size, const char *prefix, size_t nbytes);
/* Parse a whole string as an unsigned 64-bit decimal; false on junk or overflow. */
bool parse_u64(const char *s, uint64_t *ret);
/* [A-Za-z0-9][A-Za-z0-9._-]{0,max-1} */
bool name_is_valid(const char *s, size_t max);
