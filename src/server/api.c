/* The primary's HTTP front: common headers, the route table, and the hop of each API request
 * to the store thread and back. */
#include "primary.h"
#include "base/log.h"
#include "base/util.h"
#include "http/common.h"
#include "http/router.h"
#include "proxyhealth.h"
#include "apps.h"
#include "tunnel/table.h"
#include "worker.h"

#include <ctype.h>
#include <string.h>

struct api_route {
    struct http_route r;
    api_fn fn;
    enum api_auth auth;
};

static void
h_buildinfo(struct http_exchange *ex, void *arg)
{
    struct primary *p = arg;
    json_t *j = json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:s, s:s, s:b}", "external_url",
                          "https://github.com/coder/coder", "version", CODER_VERSION,
                          "dashboard_url", p->cfg.access_url, "workspace_proxy", 0,
                          "agent_api_version", "2.0", "provisioner_api_version", "1.0",
                          "upgrade_message", "", "deployment_id", p->deployment_id, "telemetry", 0);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    http_reply_text(ex, 200, "application/json; charset=utf-8", s);
    free(s);
}

static void
h_site(struct http_exchange *ex, void *arg)
{
    struct primary *p = arg;
    char *body =
        xasprintf("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Coder</title>"
                  "</head><body><h1>Coder</h1><p>Deployment %s.</p>"
                  "<p>Use the <code>coder</code> CLI: <code>coder login %s</code></p>"
                  "</body></html>\n",
                  p->deployment_id, p->cfg.access_url);
    http_reply_text(ex, strcmp(ex->req.path, "/") == 0 ? 200 : 404, "text/html; charset=utf-8",
                    body);
    free(body);
}

static const struct api_route api_routes[] = {
    {{"GET", "/api/v2/users/first", NULL}, api_users_first_get, API_AUTH_NONE},
    {{"POST", "/api/v2/users/first", NULL}, api_users_first_post, API_AUTH_NONE},
    {{"POST", "/api/v2/users/login", NULL}, api_users_login, API_AUTH_NONE},
    {{"GET", "/api/v2/users/authmethods", NULL}, api_users_authmethods, API_AUTH_NONE},
    {{"POST", "/api/v2/users/logout", NULL}, api_users_logout, API_AUTH_USER},
    {{"POST", "/api/v2/users", NULL}, api_users_create, API_AUTH_OWNER},
    {{"GET", "/api/v2/users/{user}", NULL}, api_users_get, API_AUTH_USER},
    {{"POST", "/api/v2/users/{user}/keys", NULL}, api_users_keys_create, API_AUTH_USER},
    {{"GET", "/api/v2/regions", NULL}, api_regions, API_AUTH_USER},
    {{"GET", "/api/v2/applications/auth-redirect", NULL}, api_apps_auth_redirect, API_AUTH_USER},
    {{"POST", "/api/v2/workspaceproxies/me/register", NULL}, api_proxies_register, API_AUTH_PROXY},
    {{"POST", "/api/v2/workspaceproxies/me/deregister", NULL},
     api_proxies_deregister,
     API_AUTH_PROXY},
    {{"POST", "/api/v2/users/{user}/workspaces", NULL}, api_workspaces_create, API_AUTH_USER},
    {{"GET", "/api/v2/users/{user}/workspace/{workspacename}", NULL},
     api_workspaces_by_name,
     API_AUTH_USER},
    {{"GET", "/api/v2/workspaces", NULL}, api_workspaces_list, API_AUTH_USER},
    {{"GET", "/api/v2/workspaces/{workspace}", NULL}, api_workspaces_get, API_AUTH_USER},
    {{"POST", "/api/v2/workspaces/{workspace}/builds", NULL}, api_workspaces_build, API_AUTH_USER},
    {{"GET", "/api/v2/workspaceagents/me/manifest", NULL}, api_agents_manifest, API_AUTH_AGENT},
    {{"GET", "/api/v2/workspaceagents/me/tunnel", NULL}, api_agents_tunnel, API_AUTH_AGENT},
    {{"GET", "/api/v2/workspaceagents/me/regions", NULL}, api_agents_regions, API_AUTH_AGENT},
    {{"GET", "/api/v2/workspaceagents/{workspaceagent}", NULL}, api_agents_get, API_AUTH_USER},
    {{"GET", "/api/v2/workspaceagents/{workspaceagent}/port-forward", NULL},
     api_agents_port_forward,
     API_AUTH_USER},
    {{"POST", "/api/v2/workspaceproxies/me/issue-signed-app-token", NULL},
     api_proxies_issue_app_token,
     API_AUTH_PROXY},
    {{"GET", "/api/v2/workspaceproxies/me/relay", NULL}, api_proxies_relay, API_AUTH_PROXY},
    {{"POST", "/api/v2/workspaceproxies/me/app-stats", NULL},
     api_proxies_app_stats,
     API_AUTH_PROXY},
    {{"GET", "/api/v2/workspaceproxies/me/crypto-keys", NULL},
     api_proxies_crypto_keys,
     API_AUTH_PROXY},
    {{"POST", "/api/v2/workspaceproxies", NULL}, api_proxies_create, API_AUTH_OWNER},
    {{"GET", "/api/v2/workspaceproxies", NULL}, api_proxies_list, API_AUTH_USER},
    {{"GET", "/api/v2/workspaceproxies/{workspaceproxy}", NULL}, api_proxies_get, API_AUTH_USER},
    {{"PATCH", "/api/v2/workspaceproxies/{workspaceproxy}", NULL},
     api_proxies_patch,
     API_AUTH_OWNER},
    {{"DELETE", "/api/v2/workspaceproxies/{workspaceproxy}", NULL},
     api_proxies_delete,
     API_AUTH_OWNER},
};

static const struct http_route loop_routes[] = {
    {"GET", "/healthz", http_common_healthz},
    {"GET", "/latency-check", http_common_latency_check},
    {"GET", "/api/v2/buildinfo", h_buildinfo},
};

void
api_reply_json(struct api_ctx *c, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    buf_reset(&c->ex->rbody);
    buf_puts(&c->ex->rbody, s);
    buf_putc(&c->ex->rbody, '\n');
    free(s);
    http_exchange_header_set(c->ex, "Content-Type", "application/json; charset=utf-8");
    c->ex->status = status;
}

void
api_reply_error(struct api_ctx *c, int status, const char *msg, const char *detail)
{
    json_t *j = json_pack("{s:s}", "message", msg);
    if (detail && *detail)
        json_object_set_new(j, "detail", json_string(detail));
    api_reply_json(c, status, j);
}

json_t *
api_read_json(struct api_ctx *c)
{
    json_error_t err;
    const struct buf *b = &c->ex->req.body;
    json_t *j = json_loadb(b->data ? b->data : "", b->len, JSON_REJECT_DUPLICATES, &err);
    if (j == NULL) {
        char *detail = xasprintf("%s (line %d, column %d)", err.text, err.line, err.column);
        api_reply_error(c, 400, "Request body must be valid JSON.", detail);
        free(detail);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_reply_error(c, 400, "Request body must be valid JSON.", NULL); /* as Coder's */
        return NULL;
    }
    return j;
}

const char *
api_str_field(json_t *j, const char *key, bool *bad)
{
    json_t *v = json_object_get(j, key);
    if (v == NULL || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

bool
api_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        if ((s[i] == '-' && s[i + 1] == '-') || (!isalnum((unsigned char)s[i]) && s[i] != '-'))
            return false;
    }
    return true;
}

bool
api_user_is_owner(const struct store_user *u)
{
    if (u->rbac_roles == NULL)
        return false;
    char *copy = xstrdup(u->rbac_roles), *save = NULL;
    bool owner = false;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        owner |= strcmp(t, "owner") == 0;
    free(copy);
    return owner;
}

/* ---- the hop to the store thread ---- */

struct api_job {
    struct api_ctx c;
    const struct api_route *route;
};

static void
api_job_run(struct store *st, void *arg)
{
    struct api_job *j = arg;
    struct api_ctx *c = &j->c;
    c->st = st;
    c->ex->status = 0;
    switch (j->route->auth) {
    case API_AUTH_NONE:
        break;
    case API_AUTH_USER:
    case API_AUTH_OWNER:
        if (api_auth_user(c) < 0)
            return;
        if (j->route->auth == API_AUTH_OWNER && !api_user_is_owner(&c->user)) {
            api_reply_error(c, 403, "Forbidden.", NULL);
            return;
        }
        break;
    case API_AUTH_PROXY:
        if (api_auth_proxy(c) < 0)
            return;
        break;
    case API_AUTH_AGENT:
        if (api_auth_agent(c) < 0)
            return;
        break;
    }
    j->route->fn(c);
    if (c->ex->status == 0)
        api_reply_error(c, 500, "An internal server error occurred.", "handler gave no response");
}

static void
api_job_done(void *arg)
{
    struct api_job *j = arg;
    struct api_ctx *c = &j->c;
    struct primary *p = c->p;
    if (c->forward_agent[0] && c->ex->status == 101) {
        if (p->stopping)
            http_reply_error(c->ex, 503, "The server is shutting down.", NULL);
        else
            apps_port_forward(p, c->ex, c->forward_agent, c->forward_port);
    } else if (c->relay_link && c->ex->status == 101) {
        if (p->stopping)
            http_reply_error(c->ex, 503, "The server is shutting down.", NULL);
        else
            agent_tunnels_accept_relay(p->tunnels, c->ex, c->proxy.id);
    } else if (c->tunnel_agent[0] && c->ex->status == 101) {
        if (p->stopping)
            http_reply_error(c->ex, 503, "The server is shutting down.", NULL);
        else
            agent_tunnels_accept(p->tunnels, c->ex, c->tunnel_agent);
    } else {
        http_exchange_finish(c->ex, c->ex->status);
    }
    if (c->registered[0])
        proxyhealth_on_register(p->health, c->registered);
    if (c->deregistered[0])
        proxyhealth_on_deregister(p->health, c->deregistered);
    if (c->health_check)
        proxyhealth_check_now(p->health);
    size_t k;
    json_t *id;
    json_array_foreach(c->drop_agents, k, id)
    {
        if (p->tunnels)
            agent_tunnels_drop(p->tunnels, json_string_value(id));
    }
    json_decref(c->drop_agents);
    store_user_fini(&c->user);
    store_apikey_fini(&c->key);
    store_proxy_fini(&c->proxy);
    store_agent_fini(&c->agent);
    free(j);
}

void
api_handle(struct http_exchange *ex, void *arg)
{
    struct primary *p = arg;
    http_common_headers(ex, p->cfg.hsts_max_age, p->cfg.hsts_options);
    if (ex->streaming) { /* apps_stream_match chose it: a path or subdomain app */
        if (p->stopping)
            http_reply_error(ex, 503, "The server is shutting down.", NULL);
        else
            apps_handle(ex, p);
        return;
    }
    int i = http_route_find(loop_routes, ARRAY_LEN(loop_routes), ex);
    if (i >= 0) {
        loop_routes[i].fn(ex, p);
        return;
    }
    struct http_route routes[ARRAY_LEN(api_routes)];
    for (size_t k = 0; k < ARRAY_LEN(api_routes); k++)
        routes[k] = api_routes[k].r;
    i = http_route_find(routes, ARRAY_LEN(routes), ex);
    if (i == HTTP_ROUTE_BAD_METHOD) {
        http_reply_error(ex, 405, "Method not allowed.", NULL);
        return;
    }
    if (i < 0) {
        if (str_has_prefix(ex->req.path, "/api/")) {
            http_reply_error(ex, 404, "Route not found.", NULL);
            return;
        }
        h_site(ex, p);
        return;
    }
    if (p->stopping) {
        http_reply_error(ex, 503, "The server is shutting down.", NULL);
        return;
    }
    struct api_job *j = xcalloc(1, sizeof(*j));
    j->c.p = p;
    j->c.ex = ex;
    j->route = &api_routes[i];
    worker_submit(p->worker, api_job_run, api_job_done, j);
}
