/* One HTTP exchange relayed to a workspace app (CODER-COMPAT §5.4), by the primary and by
 * proxies alike: HTTP/1.1 to the app over a CONNECT stream, hop-by-hop headers and Coder's
 * cookies and session header stripped, X-Forwarded-For/-Proto/-Host set from the connection
 * (never copied from the client), the app's CORS headers dropped, WebSocket and other upgrades
 * switched only after the app's real 101. Loop thread only. */
#ifndef APPPROXY_RELAY_H
#define APPPROXY_RELAY_H

#include "http/server.h"

struct tunnel;
struct tls_ctx;

/* Relays ex (a streaming exchange whose body has not been read) to target ("host:port" in the
 * workspace) with rest (path and query) as the request target. t is the agent's own tunnel
 * (relay_agent_id NULL) or a relay link to the primary (relay_agent_id names the agent, sent as
 * coder-agent-id). tls: the app speaks HTTPS (a client context, normally not verifying: the
 * app's certificate is its own business inside the workspace), or NULL. Answers ex in every
 * case: the app's response, or a 502 page. */
void app_relay(struct http_exchange *ex, struct tunnel *t, const char *relay_agent_id,
               const char *target, const char *rest, struct tls_ctx *tls);

/* The request target an app at a URL with path app_path sees for rest: the two joined with one
 * slash, as Coder's reverse proxy does ("/jupyter/" + "/tree?x" -> "/jupyter/tree?x"). */
char *app_join_path(const char *app_path, const char *rest);

/* Checks a port-forward request (docs/TUNNEL.md §8: Upgrade: coder-tcp, ?port=9..65535) the
 * same at every region. Returns the port, or -1 with the message and detail of a 400. */
int app_port_forward_port(const struct http_request *req, const char **msg, const char **detail);

/* Upgrades ex (an authorized port-forward request, docs/TUNNEL.md §8) into a byte stream to
 * 127.0.0.1:port in the workspace once the agent connected (101 Upgrade: coder-tcp); else
 * answers 502 with the agent's reason. t and relay_agent_id as for app_relay. */
void app_port_forward(struct http_exchange *ex, struct tunnel *t, const char *relay_agent_id,
                      int port);

/* An error for the user: an HTML page for a browser (Accept: text/html), else Coder's JSON. */
void app_fail_page(struct http_exchange *ex, int status, const char *title, const char *detail);

#endif
