/* Reading an app request from a path or a Host header: see request.h. */
#include "appproxy/request.h"
#include "appproxy/relay.h"
#include "base/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The part of the path after "/@" or "/%40", or NULL. */
static const char *
after_at(const char *path)
{
    if (str_has_prefix(path, "/@"))
        return path + 2;
    if (strncasecmp(path, "/%40", 4) == 0)
        return path + 4;
    return NULL;
}

/* The subdomain the Host header gives on the wildcard (a new string), or NULL. */
static char *
wildcard_subdomain(const struct http_exchange *ex, const struct apphost_pattern *wildcard,
                   const char *own_host)
{
    const char *host = http_request_header(&ex->req, "Host");
    char *sub = NULL;
    if (!wildcard || !host || (own_host && apphost_hostnames_match(host, own_host)) ||
        !apphost_pattern_match(wildcard, host, &sub))
        return NULL;
    return sub;
}

bool
app_request_match(const struct http_exchange *ex, const struct apphost_pattern *wildcard,
                  const char *own_host)
{
    if (after_at(ex->req.path))
        return true;
    char *sub = wildcard_subdomain(ex, wildcard, own_host);
    free(sub);
    return sub != NULL;
}

static int
not_found(struct http_exchange *ex)
{
    http_reply_error(ex, 404, "Route not found.", NULL);
    return -1;
}

/* Copies n bytes of s into a field of size cap; false when they do not fit or n is 0. */
static bool
take(char *field, size_t cap, const char *s, size_t n)
{
    if (n == 0 || n >= cap)
        return false;
    memcpy(field, s, n);
    field[n] = '\0';
    return true;
}

static int
parse_path(struct http_exchange *ex, const char *p, struct app_request *r)
{
    const char *s1 = strchr(p, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s1 || !s2 || strncmp(s2, "/apps/", 6) != 0 || !take(r->user, sizeof(r->user), p, s1 - p))
        return not_found(ex);
    if (str_eq(r->user, "me")) {
        /* Links must work for whoever they are shared with (Coder refuses it too). */
        app_fail_page(ex, 404, "Workspace apps must be accessed with the full username, not @me.",
                      "Replace @me with the workspace owner's username.");
        return -1;
    }
    const char *ws = s1 + 1, *dot = memchr(ws, '.', (size_t)(s2 - ws));
    if (!take(r->workspace, sizeof(r->workspace), ws, (size_t)((dot ? dot : s2) - ws)) ||
        (dot && !take(r->agent, sizeof(r->agent), dot + 1, (size_t)(s2 - dot - 1))))
        return not_found(ex);
    const char *slug = s2 + 6;
    const char *after = strchr(slug, '/');
    if (!take(r->slug, sizeof(r->slug), slug, after ? (size_t)(after - slug) : strlen(slug)))
        return not_found(ex);
    const char *q = ex->req.query[0] ? "?" : "";
    if (!after) {
        /* Coder redirects to the slash-terminated form, so relative links work. The Location
         * is the request's own path plus "/": it cannot leave this host. */
        char *loc = xasprintf("%s/%s%s", ex->req.path, q, ex->req.query);
        http_exchange_header(ex, "Location", loc);
        free(loc);
        http_exchange_finish(ex, 307);
        return -1;
    }
    r->access = APP_ACCESS_PATH;
    r->base_path = xasprintf("%.*s", (int)(after + 1 - ex->req.path), ex->req.path);
    r->rest = xasprintf("%s%s%s", after, q, ex->req.query);
    return 0;
}

int
app_request_parse(struct http_exchange *ex, const struct apphost_pattern *wildcard,
                  const char *own_host, struct app_request *r)
{
    memset(r, 0, sizeof(*r));
    const char *p = after_at(ex->req.path);
    if (p)
        return parse_path(ex, p, r);
    char *sub = wildcard_subdomain(ex, wildcard, own_host);
    if (!sub)
        return not_found(ex);
    struct apphost_app app;
    int rc = apphost_parse(sub, &app);
    free(sub);
    if (rc < 0) {
        app_fail_page(ex, 400, "Invalid application URL.", apphost_strerror(rc));
        return -1;
    }
    r->access = APP_ACCESS_SUBDOMAIN;
    snprintf(r->user, sizeof(r->user), "%s", app.username);
    snprintf(r->workspace, sizeof(r->workspace), "%s", app.workspace);
    snprintf(r->agent, sizeof(r->agent), "%s", app.agent);
    snprintf(r->slug, sizeof(r->slug), "%s", app.app_slug_or_port);
    snprintf(r->prefix, sizeof(r->prefix), "%s", app.prefix);
    r->rest = xstrdup(ex->req.target); /* the whole target: the app owns the host */
    r->base_path = xstrdup("/");
    r->host = xstrdup(http_request_header(&ex->req, "Host"));
    return 0;
}

int
app_request_port(const struct app_request *r, bool *https)
{
    if (r->access != APP_ACCESS_SUBDOMAIN)
        return -1;
    struct apphost_app app = {0};
    snprintf(app.app_slug_or_port, sizeof(app.app_slug_or_port), "%s", r->slug);
    return apphost_app_port(&app, https);
}

void
app_request_fini(struct app_request *r)
{
    free(r->rest);
    free(r->base_path);
    free(r->host);
    r->rest = r->base_path = r->host = NULL;
}
