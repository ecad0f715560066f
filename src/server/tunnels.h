/* Agent tunnels held by the primary as a region; see tunnels.c. Loop thread only. */
#ifndef SERVER_TUNNELS_H
#define SERVER_TUNNELS_H

#include "primary.h"

#include <stddef.h>

struct tunnel_conn;
struct agent_tunnels;

struct agent_tunnels *agent_tunnels_new(struct primary *p);
/* Upgrades ex (an authenticated agent's tunnel request) into that agent's tunnel, replacing
 * any it held. Returns 0, or -1 after answering ex with an error. */
int agent_tunnels_accept(struct agent_tunnels *at, struct http_exchange *ex, const char *agent_id);
/* The agent's live tunnel, or NULL. */
struct tunnel_conn *agent_tunnels_get(struct agent_tunnels *at, const char *agent_id);
size_t agent_tunnels_count(const struct agent_tunnels *at);
/* Closes the agent's tunnel, if held (its workspace was deleted). */
void agent_tunnels_drop(struct agent_tunnels *at, const char *agent_id);
/* Closes every tunnel (GOAWAY); the table frees itself once they are gone. */
void agent_tunnels_close(struct agent_tunnels *at);

#endif
