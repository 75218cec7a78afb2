/* A small JSON reader for OCI/docker manifests and configs: parses a bounded document into a tree
 * (depth <= 64). Strings are unescaped (\uXXXX below 0x80 only; others become '?'). */
#pragma once
#include <stddef.h>

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ };

struct json {
	enum json_type type;
	char *str;          /* JSON_STR; key of an object member in `key` */
	char *key;
	double num;
	struct json **items; /* JSON_ARR items, JSON_OBJ members (with key) */
	size_t n;
};

/* -EINVAL on malformed input, -ENOMEM. */
int json_parse(const char *text, size_t len, struct json **ret);
void json_free(struct json *j);
const struct json *json_get(const struct json *obj, const char *key); /* NULL if absent / not an object */
const char *json_str(const struct json *j);                            /* NULL unless a string */
