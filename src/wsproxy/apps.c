/* Workspace apps at a proxy (CODER-COMPAT §5.3-§5.4). A proxy has no database, so it decides
 * with signed app tokens:
 *
 *   1. an API key handed over by auth-redirect (query parameter) becomes the app session
 *      cookie, then 303 to the clean URL;
 *   2. a coder_signed_app_token cookie that verifies with the primary's workspace_apps_token
 *      keys and matches this request lets it through without asking anyone;
 *   3. otherwise the proxy asks the primary (issue-signed-app-token) with the user's session,
 *      passes any answer but 201 on as it is (a 303 to auth-redirect, a 404), and keeps the
 *      token in a cookie for the next minute's requests.
 *
 * The request then goes to the app over the agent's tunnel to this proxy, or, when the agent
 * holds none here, over the relay link to the primary (docs/TUNNEL.md §1), so a request never
 * fails only because the agent cannot reach this proxy. */
#include "apphost/apphost.h"
#include "appproxy/cookies.h"
#include "appproxy/relay.h"
#include "appproxy/request.h"
#include "base/crypto.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "base/uuid.h"
#include "http/url.h"
#include "jose/jwt.h"
#include "net/tls.h"
#include "tunnel/conn.h"
#include "tunnel/table.h"
#include "wsproxy.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMUGGLE_LEEWAY_S 30
#define ISSUE_TIMEOUT_MS 10000
/* Port-forward grants remembered (a CLI sends no cookies): hash of session and agent. */
#define PF_GRANTS 64
#define APP_TOKEN_CACHE_SLOTS 256 /* users x apps active at once; a miss only costs a verify */

/* One app request on its way. */
struct papp {
    struct wsproxy *w;
    struct http_exchange *ex;
    struct app_request r;
    char agent_id[37];
    char user_id[37], workspace_id[37]; /* from the token, for app stats */
    char *target;                       /* "host:port" of the app, from the token */
    bool https;                         /* the app speaks HTTPS */
    char *app_path;                     /* the app URL's path, joined before the request's */
    int pf_port;                        /* a port-forward request: the workspace port */
    uint8_t grant[32]; /* port forwarding: SHA-256 of the session and the agent id */
    struct papp *next; /* waiting for the relay link */
};

struct pf_grant {
    uint8_t key[32];
    int64_t exp_ms;
};

/* The relay link to the primary, dialled on first need and kept. */
struct relay_link {
    struct wsproxy *w;
    struct tunnel_conn *tc; /* NULL when there is none */
    bool ready;
    bool closing;      /* the proxy stops: free once the tunnel is gone */
    struct papp *wait; /* requests waiting for it to be ready */
    struct pf_grant grants[PF_GRANTS];
};

static void
papp_free(struct papp *a)
{
    app_request_fini(&a->r);
    free(a->target);
    free(a->app_path);
    free(a);
}

static struct papp *
papp_new(struct wsproxy *w, struct http_exchange *ex)
{
    struct papp *a = xcalloc(1, sizeof(*a));
    a->w = w;
    a->ex = ex;
    return a;
}

/* Cookies are Secure over TLS, behind an https access URL, or when --secure-auth-cookie says so
 * (a TLS-terminating load balancer in front of a plain listener), as at the primary. */
static bool
secure(const struct papp *a)
{
    return a->ex->req.tls || a->w->o->net.secure_auth_cookie ||
           str_has_prefix(a->w->access_url, "https:");
}

bool
wsproxy_apps_match(struct http_exchange *ex, void *arg)
{
    struct wsproxy *w = arg;
    return app_request_match(ex, w->app_pattern, w->own_host);
}

/* ---- the relay link ---- */

static void relay_now(struct papp *a, struct tunnel *t, const char *via);

static void
link_fail_waiting(struct relay_link *l, const char *why)
{
    struct papp *a = l->wait;
    l->wait = NULL;
    while (a) {
        struct papp *next = a->next;
        app_fail_page(a->ex, 502, "Agent is not connected.", why);
        papp_free(a);
        a = next;
    }
}

static void
link_ready(struct tunnel_conn *tc, void *arg)
{
    struct relay_link *l = arg;
    l->ready = true;
    log_info("wsproxy: relay link to the primary up");
    struct papp *a = l->wait;
    l->wait = NULL;
    while (a) {
        struct papp *next = a->next;
        relay_now(a, tunnel_conn_session(tc), a->agent_id);
        a = next;
    }
}

static void
link_closed(struct tunnel_conn *tc, const char *why, void *arg)
{
    (void)tc;
    struct relay_link *l = arg;
    if (l->ready)
        log_info("wsproxy: relay link to the primary closed%s%s", why ? ": " : "", why ? why : "");
    else
        log_warn("wsproxy: relay link to the primary: %s", why ? why : "closed");
    l->tc = NULL;
    l->ready = false;
    link_fail_waiting(l, "This proxy holds no tunnel to the workspace agent, and the primary "
                         "could not be reached to relay the request.");
    if (l->closing)
        free(l);
}

static const struct tunnel_conn_cbs link_cbs = {NULL, link_ready, link_closed};

static void
via_link(struct papp *a)
{
    struct wsproxy *w = a->w;
    struct relay_link *l = w->link;
    if (l->tc && l->ready) {
        relay_now(a, tunnel_conn_session(l->tc), a->agent_id);
        return;
    }
    a->next = l->wait;
    l->wait = a;
    if (l->tc)
        return; /* dialling */
    char *tok = xasprintf("Coder-External-Proxy-Token: %s", w->o->proxy_session_token);
    const char *const headers[] = {tok, "User-Agent: coder-wsproxy/" CODER_VERSION, NULL};
    bool https = str_has_prefix(w->primary_url, "https:");
    l->tc = tunnel_dial(w->loop, w->primary_url, "/api/v2/workspaceproxies/me/relay", TUNNEL_CLIENT,
                        headers, https ? w->tls : NULL, &link_cbs, l);
    OPENSSL_cleanse(tok, strlen(tok));
    free(tok);
}

/* ---- relaying ---- */

static void
relay_now(struct papp *a, struct tunnel *t, const char *via)
{
    if (a->pf_port)
        app_port_forward(a->ex, t, via, a->pf_port);
    else {
        char *rest = app_join_path(a->app_path ? a->app_path : "", a->r.rest);
        app_relay(a->ex, t, via, a->target, rest, a->https ? a->w->app_tls : NULL);
        free(rest);
    }
    papp_free(a);
}

/* The token allowed the request: to the app, by this proxy's tunnel or through the primary. */
static void
route(struct papp *a)
{
    struct wsproxy *w = a->w;
    if (w->stopping) {
        http_reply_error(a->ex, 503, "The proxy is shutting down.", NULL);
        papp_free(a);
        return;
    }
    if (!a->pf_port)
        wsproxy_stats_record(w, a->user_id, a->workspace_id, a->agent_id,
                             a->r.access == APP_ACCESS_PATH ? "path" : "subdomain", a->r.slug);
    struct tunnel_conn *tc = w->tunnels ? agent_tunnels_get(w->tunnels, a->agent_id) : NULL;
    if (tc)
        relay_now(a, tunnel_conn_session(tc), NULL);
    else
        via_link(a);
}

/* ---- signed app tokens ---- */

/* Checks a token's signature, expiry and that it was issued for this very request; fills
 * a->agent_id and a->target. 1 when good, 0 when not, -1 when signed with a key this proxy
 * does not have yet. */
static int
token_check(struct papp *a, const char *token)
{
    const char *err = NULL;
    json_t *c = jose_cache_verify_hs512(a->w->app_tokens, token, wsproxy_keys_lookup,
                                        wsproxy_keys(a->w, WSPROXY_KEYS_APPS_TOKEN), &err);
    if (!c)
        return err && strcmp(err, "unknown signing key") == 0 ? -1 : 0;
    json_t *req = json_object_get(c, "request");
    if (a->r.access == APP_ACCESS_TERMINAL) {
        /* The agent itself: the token must be for it. */
        const char *m = json_string_value(json_object_get(req, "access_method"));
        const char *agent = json_string_value(json_object_get(c, "agent_id"));
        bool ok = jose_check_time(c, time_now_ms() / 1000, 0, &err) == 0 && m &&
                  str_eq(m, "terminal") && agent && str_eq_ci(agent, a->r.agent);
        if (ok)
            snprintf(a->agent_id, sizeof(a->agent_id), "%s", agent);
        json_decref(c);
        return ok ? 1 : 0;
    }
    const char *method = a->r.access == APP_ACCESS_PATH ? "path" : "subdomain";
    const struct {
        const char *field, *want;
    } match[] = {{"access_method", method},        {"base_path", a->r.base_path},
                 {"username_or_id", a->r.user},    {"workspace_name_or_id", a->r.workspace},
                 {"agent_name_or_id", a->r.agent}, {"app_slug_or_port", a->r.slug}};
    bool ok = jose_check_time(c, time_now_ms() / 1000, 0, &err) == 0;
    for (size_t i = 0; ok && i < ARRAY_LEN(match); i++) {
        const char *v = json_string_value(json_object_get(req, match[i].field));
        ok = str_eq(v ? v : "", match[i].want);
    }
    const char *agent = json_string_value(json_object_get(c, "agent_id"));
    const char *app_url = json_string_value(json_object_get(c, "app_url"));
    struct url u;
    ok = ok && agent && strlen(agent) == 36 && app_url && url_parse(app_url, &u) == 0;
    const char *user = json_string_value(json_object_get(c, "user_id"));
    const char *ws = json_string_value(json_object_get(c, "workspace_id"));
    if (ok) {
        if (str_eq(u.scheme, "http") || str_eq(u.scheme, "https")) {
            a->https = str_eq(u.scheme, "https");
            snprintf(a->agent_id, sizeof(a->agent_id), "%s", agent);
            snprintf(a->user_id, sizeof(a->user_id), "%s", user ? user : "");
            snprintf(a->workspace_id, sizeof(a->workspace_id), "%s", ws ? ws : "");
            free(a->target);
            a->target = url_host_port(&u);
            free(a->app_path);
            a->app_path = xstrdup(u.path);
        } else {
            ok = false; /* not an app URL we can reach */
        }
        url_free(&u);
    }
    json_decref(c);
    return ok ? 1 : 0;
}

static void ask_primary(struct papp *a);

/* The coder_signed_app_token cookies the browser sent (step 2). retry: an unknown key may
 * trigger one fetch. */
static void try_cookies(struct papp *a, bool retry);

static void
cookies_after_fetch(struct wsproxy *w, void *arg)
{
    (void)w;
    try_cookies(arg, false);
}

static void
try_cookies(struct papp *a, bool retry)
{
    char *v[APP_TOKEN_COOKIES_MAX];
    size_t n = http_request_cookies(&a->ex->req, APP_TOKEN_COOKIE, v, APP_TOKEN_COOKIES_MAX);
    int best = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = best == 1 ? 1 : token_check(a, v[i]);
        if (rc == 1 || (rc == -1 && best == 0))
            best = rc;
        free(v[i]);
    }
    if (best == 1) {
        route(a);
    } else if (best == -1 && retry) {
        wsproxy_keys_fetch(a->w, WSPROXY_KEYS_APPS_TOKEN, cookies_after_fetch, a);
    } else {
        ask_primary(a);
    }
}

/* ---- port-forward grants ---- */

static bool
has_grant(struct relay_link *l, const uint8_t key[32])
{
    int64_t now = time_mono_ms();
    for (size_t i = 0; i < PF_GRANTS; i++) {
        if (l->grants[i].exp_ms > now && CRYPTO_memcmp(l->grants[i].key, key, 32) == 0)
            return true;
    }
    return false;
}

/* Remembers a grant for the token's minute, in the slot that expires first. */
static void
remember_grant(struct relay_link *l, const uint8_t key[32])
{
    size_t slot = 0;
    for (size_t i = 1; i < PF_GRANTS; i++) {
        if (l->grants[i].exp_ms < l->grants[slot].exp_ms)
            slot = i;
    }
    memcpy(l->grants[slot].key, key, 32);
    l->grants[slot].exp_ms = time_mono_ms() + 60000;
}

/* ---- asking the primary (step 3) ---- */

struct issued {
    struct papp *a;
    char *token;
    int64_t exp;
};

static void issued_check(struct issued *is, bool retry);

static void
issued_after_fetch(struct wsproxy *w, void *arg)
{
    (void)w;
    issued_check(arg, false);
}

static void
issued_check(struct issued *is, bool retry)
{
    struct papp *a = is->a;
    int rc = token_check(a, is->token);
    if (rc == -1 && retry) {
        wsproxy_keys_fetch(a->w, WSPROXY_KEYS_APPS_TOKEN, issued_after_fetch, is);
        return;
    }
    if (rc == 1 && a->pf_port) {
        if (a->w->link) /* gone once the proxy stops; route() answers 503 then */
            remember_grant(a->w->link, a->grant);
        route(a);
    } else if (rc == 1) {
        app_set_token_cookie(a->ex, &a->r, is->token, is->exp, secure(a));
        route(a);
    } else {
        app_fail_page(a->ex, 500, "Internal error checking the app token.",
                      "The primary's token does not verify with its keys, or does not match "
                      "this request.");
        papp_free(a);
    }
    free(is->token);
    free(is);
}

/* A non-201 answer goes to the user as the primary gave it (CODER-COMPAT §2.3). */
static void
pass_on(struct http_exchange *ex, const struct http_client_resp *r)
{
    static const char *const keep[] = {"Content-Type", "Location", "Cache-Control"};
    for (size_t i = 0; i < ARRAY_LEN(keep); i++) {
        const char *v = http_client_resp_header(r, keep[i]);
        if (v)
            http_exchange_header_set(ex, keep[i], v);
    }
    buf_reset(&ex->rbody);
    buf_append(&ex->rbody, r->body.data ? r->body.data : "", r->body.len);
    http_exchange_finish(ex, (int)r->status);
}

static void
issue_done(struct http_client_resp *resp, void *arg)
{
    struct papp *a = arg;
    if (resp->status == 0) {
        app_fail_page(a->ex, 502, "Failed to reach the primary.",
                      resp->error ? resp->error : "The request failed.");
        papp_free(a);
        return;
    }
    if (resp->status != 201) {
        pass_on(a->ex, resp);
        papp_free(a);
        return;
    }
    json_t *j = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL);
    const char *token = json_string_value(json_object_get(j, "signed_token_str"));
    if (!token) {
        json_decref(j);
        app_fail_page(a->ex, 502, "Failed to reach the primary.",
                      "The primary's answer has no signed token.");
        papp_free(a);
        return;
    }
    struct issued *is = xcalloc(1, sizeof(*is));
    is->a = a;
    is->token = xstrdup(token);
    is->exp = time_now_ms() / 1000 + 60;
    json_decref(j);
    issued_check(is, true);
}

static void
ask_primary(struct papp *a)
{
    struct wsproxy *w = a->w;
    const char *rest = a->r.rest;
    const char *qm = strchr(rest, '?');
    char *path = xstrndup(rest, qm ? (size_t)(qm - rest) : strlen(rest));
    char *session = app_session_token(&a->ex->req, &a->r, w->app_pattern);
    static const char *const methods[] = {"path", "subdomain", "terminal"};
    json_t *req =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "access_method", methods[a->r.access],
                  "base_path", a->r.base_path, "app_prefix", a->r.prefix, "username_or_id",
                  a->r.user, "workspace_name_or_id", a->r.workspace, "agent_name_or_id", a->r.agent,
                  "app_slug_or_port", a->r.slug);
    json_t *body = json_pack(
        "{s:o, s:s, s:s, s:s, s:s, s:s}", "app_request", req, "path_app_base_url", w->access_url,
        "app_hostname", w->o->net.wildcard_access_url ? w->o->net.wildcard_access_url : "",
        "app_path", path, "app_query", qm ? qm + 1 : "", "session_token", session ? session : "");
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (session)
        OPENSSL_cleanse(session, strlen(session));
    free(session);
    free(path);
    char *url = xasprintf("%s/api/v2/workspaceproxies/me/issue-signed-app-token", w->primary_url);
    struct http_client_req hr;
    wsproxy_primary_req(w, &hr, "POST", url, s);
    hr.timeout_ms = ISSUE_TIMEOUT_MS;
    int rc = http_client_start(w->client, &hr, issue_done, a);
    OPENSSL_cleanse(s, strlen(s));
    free(s);
    free(url);
    if (rc < 0) {
        app_fail_page(a->ex, 502, "Failed to reach the primary.", "Could not start the request.");
        papp_free(a);
    }
}

/* ---- an API key handed over by auth-redirect (step 1) ---- */

static void take_key(struct papp *a, bool retry);

static void
key_after_fetch(struct wsproxy *w, void *arg)
{
    (void)w;
    take_key(arg, false);
}

static void
take_key(struct papp *a, bool retry)
{
    char *jwe = http_request_query_param(&a->ex->req, APP_KEY_PARAM);
    const char *err = NULL;
    json_t *c =
        jose_decrypt_a256gcmkw(jwe ? jwe : "", wsproxy_keys_lookup,
                               wsproxy_keys(a->w, WSPROXY_KEYS_APPS_API_KEY), NULL, 0, &err);
    free(jwe);
    if (!c && retry && err && strcmp(err, "unknown signing key") == 0) {
        wsproxy_keys_fetch(a->w, WSPROXY_KEYS_APPS_API_KEY, key_after_fetch, a);
        return;
    }
    const char *key = json_string_value(json_object_get(c, "api_key"));
    if (!c || !key || jose_check_time(c, time_now_ms() / 1000, SMUGGLE_LEEWAY_S, &err) < 0) {
        app_fail_page(a->ex, 400,
                      "Could not decrypt API key. Please remove the query parameter and try "
                      "again.",
                      err ? err : "The payload has no API key.");
    } else {
        app_reply_session_cookie(a->ex, &a->r, a->w->app_pattern, key, secure(a));
    }
    if (key)
        OPENSSL_cleanse((char *)key, strlen(key)); /* jansson's copy of the secret */
    json_decref(c);
    papp_free(a);
}

/* ---- entry points ---- */

void
wsproxy_port_forward(struct http_exchange *ex, struct wsproxy *w)
{
    const char *id = http_exchange_param(ex, "workspaceagent");
    const char *msg = NULL, *detail = NULL;
    int port = app_port_forward_port(&ex->req, &msg, &detail);
    if (port < 0) {
        http_reply_error(ex, 400, msg, detail);
        return;
    }
    if (!id || !uuid_valid(id)) {
        http_reply_error(ex, 400, "Invalid UUID.", NULL);
        return;
    }
    if (w->stopping) {
        http_reply_error(ex, 503, "The proxy is shutting down.", NULL);
        return;
    }
    struct papp *a = papp_new(w, ex);
    a->pf_port = port;
    a->r.access = APP_ACCESS_TERMINAL;
    snprintf(a->r.agent, sizeof(a->r.agent), "%s", id);
    str_lower(a->r.agent);
    a->r.base_path = xstrdup("/");
    a->r.rest = xstrdup("");
    /* The grant is for this session and this agent: SHA-256 of both, NUL between. */
    char *session = app_session_token(&ex->req, &a->r, NULL);
    struct buf b;
    buf_init(&b);
    buf_puts(&b, session ? session : "");
    buf_append(&b, "", 1);
    buf_puts(&b, a->r.agent);
    sha256(b.data, b.len, a->grant);
    OPENSSL_cleanse(b.data, b.len);
    buf_fini(&b);
    if (session)
        OPENSSL_cleanse(session, strlen(session));
    free(session);
    if (has_grant(w->link, a->grant)) {
        memcpy(a->agent_id, a->r.agent, 37); /* a UUID: 36 characters and the NUL */
        route(a);
    } else {
        ask_primary(a);
    }
}

void
wsproxy_apps_handle(struct http_exchange *ex, struct wsproxy *w)
{
    if (w->stopping) {
        http_reply_error(ex, 503, "The proxy is shutting down.", NULL);
        return;
    }
    struct papp *a = papp_new(w, ex);
    if (app_request_parse(ex, w->app_pattern, w->own_host, &a->r) < 0) {
        papp_free(a);
        return;
    }
    if (a->r.access == APP_ACCESS_PATH && w->o->disable_path_apps) {
        app_fail_page(ex, 403, "Forbidden",
                      "Path-based applications are disabled on this workspace proxy by the "
                      "administrator.");
        papp_free(a);
        return;
    }
    char *key = http_request_query_param(&ex->req, APP_KEY_PARAM);
    bool smuggled = key != NULL;
    free(key);
    if (smuggled)
        take_key(a, true);
    else
        try_cookies(a, true);
}

int
wsproxy_apps_init(struct wsproxy *w, char **err)
{
    const char *wild = w->o->net.wildcard_access_url;
    if (wild && *wild) {
        w->app_pattern = xcalloc(1, sizeof(*w->app_pattern));
        char *why = NULL;
        if (apphost_pattern_compile(wild, w->app_pattern, &why) < 0) {
            *err = xasprintf("parse wildcard access URL \"%s\": %s", wild, why ? why : "invalid");
            free(why);
            free(w->app_pattern);
            w->app_pattern = NULL;
            return -1;
        }
    }
    struct url u;
    if (url_parse(w->access_url, &u) == 0) {
        w->own_host = url_authority(&u);
        url_free(&u);
    }
    struct tls_client_opts to = {0}, app_to = {.no_verify = true};
    w->tls = tls_ctx_new_client(&to, err);
    if (!w->tls)
        return -1;
    w->app_tls = tls_ctx_new_client(&app_to, err);
    if (!w->app_tls)
        return -1;
    w->link = xcalloc(1, sizeof(*w->link));
    w->link->w = w;
    w->app_tokens = jose_cache_new(APP_TOKEN_CACHE_SLOTS);
    return 0;
}

void
wsproxy_apps_close(struct wsproxy *w)
{
    struct relay_link *l = w->link;
    if (!l)
        return;
    w->link = NULL;
    link_fail_waiting(l, "The proxy is shutting down.");
    if (l->tc) {
        l->closing = true;
        tunnel_conn_close(l->tc); /* link_closed frees l */
    } else {
        free(l);
    }
}

void
wsproxy_apps_fini(struct wsproxy *w)
{
    wsproxy_apps_close(w);
    if (w->app_pattern) {
        apphost_pattern_free(w->app_pattern);
        free(w->app_pattern);
        w->app_pattern = NULL;
    }
    free(w->own_host);
    w->own_host = NULL;
    jose_cache_free(w->app_tokens);
    w->app_tokens = NULL;
    if (w->tls)
        tls_ctx_free(w->tls);
    w->tls = NULL;
    if (w->app_tls)
        tls_ctx_free(w->app_tls);
    w->app_tls = NULL;
}
