/* Path apps at the primary (CODER-COMPAT §6): /@{user}/{workspace}[.{agent}]/apps/{slug}/...
 * relayed to the app through the agent's tunnel. The request streams both ways: its body goes
 * up as it arrives (paused while the tunnel stream is full), the app's response comes down as
 * the app sends it (tunnel bytes acknowledged only once written to the client). Path apps are
 * for their workspace's owner only, as in Coder without --dangerous-allow-path-app-sharing. */
#include "apps.h"
#include "apphost/apphost.h"
#include "base/log.h"
#include "base/util.h"
#include "base/uuid.h"
#include "http/url.h"
#include "tunnel/table.h"
#include "tunnel/conn.h"
#include "tunnel/tunnel.h"
#include "worker.h"

#include <llhttp.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>

#define MAX_UPSTREAM_HEAD (64u << 10)
#define MAX_UPSTREAM_HEADERS 100

struct app_req {
    struct api_ctx c; /* auth on the store thread, as the API does */
    char user[256], workspace[256], agent[256], slug[256];
    bool subdomain; /* reached on the wildcard, not under /@ */
    char *rest;     /* the path after the app's prefix, with the query */
    /* resolved on the store thread */
    char agent_id[37];
    char *target; /* "host:port" */
    bool found;
    /* relaying */
    struct tunnel_stream *ts;
    llhttp_t parser;
    size_t head_bytes;
    struct buf field, value;
    bool in_value;
    bool chunked_up; /* the request body goes up chunked */
    bool up_ended;
    bool begun;
    size_t owed;      /* tunnel bytes written to the client, not yet acknowledged */
    bool client_full; /* the client's queue is above its mark: acknowledge on drain */
    bool done;        /* the exchange has ended */
    bool upgraded;    /* the app answered 101 to the client's upgrade */
};

static const char *const hop_headers[] = {
    "connection", "keep-alive", "proxy-connection",    "transfer-encoding",  "upgrade",
    "te",         "trailer",    "proxy-authorization", "proxy-authenticate", NULL};

static bool
is_hop(const char *name)
{
    for (size_t i = 0; hop_headers[i]; i++) {
        if (str_eq_ci(name, hop_headers[i]))
            return true;
    }
    return false;
}

/* The app named by the Host header on the primary's wildcard, if any. */
static bool
host_app(const struct primary *p, const struct http_exchange *ex, struct apphost_app *app)
{
    const char *host = http_request_header(&ex->req, "Host");
    char *sub = NULL;
    if (!p->app_pattern || !host || !apphost_pattern_match(p->app_pattern, host, &sub))
        return false;
    bool ok = apphost_parse(sub, app) == 0;
    free(sub);
    return ok;
}

bool
apps_stream_match(struct http_exchange *ex, void *arg)
{
    struct primary *p = arg;
    struct apphost_app app;
    return str_has_prefix(ex->req.path, "/@") || host_app(p, ex, &app);
}

static void
app_req_free(struct app_req *r)
{
    store_user_fini(&r->c.user);
    store_apikey_fini(&r->c.key);
    free(r->rest);
    free(r->target);
    buf_fini(&r->field);
    buf_fini(&r->value);
    free(r);
}

static void
html_escape(struct buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            buf_puts(b, "&lt;");
            break;
        case '>':
            buf_puts(b, "&gt;");
            break;
        case '&':
            buf_puts(b, "&amp;");
            break;
        case '"':
            buf_puts(b, "&quot;");
            break;
        case '\'':
            buf_puts(b, "&#39;");
            break;
        default:
            buf_putc(b, *s);
        }
    }
}

/* An error for the user: a page for a browser, Coder's JSON for anything else. */
static void
fail_page(struct http_exchange *ex, int status, const char *title, const char *detail)
{
    const char *accept = http_request_header(&ex->req, "Accept");
    if (!accept || !strstr(accept, "text/html")) {
        http_reply_error(ex, status, title, detail);
        return;
    }
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    html_escape(&b, title);
    buf_puts(&b, "</title></head><body><h1>");
    html_escape(&b, title);
    buf_puts(&b, "</h1><p>");
    html_escape(&b, detail ? detail : "");
    buf_puts(&b, "</p><p>Retry in a moment; if it persists, check the workspace and its agent."
                 "</p></body></html>\n");
    http_reply_text(ex, status, "text/html; charset=utf-8", b.data);
    buf_fini(&b);
}

/* Ends the client's side (once) and lets go of the tunnel stream. */
static void
finish(struct app_req *r)
{
    if (r->done)
        return;
    r->done = true;
    struct http_exchange *ex = r->c.ex;
    if (r->begun)
        http_exchange_end(ex);
    else
        fail_page(ex, 502, "Failed to proxy request to application.",
                  "The application closed the connection without an answer.");
    if (r->ts) {
        tunnel_stream_reset(r->ts, TUNNEL_CANCEL);
        r->ts = NULL; /* on_close frees r */
    } else {
        app_req_free(r);
    }
}

/* ---- the app's response ---- */

/* The app switched protocols: the client's connection becomes a byte stream joined to the app's
 * (WebSocket and the like), with what either side already sent. */
static void
switch_protocols(struct app_req *r, struct tunnel_stream *s, const uint8_t *rest, size_t nrest)
{
    struct http_exchange *ex = r->c.ex;
    const char *proto = http_request_header(&ex->req, "Upgrade");
    http_exchange_header(ex, "Upgrade", proto ? proto : "websocket");
    struct buf early;
    buf_init(&early);
    struct net_stream *st = http_exchange_upgrade(ex, NULL, NULL, &early);
    r->done = true;
    if (!st) {
        buf_fini(&early);
        tunnel_stream_reset(s, TUNNEL_CANCEL); /* t_close frees r */
        return;
    }
    r->ts = NULL;
    tunnel_pipe(s, st); /* the pipe owns both ends now; r's callbacks are gone */
    if (nrest)
        net_stream_write(st, rest, nrest);
    if (early.len)
        tunnel_stream_write(s, early.data, early.len);
    buf_fini(&early);
    app_req_free(r);
}

static int
u_head_bytes(struct app_req *r, size_t n)
{
    r->head_bytes += n;
    return r->head_bytes > MAX_UPSTREAM_HEAD ? -1 : 0;
}

static void
u_flush_header(struct app_req *r)
{
    if (!r->in_value)
        return;
    char *name = xstrndup(r->field.data ? r->field.data : "", r->field.len);
    char *value = xstrndup(r->value.data ? r->value.data : "", r->value.len);
    /* Hop-by-hop headers are ours to set; CORS is the deployment's, not the app's. */
    if (!is_hop(name) && strncasecmp(name, "access-control-", 15) != 0 &&
        r->c.ex->nrheaders < MAX_UPSTREAM_HEADERS)
        http_exchange_header(r->c.ex, name, value);
    free(name);
    free(value);
    buf_reset(&r->field);
    buf_reset(&r->value);
    r->in_value = false;
}

static int
u_status(llhttp_t *p, const char *at, size_t n)
{
    (void)at;
    return u_head_bytes(p->data, n);
}

static int
u_field(llhttp_t *p, const char *at, size_t n)
{
    struct app_req *r = p->data;
    if (u_head_bytes(r, n) < 0)
        return -1;
    if (r->in_value)
        u_flush_header(r);
    buf_append(&r->field, at, n);
    return 0;
}

static int
u_value(llhttp_t *p, const char *at, size_t n)
{
    struct app_req *r = p->data;
    if (u_head_bytes(r, n) < 0)
        return -1;
    r->in_value = true;
    buf_append(&r->value, at, n);
    return 0;
}

static int
u_headers_complete(llhttp_t *p)
{
    struct app_req *r = p->data;
    u_flush_header(r);
    if (p->status_code == 101 && r->c.ex->req.upgrade) {
        r->upgraded = true; /* a real 101: only now does the client's connection switch */
        return 0;
    }
    if (p->status_code < 200) {
        /* Interim answers are not passed on; drop what they set. */
        return 0;
    }
    r->begun = true;
    if (http_exchange_begin(r->c.ex, p->status_code) < 0)
        return -1;
    bool head = strcmp(r->c.ex->req.method, "HEAD") == 0;
    return head ? 1 : 0;
}

static int
u_body(llhttp_t *p, const char *at, size_t n)
{
    struct app_req *r = p->data;
    int rc = http_exchange_write(r->c.ex, at, n);
    if (rc < 0)
        return -1;
    if (rc == 0)
        r->client_full = true; /* c_drain acknowledges what is owed */
    return 0;
}

static int
u_message_complete(llhttp_t *p)
{
    struct app_req *r = p->data;
    if (r->upgraded)
        return HPE_PAUSED;
    if (p->status_code < 200)
        return 0;
    return HPE_PAUSED; /* finish after the parser returns */
}

static void
t_response(struct tunnel_stream *s, int status, const struct tunnel_header *h, size_t nh, void *arg)
{
    (void)s;
    struct app_req *r = arg;
    if (status == 200 || r->done)
        return;
    const char *why = "the agent refused the connection";
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(h[i].name, "coder-error") == 0)
            why = h[i].value;
    }
    r->done = true;
    fail_page(r->c.ex, 502, "Failed to proxy request to application.", why);
    tunnel_stream_reset(r->ts, TUNNEL_CANCEL);
    r->ts = NULL;
}

static void
t_data(struct tunnel_stream *s, const uint8_t *d, size_t n, void *arg)
{
    struct app_req *r = arg;
    if (r->done) {
        tunnel_stream_consumed(s, n);
        return;
    }
    llhttp_errno_t e = llhttp_execute(&r->parser, (const char *)d, n);
    if (r->upgraded && (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)) {
        size_t used = (size_t)(llhttp_get_error_pos(&r->parser) - (const char *)d);
        tunnel_stream_consumed(s, n);
        switch_protocols(r, s, d + used, n - used);
        return;
    }
    if (e == HPE_PAUSED) { /* the whole response is through */
        tunnel_stream_consumed(s, n);
        finish(r);
        return;
    }
    if (e != HPE_OK) {
        if (!r->begun) {
            r->done = true;
            fail_page(r->c.ex, 502, "Failed to proxy request to application.",
                      "The application's response is not valid HTTP/1.1.");
            tunnel_stream_reset(s, TUNNEL_CANCEL);
            r->ts = NULL;
        } else {
            finish(r);
        }
        return;
    }
    /* Acknowledge what went into the client's queue; hold the rest until it drains. */
    r->owed += n;
    if (!r->client_full) {
        tunnel_stream_consumed(s, r->owed);
        r->owed = 0;
    }
}

static void
t_end(struct tunnel_stream *s, void *arg)
{
    (void)s;
    struct app_req *r = arg;
    if (r->done)
        return;
    /* The app closed: a body that runs to the close ends here. */
    llhttp_finish(&r->parser);
    finish(r);
}

static void
t_writable(struct tunnel_stream *s, void *arg)
{
    (void)s;
    struct app_req *r = arg;
    if (!r->done)
        http_exchange_resume_body(r->c.ex);
}

static void
t_close(struct tunnel_stream *s, uint32_t code, void *arg)
{
    (void)s;
    struct app_req *r = arg;
    r->ts = NULL;
    if (!r->done) {
        if (r->begun) {
            finish(r);
            return;
        }
        r->done = true;
        fail_page(r->c.ex, 502, "Failed to proxy request to application.",
                  code ? "the connection to the application was reset" : "no answer");
    }
    app_req_free(r);
}

static const struct tunnel_stream_cbs stream_cbs = {t_response, t_data, t_end, t_writable, t_close};

/* ---- the client's side ---- */

static void
c_body(struct http_exchange *ex, const char *d, size_t n, void *arg)
{
    struct app_req *r = arg;
    if (r->done || !r->ts)
        return;
    int rc;
    if (r->chunked_up) {
        char size[24];
        int len = snprintf(size, sizeof(size), "%zx\r\n", n);
        tunnel_stream_write(r->ts, size, (size_t)len);
        tunnel_stream_write(r->ts, d, n);
        rc = tunnel_stream_write(r->ts, "\r\n", 2);
    } else {
        rc = tunnel_stream_write(r->ts, d, n);
    }
    if (rc == 0)
        http_exchange_pause_body(ex); /* t_writable resumes */
}

static void
c_body_end(struct http_exchange *ex, void *arg)
{
    (void)ex;
    struct app_req *r = arg;
    if (r->chunked_up && r->ts && !r->done)
        tunnel_stream_write(r->ts, "0\r\n\r\n", 5);
}

static const struct http_body_cbs body_cbs = {c_body, c_body_end};

static void
c_drain(struct http_exchange *ex, void *arg)
{
    (void)ex;
    struct app_req *r = arg;
    r->client_full = false;
    if (r->ts && r->owed) {
        tunnel_stream_consumed(r->ts, r->owed);
        r->owed = 0;
    }
}

static void
c_abort(struct http_exchange *ex, void *arg)
{
    (void)ex;
    struct app_req *r = arg;
    finish(r); /* the client left: end, and reset the app's stream */
}

/* The request as the app sees it: the rest of the path, our forwarding headers, no Coder
 * credentials, and a connection the app closes after answering. */
static void
build_request(struct app_req *r, struct buf *b)
{
    struct http_exchange *ex = r->c.ex;
    buf_printf(b, "%s %s HTTP/1.1\r\nHost: %s\r\n", ex->req.method, r->rest, r->target);
    const char *client_host = http_request_header(&ex->req, "Host");
    bool has_length = false;
    for (size_t i = 0; i < ex->req.nheaders; i++) {
        const char *n = ex->req.headers[i].name, *v = ex->req.headers[i].value;
        if (is_hop(n) || str_eq_ci(n, "host") || str_eq_ci(n, "coder-session-token") ||
            str_has_prefix(n, "X-Forwarded-") || str_has_prefix(n, "x-forwarded-"))
            continue;
        if (str_eq_ci(n, "cookie")) {
            /* Drop Coder's cookies; keep the app's own. */
            struct buf kept;
            buf_init(&kept);
            char *copy = xstrdup(v), *save = NULL;
            for (char *t = strtok_r(copy, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
                while (*t == ' ')
                    t++;
                if (str_has_prefix(t, "coder_"))
                    continue;
                buf_printf(&kept, "%s%s", kept.len ? "; " : "", t);
            }
            if (kept.len)
                buf_printf(b, "Cookie: %s\r\n", kept.data);
            buf_fini(&kept);
            free(copy);
            continue;
        }
        has_length |= str_eq_ci(n, "content-length");
        buf_printf(b, "%s: %s\r\n", n, v);
    }
    const char *te = http_request_header(&ex->req, "Transfer-Encoding");
    if (te && !has_length) {
        r->chunked_up = true;
        buf_puts(b, "Transfer-Encoding: chunked\r\n");
    }
    buf_printf(b, "X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n",
               ex->req.remote_ip, ex->req.tls ? "https" : "http", client_host ? client_host : "");
    const char *upgrade = http_request_header(&ex->req, "Upgrade");
    if (ex->req.upgrade && upgrade)
        buf_printf(b, "Connection: Upgrade\r\nUpgrade: %s\r\n\r\n", upgrade);
    else
        buf_puts(b, "Connection: close\r\n\r\n");
}

static void
relay(struct primary *p, struct app_req *r)
{
    struct http_exchange *ex = r->c.ex;
    struct tunnel_conn *tc = p->tunnels ? agent_tunnels_get(p->tunnels, r->agent_id) : NULL;
    if (!tc) {
        fail_page(ex, 502, "Agent is not connected.",
                  "The workspace agent has no tunnel to this region; check that it is running.");
        app_req_free(r);
        return;
    }
    static const llhttp_settings_t upstream = {.on_status = u_status,
                                               .on_header_field = u_field,
                                               .on_header_value = u_value,
                                               .on_headers_complete = u_headers_complete,
                                               .on_body = u_body,
                                               .on_message_complete = u_message_complete};
    llhttp_init(&r->parser, HTTP_RESPONSE, &upstream);
    r->parser.data = r;
    r->ts = tunnel_stream_open(tunnel_conn_session(tc), "CONNECT", r->target, NULL, NULL, 0,
                               &stream_cbs, r);
    if (!r->ts) {
        fail_page(ex, 502, "Agent is not connected.", "The agent's tunnel is closing.");
        app_req_free(r);
        return;
    }
    struct buf head;
    buf_init(&head);
    build_request(r, &head);
    tunnel_stream_write(r->ts, head.data, head.len); /* optimistic: before the agent's 200 */
    buf_fini(&head);
    http_exchange_set_stream_cbs(ex, c_drain, c_abort, r);
    if (!ex->req.upgrade) /* an upgrade has no body; its bytes wait for the switch */
        http_exchange_read_body(ex, &body_cbs, r);
}

/* ---- resolving on the store thread ---- */

static void
resolve_run(struct store *st, void *arg)
{
    struct app_req *r = arg;
    struct api_ctx *c = &r->c;
    c->st = st;
    c->ex->status = 0;
    /* Who asks: path apps always need a session; subdomain apps may be public. */
    struct api_auth_failure why = {0};
    bool signed_in = api_auth_check(c, api_request_token(&c->ex->req), &why) == 0;
    if (!signed_in && !r->subdomain) {
        api_reply_auth_failure(c, &why);
        return;
    }
    const char *share = "owner";
    struct store_user owner = {0};
    struct store_workspace w = {0};
    struct store_agent *agents = NULL;
    struct store_app *apps = NULL;
    size_t nagents = 0, napps = 0;
    int rc = str_eq(r->user, "me") && signed_in ? store_user_by_id(st, c->user.id, &owner)
                                                : store_user_by_username(st, r->user, &owner);
    if (rc == 0)
        rc = store_workspace_by_owner_name(st, owner.id, r->workspace, &w);
    if (rc == 0)
        rc = store_agent_list(st, w.id, &agents, &nagents);
    struct store_agent *agent = NULL;
    for (size_t i = 0; rc == 0 && i < nagents; i++) {
        if (r->agent[0] ? str_eq_ci(agents[i].name, r->agent) : nagents == 1)
            agent = &agents[i];
    }
    if (rc == 0 && agent) {
        snprintf(r->agent_id, sizeof(r->agent_id), "%s", agent->id);
        char *end;
        long port = strtol(r->slug, &end, 10);
        if (*end == '\0' && port >= 9 && port <= 65535) {
            r->target = xasprintf("127.0.0.1:%ld", port); /* a port on the workspace */
            r->found = true;
        } else if (store_app_list(st, agent->id, &apps, &napps) == 0) {
            for (size_t i = 0; i < napps; i++) {
                struct url u;
                if (strcmp(apps[i].slug, r->slug) == 0 && url_parse(apps[i].url, &u) == 0) {
                    r->target = url_host_port(&u);
                    url_free(&u);
                    r->found = true;
                    /* Path apps are the owner's alone, whatever the app says (Coder without
                     * --dangerous-allow-path-app-sharing). */
                    if (r->subdomain && apps[i].subdomain)
                        share = str_eq(apps[i].sharing_level, "public")          ? "public"
                                : str_eq(apps[i].sharing_level, "authenticated") ? "authenticated"
                                                                                 : "owner";
                }
            }
        }
    }
    /* May this user use it? The answer never tells a stranger what exists. */
    bool allowed =
        r->found && (str_eq(share, "public") || (signed_in && (str_eq(share, "authenticated") ||
                                                               strcmp(owner.id, c->user.id) == 0)));
    if (rc < 0 && rc != STORE_ENOTFOUND) {
        api_reply_error(c, 500, "Internal error resolving the application.", NULL);
    } else if (!allowed && !signed_in) {
        r->found = false;
        api_reply_auth_failure(c, &why);
    } else if (!allowed) {
        r->found = false;
        api_reply_error(c, 404, "Resource not found or you do not have access to this resource",
                        NULL);
    }
    api_auth_failure_fini(&why);
    store_apps_free(apps, napps);
    store_agents_free(agents, nagents);
    store_workspace_fini(&w);
    store_user_fini(&owner);
}

static void
resolve_done(void *arg)
{
    struct app_req *r = arg;
    struct http_exchange *ex = r->c.ex;
    if (!r->found || ex->status != 0) {
        http_exchange_finish(ex, ex->status ? ex->status : 404);
        app_req_free(r);
        return;
    }
    if (!ex->conn) { /* the client left while we looked */
        http_exchange_end(ex);
        app_req_free(r);
        return;
    }
    relay(r->c.p, r);
}

/* /@user/workspace[.agent]/apps/slug[/...]: fills r; returns 0, or 1 after answering. */
static int
parse_path(struct http_exchange *ex, struct app_req *r)
{
    const char *p = ex->req.path + 2; /* after "/@" */
    const char *s1 = strchr(p, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    const char *s3 = s2 ? strchr(s2 + 1, '/') : NULL;
    if (!s1 || !s2 || !s3 || strncmp(s2, "/apps/", 6) != 0 || (size_t)(s1 - p) >= sizeof(r->user) ||
        (size_t)(s2 - s1 - 1) >= sizeof(r->workspace)) {
        http_reply_error(ex, 404, "Route not found.", NULL);
        return 1;
    }
    snprintf(r->user, sizeof(r->user), "%.*s", (int)(s1 - p), p);
    char ws[256];
    snprintf(ws, sizeof(ws), "%.*s", (int)(s2 - s1 - 1), s1 + 1);
    char *dot = strchr(ws, '.');
    if (dot) {
        *dot = '\0';
        snprintf(r->agent, sizeof(r->agent), "%s", dot + 1);
    }
    snprintf(r->workspace, sizeof(r->workspace), "%s", ws);
    const char *slug = s3 + 1; /* "/apps/" is s2..s3 */
    const char *after = strchr(slug, '/');
    size_t sl = after ? (size_t)(after - slug) : strlen(slug);
    if (sl == 0 || sl >= sizeof(r->slug)) {
        http_reply_error(ex, 404, "Route not found.", NULL);
        return 1;
    }
    snprintf(r->slug, sizeof(r->slug), "%.*s", (int)sl, slug);
    if (!after) {
        /* Coder redirects to the slash-terminated form, so relative links work. */
        char *loc = xasprintf("%s/%s%s", ex->req.path, ex->req.query[0] ? "?" : "", ex->req.query);
        http_exchange_header(ex, "Location", loc);
        free(loc);
        http_exchange_finish(ex, 307);
        return 1;
    }
    r->rest = xasprintf("%s%s%s", after, ex->req.query[0] ? "?" : "", ex->req.query);
    return 0;
}

void
apps_handle(struct http_exchange *ex, struct primary *p)
{
    struct app_req *r = xcalloc(1, sizeof(*r));
    r->c.p = p;
    r->c.ex = ex;
    buf_init(&r->field);
    buf_init(&r->value);
    struct apphost_app app;
    if (host_app(p, ex, &app)) {
        bool https = false;
        if (apphost_app_port(&app, &https) >= 0 && https) {
            http_reply_error(ex, 400, "HTTPS ports are not supported yet.",
                             "Use the port without the \"s\" suffix for a plain HTTP app.");
            app_req_free(r);
            return;
        }
        r->subdomain = true;
        snprintf(r->user, sizeof(r->user), "%s", app.username);
        snprintf(r->workspace, sizeof(r->workspace), "%s", app.workspace);
        snprintf(r->agent, sizeof(r->agent), "%s", app.agent);
        snprintf(r->slug, sizeof(r->slug), "%s", app.app_slug_or_port);
        r->rest = xstrdup(ex->req.target); /* the whole path: the app owns the host */
    } else if (parse_path(ex, r) != 0) {
        app_req_free(r);
        return;
    }
    worker_submit(p->worker, resolve_run, resolve_done, r);
}

/* ---- port forwarding: a TCP stream to a workspace port, over an upgraded connection ---- */

struct pf_req {
    struct http_exchange *ex; /* NULL once answered */
};

static void
pf_response(struct tunnel_stream *s, int status, const struct tunnel_header *h, size_t nh,
            void *arg)
{
    struct pf_req *f = arg;
    struct http_exchange *ex = f->ex;
    if (status != 200) {
        const char *why = "the agent refused the connection";
        for (size_t i = 0; i < nh; i++) {
            if (strcmp(h[i].name, "coder-error") == 0)
                why = h[i].value;
        }
        http_reply_error(ex, 502, why, NULL); /* the CLI prints it after its own prefix */
        f->ex = NULL;
        tunnel_stream_reset(s, TUNNEL_CANCEL);
        return; /* pf_close frees f */
    }
    /* Connected in the workspace: now the client's connection becomes the byte stream. */
    http_exchange_header(ex, "Upgrade", "coder-tcp");
    struct buf early;
    buf_init(&early);
    struct net_stream *st = http_exchange_upgrade(ex, NULL, NULL, &early);
    f->ex = NULL;
    if (!st) {
        tunnel_stream_reset(s, TUNNEL_CANCEL);
        buf_fini(&early);
        return;
    }
    free(f); /* the pipe owns both ends from here */
    tunnel_pipe(s, st);
    if (early.len)
        tunnel_stream_write(s, early.data, early.len);
    buf_fini(&early);
}

static void
pf_close(struct tunnel_stream *s, uint32_t code, void *arg)
{
    (void)s;
    (void)code;
    struct pf_req *f = arg;
    if (f->ex)
        http_reply_error(f->ex, 502, "Failed to dial the workspace port.",
                         "The agent's tunnel closed.");
    free(f);
}

static const struct tunnel_stream_cbs pf_cbs = {pf_response, NULL, NULL, NULL, pf_close};

void
apps_port_forward(struct primary *p, struct http_exchange *ex, const char *agent_id, int port)
{
    struct tunnel_conn *tc = p->tunnels ? agent_tunnels_get(p->tunnels, agent_id) : NULL;
    if (!tc) {
        http_reply_error(ex, 502, "Agent is not connected.",
                         "The workspace agent has no tunnel to this region.");
        return;
    }
    char target[32];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    struct pf_req *f = xcalloc(1, sizeof(*f));
    f->ex = ex;
    if (!tunnel_stream_open(tunnel_conn_session(tc), "CONNECT", target, NULL, NULL, 0, &pf_cbs,
                            f)) {
        free(f);
        http_reply_error(ex, 502, "Agent is not connected.", "The agent's tunnel is closing.");
    }
}
