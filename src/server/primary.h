/* The primary's shared state, and what its API handlers see. Handlers run on the store thread
 * (see worker.h) with synchronous store calls; the response goes back to the loop. */
#ifndef SERVER_PRIMARY_H
#define SERVER_PRIMARY_H

#include "http/server.h"
#include "store/store.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct metrics_registry;
struct metrics_family;
struct proxyhealth;
struct worker;
struct http_client;
struct agent_tunnels;
struct tls_ctx;

struct primary_config {
    char *access_url;          /* normalised, no trailing slash */
    char *wildcard_access_url; /* "*.example.com[:port]" or "" */
    int64_t proxy_health_interval_ms;
    int64_t session_duration_ms;
    bool disable_session_expiry_refresh;
    bool secure_auth_cookie;
    char *samesite_auth_cookie;
    int64_t hsts_max_age;
    char *hsts_options;
};

struct primary {
    uv_loop_t *loop;
    struct primary_config cfg;
    struct worker *worker;
    struct http_server *http;
    struct http_server *prom;
    struct metrics_registry *metrics;
    struct proxyhealth *health;
    struct http_client *client;
    struct agent_tunnels *tunnels;       /* agents' tunnels to this region */
    struct apphost_pattern *app_pattern; /* the wildcard for subdomain apps, or NULL */
    struct tls_ctx *app_tls;             /* to https apps in workspaces (not verifying) */
    char deployment_id[37];
    bool stopping;
};

enum api_auth {
    API_AUTH_NONE,  /* public */
    API_AUTH_USER,  /* any signed-in user (session token) */
    API_AUTH_OWNER, /* signed-in user with the owner role */
    API_AUTH_PROXY, /* a workspace proxy (Coder-External-Proxy-Token) */
    API_AUTH_AGENT, /* a workspace agent (its token in Coder-Session-Token) */
};

/* One API request being served on the store thread. */
struct api_ctx {
    struct primary *p;
    struct http_exchange *ex;
    struct store *st;
    struct store_user user; /* API_AUTH_USER / OWNER */
    struct store_apikey key;
    struct store_proxy proxy; /* API_AUTH_PROXY */
    struct store_agent agent; /* API_AUTH_AGENT */
    /* Loop-side effects to run after the response (set by handlers). */
    bool health_check;      /* run the proxy health checks now */
    char registered[37];    /* a proxy replica registered: proxy id */
    char deregistered[37];  /* a proxy deregistered: proxy id */
    char tunnel_agent[37];  /* answer with the upgrade into this agent's tunnel */
    bool relay_link;        /* answer with the upgrade into the proxy's relay link */
    json_t *drop_agents;    /* agent ids whose tunnels must close (workspace deleted) */
    char forward_agent[37]; /* answer by forwarding to this agent's port forward_port */
    int forward_port;
};

typedef void (*api_fn)(struct api_ctx *c);

/* api.c */
void api_handle(struct http_exchange *ex, void *arg);
/* Replies with a JSON document (stolen: the reply owns j). */
void api_reply_json(struct api_ctx *c, int status, json_t *j);
void api_reply_error(struct api_ctx *c, int status, const char *msg, const char *detail);
/* Parses the body as a JSON object; on failure replies 400 and returns NULL. */
json_t *api_read_json(struct api_ctx *c);
bool api_user_is_owner(const struct store_user *u);
/* Coder's names (proxies, workspaces, agents): letters and digits in groups joined by single
 * hyphens, 1-32 characters. */
bool api_name_valid(const char *s);
/* A string field of j: NULL when absent or null; sets *bad when present but not a string. */
const char *api_str_field(json_t *j, const char *key, bool *bad);

/* api_users.c */
void api_users_first_get(struct api_ctx *c);
void api_users_first_post(struct api_ctx *c);
void api_users_login(struct api_ctx *c);
void api_users_logout(struct api_ctx *c);
void api_users_get(struct api_ctx *c);
void api_users_create(struct api_ctx *c);
void api_users_keys_create(struct api_ctx *c);
void api_users_authmethods(struct api_ctx *c);
/* Looks up a session token: 0 with user/key filled, or replies 401 and returns -1. */
int api_auth_user(struct api_ctx *c);
/* The same for a token the caller read (taken over: freed here; NULL = none). */
int api_auth_user_token(struct api_ctx *c, char *token);
/* Why a session check failed: the answer api_reply_auth_failure gives. */
struct api_auth_failure {
    int status;
    char *message;
    char *detail;
};
/* Checks a session token (taken over) without answering: 0 with c->user and c->key filled, or
 * -1 with *why, for callers to which a signed-out user may still be welcome (public apps). */
int api_auth_check(struct api_ctx *c, char *token, struct api_auth_failure *why);
void api_reply_auth_failure(struct api_ctx *c, struct api_auth_failure *why); /* and fini */
void api_auth_failure_fini(struct api_auth_failure *why);
/* Mints an API key for a user (scope "all" or "application_connect"); returns the token or NULL
 * after replying 500. */
char *api_apikey_mint(struct api_ctx *c, const char *user_id, const char *login_type,
                      int64_t lifetime_ms, const char *token_name, const char *scope);
/* The session token of a request: cookie, query parameter or Coder-Session-Token header. */
char *api_request_token(const struct http_request *r);
/* A user by UUID (any case) or username: 0, STORE_ENOTFOUND or another store error. */
int api_user_by_name_or_id(struct store *st, const char *s, struct store_user *out);
/* Resolves the {user} route parameter ("me", a username or a UUID); members may name only
 * themselves. 0 with out filled, or replies (404) and returns -1. */
int api_resolve_user(struct api_ctx *c, struct store_user *out);

/* api_proxies.c */
void api_proxies_create(struct api_ctx *c);
void api_proxies_list(struct api_ctx *c);
void api_proxies_get(struct api_ctx *c);
void api_proxies_patch(struct api_ctx *c);
void api_proxies_delete(struct api_ctx *c);
void api_regions(struct api_ctx *c);
void api_proxies_register(struct api_ctx *c);
void api_proxies_deregister(struct api_ctx *c);
void api_proxies_crypto_keys(struct api_ctx *c);
void api_proxies_issue_app_token(struct api_ctx *c);
void api_proxies_relay(struct api_ctx *c);
void api_apps_auth_redirect(struct api_ctx *c);
void api_proxies_app_stats(struct api_ctx *c);
int api_auth_proxy(struct api_ctx *c);

/* api_workspaces.c */
void api_workspaces_create(struct api_ctx *c);
void api_workspaces_list(struct api_ctx *c);
void api_workspaces_get(struct api_ctx *c);
void api_workspaces_by_name(struct api_ctx *c);
void api_workspaces_build(struct api_ctx *c);
void api_agents_get(struct api_ctx *c);
void api_agents_manifest(struct api_ctx *c);
void api_agents_tunnel(struct api_ctx *c);
void api_agents_regions(struct api_ctx *c);
/* The newest key of a crypto-key feature in use: its secret (bytes, at most 64) and sequence.
 * Returns 0 or -1. */
int api_feature_key(struct api_ctx *c, const char *feature, uint8_t key[64], size_t *len,
                    int64_t *seq);
void api_agents_port_forward(struct api_ctx *c);
/* Looks up the agent token: 0 with c->agent filled, or replies 401 and returns -1. */
int api_auth_agent(struct api_ctx *c);

#endif
