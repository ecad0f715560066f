/* `coder wsproxy server`: options, the start-up order of Coder's proxy (listeners, primary
 * build info, first register, serve), and graceful shutdown. */
#include "tunnel/table.h"
#include "wsproxy.h"
#include "base/log.h"
#include "base/util.h"
#include "base/uuid.h"
#include "conf/global.h"
#include "http/headers.h"
#include "http/promserve.h"
#include "http/url.h"
#include "http/apimetrics.h"
#include "metrics/metrics.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void
on_routed(struct http_exchange *ex, void *arg)
{
    struct wsproxy *w = arg;
    api_metrics_begin(w->apim, ex);
}

static void
on_upgrade(struct http_exchange *ex, struct net_stream *st, void *arg)
{
    struct wsproxy *w = arg;
    api_metrics_upgraded(w->apim, ex, st);
}

static void
on_done(struct http_exchange *ex, void *arg)
{
    struct wsproxy *w = arg;
    api_metrics_end(w->apim, ex);
}

static void
on_closed_all(void *arg)
{
    struct wsproxy *w = arg;
    http_client_close(w->client);
    wsproxy_stats_close(w);
    uv_close((uv_handle_t *)&w->register_timer, NULL);
    uv_close((uv_handle_t *)&w->sigint, NULL);
    uv_close((uv_handle_t *)&w->sigterm, NULL);
}

static void
after_deregister(struct wsproxy *w)
{
    if (w->prom)
        http_server_shutdown(w->prom, 0, NULL, NULL);
    http_server_shutdown(w->http, 3000, on_closed_all, w);
}

void
wsproxy_stop(struct wsproxy *w, int code, const char *why)
{
    if (w->stopping)
        return;
    w->stopping = true;
    w->exit_code = code;
    if (why) {
        log_error("wsproxy: %s", why);
        w->fatal = xstrdup(why);
    }
    agent_tunnels_close(w->tunnels); /* GOAWAY: agents move to other regions */
    w->tunnels = NULL;
    wsproxy_apps_close(w);
    wsproxy_keys_close(w);
    wsproxy_stats_stop(w);
    wsproxy_deregister(w, after_deregister);
}

static void
on_signal(uv_signal_t *s, int signum)
{
    struct wsproxy *w = s->data;
    if (w->stopping)
        return;
    printf("\nInterrupt caught, gracefully exiting. Use ctrl+\\ to force quit\n");
    fflush(stdout);
    wsproxy_stop(w, 0, NULL);
}

static size_t
proxy_table(struct wsproxy_opts *o, struct conf_opt *t)
{
    size_t n = serveropts_table(&o->net, t);
    const struct conf_opt own[] = {
        {.flag = "primary-access-url",
         .env = "CODER_PRIMARY_ACCESS_URL",
         .yaml = "externalWorkspaceProxy.primaryAccessURL",
         .group = "External Workspace Proxy",
         .type = CONF_STRING,
         .dest = &o->primary_access_url,
         .help = "URL for the primary coderd server address, used to authenticate the proxy "
                 "and to report its status."},
        {.flag = "proxy-session-token",
         .env = "CODER_PROXY_SESSION_TOKEN",
         .yaml = "externalWorkspaceProxy.proxySessionToken",
         .group = "External Workspace Proxy",
         .type = CONF_STRING,
         .dest = &o->proxy_session_token,
         .help = "Authentication token for the workspace proxy to communicate with coderd."},
        {.flag = "derp-only",
         .env = "CODER_PROXY_DERP_ONLY",
         .yaml = "externalWorkspaceProxy.derpOnly",
         .group = "External Workspace Proxy",
         .type = CONF_BOOL,
         .dest = &o->derp_only,
         .help = "Run a proxy server that only supports DERP connections and does not proxy "
                 "workspace app/terminal traffic."},
        {.flag = "derp-server-enable",
         .env = "CODER_DERP_SERVER_ENABLE",
         .yaml = "networking.derp.enable",
         .group = "Networking / DERP",
         .def = "true",
         .type = CONF_BOOL,
         .dest = &o->derp_server_enable,
         .help = "Whether to enable or disable the embedded DERP relay server."},
        {.flag = "derp-server-relay-url",
         .env = "CODER_DERP_SERVER_RELAY_URL",
         .yaml = "networking.derp.relayURL",
         .group = "Networking / DERP",
         .type = CONF_STRING,
         .dest = &o->derp_server_relay_url,
         .help = "An HTTP URL that is accessible by other replicas to relay traffic. This is "
                 "only required for high-availability proxies."},
        {.flag = "block-direct-connections",
         .env = "CODER_BLOCK_DIRECT",
         .yaml = "networking.derp.blockDirect",
         .group = "Networking / DERP",
         .type = CONF_BOOL,
         .dest = &o->block_direct,
         .help = "Block peer-to-peer (aka. direct) workspace connections. All workspace "
                 "connections from the CLI will be proxied through Coder (or custom configured "
                 "DERP servers) and will never be peer-to-peer when enabled."},
        {.flag = "disable-path-apps",
         .env = "CODER_DISABLE_PATH_APPS",
         .yaml = "disablePathApps",
         .type = CONF_BOOL,
         .dest = &o->disable_path_apps,
         .help = "Disable workspace apps that are not served from subdomains. Path-based apps "
                 "can make requests to the Coder API and pose a security risk when the "
                 "workspace serves malicious JavaScript. This is recommended for security "
                 "purposes if a --wildcard-access-url is configured."},
        {.flag = "disable-owner-workspace-access",
         .env = "CODER_DISABLE_OWNER_WORKSPACE_ACCESS",
         .yaml = "disableOwnerWorkspaceAccess",
         .type = CONF_BOOL,
         .dest = &o->disable_owner_workspace_access,
         .help = "Remove the permission for the 'owner' role to have workspace execution on "
                 "all workspaces. This prevents the 'owner' from ssh, apps, and terminal access "
                 "based on the 'owner' role. They still have their user permissions to access "
                 "their own workspaces."},
        {.flag = "experiments",
         .env = "CODER_EXPERIMENTS",
         .yaml = "experiments",
         .type = CONF_STRING_ARRAY,
         .dest = &o->experiments,
         .help = "Enable one or more experiments. These are not ready for production."},
        {.flag = "docs-url",
         .env = "CODER_DOCS_URL",
         .yaml = "networking.docsURL",
         .group = "Networking",
         .def = "https://coder.com/docs",
         .type = CONF_STRING,
         .dest = &o->docs_url,
         .help = "Specifies the custom docs URL."},
        {.flag = "host-prefix-cookie",
         .env = "CODER_HOST_PREFIX_COOKIE",
         .yaml = "networking.hostPrefixCookie",
         .group = "Networking",
         .type = CONF_BOOL,
         .dest = &o->host_prefix_cookie,
         .help = "Recommended to be enabled. Enables `__Host-` prefix for cookies to guarantee "
                 "they are only set by the right domain."},
        {.flag = "pprof-enable",
         .env = "CODER_PPROF_ENABLE",
         .yaml = "introspection.pprof.enable",
         .group = "Introspection / pprof",
         .type = CONF_BOOL,
         .dest = &o->pprof_enable,
         .help = "Serve pprof metrics on the address defined by pprof address.",
         .hidden = true},
        {.flag = "pprof-address",
         .env = "CODER_PPROF_ADDRESS",
         .yaml = "introspection.pprof.address",
         .group = "Introspection / pprof",
         .def = "127.0.0.1:6060",
         .type = CONF_STRING,
         .dest = &o->pprof_address,
         .help = "The bind address to serve pprof.",
         .hidden = true},
        {.flag = "trace",
         .env = "CODER_TRACE_ENABLE",
         .yaml = "introspection.tracing.enable",
         .group = "Introspection / Tracing",
         .type = CONF_BOOL,
         .dest = &o->trace_enable,
         .help = "Whether application tracing data is collected.",
         .hidden = true},
        {.flag = "trace-logs",
         .env = "CODER_TRACE_LOGS",
         .yaml = "introspection.tracing.captureLogs",
         .group = "Introspection / Tracing",
         .type = CONF_BOOL,
         .dest = &o->trace_logs,
         .help = "Enables capturing of logs as events in traces.",
         .hidden = true},
        {.flag = "trace-honeycomb-api-key",
         .env = "CODER_TRACE_HONEYCOMB_API_KEY",
         .group = "Introspection / Tracing",
         .type = CONF_STRING,
         .dest = &o->trace_honeycomb_api_key,
         .help = "Enables trace exporting to Honeycomb.io.",
         .hidden = true},
        {.flag = "proxy-reregister-interval",
         .env = "CODER_PROXY_REREGISTER_INTERVAL",
         .group = "External Workspace Proxy",
         .def = "5s",
         .type = CONF_DURATION,
         .dest = &o->reregister_ms,
         .help = "How often the proxy re-registers with the primary; after 10 failures in a "
                 "row it exits. Three missed re-registers make the primary show it unreachable.",
         .hidden = true},
        {.flag = "proxy-app-stats-interval",
         .env = "CODER_PROXY_APP_STATS_INTERVAL",
         .group = "External Workspace Proxy",
         .def = "30s",
         .type = CONF_DURATION,
         .dest = &o->app_stats_ms,
         .help = "How often the proxy reports app usage to the primary (and at shutdown).",
         .hidden = true},
    };
    memcpy(t + n, own, sizeof(own));
    return n + ARRAY_LEN(own);
}

/* Checks the proxy-specific options. Returns 0 or -1 with *err. */
static int
validate(struct wsproxy *w, char **err)
{
    struct wsproxy_opts *o = w->o;
    if (o->app_stats_ms < 100 || o->app_stats_ms > 3600000) {
        *err = xstrdup("--proxy-app-stats-interval must be between 100ms and 1h0m0s");
        return -1;
    }
    if (o->reregister_ms < 100 || o->reregister_ms > 60000) {
        *err = xstrdup("--proxy-reregister-interval must be between 100ms and 1m0s");
        return -1;
    }
    if (o->primary_access_url == NULL || *o->primary_access_url == '\0') {
        *err = xstrdup("Missing values for the required flags: primary-access-url (set "
                       "--primary-access-url or CODER_PRIMARY_ACCESS_URL)");
        return -1;
    }
    struct url u;
    if (url_parse(o->primary_access_url, &u) < 0) {
        *err = xstrdup("'--primary-access-url' value must be http or https");
        return -1;
    }
    bool http = strcmp(u.scheme, "http") == 0 || strcmp(u.scheme, "https") == 0;
    url_free(&u);
    if (!http) {
        *err = xstrdup("'--primary-access-url' value must be http or https");
        return -1;
    }
    if (o->proxy_session_token == NULL || *o->proxy_session_token == '\0') {
        *err = xstrdup("Missing values for the required flags: proxy-session-token (set "
                       "--proxy-session-token or CODER_PROXY_SESSION_TOKEN)");
        return -1;
    }
    if (o->derp_only && !o->derp_server_enable) {
        *err = xstrdup("cannot use --derp-only with DERP server disabled");
        return -1;
    }
    const char *colon = strchr(o->proxy_session_token, ':');
    size_t idlen = colon ? (size_t)(colon - o->proxy_session_token) : 0;
    if (idlen != 36) {
        *err = xstrdup("Invalid external proxy token: the token must look like <uuid>:<secret> "
                       "as `coder wsproxy create` prints it");
        return -1;
    }
    memcpy(w->proxy_id, o->proxy_session_token, 36);
    w->proxy_id[36] = '\0';
    w->primary_url = xstrdup(o->primary_access_url);
    size_t n = strlen(w->primary_url);
    while (n > 0 && w->primary_url[n - 1] == '/')
        w->primary_url[--n] = '\0';
    return 0;
}

static int
start(struct wsproxy *w, struct global_opts *g, char **err)
{
    struct wsproxy_opts *o = w->o;
    char **extra = NULL;
    if (headers_build(&g->headers, g->header_command, &extra, err) < 0)
        return -1;
    char *tok = xasprintf("Coder-External-Proxy-Token: %s", o->proxy_session_token);
    const char *mine[] = {tok, "Content-Type: application/json", "Accept: application/json",
                          "User-Agent: coder-wsproxy/" CODER_VERSION, NULL};
    w->headers = headers_concat((char *const *)mine, (const char *const *)extra);
    free(tok);
    headers_free(extra);
    uuid_new(w->replica_id);
    if (gethostname(w->hostname, sizeof(w->hostname) - 1) < 0)
        snprintf(w->hostname, sizeof(w->hostname), "unknown");
    w->metrics = metrics_registry_new();
    metrics_process_register(w->metrics);
    w->apim = api_metrics_new(w->metrics);
    w->client = http_client_new(w->loop);
    w->tunnels = agent_tunnels_new(w->loop, NULL, NULL);
    agent_tunnels_set_limit(w->tunnels, (size_t)o->net.max_agent_tunnels);
    struct http_server_opts hopts = {.handler = wsproxy_handle,
                                     .arg = w,
                                     .on_done = on_done,
                                     .on_routed = on_routed,
                                     .on_upgrade = on_upgrade,
                                     .stream = wsproxy_apps_match,
                                     .realip = o->net.realip};
    w->http = http_server_new(w->loop, &hopts);
    uv_signal_init(w->loop, &w->sigint);
    uv_signal_init(w->loop, &w->sigterm);
    uv_timer_init(w->loop, &w->register_timer);
    w->sigint.data = w->sigterm.data = w;
    if (serveropts_listen(&o->net, w->http, err) < 0)
        return -1;
    w->access_url = xstrdup(o->net.access_url && *o->net.access_url
                                ? o->net.access_url
                                : (o->net.tls_url ? o->net.tls_url : o->net.http_url));
    if (wsproxy_apps_init(w, err) < 0)
        return -1;
    printf("View the Web UI: %s\n", w->access_url);
    fflush(stdout);
    if (o->net.prometheus_enable) {
        w->prom = promserve_start(w->loop, w->metrics, o->net.prometheus_address, err);
        if (w->prom == NULL)
            return -1;
        printf("Started Prometheus metrics endpoint at http://%s\n", o->net.prometheus_address);
        fflush(stdout);
    }
    if (wsproxy_register_first(w, err) < 0)
        return -1;
    wsproxy_register_start(w);
    wsproxy_stats_start(w, o->app_stats_ms);
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    return 0;
}

static void
wsproxy_free(struct wsproxy *w)
{
    if (w->http)
        http_server_free(w->http);
    if (w->prom)
        http_server_free(w->prom);
    api_metrics_free(w->apim);
    metrics_registry_free(w->metrics);
    headers_free(w->headers);
    wsproxy_keys_free(w);
    wsproxy_apps_fini(w);
    free(w->primary_url);
    free(w->access_url);
    free(w->fatal);
}

int
wsproxy_main(int argc, char **argv)
{
    struct wsproxy_opts o = {0};
    struct global_opts g = {0};
    struct conf_opt own[SERVEROPTS_COUNT + 32];
    size_t n = proxy_table(&o, own), nall;
    struct conf_opt *all = global_opts_append(own, n, &g, &nall);
    struct conf_cmd cmd = {.usage = "coder wsproxy server [flags]",
                           .short_desc = "Start a workspace proxy server",
                           .opts = all,
                           .nopts = nall,
                           .yaml_config = true};
    struct conf_result res = {0};
    struct wsproxy w = {0};
    w.o = &o;
    char *err = NULL;
    int rc = 1;
    if (conf_parse(&cmd, argc, argv, &res, &err) < 0)
        goto fail;
    if (conf_print_requested(&cmd, &res)) {
        rc = 0;
        goto out;
    }
    if (serveropts_validate(&o.net, &err) < 0 || validate(&w, &err) < 0 ||
        serveropts_log_setup(&o.net, g.verbose, &err) < 0) {
        serveropts_fini(&o.net); /* what validate made before the failure */
        free(w.primary_url);
        goto fail;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    w.loop = &loop;
    printf("Coder Workspace Proxy %s\n", CODER_VERSION);
    if (start(&w, &g, &err) < 0) {
        /* Close whatever was opened before failing; nothing was registered. */
        w.stopping = true;
        agent_tunnels_close(w.tunnels); /* empty: frees at once */
        w.tunnels = NULL;
        wsproxy_apps_close(&w);
        if (w.prom)
            http_server_shutdown(w.prom, 0, NULL, NULL);
        if (w.http)
            http_server_shutdown(w.http, 0, on_closed_all, &w);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        wsproxy_free(&w);
        serveropts_fini(&o.net);
        goto fail;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    rc = w.exit_code;
    if (w.fatal) {
        fprintf(stderr, "error: %s\n", w.fatal);
        rc = rc ? rc : 1;
    }
    wsproxy_free(&w);
    serveropts_fini(&o.net);
    goto out;
fail:
    fprintf(stderr, "error: %s\n", err ? err : "unknown error");
out:
    free(err);
    conf_free_values(&cmd, &res);
    free(all);
    return rc;
}
