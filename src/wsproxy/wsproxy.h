/* `coder wsproxy server`: a workspace proxy. Holds no database; registers with the primary
 * with its token, re-registers every 5 s, deregisters on shutdown. */
#ifndef WSPROXY_WSPROXY_H
#define WSPROXY_WSPROXY_H

#include "http/client.h"
#include "http/server.h"
#include "http/serveropts.h"

#include <stdbool.h>
#include <uv.h>

struct metrics_registry;
struct api_metrics;
struct apphost_pattern;
struct tunnel_conn;
struct tls_ctx;
struct relay_link;
struct wsproxy_stats;

/* The crypto-key features a proxy checks with (keys.c). */
enum wsproxy_keys {
    WSPROXY_KEYS_AGENT_TUNNEL, /* tunnel tickets */
    WSPROXY_KEYS_APPS_TOKEN,   /* signed app tokens (JWS) */
    WSPROXY_KEYS_APPS_API_KEY, /* API keys handed over by auth-redirect (JWE) */
    WSPROXY_KEYS_N,
};
struct wsproxy_keycache;

struct wsproxy_opts {
    struct serveropts net;
    char *primary_access_url;
    char *proxy_session_token;
    bool derp_only;
    bool derp_server_enable;
    char *derp_server_relay_url;
    bool disable_path_apps;
    bool disable_owner_workspace_access;
    struct conf_strv experiments;
    char *docs_url;
    bool host_prefix_cookie;
    bool block_direct;
    bool pprof_enable;
    char *pprof_address;
    bool trace_enable;
    bool trace_logs;
    char *trace_honeycomb_api_key;
    int64_t reregister_ms; /* hidden; 5 s as Coder's, shorter in tests */
    int64_t app_stats_ms;  /* hidden; 30 s as Coder's, shorter in tests */
};

struct wsproxy {
    uv_loop_t *loop;
    struct wsproxy_opts *o;
    char *primary_url; /* without trailing slash */
    char *access_url;  /* this proxy's public URL, without trailing slash */
    char **headers;    /* for every request to the primary: token + --header ones */
    char replica_id[37];
    char hostname[256];
    struct http_client *client;
    struct http_server *http;
    struct http_server *prom;
    struct metrics_registry *metrics;
    struct api_metrics *apim;
    uv_timer_t register_timer;
    uv_signal_t sigint, sigterm;
    int failures;     /* consecutive failed re-registrations */
    bool registering; /* a re-registration is in flight */
    bool stopping;
    int exit_code;
    char *fatal; /* why the proxy stops on its own */
    int64_t region_id;
    char proxy_id[37];             /* from the token, "<id>:<secret>" */
    struct agent_tunnels *tunnels; /* agents' tunnels to this proxy */
    struct wsproxy_keycache *keys[WSPROXY_KEYS_N];
    struct apphost_pattern *app_pattern; /* --wildcard-access-url compiled, or NULL */
    char *own_host;                      /* the access URL's host[:port] */
    struct tls_ctx *tls;                 /* for the relay link to an https primary */
    struct tls_ctx *app_tls;             /* to https apps in workspaces (not verifying) */
    struct relay_link *link;             /* the relay link to the primary (apps.c) */
    struct wsproxy_stats *stats;         /* app usage waiting to be reported (stats.c) */
    struct jose_cache *app_tokens;       /* signed app tokens already verified (apps.c) */
};

/* register.c */
/* Checks the primary's build info, then registers once, blocking (start-up). Returns 0 or -1
 * with *err set to one line. */
int wsproxy_register_first(struct wsproxy *w, char **err);
/* Starts the re-registration timer (every 5 s unless the hidden option says otherwise). */
void wsproxy_register_start(struct wsproxy *w);
/* Stops it and deregisters (asynchronously); done runs when the primary answered or failed. */
void wsproxy_deregister(struct wsproxy *w, void (*done)(struct wsproxy *w));
/* Builds the common request to the primary (method, path, JSON body or NULL). */
void wsproxy_primary_req(struct wsproxy *w, struct http_client_req *req, const char *method,
                         char *url, const char *body);

/* keys.c */
typedef void (*wsproxy_keys_fn)(struct wsproxy *w, void *arg);
/* The cache of a feature's keys, for wsproxy_keys_lookup (a jose_key_fn). */
struct wsproxy_keycache *wsproxy_keys(struct wsproxy *w, enum wsproxy_keys feature);
int wsproxy_keys_lookup(const char *kid, uint8_t *key, size_t *len, void *arg);
/* Fetches the feature's keys from the primary again; fn(w, arg) runs once it answered or
 * failed (callers then look up once more, and give up on a second miss). */
void wsproxy_keys_fetch(struct wsproxy *w, enum wsproxy_keys feature, wsproxy_keys_fn fn,
                        void *arg);
/* At shutdown (loop still running): closes the fetch-slot timers; waiters answer now. */
void wsproxy_keys_close(struct wsproxy *w);
void wsproxy_keys_free(struct wsproxy *w);

/* tunnels.c */
/* GET /api/v2/workspaceagents/me/tunnel: checks the agent's ticket and upgrades. */
void wsproxy_tunnel_handle(struct http_exchange *ex, struct wsproxy *w);

/* apps.c */
/* The http server's stream decision: app requests are relayed as they arrive. */
bool wsproxy_apps_match(struct http_exchange *ex, void *arg);
/* Serves an app request: signed app token (cookie, else from the primary with the user's
 * session), then the agent's tunnel here, else the relay link through the primary. */
void wsproxy_apps_handle(struct http_exchange *ex, struct wsproxy *w);
/* GET /api/v2/workspaceagents/{id}/port-forward?port=N (Upgrade: coder-tcp, docs/TUNNEL.md
 * §8): the agent's owner only, checked with a terminal token from the primary (remembered for
 * its minute per session and agent). */
void wsproxy_port_forward(struct http_exchange *ex, struct wsproxy *w);
/* Sets up what apps need (the wildcard); 0 or -1 with *err. */
int wsproxy_apps_init(struct wsproxy *w, char **err);
/* At shutdown: closes the relay link; requests waiting for it get 503. */
void wsproxy_apps_close(struct wsproxy *w);
/* Frees what apps hold (after the loop ended). */
void wsproxy_apps_fini(struct wsproxy *w);

/* routes.c */
void wsproxy_handle(struct http_exchange *ex, void *arg);

/* stats.c */
void wsproxy_stats_start(struct wsproxy *w, int64_t interval_ms);
/* Counts one relayed app request (ids are UUIDs; method "path", "subdomain" or "terminal"). */
void wsproxy_stats_record(struct wsproxy *w, const char *user_id, const char *workspace_id,
                          const char *agent_id, const char *method, const char *slug);
/* At shutdown: stops the timer and sends what is pending. */
void wsproxy_stats_stop(struct wsproxy *w);
/* Closes the timer; the collector is freed once libuv let go of it. */
void wsproxy_stats_close(struct wsproxy *w);

/* wsproxy.c */
/* Stops the proxy: deregister, drain, exit with code (and why, logged). */
void wsproxy_stop(struct wsproxy *w, int code, const char *why);
int wsproxy_main(int argc, char **argv);

#endif
