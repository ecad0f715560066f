/* Agent tunnels held by a region (the primary or a proxy); see table.c. Loop thread only. */
#ifndef TUNNEL_TABLE_H
#define TUNNEL_TABLE_H

#include "http/server.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct tunnel_conn;
struct agent_tunnels;

/* Called when an agent's tunnel comes up or goes down (not for one replaced by a newer one). */
typedef void (*agent_tunnels_event_fn)(void *arg, const char *agent_id, bool up);

/* Checks that r asks for a version-1 coder-tunnel upgrade. Returns NULL, or the message of a
 * 400 answer with *detail. */
const char *agent_tunnels_check_request(const struct http_request *r, const char **detail);

struct agent_tunnels *agent_tunnels_new(uv_loop_t *loop, agent_tunnels_event_fn event, void *arg);
/* Upgrades ex (an authenticated agent's tunnel request) into that agent's tunnel, replacing
 * any it held. Returns 0, or -1 after answering ex with an error. */
int agent_tunnels_accept(struct agent_tunnels *at, struct http_exchange *ex, const char *agent_id);
/* Upgrades ex (an authenticated proxy's GET /api/v2/workspaceproxies/me/relay) into a relay
 * link (docs/TUNNEL.md §1, §5): the proxy opens CONNECT streams naming an agent in
 * coder-agent-id, each spliced onto that agent's tunnel here (404 when there is none). Returns
 * 0, or -1 after answering ex with an error. */
int agent_tunnels_accept_relay(struct agent_tunnels *at, struct http_exchange *ex,
                               const char *proxy_id);
/* The agent's live tunnel, or NULL. */
struct tunnel_conn *agent_tunnels_get(struct agent_tunnels *at, const char *agent_id);
size_t agent_tunnels_count(const struct agent_tunnels *at);
/* At most limit agent tunnels (0 = no limit): one more is refused with 429 before the upgrade;
 * an agent replacing its own tunnel always may. */
void agent_tunnels_set_limit(struct agent_tunnels *at, size_t limit);
/* Closes the agent's tunnel, if held (its workspace was deleted). */
void agent_tunnels_drop(struct agent_tunnels *at, const char *agent_id);
/* Closes every tunnel (GOAWAY); the table frees itself once they are gone. */
void agent_tunnels_close(struct agent_tunnels *at);

#endif
