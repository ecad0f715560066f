/* The proxy's HTTP routes (CODER-COMPAT §5.2): apps (apps.c), the agents' tunnels (tunnels.c),
 * health and build info; every other path gets the "load it from the dashboard" page. */
#include "base/util.h"
#include "http/common.h"
#include "http/router.h"
#include "wsproxy.h"

#include <jansson.h>
#include <string.h>

#define REPORT_TIMEOUT_MS 4000

static void
h_buildinfo(struct http_exchange *ex, void *arg)
{
    struct wsproxy *w = arg;
    json_t *j =
        json_pack("{s:s, s:s, s:s, s:s, s:b}", "external_url", "https://github.com/coder/coder",
                  "version", CODER_VERSION, "agent_api_version", "2.0", "dashboard_url",
                  w->primary_url, "workspace_proxy", 1);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    http_reply_text(ex, 200, "application/json; charset=utf-8", s);
    free(s);
}

static void
h_tunnel(struct http_exchange *ex, void *arg)
{
    wsproxy_tunnel_handle(ex, arg);
}

static void
h_port_forward(struct http_exchange *ex, void *arg)
{
    wsproxy_port_forward(ex, arg);
}

static void
h_derp(struct http_exchange *ex, void *arg)
{
    http_reply_error(ex, 400, "DERP is not supported; agents connect through the agent tunnel.",
                     NULL);
}

/* Coder's static "Head to the Dashboard" page (400), with a link back to the dashboard. */
static void
dashboard_page(struct http_exchange *ex, struct wsproxy *w, const char *text)
{
    char *page = xasprintf("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                           "<title>Head to the Dashboard</title></head><body>"
                           "<h1>Head to the Dashboard</h1><p>%s</p>"
                           "<p><a href=\"%s\">Back to site</a></p></body></html>\n",
                           text, w->primary_url);
    http_reply_text(ex, 400, "text/html; charset=utf-8", page);
    free(page);
}

static void
h_not_found(struct http_exchange *ex, struct wsproxy *w)
{
    dashboard_page(ex, w,
                   "Workspace Proxies route traffic in terminals and apps directly to your "
                   "workspace. This page must be loaded from the dashboard. Click to be "
                   "redirected!");
}

/* /healthz-report asks the primary for its build info, as Coder's proxy does, so the primary's
 * health check also proves this proxy can reach it. */
struct report {
    struct http_exchange *ex;
    struct wsproxy *w;
};

static void
on_report_buildinfo(struct http_client_resp *r, void *arg)
{
    struct report *rep = arg;
    struct wsproxy *w = rep->w;
    json_t *errors = json_array(), *warnings = json_array();
    json_t *bi = r->status == 200
                     ? json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL)
                     : NULL;
    const char *version = json_string_value(json_object_get(bi, "version"));
    if (r->status == 0) {
        json_array_append_new(errors, json_sprintf("failed to get build info: %s", r->error));
    } else if (version == NULL) {
        json_array_append_new(errors, json_sprintf("failed to get build info: unexpected status "
                                                   "code %ld or body from %s/api/v2/buildinfo",
                                                   r->status, w->primary_url));
    } else if (json_is_true(json_object_get(bi, "workspace_proxy"))) {
        json_array_append_new(errors,
                              json_sprintf("dashboard url (%s) is a workspace proxy, must be a "
                                           "primary coderd",
                                           w->primary_url));
    } else {
        int a = -1, b = -1, c = -2, d = -2;
        sscanf(version[0] == 'v' ? version + 1 : version, "%d.%d", &a, &b);
        sscanf(CODER_VERSION + 1, "%d.%d", &c, &d);
        if (a != c || b != d)
            json_array_append_new(warnings, json_sprintf("version mismatch: primary coderd (%s) != "
                                                         "workspace proxy (%s)",
                                                         version, CODER_VERSION));
    }
    json_decref(bi);
    json_t *j = json_pack("{s:o, s:o}", "errors", errors, "warnings", warnings);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    http_reply_text(rep->ex, w->stopping ? 500 : 200, "application/json; charset=utf-8", s);
    free(s);
    free(rep);
}

static void
h_healthz_report(struct http_exchange *ex, void *arg)
{
    struct wsproxy *w = arg;
    if (w->stopping) {
        http_reply_error(ex, 500, "The workspace proxy is shutting down.", NULL);
        return;
    }
    struct report *rep = xcalloc(1, sizeof(*rep));
    rep->ex = ex;
    rep->w = w;
    struct http_client_req req;
    char *url = xasprintf("%s/api/v2/buildinfo", w->primary_url);
    wsproxy_primary_req(w, &req, "GET", url, NULL);
    req.timeout_ms = REPORT_TIMEOUT_MS;
    if (http_client_start(w->client, &req, on_report_buildinfo, rep) < 0) {
        free(rep);
        http_reply_error(ex, 500, "Could not start the build info request.", NULL);
    }
    free(url);
}

static const struct http_route routes[] = {
    {"GET", "/latency-check", http_common_latency_check},
    {"GET", "/healthz", http_common_healthz},
    {"GET", "/healthz-report", h_healthz_report},
    {"GET", "/api/v2/buildinfo", h_buildinfo},
    {"GET", "/api/v2/workspaceagents/me/tunnel", h_tunnel},
    {"GET", "/api/v2/workspaceagents/{workspaceagent}/port-forward", h_port_forward},
    {"*", "/derp", h_derp},
    {"*", "/derp/*", h_derp},
};

void
wsproxy_handle(struct http_exchange *ex, void *arg)
{
    struct wsproxy *w = arg;
    http_common_headers(ex, w->o->net.hsts_max_age, w->o->net.hsts_header_options);
    if (ex->streaming && w->o->derp_only) { /* --derp-only: no browser traffic */
        dashboard_page(ex, w,
                       "This workspace proxy is DERP-only and cannot be used for browser "
                       "connections. Please use a different region directly from the "
                       "dashboard. Click to be redirected!");
        return;
    }
    if (ex->streaming) { /* wsproxy_apps_match chose it: a path or subdomain app */
        wsproxy_apps_handle(ex, w);
        return;
    }
    if (http_common_cors(ex, w->primary_url))
        return; /* a preflight, answered */
    if (http_route_dispatch(routes, ARRAY_LEN(routes), ex, w) < 0)
        h_not_found(ex, w);
}
