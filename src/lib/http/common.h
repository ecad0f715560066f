/* Responses every Coder HTTP server gives the same way: the headers on every response, and
 * the /healthz and /latency-check routes. */
#ifndef HTTP_COMMON_H
#define HTTP_COMMON_H

#include "http/server.h"

#include <stdbool.h>
#include <stdint.h>

/* X-Coder-Build-Version, X-Content-Type-Options, and Strict-Transport-Security on TLS
 * requests when max_age > 0 (opts like "includeSubDomains; preload", may be NULL). */
void http_common_headers(struct http_exchange *ex, int64_t hsts_max_age, const char *hsts_opts);
/* 200 "OK". */
void http_common_healthz(struct http_exchange *ex, void *arg);
/* 200 "OK" with the CORS and Timing-Allow-Origin headers browsers need to time it. */
void http_common_latency_check(struct http_exchange *ex, void *arg);

/* CORS for one trusted origin (a proxy trusts its dashboard, the primary's access URL), as
 * Coder's middleware: GET and OPTIONS, request headers Accept, Content-Type, X-LATENCY-CHECK
 * and X-CSRF-TOKEN, no credentials. A request from that origin gets Access-Control-Allow-Origin;
 * a preflight (OPTIONS with Access-Control-Request-Method) is answered here, with the allow
 * headers only when the origin, method and headers are all allowed. Returns true when it
 * answered. */
bool http_common_cors(struct http_exchange *ex, const char *trusted_url);

/* A header that belongs to one connection, not to the message (RFC 9110 §7.6.1, and the
 * connection-specific fields of RFC 9113 §8.2.2): never forwarded by a proxy, never sent on
 * HTTP/2. */
bool http_header_hop_by_hop(const char *name);

#endif
