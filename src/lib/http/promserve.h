/* The Prometheus endpoint: a plain-HTTP listener answering every path with the registry in
 * the text exposition format (as Coder's separate --prometheus-address listener does). */
#ifndef HTTP_PROMSERVE_H
#define HTTP_PROMSERVE_H

#include "http/server.h"

struct metrics_registry;

/* Listens on addr and serves reg. Returns the server, or NULL with *err set. */
struct http_server *promserve_start(uv_loop_t *loop, struct metrics_registry *reg, const char *addr,
                                    char **err);

#endif
