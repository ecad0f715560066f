/* coder agent: runs in the workspace, dials out to its regions and serves the streams they
 * open (docs/TUNNEL.md). It reads its manifest (which apps it serves) from the primary, then
 * follows the region list (polled every 10 s): one tunnel to the primary and one to every
 * healthy proxy (with the ticket the list carries), each reconnecting with exponential backoff
 * and jitter, dropped when its region leaves the list. TCP is opened only to loopback ports
 * >= 9 (port forwarding) and to the host:port pairs its apps name. */
#include "agent/agent.h"
#include "base/crypto.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "conf/conf.h"
#include "http/client.h"
#include "http/url.h"
#include "net/tls.h"
#include "tunnel/conn.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 30000
#define STABLE_MS 5000 /* a tunnel that held this long was not flapping: back to the start */

#define POLL_MS 10000

struct agent;

/* A region the agent holds (or tries to hold) a tunnel to. */
struct region {
    struct agent *a;
    char key[37]; /* "primary", or the proxy's id */
    char *name;
    char *url;
    char *ticket; /* proxies: the latest tunnel ticket */
    struct tunnel_conn *tc;
    uv_timer_t retry;
    int64_t backoff_ms;
    int64_t connected_at; /* monotonic ms of the current tunnel's start, 0 when down */
    int open;             /* the timer, and the tunnel while it exists */
    bool seen;            /* in the latest region list */
    bool dropped;
    struct region *next;
};

struct agent {
    uv_loop_t *loop;
    char *url; /* the primary, without trailing slash */
    char *auth_header;
    struct tls_ctx *tls;
    struct http_client *client;
    struct region *regions;
    uv_timer_t poll;
    uv_signal_t sigint, sigterm;
    int64_t manifest_backoff_ms;
    char **allowed; /* "host:port" of the apps */
    size_t nallowed;
    bool stopping;
};

static void region_connect(struct region *r);

/* 50 ms doubling to 30 s, +-20 % jitter; *backoff is the state. A restarted proxy is back within
 * tens of ms, and a refused dial costs nothing, so the first retries come quickly. */
static uint64_t
next_backoff(int64_t *backoff)
{
    *backoff = *backoff ? *backoff * 2 : BACKOFF_MIN_MS;
    if (*backoff > BACKOFF_MAX_MS)
        *backoff = BACKOFF_MAX_MS;
    uint32_t r;
    rand_bytes(&r, sizeof(r));
    int64_t jitter = (int64_t)(r % 41) - 20; /* percent */
    int64_t wait = *backoff + *backoff * jitter / 100;
    return (uint64_t)(wait > 0 ? wait : 1);
}

/* ---- regions ---- */

static void
region_release(struct region *r)
{
    if (--r->open > 0)
        return;
    free(r->name);
    free(r->url);
    free(r->ticket);
    free(r);
}

static void
on_region_timer_closed(uv_handle_t *h)
{
    region_release(h->data);
}

static void
on_region_retry(uv_timer_t *t)
{
    region_connect(t->data);
}

static void
region_schedule(struct region *r)
{
    if (r->a->stopping || r->dropped)
        return;
    if (r->connected_at && time_mono_ms() - r->connected_at >= STABLE_MS)
        r->backoff_ms = 0; /* it held: start over */
    r->connected_at = 0;
    uv_timer_start(&r->retry, on_region_retry, next_backoff(&r->backoff_ms), 0);
}

/* Forgets a region (no longer listed, or shutting down). */
static void
region_drop(struct region *r)
{
    r->dropped = true;
    uv_timer_stop(&r->retry);
    uv_close((uv_handle_t *)&r->retry, on_region_timer_closed);
    if (r->tc)
        tunnel_conn_close(r->tc);
}

/* ---- what the agent may dial ---- */

static bool
allowed(const struct agent *a, const char *authority)
{
    const char *colon = strrchr(authority, ':');
    if (!colon)
        return false;
    int port = atoi(colon + 1);
    size_t hl = (size_t)(colon - authority);
    bool loopback = (hl == 9 && strncmp(authority, "127.0.0.1", 9) == 0) ||
                    (hl == 5 && strncmp(authority, "[::1]", 5) == 0) ||
                    (hl == 9 && strncmp(authority, "localhost", 9) == 0);
    if (loopback && port >= 9 && port <= 65535)
        return true;
    for (size_t i = 0; i < a->nallowed; i++) {
        if (str_eq_ci(a->allowed[i], authority))
            return true;
    }
    return false;
}

static void
on_request(struct tunnel_conn *tc, struct tunnel_stream *s, const char *method,
           const char *authority, const char *path, const struct tunnel_header *h, size_t nh,
           void *arg)
{
    (void)tc;
    (void)path;
    (void)h;
    (void)nh;
    struct region *r = arg;
    if (strcmp(method, "CONNECT") != 0) {
        tunnel_stream_respond(s, 404, NULL, 0, true);
        return;
    }
    if (!allowed(r->a, authority)) {
        const struct tunnel_header e[] = {
            {"coder-error", "the agent only connects to its apps and to loopback ports >= 9"}};
        tunnel_stream_respond(s, 403, e, 1, true);
        return;
    }
    tunnel_connect_stream(r->a->loop, s, authority);
}

static void
on_ready(struct tunnel_conn *tc, void *arg)
{
    (void)tc;
    struct region *r = arg;
    r->connected_at = time_mono_ms();
    log_info("agent: connected to %s (%s)", r->url, r->name);
}

static void
on_close(struct tunnel_conn *tc, const char *why, void *arg)
{
    (void)tc;
    struct region *r = arg;
    r->tc = NULL;
    if (!r->a->stopping && !r->dropped) {
        log_warn("agent: tunnel to %s (%s) closed: %s; reconnecting", r->url, r->name,
                 why ? why : "closed");
        region_schedule(r);
    }
    region_release(r);
}

static const struct tunnel_conn_cbs tunnel_cbs = {on_request, on_ready, on_close};

static void
region_connect(struct region *r)
{
    struct agent *a = r->a;
    if (a->stopping || r->dropped || r->tc)
        return;
    char *hdr = r->ticket ? xasprintf("Coder-Tunnel-Ticket: %s", r->ticket) : NULL;
    const char *headers[] = {hdr ? hdr : a->auth_header, NULL};
    r->open++;
    r->tc = tunnel_dial(a->loop, r->url, "/api/v2/workspaceagents/me/tunnel", TUNNEL_SERVER,
                        headers, a->tls, &tunnel_cbs, r);
    free(hdr);
}

static struct region *
region_get(struct agent *a, const char *key, const char *name, const char *url)
{
    for (struct region *r = a->regions; r; r = r->next) {
        if (!r->dropped && strcmp(r->key, key) == 0) {
            if (strcmp(r->url, url) != 0) { /* the proxy moved: start over there */
                region_drop(r);
                break;
            }
            return r;
        }
    }
    struct region *r = xcalloc(1, sizeof(*r));
    r->a = a;
    snprintf(r->key, sizeof(r->key), "%s", key);
    r->name = xstrdup(name);
    r->url = xstrdup(url);
    uv_timer_init(a->loop, &r->retry);
    r->retry.data = r;
    r->open = 1;
    r->next = a->regions;
    a->regions = r;
    return r;
}

/* Unlinks dropped regions whose memory is about to go (their handles close on their own). */
static void
regions_prune(struct agent *a)
{
    for (struct region **pp = &a->regions; *pp;) {
        if ((*pp)->dropped)
            *pp = (*pp)->next; /* region_release frees it once its handles are closed */
        else
            pp = &(*pp)->next;
    }
}

/* ---- the region list ---- */

static void poll_regions(struct agent *a);

static void
on_poll_timer(uv_timer_t *t)
{
    poll_regions(t->data);
}

static void
on_regions(struct http_client_resp *resp, void *arg)
{
    struct agent *a = arg;
    if (a->stopping)
        return;
    uv_timer_start(&a->poll, on_poll_timer, POLL_MS, 0);
    json_t *j = resp->status == 200
                    ? json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL)
                    : NULL;
    json_t *list = json_object_get(j, "regions");
    if (!json_is_array(list)) {
        log_warn("agent: fetch regions from %s: %s", a->url,
                 resp->error ? resp->error : "unexpected answer");
        json_decref(j);
        return; /* keep what we hold; the primary's own tunnel retries by itself */
    }
    for (struct region *r = a->regions; r; r = r->next)
        r->seen = false;
    size_t i;
    json_t *g;
    json_array_foreach(list, i, g)
    {
        const char *name = json_string_value(json_object_get(g, "name"));
        const char *url = json_string_value(json_object_get(g, "url"));
        const char *id = json_string_value(json_object_get(g, "id"));
        const char *ticket = json_string_value(json_object_get(g, "tunnel_ticket"));
        if (!name || !url || !id || !url_is_http_base(url))
            continue;
        bool primary = i == 0 && !ticket;
        if (!primary && !ticket)
            continue;
        /* The agent reaches the primary at the URL it was given, whatever the list says. */
        struct region *r = region_get(a, primary ? "primary" : id, name, primary ? a->url : url);
        r->seen = true;
        if (ticket) {
            free(r->ticket);
            r->ticket = xstrdup(ticket);
        }
        if (!r->tc && !uv_is_active((uv_handle_t *)&r->retry))
            region_connect(r);
    }
    for (struct region *r = a->regions; r; r = r->next) {
        if (!r->seen && !r->dropped) {
            log_info("agent: region %s (%s) is no longer listed", r->name, r->url);
            region_drop(r);
        }
    }
    regions_prune(a);
    json_decref(j);
}

static void
poll_regions(struct agent *a)
{
    if (a->stopping)
        return;
    char *url = xasprintf("%s/api/v2/workspaceagents/me/regions", a->url);
    const char *headers[] = {a->auth_header, NULL};
    struct http_client_req req = {.method = "GET", .url = url, .headers = headers};
    if (http_client_start(a->client, &req, on_regions, a) < 0)
        uv_timer_start(&a->poll, on_poll_timer, POLL_MS, 0);
    free(url);
}

/* ---- the manifest ---- */

static void agent_start(struct agent *a);

static void
take_manifest(struct agent *a, json_t *m)
{
    for (size_t i = 0; i < a->nallowed; i++)
        free(a->allowed[i]);
    free(a->allowed);
    a->allowed = NULL;
    a->nallowed = 0;
    json_t *apps = json_object_get(m, "apps");
    size_t i;
    json_t *app;
    json_array_foreach(apps, i, app)
    {
        struct url u;
        if (url_parse(json_string_value(json_object_get(app, "url")), &u) < 0)
            continue;
        a->allowed = xrealloc(a->allowed, (a->nallowed + 1) * sizeof(*a->allowed));
        a->allowed[a->nallowed++] = url_host_port(&u);
        url_free(&u);
    }
}

static void
on_manifest_retry(uv_timer_t *t)
{
    agent_start(t->data);
}

static void
on_manifest(struct http_client_resp *r, void *arg)
{
    struct agent *a = arg;
    if (a->stopping)
        return;
    if (r->status != 200) {
        log_warn("agent: fetch manifest from %s: %s", a->url,
                 r->error
                     ? r->error
                     : (r->status == 401 ? "the agent token is not valid" : "unexpected status"));
        uv_timer_start(&a->poll, on_manifest_retry, next_backoff(&a->manifest_backoff_ms), 0);
        return;
    }
    json_t *m = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    take_manifest(a, m);
    json_decref(m);
    log_info("agent: manifest has %zu app target(s)", a->nallowed);
    /* The primary is always a region; the list adds proxies (and confirms the primary). */
    region_connect(region_get(a, "primary", "primary", a->url));
    poll_regions(a);
}

static void
agent_start(struct agent *a)
{
    if (a->stopping)
        return;
    char *url = xasprintf("%s/api/v2/workspaceagents/me/manifest", a->url);
    const char *headers[] = {a->auth_header, NULL};
    struct http_client_req req = {.method = "GET", .url = url, .headers = headers};
    if (http_client_start(a->client, &req, on_manifest, a) < 0)
        uv_timer_start(&a->poll, on_manifest_retry, next_backoff(&a->manifest_backoff_ms), 0);
    free(url);
}

/* ---- start and stop ---- */

static void
on_signal(uv_signal_t *s, int signum)
{
    (void)signum;
    struct agent *a = s->data;
    if (a->stopping)
        return;
    a->stopping = true;
    log_info("agent: shutting down");
    uv_timer_stop(&a->poll);
    uv_close((uv_handle_t *)&a->poll, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    for (struct region *r = a->regions; r; r = r->next) {
        if (!r->dropped)
            region_drop(r);
    }
    regions_prune(a);
    http_client_close(a->client);
}

int
agent_main(int argc, char **argv)
{
    char *url = NULL, *token = NULL, *token_file = NULL, *auth = NULL, *log_dir = NULL;
    static const char *const auth_kinds[] = {"token", "google-instance-identity",
                                             "aws-instance-identity", "azure-instance-identity",
                                             NULL};
    const struct conf_opt opts[] = {
        {.flag = "agent-url",
         .env = "CODER_AGENT_URL",
         .type = CONF_STRING,
         .dest = &url,
         .help = "URL for an agent to access your deployment."},
        {.flag = "agent-token",
         .env = "CODER_AGENT_TOKEN",
         .type = CONF_STRING,
         .dest = &token,
         .help = "An agent authentication token."},
        {.flag = "agent-token-file",
         .env = "CODER_AGENT_TOKEN_FILE",
         .type = CONF_STRING,
         .dest = &token_file,
         .help = "A file containing an authentication token for an agent."},
        {.flag = "auth",
         .env = "CODER_AGENT_AUTH",
         .def = "token",
         .type = CONF_ENUM,
         .enum_values = auth_kinds,
         .dest = &auth,
         .help = "Specify the authentication type to use for the agent."},
        {.flag = "log-dir",
         .env = "CODER_AGENT_LOG_DIR",
         .type = CONF_STRING,
         .dest = &log_dir,
         .help = "Specify the location for the agent log files (coder-agent.log)."},
    };
    struct conf_cmd cmd = {.usage = "coder agent [flags]",
                           .short_desc = "Starts the Coder workspace agent.",
                           .opts = opts,
                           .nopts = ARRAY_LEN(opts)};
    struct conf_result res;
    char *err = NULL;
    int rc = 1;
    struct agent a = {0};
    if (conf_parse(&cmd, argc, argv, &res, &err) < 0)
        goto fail;
    if (conf_print_requested(&cmd, &res)) {
        rc = 0;
        goto out;
    }
    if (!url || !*url) {
        err = xstrdup("CODER_AGENT_URL must be set");
        goto fail;
    }
    if (!url_is_http_base(url)) {
        err = xasprintf("CODER_AGENT_URL \"%s\" is not a valid http or https URL", url);
        goto fail;
    }
    if (strcmp(auth, "token") != 0) {
        err = xasprintf("--auth %s: only token authentication is supported", auth);
        goto fail;
    }
    if ((!token || !*token) && token_file && *token_file) {
        size_t len;
        int r = file_read_all(token_file, 4096, &token, &len);
        if (r < 0) {
            err = xasprintf("read agent token file \"%s\": %s", token_file, strerror(-r));
            token = NULL;
            goto fail;
        }
        char *t = str_trim_dup(token);
        free(token);
        token = t; /* conf_free_values frees it as the option's value */
    }
    if (!token || !*token) {
        err = xstrdup("CODER_AGENT_TOKEN or CODER_AGENT_TOKEN_FILE must be set for token auth");
        goto fail;
    }
    if (log_dir && *log_dir) {
        char *path = xasprintf("%s/coder-agent.log", log_dir);
        if (dir_make_all(log_dir, 0700) < 0 || log_setup(LOG_INFO, path) < 0) {
            err = xasprintf("open agent log \"%s\"", path);
            free(path);
            goto fail;
        }
        free(path);
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    a.loop = &loop;
    a.url = xstrdup(url);
    size_t n = strlen(a.url);
    while (n > 0 && a.url[n - 1] == '/')
        a.url[--n] = '\0';
    a.auth_header = xasprintf("Coder-Session-Token: %s", token);
    struct tls_client_opts to = {0};
    a.tls = tls_ctx_new_client(&to, &err);
    if (!a.tls) {
        uv_loop_close(&loop);
        goto fail;
    }
    a.client = http_client_new(&loop);
    uv_timer_init(&loop, &a.poll);
    uv_signal_init(&loop, &a.sigint);
    uv_signal_init(&loop, &a.sigterm);
    a.poll.data = a.sigint.data = a.sigterm.data = &a;
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    log_info("agent: starting, deployment %s", a.url);
    agent_start(&a);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "error: %s\n", err ? err : "unknown error");
out:
    for (size_t i = 0; i < a.nallowed; i++)
        free(a.allowed[i]);
    free(a.allowed);
    tls_ctx_free(a.tls);
    free(a.url);
    if (a.auth_header)
        OPENSSL_cleanse(a.auth_header, strlen(a.auth_header));
    free(a.auth_header);
    free(err);
    conf_free_values(&cmd, &res);
    return rc;
}
