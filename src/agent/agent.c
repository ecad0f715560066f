/* coder agent: runs in the workspace, dials out to its regions and serves the streams they
 * open (docs/TUNNEL.md). It reads its manifest (which apps it serves) from the primary, then
 * holds a tunnel to the primary, reconnecting with exponential backoff and jitter. TCP is opened
 * only to loopback ports >= 9 (port forwarding) and to the host:port pairs its apps name. */
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

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000
#define STABLE_MS 30000

struct agent {
    uv_loop_t *loop;
    char *url; /* the primary, without trailing slash */
    char *token;
    char *auth_header;
    struct tls_ctx *tls;
    struct http_client *client;
    struct tunnel_conn *tc;
    uv_timer_t retry;
    uv_signal_t sigint, sigterm;
    int64_t backoff_ms;
    int64_t connected_at; /* monotonic ms of the current tunnel's start */
    char **allowed;       /* "host:port" of the apps */
    size_t nallowed;
    bool have_manifest;
    bool stopping;
};

static void agent_connect(struct agent *a);

/* ---- reconnecting ---- */

static void
on_retry(uv_timer_t *t)
{
    agent_connect(t->data);
}

/* Schedules the next attempt: 250 ms doubling to 30 s, +-20 % jitter. */
static void
schedule_retry(struct agent *a)
{
    if (a->stopping)
        return;
    if (a->connected_at && time_mono_ms() - a->connected_at >= STABLE_MS)
        a->backoff_ms = 0; /* it held: start over */
    a->connected_at = 0;
    a->backoff_ms = a->backoff_ms ? a->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (a->backoff_ms > BACKOFF_MAX_MS)
        a->backoff_ms = BACKOFF_MAX_MS;
    uint32_t r;
    rand_bytes(&r, sizeof(r));
    int64_t jitter = (int64_t)(r % 41) - 20; /* percent */
    int64_t wait = a->backoff_ms + a->backoff_ms * jitter / 100;
    uv_timer_start(&a->retry, on_retry, (uint64_t)(wait > 0 ? wait : 1), 0);
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
    struct agent *a = arg;
    if (strcmp(method, "CONNECT") != 0) {
        tunnel_stream_respond(s, 404, NULL, 0, true);
        return;
    }
    if (!allowed(a, authority)) {
        const struct tunnel_header e[] = {
            {"coder-error", "the agent only connects to its apps and to loopback ports >= 9"}};
        tunnel_stream_respond(s, 403, e, 1, true);
        return;
    }
    tunnel_connect_stream(a->loop, s, authority);
}

static void
on_ready(struct tunnel_conn *tc, void *arg)
{
    (void)tc;
    struct agent *a = arg;
    a->connected_at = time_mono_ms();
    log_info("agent: connected to %s", a->url);
}

static void
on_close(struct tunnel_conn *tc, const char *why, void *arg)
{
    (void)tc;
    struct agent *a = arg;
    a->tc = NULL;
    if (a->stopping)
        return;
    log_warn("agent: tunnel to %s closed: %s; reconnecting", a->url, why ? why : "closed");
    schedule_retry(a);
}

static const struct tunnel_conn_cbs tunnel_cbs = {on_request, on_ready, on_close};

/* ---- the manifest ---- */

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
    a->have_manifest = true;
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
        schedule_retry(a);
        return;
    }
    json_t *m = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    take_manifest(a, m);
    json_decref(m);
    log_info("agent: manifest has %zu app target(s)", a->nallowed);
    agent_connect(a);
}

static void
agent_connect(struct agent *a)
{
    if (a->stopping)
        return;
    if (!a->have_manifest) {
        char *url = xasprintf("%s/api/v2/workspaceagents/me/manifest", a->url);
        const char *headers[] = {a->auth_header, NULL};
        struct http_client_req req = {.method = "GET", .url = url, .headers = headers};
        if (http_client_start(a->client, &req, on_manifest, a) < 0)
            schedule_retry(a);
        free(url);
        return;
    }
    const char *headers[] = {a->auth_header, NULL};
    a->tc = tunnel_dial(a->loop, a->url, headers, a->tls, &tunnel_cbs, a);
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
    uv_timer_stop(&a->retry);
    uv_close((uv_handle_t *)&a->retry, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    if (a->tc)
        tunnel_conn_close(a->tc);
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
    if (res.help) {
        char *h = conf_help(&cmd);
        fputs(h, stdout);
        free(h);
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
    uv_timer_init(&loop, &a.retry);
    uv_signal_init(&loop, &a.sigint);
    uv_signal_init(&loop, &a.sigterm);
    a.retry.data = a.sigint.data = a.sigterm.data = &a;
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    log_info("agent: starting, deployment %s", a.url);
    agent_connect(&a);
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
