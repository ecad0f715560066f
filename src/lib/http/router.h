/* Routes: method + path pattern -> handler. Patterns are literal segments, "{name}" segments
 * capturing one non-empty path segment (percent-decoded), and a final "*" matching the rest. */
#ifndef HTTP_ROUTER_H
#define HTTP_ROUTER_H

#include "http/server.h"

struct http_route {
    const char *method; /* "GET", or "*" for any */
    const char *pattern;
    http_handler_fn fn;
};

enum {
    HTTP_ROUTE_NONE = -2,       /* no route has this path */
    HTTP_ROUTE_BAD_METHOD = -1, /* the path exists, not with this method */
    HTTP_ROUTE_DISPATCHED = 0,  /* a handler was called */
};

/* Finds the first route matching ex's method and path and sets ex->route and the params.
 * Returns its index, or HTTP_ROUTE_NONE / HTTP_ROUTE_BAD_METHOD (both negative). */
int http_route_find(const struct http_route *routes, size_t n, struct http_exchange *ex);
/* Finds the first route matching ex's method and path, sets ex->route and the params, and
 * calls its handler with arg. Returns one of the HTTP_ROUTE_* values. */
int http_route_dispatch(const struct http_route *routes, size_t n, struct http_exchange *ex,
                        void *arg);

#endif
