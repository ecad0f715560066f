/* Workspace apps at the primary, and the rule for who may use which app; see apps.c. */
#ifndef SERVER_APPS_H
#define SERVER_APPS_H

#include "appproxy/request.h"
#include "primary.h"

/* The http server's stream decision (arg: the primary): path-app requests, and requests whose
 * Host names an app on the wildcard, are relayed as they arrive. */
bool apps_stream_match(struct http_exchange *ex, void *arg);
/* Serves an app request (apps_stream_match said yes). */
void apps_handle(struct http_exchange *ex, struct primary *p);

/* What apps_authorize grants. */
struct app_grant {
    char agent_id[37];
    char workspace_id[37];
    char *app_url; /* the app's URL, or "http[s]://127.0.0.1:PORT" for a port */
};

/* On the store thread: may the caller (c->user, when signed_in) use the app named by user (a
 * name or id), workspace, agent (name or id; "" for the only one) and slug? For
 * APP_ACCESS_TERMINAL only agent (its id) counts: the agent itself, its workspace owner's, with
 * an empty app_url. Returns 0 with g
 * filled (release with app_grant_fini), or the status to refuse with: 401 when signed out and
 * the app is not public, 404 when it does not exist or is not theirs (a stranger learns
 * nothing), 500 on a store error. Path apps are the owner's alone (Coder without
 * --dangerous-allow-path-app-sharing); subdomain apps follow their sharing level; ports, on
 * subdomains only, are the owner's. */
int apps_authorize(struct api_ctx *c, bool signed_in, enum app_access access, const char *user,
                   const char *workspace, const char *agent, const char *slug, struct app_grant *g);
void app_grant_fini(struct app_grant *g);

/* 303 to the primary's auth-redirect, which sends a browser signed in at the primary back to
 * app_url (the app as the user opened it) with an encrypted key (CODER-COMPAT §5.3). */
void apps_reply_auth_redirect(struct api_ctx *c, const char *app_url);

/* Upgrades ex (an authorized port-forward request) into a byte stream to 127.0.0.1:port in the
 * agent's workspace, once the agent connected; else answers 502 with the agent's reason. */
void apps_port_forward(struct primary *p, struct http_exchange *ex, const char *agent_id, int port);

#endif
