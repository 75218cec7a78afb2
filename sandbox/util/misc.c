#include "util/misc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t time_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int id_random(char *out, size_t size, const char *prefix, size_t nbytes)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char rnd[32];
	size_t plen = strlen(prefix);
	if (nbytes > sizeof(rnd) || size < plen + 2 * nbytes + 1)
		return -EINVAL;
	if (getrandom(rnd, nbytes, 0) != (ssize_t)nbytes)
		return -errno;
	memcpy(out, prefix, plen);
	for (size_t i = 0; i < nbytes; i++) {
		out[plen + 2 * i] = hex[rnd[i] >> 4];
		out[plen + 2 * i + 1] = hex[rnd[i] & 15];
	}
	out[plen + 2 * nbytes] = '\0';
	return 0;
}

bool parse_u64(const char *s, uint64_t *ret)
{
	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return false;
	*ret = v;
	return true;
}

static bool name_char(char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return !first && (c == '.' || c == '_' || c == '-');
}

bool name_is_valid(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char(s[i], i == 0))
			return false;
	return true;
}
