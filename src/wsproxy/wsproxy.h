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
    void *keys;                    /* agent_tunnel keys from the primary (tunnels.c) */
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

/* tunnels.c */
/* GET /api/v2/workspaceagents/me/tunnel: checks the agent's ticket and upgrades. */
void wsproxy_tunnel_handle(struct http_exchange *ex, struct wsproxy *w);
void wsproxy_tunnels_free(struct wsproxy *w);

/* routes.c */
void wsproxy_handle(struct http_exchange *ex, void *arg);

/* wsproxy.c */
/* Stops the proxy: deregister, drain, exit with code (and why, logged). */
void wsproxy_stop(struct wsproxy *w, int code, const char *why);
int wsproxy_main(int argc, char **argv);

#endif
