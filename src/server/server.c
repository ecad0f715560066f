/* `coder server`: the primary. Start-up, the option table, and graceful shutdown. */
#include "server.h"
#include "base/log.h"
#include "base/timeutil.h"
#include <openssl/crypto.h>
#include "base/crypto.h"
#include "base/util.h"
#include "base/uuid.h"
#include "conf/global.h"
#include "http/client.h"
#include "http/promserve.h"
#include "http/serveropts.h"
#include "http/apimetrics.h"
#include "metrics/metrics.h"
#include "primary.h"
#include "cryptokeys.h"
#include "net/tls.h"
#include "proxyhealth.h"
#include "apphost/apphost.h"
#include "apps.h"
#include "tunnel/table.h"
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

struct server_opts {
    struct serveropts net;
    int64_t proxy_health_interval;
    int64_t crypto_key_rotation;
    int64_t session_duration;
    bool disable_session_expiry_refresh;
    char *postgres_url;
    char *cache_dir;
};

struct server_run {
    struct primary p;
    struct api_metrics *apim;
    struct cryptokeys *keys;
    uv_signal_t sigint, sigterm;
    int exit_code;
    bool started; /* start-up finished: a stop is a shutdown, not a failed start */
};

static void
on_routed(struct http_exchange *ex, void *arg)
{
    struct server_run *r = arg;
    api_metrics_begin(r->apim, ex);
}

static void
on_upgrade(struct http_exchange *ex, struct net_stream *st, void *arg)
{
    struct server_run *r = arg;
    api_metrics_upgraded(r->apim, ex, st);
}

static void
on_done(struct http_exchange *ex, void *arg)
{
    struct server_run *r = arg;
    api_metrics_end(r->apim, ex);
}

static bool
stream_match(struct http_exchange *ex, void *arg)
{
    struct server_run *r = arg;
    return apps_stream_match(ex, &r->p);
}

static void
handle(struct http_exchange *ex, void *arg)
{
    struct server_run *r = arg;
    api_handle(ex, &r->p);
}

/* Loads or creates the deployment's identity in the store (store thread, before start). */
static int
ensure_site_config(struct store *st, char deployment_id[37], char **err)
{
    char *v = NULL;
    const char *keys[] = {"deployment_id", "default_organization_id"};
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        int rc = store_config_get(st, keys[i], &v);
        if (rc == STORE_ENOTFOUND) {
            char id[37];
            uuid_new(id);
            if (store_config_set(st, keys[i], id) < 0) {
                *err = xstrdup("write site configuration: database error");
                return -1;
            }
            v = xstrdup(id);
        } else if (rc < 0) {
            *err = xstrdup("read site configuration: database error");
            return -1;
        }
        if (i == 0)
            snprintf(deployment_id, 37, "%s", v);
        free(v);
        v = NULL;
    }
    return 0;
}

static void
on_http_closed(void *arg)
{
    struct server_run *r = arg;
    struct primary *p = &r->p;
    http_client_close(p->client);
    cryptokeys_stop(r->keys);
    r->keys = NULL;
    if (p->worker) /* NULL when start-up failed before the store was opened */
        worker_stop(p->worker);
    if (p->health)
        proxyhealth_stop(p->health);
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    if (r->started)
        log_info("server: gracefully shut down API server");
}

static void
on_signal(uv_signal_t *s, int signum)
{
    struct server_run *r = s->data;
    struct primary *p = &r->p;
    if (p->stopping) {
        return;
    }
    p->stopping = true;
    printf("\nInterrupt caught, gracefully exiting. Use ctrl+\\ to force quit\n");
    printf("Shutting down API server...\n");
    fflush(stdout);
    agent_tunnels_close(p->tunnels); /* GOAWAY: agents go to other regions or retry */
    p->tunnels = NULL;
    if (p->prom)
        http_server_shutdown(p->prom, 0, NULL, NULL);
    http_server_shutdown(p->http, 3000, on_http_closed, r);
}

/* ---- agents' connection state, as this region's tunnels come and go ---- */

struct conn_job {
    char agent_id[37];
    int64_t connected_at, disconnected_at;
};

static void
conn_job_run(struct store *st, void *arg)
{
    struct conn_job *j = arg;
    if (store_agent_set_connection(st, j->agent_id, j->connected_at, j->disconnected_at,
                                   time_now_ms()) < 0)
        log_warn("server: could not record the connection state of agent %s", j->agent_id);
}

static void
on_agent_tunnel(void *arg, const char *agent_id, bool up)
{
    struct primary *p = arg;
    if (p->stopping)
        return; /* the worker is going away; a restart starts with no tunnels anyway */
    struct conn_job *j = xcalloc(1, sizeof(*j));
    snprintf(j->agent_id, sizeof(j->agent_id), "%s", agent_id);
    int64_t now = time_now_ms();
    j->connected_at = up ? now : 0;
    j->disconnected_at = up ? 0 : now;
    worker_submit(p->worker, conn_job_run, free, j);
}

static int
server_start(struct server_run *r, struct server_opts *o, const char *config_dir, char **err)
{
    struct primary *p = &r->p;
    uv_signal_init(p->loop, &r->sigint);
    uv_signal_init(p->loop, &r->sigterm);
    r->sigint.data = r->sigterm.data = r;
    if (o->postgres_url && *o->postgres_url) {
        *err = xstrdup("--postgres-url: PostgreSQL is not supported by this build yet; unset it "
                       "to use the embedded SQLite store");
        return -1;
    }
    /* Listen first, as Coder does: a port in use is the first thing an operator hears about,
     * before the store is opened or migrated. The loop does not run until start-up is over, so
     * no request arrives before the rest is ready. */
    struct http_server_opts hopts = {.handler = handle,
                                     .arg = r,
                                     .on_done = on_done,
                                     .on_routed = on_routed,
                                     .on_upgrade = on_upgrade,
                                     .stream = stream_match,
                                     .realip = o->net.realip};
    p->http = http_server_new(p->loop, &hopts);
    if (serveropts_listen(&o->net, p->http, err) < 0)
        return -1;
    if (dir_make_all(config_dir, 0750) < 0) {
        *err = xasprintf("create config directory \"%s\": %s", config_dir, strerror(errno));
        return -1;
    }
    char *dbpath = xasprintf("%s/coder.db", config_dir);
    struct store *st = store_open_sqlite(dbpath, err);
    free(dbpath);
    if (st == NULL)
        return -1;
    if (ensure_site_config(st, p->deployment_id, err) < 0) {
        store_close(st);
        return -1;
    }
    if (cryptokeys_rotate(st, time_now_ms(), o->crypto_key_rotation) < 0) {
        *err = xstrdup("set up crypto keys in the database");
        store_close(st);
        return -1;
    }
    /* Tunnels do not survive a restart (or a crash): agents will dial again. */
    store_agents_disconnect_all(st, time_now_ms());
    p->worker = worker_start(p->loop, st);
    p->metrics = metrics_registry_new();
    metrics_process_register(p->metrics);
    r->apim = api_metrics_new(p->metrics);
    p->client = http_client_new(p->loop);
    p->health = proxyhealth_new(p);
    r->keys = cryptokeys_start(p, o->crypto_key_rotation);
    p->tunnels = agent_tunnels_new(p->loop, on_agent_tunnel, p);
    agent_tunnels_set_limit(p->tunnels, (size_t)o->net.max_agent_tunnels);
    p->cfg.access_url = xstrdup(o->net.access_url && *o->net.access_url
                                    ? o->net.access_url
                                    : (o->net.tls_url ? o->net.tls_url : o->net.http_url));
    p->cfg.wildcard_access_url =
        xstrdup(o->net.wildcard_access_url ? o->net.wildcard_access_url : "");
    str_lower(p->cfg.wildcard_access_url);
    struct tls_client_opts app_to = {.no_verify = true};
    p->app_tls = tls_ctx_new_client(&app_to, err);
    if (!p->app_tls)
        return -1;
    if (p->cfg.wildcard_access_url[0]) {
        p->app_pattern = xcalloc(1, sizeof(*p->app_pattern));
        if (apphost_pattern_compile(p->cfg.wildcard_access_url, p->app_pattern, NULL) < 0) {
            free(p->app_pattern); /* validated already; an app host simply never matches */
            p->app_pattern = NULL;
        }
    }
    p->cfg.proxy_health_interval_ms = o->proxy_health_interval;
    p->cfg.session_duration_ms = o->session_duration;
    p->cfg.disable_session_expiry_refresh = o->disable_session_expiry_refresh;
    p->cfg.secure_auth_cookie = o->net.secure_auth_cookie;
    p->cfg.samesite_auth_cookie = xstrdup(o->net.samesite_auth_cookie);
    p->cfg.hsts_max_age = o->net.hsts_max_age;
    p->cfg.hsts_options = xstrdup(o->net.hsts_header_options ? o->net.hsts_header_options : "");
    if (o->net.prometheus_enable) {
        p->prom = promserve_start(p->loop, p->metrics, o->net.prometheus_address, err);
        if (p->prom == NULL)
            return -1;
        printf("Started Prometheus metrics endpoint at http://%s\n", o->net.prometheus_address);
    }
    /* Let `coder login` on this machine find the deployment. */
    char *urlfile = xasprintf("%s/url", config_dir);
    file_write_atomic(urlfile, p->cfg.access_url, strlen(p->cfg.access_url), 0600);
    free(urlfile);
    proxyhealth_start(p->health);
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    printf("\nView the Web UI: %s\n\n==> Logs will stream in below (press ctrl+c to gracefully "
           "exit):\n",
           p->cfg.access_url);
    fflush(stdout);
    r->started = true;
    return 0;
}

static void
primary_free(struct server_run *r)
{
    struct primary *p = &r->p;
    if (p->http)
        http_server_free(p->http);
    if (p->prom)
        http_server_free(p->prom);
    api_metrics_free(r->apim);
    metrics_registry_free(p->metrics);
    free(p->cfg.access_url);
    free(p->cfg.wildcard_access_url);
    if (p->app_tls)
        tls_ctx_free(p->app_tls);
    p->app_tls = NULL;
    if (p->app_pattern) {
        apphost_pattern_free(p->app_pattern);
        free(p->app_pattern);
    }
    free(p->cfg.samesite_auth_cookie);
    free(p->cfg.hsts_options);
}

int
server_main(int argc, char **argv)
{
    struct server_opts o = {0};
    struct global_opts g = {0};
    struct conf_opt own[SERVEROPTS_COUNT + 16];
    size_t n = serveropts_table(&o.net, own);
    const struct conf_opt extra[] = {
        {.flag = "proxy-health-interval",
         .env = "CODER_PROXY_HEALTH_INTERVAL",
         .yaml = "networking.http.proxyHealthInterval",
         .group = "Networking / HTTP",
         .def = "1m0s",
         .type = CONF_DURATION,
         .dest = &o.proxy_health_interval,
         .help = "The interval in which coderd should be checking the status of workspace "
                 "proxies."},
        {.flag = "crypto-key-rotation-interval",
         .env = "CODER_CRYPTO_KEY_ROTATION_INTERVAL",
         .group = "Networking / HTTP",
         .def = "720h0m0s",
         .type = CONF_DURATION,
         .dest = &o.crypto_key_rotation,
         .help = "How long a signing or encryption key is used before a new one replaces it.",
         .hidden = true},
        {.flag = "session-duration",
         .env = "CODER_SESSION_DURATION",
         .yaml = "networking.http.sessionDuration",
         .group = "Networking / HTTP",
         .def = "24h0m0s",
         .type = CONF_DURATION,
         .dest = &o.session_duration,
         .help = "The token expiry duration for browser sessions. Sessions may last longer if "
                 "they are actively making requests, but this functionality can be disabled via "
                 "--disable-session-expiry-refresh."},
        {.flag = "disable-session-expiry-refresh",
         .env = "CODER_DISABLE_SESSION_EXPIRY_REFRESH",
         .yaml = "networking.http.disableSessionExpiryRefresh",
         .group = "Networking / HTTP",
         .type = CONF_BOOL,
         .dest = &o.disable_session_expiry_refresh,
         .help = "Disable automatic session expiry bumping due to activity."},
        {.flag = "postgres-url",
         .env = "CODER_PG_CONNECTION_URL",
         .yaml = NULL,
         .type = CONF_STRING,
         .dest = &o.postgres_url,
         .help = "URL of a PostgreSQL database. If empty, the embedded SQLite store in the "
                 "config directory is used."},
        {.flag = "cache-dir",
         .env = "CODER_CACHE_DIRECTORY",
         .yaml = "cacheDir",
         .def = "~/.cache/coder",
         .type = CONF_STRING,
         .dest = &o.cache_dir,
         .help = "The directory to cache temporary files."},
    };
    memcpy(own + n, extra, sizeof(extra));
    n += ARRAY_LEN(extra);
    size_t nall;
    struct conf_opt *all = global_opts_append(own, n, &g, &nall);
    struct conf_cmd cmd = {.usage = "coder server [flags]",
                           .short_desc = "Start a Coder server",
                           .opts = all,
                           .nopts = nall,
                           .yaml_config = true};
    struct conf_result res = {0};
    char *err = NULL;
    int rc = 1;
    struct server_run *r = xcalloc(1, sizeof(*r));
    if (conf_parse(&cmd, argc, argv, &res, &err) < 0)
        goto fail;
    if (conf_print_requested(&cmd, &res)) {
        rc = 0;
        goto out;
    }
    if (serveropts_validate(&o.net, &err) < 0 ||
        serveropts_log_setup(&o.net, g.verbose, &err) < 0) {
        serveropts_fini(&o.net); /* what validate made before the failure */
        goto fail;
    }
    if (o.crypto_key_rotation < 1000) {
        err = xstrdup("--crypto-key-rotation-interval must be at least 1s");
        serveropts_fini(&o.net);
        goto fail;
    }
    if (o.proxy_health_interval < 100) {
        err = xstrdup("--proxy-health-interval must be at least 100ms");
        serveropts_fini(&o.net);
        goto fail;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    r->p.loop = &loop;
    char *dir = global_config_dir(&g);
    int started = server_start(r, &o, dir, &err);
    free(dir);
    if (started < 0) {
        /* Closing what was opened needs the loop: stop like a signal would. */
        r->p.stopping = true;
        agent_tunnels_close(r->p.tunnels); /* none are held yet: frees the table */
        r->p.tunnels = NULL;
        if (r->p.http) {
            if (r->p.prom)
                http_server_shutdown(r->p.prom, 0, NULL, NULL);
            http_server_shutdown(r->p.http, 0, on_http_closed, r);
        } else {
            uv_close((uv_handle_t *)&r->sigint, NULL);
            uv_close((uv_handle_t *)&r->sigterm, NULL);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        primary_free(r);
        serveropts_fini(&o.net);
        goto fail;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    primary_free(r);
    serveropts_fini(&o.net);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "error: %s\n", err ? err : "unknown error");
out:
    free(err);
    conf_free_values(&cmd, &res);
    free(all);
    free(r);
    return rc;
}
