#include "images/json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

struct parser {
	const char *p, *end;
};

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static int parse_string(struct parser *ps, char **ret)
{
	if (ps->p >= ps->end || *ps->p != '"')
		return -EINVAL;
	ps->p++;
	size_t cap = 16, len = 0;
	char *s = malloc(cap);
	if (!s)
		return -ENOMEM;
	while (ps->p < ps->end && *ps->p != '"') {
		char c = *ps->p++;
		if (c == '\\') {
			if (ps->p >= ps->end)
				break;
			char esc = *ps->p++;
			switch (esc) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'u': {
				if (ps->end - ps->p < 4) {
					free(s);
					return -EINVAL;
				}
				char hex[5] = {ps->p[0], ps->p[1], ps->p[2], ps->p[3], 0};
				char *endp;
				long v = strtol(hex, &endp, 16);
				if (*endp) {
					free(s);
					return -EINVAL;
				}
				ps->p += 4;
				c = v > 0 && v < 0x80 ? (char)v : '?';
				break;
			}
			default: c = esc; break;
			}
		} else if ((unsigned char)c < 0x20) {
			free(s);
			return -EINVAL;
		}
		if (len + 2 > cap) {
			char *ns = realloc(s, cap *= 2);
			if (!ns) {
				free(s);
				return -ENOMEM;
			}
			s = ns;
		}
		s[len++] = c;
	}
	if (ps->p >= ps->end) {
		free(s);
		return -EINVAL;
	}
	ps->p++;
	s[len] = '\0';
	*ret = s;
	return 0;
}

static int parse_value(struct parser *ps, int depth, struct json **ret);

static int push(struct json *j, struct json *item)
{
	struct json **ni = realloc(j->items, (j->n + 1) * sizeof(*ni));
	if (!ni)
		return -ENOMEM;
	j->items = ni;
	j->items[j->n++] = item;
	return 0;
}

static int parse_container(struct parser *ps, int depth, struct json *j)
{
	char close = j->type == JSON_OBJ ? '}' : ']';
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		return 0;
	}
	for (;;) {
		char *key = NULL;
		int r;
		skip_ws(ps);
		if (j->type == JSON_OBJ) {
			if ((r = parse_string(ps, &key)) < 0)
				return r;
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':') {
				free(key);
				return -EINVAL;
			}
			ps->p++;
		}
		struct json *item;
		if ((r = parse_value(ps, depth + 1, &item)) < 0) {
			free(key);
			return r;
		}
		item->key = key;
		if ((r = push(j, item)) < 0) {
			json_free(item);
			return r;
		}
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			return 0;
		}
		return -EINVAL;
	}
}

static int parse_value(struct parser *ps, int depth, struct json **ret)
{
	if (depth > JSON_MAX_DEPTH)
		return -EINVAL;
	skip_ws(ps);
	if (ps->p >= ps->end)
		return -EINVAL;
	struct json *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	int r = 0;
	char c = *ps->p;
	if (c == '{' || c == '[') {
		j->type = c == '{' ? JSON_OBJ : JSON_ARR;
		r = parse_container(ps, depth, j);
	} else if (c == '"') {
		j->type = JSON_STR;
		r = parse_string(ps, &j->str);
	} else if (ps->end - ps->p >= 4 && !strncmp(ps->p, "null", 4)) {
		j->type = JSON_NULL;
		ps->p += 4;
	} else if (ps->end - ps->p >= 4 && !strncmp(ps->p, "true", 4)) {
		j->type = JSON_BOOL;
		j->num = 1;
		ps->p += 4;
	} else if (ps->end - ps->p >= 5 && !strncmp(ps->p, "false", 5)) {
		j->type = JSON_BOOL;
		ps->p += 5;
	} else if (c == '-' || (c >= '0' && c <= '9')) {
		char buf[64];
		size_t n = 0;
		while (ps->p < ps->end && n < sizeof(buf) - 1 && strchr("+-0123456789.eE", *ps->p))
			buf[n++] = *ps->p++;
		buf[n] = '\0';
		j->type = JSON_NUM;
		j->num = strtod(buf, NULL);
	} else {
		r = -EINVAL;
	}
	if (r < 0) {
		json_free(j);
		return r;
	}
	*ret = j;
	return 0;
}

int json_parse(const char *text, size_t len, struct json **ret)
{
	struct parser ps = {text, text + len};
	int r = parse_value(&ps, 0, ret);
	if (r < 0)
		return r;
	skip_ws(&ps);
	if (ps.p != ps.end) {
		json_free(*ret);
		*ret = NULL;
		return -EINVAL;
	}
	return 0;
}

void json_free(struct json *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < j->n; i++)
		json_free(j->items[i]);
	free(j->items);
	free(j->str);
	free(j->key);
	free(j);
}

const struct json *json_get(const struct json *obj, const char *key)
{
	if (!obj || obj->type != JSON_OBJ)
		return NULL;
	for (size_t i = 0; i < obj->n; i++)
		if (obj->items[i]->key && !strcmp(obj->items[i]->key, key))
			return obj->items[i];
	return NULL;
}

const char *json_str(const struct json *j) { return j && j->type == JSON_STR ? j->str : NULL; }
