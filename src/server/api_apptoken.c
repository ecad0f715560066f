/* POST /api/v2/workspaceproxies/me/issue-signed-app-token (CODER-COMPAT §2.3): a proxy asks
 * whether the user behind session_token may use an app, and gets a signed app token (JWS HS512,
 * kid = the workspace_apps_token key's sequence, one minute) it then checks locally for the
 * rest of the session. The rule is the primary's own (apps_authorize). A signed-out user of an
 * app that is not public is sent, as in Coder, to auth-redirect with the app's URL: the proxy
 * passes the 303 on, and the browser comes back with an encrypted key (§5.3). */
#include "apps.h"
#include "appproxy/cookies.h"
#include "store/store.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "base/uuid.h"
#include "http/url.h"
#include "jose/jwt.h"
#include "primary.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APP_TOKEN_TTL_S 60
#define NIL_UUID "00000000-0000-0000-0000-000000000000"

/* The app's URL at the proxy, rebuilt as Coder's IssueTokenRequest.AppBaseURL does: the path
 * app base URL and base path, or the proxy's wildcard with the app's name for '*'; then the
 * app path and query. NULL when the proxy sent nothing usable. */
static char *
app_url_at_proxy(json_t *j, json_t *req, enum app_access access)
{
    bool bad = false;
    const char *base = api_str_field(j, "path_app_base_url", &bad);
    const char *wildcard = api_str_field(j, "app_hostname", &bad);
    const char *path = api_str_field(j, "app_path", &bad);
    const char *query = api_str_field(j, "app_query", &bad);
    const char *base_path = api_str_field(req, "base_path", &bad);
    struct url u;
    if (bad || !base || url_parse(base, &u) < 0)
        return NULL;
    char *host = NULL;
    if (access == APP_ACCESS_PATH) {
        host = url_authority(&u);
    } else if (wildcard && wildcard[0] == '*') {
        struct apphost_app app = {0};
        const struct {
            const char *field;
            char *dest; /* APPHOST_MAX_HOSTNAME + 1 bytes */
        } fields[] = {{"app_prefix", app.prefix},
                      {"app_slug_or_port", app.app_slug_or_port},
                      {"agent_name_or_id", app.agent},
                      {"workspace_name_or_id", app.workspace},
                      {"username_or_id", app.username}};
        for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
            const char *v = api_str_field(req, fields[i].field, &bad);
            snprintf(fields[i].dest, APPHOST_MAX_HOSTNAME + 1, "%s", v ? v : "");
        }
        char *sub = apphost_format(&app);
        bool has_port = strchr(wildcard, ':') != NULL;
        host = u.port && !has_port ? xasprintf("%s%s:%d", sub, wildcard + 1, u.port)
                                   : xasprintf("%s%s", sub, wildcard + 1);
        free(sub);
    }
    char *out = NULL;
    if (host) {
        /* base_path ends in '/', app_path starts with one. */
        size_t bl = base_path && access == APP_ACCESS_PATH ? strlen(base_path) : 0;
        while (bl && base_path[bl - 1] == '/')
            bl--;
        const char *p = path && *path ? path : "/";
        out = xasprintf("%s://%s%.*s%s%s%s%s", u.scheme, host, (int)bl, bl ? base_path : "",
                        *p == '/' ? "" : "/", p, query && *query ? "?" : "", query ? query : "");
    }
    free(host);
    url_free(&u);
    return out;
}

void
api_proxies_issue_app_token(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (!j)
        return;
    json_t *req = json_object_get(j, "app_request");
    bool bad = !json_is_object(req);
    const char *method = bad ? NULL : api_str_field(req, "access_method", &bad);
    const char *user = bad ? NULL : api_str_field(req, "username_or_id", &bad);
    const char *ws = bad ? NULL : api_str_field(req, "workspace_name_or_id", &bad);
    const char *agent = bad ? NULL : api_str_field(req, "agent_name_or_id", &bad);
    const char *slug = bad ? NULL : api_str_field(req, "app_slug_or_port", &bad);
    const char *session = api_str_field(j, "session_token", &bad);
    struct app_grant g = {0};
    bool terminal = method && str_eq(method, "terminal");
    if (bad || !method ||
        (terminal ? !agent
                  : (!str_eq(method, "path") && !str_eq(method, "subdomain")) || !user || !ws ||
                        !slug)) {
        api_reply_error(c, 400, "Invalid app request.",
                        "app_request needs access_method path or subdomain with username_or_id, "
                        "workspace_name_or_id and app_slug_or_port, or terminal with "
                        "agent_name_or_id.");
        json_decref(j);
        return;
    }
    enum app_access access = terminal                 ? APP_ACCESS_TERMINAL
                             : str_eq(method, "path") ? APP_ACCESS_PATH
                                                      : APP_ACCESS_SUBDOMAIN;
    /* The user, if the session is good; a signed-out caller may still reach a public app. */
    struct api_auth_failure why = {0};
    bool signed_in = session && *session && api_auth_check(c, xstrdup(session), &why) == 0;
    api_auth_failure_fini(&why);
    int status = apps_authorize(c, signed_in, access, user ? user : "", ws ? ws : "",
                                agent ? agent : "", slug ? slug : "", &g);
    if (status == 0 && terminal && !str_eq(c->key.scope, "all")) {
        /* A key handed over for apps opens apps, not the agent itself (port forwarding). */
        app_grant_fini(&g);
        status = 403;
        api_reply_error(c, 403, "Forbidden.",
                        "This API key is scoped to connecting to workspace applications.");
    }
    if (status == 401) {
        /* No redirect makes sense for a terminal or a port (a CLI or a WebSocket asks). */
        char *back = terminal ? NULL : app_url_at_proxy(j, req, access);
        if (back)
            apps_reply_auth_redirect(c, back);
        else
            api_reply_error(c, 401,
                            "You are signed out or your session has expired. Please sign in "
                            "again to continue.",
                            "Sign in to the deployment to use this application.");
        free(back);
    } else if (status == 404) {
        api_reply_error(c, 404, "Resource not found or you do not have access to this resource",
                        NULL);
    } else if (status == 500) {
        api_reply_error(c, 500, "Internal error resolving the application.", NULL);
    }
    uint8_t key[64];
    size_t keylen = 0;
    int64_t seq = 0;
    if (status == 0 && api_feature_key(c, "workspace_apps_token", key, &keylen, &seq) < 0) {
        api_reply_error(c, 500, "Internal error signing the app token.", NULL);
        status = 500;
    }
    if (status == 0) {
        char kid[24];
        snprintf(kid, sizeof(kid), "%lld", (long long)seq);
        int64_t now_s = time_now_ms() / 1000;
        json_t *claims = json_pack("{s:O, s:s, s:s, s:s, s:s, s:I}", "request", req, "user_id",
                                   signed_in ? c->user.id : NIL_UUID, "workspace_id",
                                   g.workspace_id, "agent_id", g.agent_id, "app_url", g.app_url,
                                   "exp", (json_int_t)(now_s + APP_TOKEN_TTL_S));
        char *token = jose_sign_hs512(key, keylen, kid, claims);
        OPENSSL_cleanse(key, sizeof(key));
        json_decref(claims);
        if (token)
            api_reply_json(c, 201, json_pack("{s:s}", "signed_token_str", token));
        else
            api_reply_error(c, 500, "Internal error signing the app token.", NULL);
        free(token);
    }
    app_grant_fini(&g);
    if (session)
        OPENSSL_cleanse((char *)session, strlen(session));
    json_decref(j);
    OPENSSL_cleanse(c->ex->req.body.data, c->ex->req.body.len); /* it held the session */
}

/* ---- GET /api/v2/applications/auth-redirect?redirect_uri=U (CODER-COMPAT §2.4) ---- */

#define SMUGGLED_KEY_TTL_S 60

/* The scheme a redirect to host must use: the primary's for its own wildcard, the proxy's for a
 * proxy's access URL (hostport: with the effective port) or wildcard. NULL when host is none. */
static char *
redirect_scheme(struct api_ctx *c, const char *host, const char *hostport)
{
    if (c->p->app_pattern && apphost_pattern_match(c->p->app_pattern, host, NULL)) {
        const char *s = c->p->cfg.access_url;
        return xstrndup(s, strcspn(s, ":"));
    }
    struct store_proxy *px = NULL;
    size_t n = 0;
    char *scheme = NULL;
    if (store_proxy_list(c->st, false, &px, &n) < 0)
        return NULL;
    for (size_t i = 0; i < n && !scheme; i++) {
        struct url pu;
        if (!px[i].url[0] || url_parse(px[i].url, &pu) < 0)
            continue;
        /* The access URL's host and port exactly (stricter than Coder, which ignores the
         * port: on one host, another port is another server). */
        char *ph = url_host_port(&pu);
        bool match = str_eq_ci(ph, hostport);
        free(ph);
        if (!match && px[i].wildcard_hostname[0]) {
            struct apphost_pattern pat;
            if (apphost_pattern_compile(px[i].wildcard_hostname, &pat, NULL) == 0) {
                match = apphost_pattern_match(&pat, host, NULL);
                apphost_pattern_free(&pat);
            }
        }
        if (match)
            scheme = xstrdup(pu.scheme);
        url_free(&pu);
    }
    store_proxies_free(px, n);
    return scheme;
}

void
api_apps_auth_redirect(struct api_ctx *c)
{
    char *uri = http_request_query_param(&c->ex->req, "redirect_uri");
    struct url u;
    bool parsed = uri && *uri && url_parse(uri, &u) == 0;
    free(uri);
    if (!parsed) {
        api_reply_error(c, 400, "Invalid redirect_uri.", "redirect_uri must be an absolute URL.");
        return;
    }
    char *hostport = url_authority(&u), *effective = url_host_port(&u);
    char *scheme = u.host[0] && !u.has_userinfo ? redirect_scheme(c, hostport, effective) : NULL;
    char *token = NULL, *jwe = NULL;
    if (!scheme) {
        api_reply_error(c, 400, "Invalid redirect_uri.",
                        "The redirect_uri must be on a workspace app or workspace proxy host.");
        goto out;
    }
    /* A key for apps only, expiring with the session it comes from (at most the default
     * session duration from now); it is never extended by use (api_auth_check). */
    int64_t lifetime = c->key.expires_at - time_now_ms();
    if (lifetime > c->p->cfg.session_duration_ms)
        lifetime = c->p->cfg.session_duration_ms;
    if (lifetime < 1000)
        lifetime = 1000;
    token = api_apikey_mint(c, c->user.id, c->key.login_type, lifetime, "", "application_connect");
    if (!token)
        goto out;
    uint8_t key[64];
    size_t keylen = 0;
    int64_t seq = 0;
    if (api_feature_key(c, "workspace_apps_api_key", key, &keylen, &seq) < 0 || keylen != 32) {
        api_reply_error(c, 500, "Internal error encrypting the API key.", NULL);
        goto out;
    }
    char kid[24];
    snprintf(kid, sizeof(kid), "%lld", (long long)seq);
    json_t *claims = json_pack("{s:s, s:I}", "api_key", token, "exp",
                               (json_int_t)(time_now_ms() / 1000 + SMUGGLED_KEY_TTL_S));
    jwe = jose_encrypt_a256gcmkw(key, kid, claims);
    OPENSSL_cleanse(key, sizeof(key));
    json_decref(claims);
    if (!jwe) {
        api_reply_error(c, 500, "Internal error encrypting the API key.", NULL);
        goto out;
    }
    /* Rebuilt from its parts: the host is one checked above, whatever the path looks like. */
    char *q = url_escape_query(jwe);
    char *loc = xasprintf("%s://%s%s%s?%s%s%s=%s", scheme, hostport, *u.path == '/' ? "" : "/",
                          u.path, u.query, *u.query ? "&" : "", APP_KEY_PARAM, q);
    free(q);
    api_reply_error(c, 303, "See Other.", NULL);
    http_exchange_header_set(c->ex, "Location", loc);
    http_exchange_header_set(c->ex, "Cache-Control", "no-store");
    free(loc);
out:
    free(jwe);
    if (token)
        OPENSSL_cleanse(token, strlen(token));
    free(token);
    free(scheme);
    free(hostport);
    free(effective);
    url_free(&u);
}

/* ---- POST /api/v2/workspaceproxies/me/app-stats (CODER-COMPAT §2.8) ---- */

#define APP_STATS_MAX 1000

void
api_proxies_app_stats(struct api_ctx *c)
{
    json_t *j = api_read_json(c);
    if (!j)
        return;
    json_t *arr = json_object_get(j, "stats");
    size_t n = json_array_size(arr);
    if (!json_is_array(arr) || n > APP_STATS_MAX) {
        api_reply_error(c, 400, "Invalid app stats.",
                        "stats must be an array of at most 1000 reports.");
        json_decref(j);
        return;
    }
    struct store_app_stat *v = xcalloc(n + 1, sizeof(*v));
    char *why = NULL;
    for (size_t i = 0; i < n && !why; i++) {
        json_t *e = json_array_get(arr, i);
        bool bad = !json_is_object(e);
        struct store_app_stat *s = &v[i];
        s->user_id = bad ? NULL : api_str_field(e, "user_id", &bad);
        s->workspace_id = bad ? NULL : api_str_field(e, "workspace_id", &bad);
        s->agent_id = bad ? NULL : api_str_field(e, "agent_id", &bad);
        s->access_method = bad ? NULL : api_str_field(e, "access_method", &bad);
        s->slug_or_port = bad ? NULL : api_str_field(e, "slug_or_port", &bad);
        s->session_id = bad ? NULL : api_str_field(e, "session_id", &bad);
        const char *start = bad ? NULL : api_str_field(e, "session_started_at", &bad);
        const char *end = bad ? NULL : api_str_field(e, "session_ended_at", &bad);
        json_t *req = json_object_get(e, "requests");
        s->requests = json_integer_value(req);
        const char *const ids[] = {s->user_id, s->workspace_id, s->agent_id, s->session_id};
        for (size_t k = 0; k < ARRAY_LEN(ids) && !bad; k++)
            bad = !ids[k] || !uuid_valid(ids[k]);
        bad = bad || !s->access_method ||
              (!str_eq(s->access_method, "path") && !str_eq(s->access_method, "subdomain") &&
               !str_eq(s->access_method, "terminal")) ||
              !s->slug_or_port || strlen(s->slug_or_port) > 64 || !json_is_integer(req) ||
              s->requests < 0 || s->requests > 1000000000 || !start ||
              time_parse_rfc3339(start, &s->started_at) < 0 || !end ||
              time_parse_rfc3339(end, &s->ended_at) < 0 || s->ended_at < s->started_at;
        if (bad)
            why = xasprintf("stats[%zu] needs user_id, workspace_id, agent_id and session_id "
                            "(UUIDs), access_method path, subdomain or terminal, slug_or_port, "
                            "session_started_at <= session_ended_at (RFC 3339) and requests.",
                            i);
    }
    if (why)
        api_reply_error(c, 400, "Invalid app stats.", why);
    else if (store_app_stats_report(c->st, v, n) < 0)
        api_reply_error(c, 500, "Internal error saving app stats.", NULL);
    else
        c->ex->status = 204;
    free(why);
    free(v);
    json_decref(j);
}
