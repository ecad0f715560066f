/* Which workspace app a request asks for (CODER-COMPAT §6), read the same way by the primary
 * and by proxies: a path app /@user/workspace[.agent]/apps/slug/... (or /%40user/...), or a
 * subdomain app or port whose name fills the '*' of the region's wildcard hostname. Loop thread;
 * pure apart from answering the request when it is malformed. */
#ifndef APPPROXY_REQUEST_H
#define APPPROXY_REQUEST_H

#include "apphost/apphost.h"
#include "http/server.h"

#include <stdbool.h>

enum app_access {
    APP_ACCESS_PATH,
    APP_ACCESS_SUBDOMAIN,
    APP_ACCESS_TERMINAL, /* the agent itself (Coder's terminal; here also port forwarding) */
};

struct app_request {
    enum app_access access;
    char user[APPHOST_MAX_HOSTNAME + 1];
    char workspace[APPHOST_MAX_HOSTNAME + 1];
    char agent[APPHOST_MAX_HOSTNAME + 1]; /* "" when not named */
    char slug[APPHOST_MAX_HOSTNAME + 1];  /* an app slug, or a port ("8080", "8443s") */
    char prefix[APPHOST_MAX_HOSTNAME + 1];
    char *rest;      /* what the app sees as its request target: path and query */
    char *base_path; /* where the app lives: "/@user/ws[.agent]/apps/slug/", or "/" */
    char *host;      /* the Host header as sent (subdomain apps; NULL for path apps) */
};

/* True when ex names an app: its path starts with /@ or /%40, or its Host matches wildcard
 * (which may be NULL) and is not own_host (the region's access URL host). */
bool app_request_match(const struct http_exchange *ex, const struct apphost_pattern *wildcard,
                       const char *own_host);

/* Reads the app ex names into r. Returns 0, or -1 after answering ex: 404 for a path that
 * names no app, 307 to the slash-terminated form when nothing follows the slug (as Coder does,
 * so relative links work), 400 for a subdomain that is not a valid app name. */
int app_request_parse(struct http_exchange *ex, const struct apphost_pattern *wildcard,
                      const char *own_host, struct app_request *r);
void app_request_fini(struct app_request *r);

/* The port an app request names (subdomain apps only: path apps never name ports), or -1;
 * sets *https for the "s" suffix. */
int app_request_port(const struct app_request *r, bool *https);

#endif
