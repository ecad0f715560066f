/* Workspace apps served by the primary itself (path apps); see apps.c. */
#ifndef SERVER_APPS_H
#define SERVER_APPS_H

#include "primary.h"

/* The http server's stream decision (arg: the primary): path-app requests, and requests whose
 * Host names an app on the wildcard, are relayed as they arrive. */
bool apps_stream_match(struct http_exchange *ex, void *arg);
/* Serves a request for /@user/workspace[.agent]/apps/slug/... */
void apps_handle(struct http_exchange *ex, struct primary *p);
/* Upgrades ex (an authorized port-forward request) into a byte stream to 127.0.0.1:port in the
 * agent's workspace, once the agent connected; else answers 502 with the agent's reason. */
void apps_port_forward(struct primary *p, struct http_exchange *ex, const char *agent_id, int port);

#endif
