/* Workspace apps at the primary (CODER-COMPAT §5.3-§6): path apps /@user/workspace[.agent]/
 * apps/slug/... and subdomain apps and ports on the primary's wildcard, authorized on the store
 * thread (apps_authorize, which issue-signed-app-token uses for proxies too) and relayed through
 * the agent's tunnel (appproxy/relay.c). Path apps are for their workspace's owner only, as in
 * Coder without --dangerous-allow-path-app-sharing. */
#include "apps.h"
#include "appproxy/cookies.h"
#include "appproxy/relay.h"
#include "base/crypto.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "jose/jwt.h"
#include "base/uuid.h"
#include "http/url.h"
#include "tunnel/conn.h"
#include "tunnel/table.h"
#include "tunnel/tunnel.h"
#include "worker.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMUGGLE_LEEWAY_S 30

static const char *
own_host(const struct primary *p)
{
    const char *h = strstr(p->cfg.access_url, "://");
    return h ? h + 3 : p->cfg.access_url;
}

bool
apps_stream_match(struct http_exchange *ex, void *arg)
{
    struct primary *p = arg;
    return app_request_match(ex, p->app_pattern, own_host(p));
}

/* ---- who may use which app (store thread) ---- */

/* Access granted is use: last_used_at moves, at most once a minute per workspace (proxies
 * also report their traffic with app stats). */
static void
mark_used(struct api_ctx *c, const struct store_workspace *w)
{
    int64_t now = time_now_ms();
    if (now - w->last_used_at >= 60000)
        store_workspace_touch(c->st, w->id, now);
}

/* The agent itself (terminal, port forwarding): its workspace owner's, named by the agent's id. */
static int
authorize_agent(struct api_ctx *c, bool signed_in, const char *agent_id, struct app_grant *g)
{
    if (!signed_in)
        return 401;
    if (!agent_id || !uuid_valid(agent_id))
        return 404;
    char id[37];
    snprintf(id, sizeof(id), "%s", agent_id);
    struct store_agent a = {0};
    struct store_workspace w = {0};
    int rc = store_agent_by_id(c->st, str_lower(id), &a);
    if (rc == 0)
        rc = store_workspace_by_id(c->st, a.workspace_id, &w);
    int status = rc < 0 && rc != STORE_ENOTFOUND                          ? 500
                 : rc < 0 || w.deleted || !str_eq(w.owner_id, c->user.id) ? 404
                                                                          : 0;
    if (status == 0) {
        snprintf(g->agent_id, sizeof(g->agent_id), "%s", a.id);
        snprintf(g->workspace_id, sizeof(g->workspace_id), "%s", w.id);
        g->app_url = xstrdup("");
        mark_used(c, &w);
    }
    store_workspace_fini(&w);
    store_agent_fini(&a);
    return status;
}

int
apps_authorize(struct api_ctx *c, bool signed_in, enum app_access access, const char *user,
               const char *workspace, const char *agent, const char *slug, struct app_grant *g)
{
    memset(g, 0, sizeof(*g));
    if (access == APP_ACCESS_TERMINAL)
        return authorize_agent(c, signed_in, agent, g);
    struct store_user owner = {0};
    struct store_workspace w = {0};
    struct store_agent *agents = NULL;
    struct store_app *apps = NULL;
    size_t nagents = 0, napps = 0;
    const char *share = "owner";
    int rc = api_user_by_name_or_id(c->st, user, &owner);
    if (rc == 0)
        rc = store_workspace_by_owner_name(c->st, owner.id, workspace, &w);
    if (rc == 0)
        rc = store_agent_list(c->st, w.id, &agents, &nagents);
    struct store_agent *ag = NULL;
    for (size_t i = 0; rc == 0 && i < nagents; i++) {
        if (agent && *agent ? (str_eq_ci(agents[i].name, agent) || str_eq(agents[i].id, agent))
                            : nagents == 1)
            ag = &agents[i];
    }
    if (rc == 0 && ag) {
        char *end;
        long port = strtol(slug, &end, 10);
        bool https = *end == 's' && end[1] == '\0';
        if (access == APP_ACCESS_SUBDOMAIN && end != slug && (*end == '\0' || https) && port >= 9 &&
            port <= 65535) {
            /* A port in the workspace: its owner's (no port sharing here). */
            g->app_url = xasprintf("%s://127.0.0.1:%ld", https ? "https" : "http", port);
        } else if (store_app_list(c->st, ag->id, &apps, &napps) == 0) {
            for (size_t i = 0; i < napps; i++) {
                if (!str_eq(apps[i].slug, slug))
                    continue;
                g->app_url = xstrdup(apps[i].url);
                /* Path apps are the owner's alone, whatever the app says. */
                if (access == APP_ACCESS_SUBDOMAIN && apps[i].subdomain)
                    share = apps[i].sharing_level;
            }
        }
    }
    /* May this user use it? The answer never tells a stranger what exists. */
    bool allowed =
        g->app_url && (str_eq(share, "public") || (signed_in && (str_eq(share, "authenticated") ||
                                                                 str_eq(owner.id, c->user.id))));
    int status = 0;
    if (rc < 0 && rc != STORE_ENOTFOUND)
        status = 500;
    else if (!allowed)
        status = signed_in ? 404 : 401;
    if (status == 0) {
        snprintf(g->agent_id, sizeof(g->agent_id), "%s", ag->id);
        snprintf(g->workspace_id, sizeof(g->workspace_id), "%s", w.id);
        mark_used(c, &w);
    } else {
        app_grant_fini(g);
    }
    store_apps_free(apps, napps);
    store_agents_free(agents, nagents);
    store_workspace_fini(&w);
    store_user_fini(&owner);
    return status;
}

void
app_grant_fini(struct app_grant *g)
{
    free(g->app_url);
    g->app_url = NULL;
}

/* ---- serving an app request ---- */

struct app_req {
    struct api_ctx c; /* auth on the store thread, as the API does */
    struct app_request r;
    struct app_grant g;
    char *smuggled; /* an API key handed over by auth-redirect, for the session cookie */
};

static void
app_req_free(struct app_req *a)
{
    store_user_fini(&a->c.user);
    store_apikey_fini(&a->c.key);
    app_request_fini(&a->r);
    app_grant_fini(&a->g);
    if (a->smuggled)
        OPENSSL_cleanse(a->smuggled, strlen(a->smuggled));
    free(a->smuggled);
    free(a);
}

/* jose_key_fn over the store: a workspace_apps_api_key key by sequence. */
static int
api_key_key(const char *kid, uint8_t *key, size_t *len, void *arg)
{
    struct api_ctx *c = arg;
    struct store_crypto_key *v = NULL;
    size_t n = 0;
    int rc = -1;
    if (store_crypto_key_list(c->st, "workspace_apps_api_key", time_now_ms(), &v, &n) < 0)
        return -1;
    for (size_t i = 0; i < n && rc < 0; i++) {
        char seq[24];
        snprintf(seq, sizeof(seq), "%lld", (long long)v[i].sequence);
        long got =
            str_eq(seq, kid) ? hex_decode(v[i].secret, strlen(v[i].secret), key, JOSE_MAX_KEY) : -1;
        if (got > 0) {
            *len = (size_t)got;
            rc = 0;
        }
    }
    store_crypto_keys_free(v, n);
    return rc;
}

/* The API key auth-redirect put in the query (CODER-COMPAT §5.3 step 1), decrypted into
 * a->smuggled; 0, or -1 after answering. */
static int
take_smuggled_key(struct app_req *a, const char *jwe)
{
    struct api_ctx *c = &a->c;
    if (a->r.access == APP_ACCESS_PATH) {
        /* The primary's own host has its session cookie already. */
        api_reply_error(c, 400, "API keys cannot be handed to path apps on the primary.",
                        "Remove the " APP_KEY_PARAM " query parameter.");
        return -1;
    }
    const char *err = NULL;
    json_t *claims = jose_decrypt_a256gcmkw(jwe, api_key_key, c, NULL, 0, &err);
    const char *key = json_string_value(json_object_get(claims, "api_key"));
    if (!claims || !key ||
        jose_check_time(claims, time_now_ms() / 1000, SMUGGLE_LEEWAY_S, &err) < 0) {
        api_reply_error(c, 400,
                        "Could not decrypt API key. Please remove the query parameter and try "
                        "again.",
                        err ? err : "the payload has no api_key");
        json_decref(claims);
        return -1;
    }
    a->smuggled = xstrdup(key);
    OPENSSL_cleanse((char *)key, strlen(key)); /* jansson's copy of the secret */
    json_decref(claims);
    return 0;
}

void
apps_reply_auth_redirect(struct api_ctx *c, const char *app_url)
{
    char *q = url_escape_query(app_url);
    char *loc =
        xasprintf("%s/api/v2/applications/auth-redirect?redirect_uri=%s", c->p->cfg.access_url, q);
    api_reply_error(c, 303, "Sign in to the deployment to use this application.", NULL);
    http_exchange_header_set(c->ex, "Location", loc);
    free(loc);
    free(q);
}

static void
resolve_run(struct store *st, void *arg)
{
    struct app_req *a = arg;
    struct api_ctx *c = &a->c;
    c->st = st;
    c->ex->status = 0;
    char *jwe = http_request_query_param(&c->ex->req, APP_KEY_PARAM);
    if (jwe) {
        take_smuggled_key(a, jwe);
        free(jwe);
        return;
    }
    /* Who asks: path apps always need a session; subdomain apps may be public. */
    struct api_auth_failure why = {0};
    bool signed_in =
        api_auth_check(c, app_session_token(&c->ex->req, &a->r, c->p->app_pattern), &why) == 0;
    if (!signed_in && a->r.access == APP_ACCESS_PATH) {
        api_reply_auth_failure(c, &why);
        return;
    }
    int status = apps_authorize(c, signed_in, a->r.access, a->r.user, a->r.workspace, a->r.agent,
                                a->r.slug, &a->g);
    if (status == 500)
        api_reply_error(c, 500, "Internal error resolving the application.", NULL);
    else if (status == 401) {
        /* A subdomain app's URL here: the request's host on the access URL's scheme. */
        const char *access = c->p->cfg.access_url;
        char *back = xasprintf("%.*s://%s%s", (int)strcspn(access, ":"), access, a->r.host,
                               c->ex->req.target);
        apps_reply_auth_redirect(c, back);
        free(back);
    } else if (status == 404)
        api_reply_error(c, 404, "Resource not found or you do not have access to this resource",
                        NULL);
    api_auth_failure_fini(&why);
}

static void
resolve_done(void *arg)
{
    struct app_req *a = arg;
    struct http_exchange *ex = a->c.ex;
    struct primary *p = a->c.p;
    if (a->smuggled) {
        bool secure =
            ex->req.tls || p->cfg.secure_auth_cookie || str_has_prefix(p->cfg.access_url, "https:");
        app_reply_session_cookie(ex, &a->r, p->app_pattern, a->smuggled, secure);
        app_req_free(a);
        return;
    }
    if (ex->status != 0) {
        http_exchange_finish(ex, ex->status);
        app_req_free(a);
        return;
    }
    struct url u;
    struct tunnel_conn *tc = p->tunnels ? agent_tunnels_get(p->tunnels, a->g.agent_id) : NULL;
    if (url_parse(a->g.app_url, &u) < 0) {
        app_fail_page(ex, 502, "Failed to proxy request to application.",
                      "The application's URL is not valid.");
    } else if (!tc) {
        app_fail_page(ex, 502, "Agent is not connected.",
                      "The workspace agent has no tunnel to this region; check that it is "
                      "running.");
        url_free(&u);
    } else {
        char *target = url_host_port(&u);
        char *rest = app_join_path(u.path, a->r.rest);
        app_relay(ex, tunnel_conn_session(tc), NULL, target, rest,
                  str_eq(u.scheme, "https") ? p->app_tls : NULL);
        free(rest);
        free(target);
        url_free(&u);
    }
    app_req_free(a);
}

void
apps_handle(struct http_exchange *ex, struct primary *p)
{
    struct app_req *a = xcalloc(1, sizeof(*a));
    a->c.p = p;
    a->c.ex = ex;
    if (app_request_parse(ex, p->app_pattern, own_host(p), &a->r) < 0) {
        app_req_free(a);
        return;
    }
    worker_submit(p->worker, resolve_run, resolve_done, a);
}

/* ---- port forwarding ---- */

void
apps_port_forward(struct primary *p, struct http_exchange *ex, const char *agent_id, int port)
{
    struct tunnel_conn *tc = p->tunnels ? agent_tunnels_get(p->tunnels, agent_id) : NULL;
    if (!tc) {
        http_reply_error(ex, 502, "Agent is not connected.",
                         "The workspace agent has no tunnel to this region.");
        return;
    }
    app_port_forward(ex, tunnel_conn_session(tc), NULL, port);
}
