#include "http/router.h"
#include "base/util.h"
#include "http/url.h"

#include <string.h>

/* Matches path against pattern; fills params of ex on success. */
static bool
route_match(const char *pattern, const char *path, struct http_exchange *ex)
{
    const char *p = pattern, *s = path;
    size_t n = 0;
    while (*p) {
        if (p[0] == '*' && p[1] == '\0')
            return true;
        if (*p == '{') {
            const char *close = strchr(p, '}');
            const char *seg_end = strchr(s, '/');
            if (seg_end == NULL)
                seg_end = s + strlen(s);
            if (close == NULL || seg_end == s || n >= HTTP_MAX_PARAMS)
                goto fail;
            char *v = url_unescape(s, (size_t)(seg_end - s), false);
            if (v == NULL)
                goto fail;
            /* Names live in the static route table; keep a pointer past the brace. */
            ex->param_names[n] = p + 1;
            ex->param_values[n++] = v;
            ex->nparams = n;
            p = close + 1;
            s = seg_end;
            continue;
        }
        if (*p != *s)
            goto fail;
        p++;
        s++;
    }
    if (*s == '\0')
        return true;
fail:
    for (size_t i = 0; i < ex->nparams; i++) {
        free(ex->param_values[i]);
        ex->param_values[i] = NULL;
    }
    ex->nparams = 0;
    return false;
}

int
http_route_find(const struct http_route *routes, size_t n, struct http_exchange *ex)
{
    bool path_seen = false;
    for (size_t i = 0; i < n; i++) {
        if (!route_match(routes[i].pattern, ex->req.path, ex))
            continue;
        if (strcmp(routes[i].method, "*") != 0 && strcmp(routes[i].method, ex->req.method) != 0 &&
            !(strcmp(routes[i].method, "GET") == 0 && strcmp(ex->req.method, "HEAD") == 0)) {
            path_seen = true;
            for (size_t j = 0; j < ex->nparams; j++)
                free(ex->param_values[j]);
            ex->nparams = 0;
            continue;
        }
        ex->route = routes[i].pattern;
        if (!ex->routed)
            http_exchange_routed(ex); /* metrics count it from now */
        return (int)i;
    }
    return path_seen ? HTTP_ROUTE_BAD_METHOD : HTTP_ROUTE_NONE;
}

int
http_route_dispatch(const struct http_route *routes, size_t n, struct http_exchange *ex, void *arg)
{
    int i = http_route_find(routes, n, ex);
    if (i < 0)
        return i;
    routes[i].fn(ex, arg);
    return HTTP_ROUTE_DISPATCHED;
}
