/* Agents' tunnels to this proxy (docs/TUNNEL.md §2-§3). A proxy has no database: an agent
 * proves itself with a tunnel ticket the primary signed for this proxy alone, checked here with
 * the agent_tunnel keys fetched from the primary (cached; fetched again when a ticket names an
 * unknown key). After that the connection becomes a tunnel in the proxy's table. */
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "jose/jwt.h"
#include "tunnel/table.h"
#include "wsproxy.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEEWAY_S 30

/* Verifies the ticket and upgrades. retry: whether an unknown key may trigger a fetch. */
static void try_accept(struct wsproxy *w, struct http_exchange *ex, bool retry);

static void
refuse(struct http_exchange *ex, const char *why)
{
    http_reply_error(ex, 401, "Invalid tunnel ticket.", why);
}

static void
after_fetch(struct wsproxy *w, void *arg)
{
    if (w->stopping)
        http_reply_error(arg, 503, "The proxy is shutting down.", NULL);
    else
        try_accept(w, arg, false);
}

static void
try_accept(struct wsproxy *w, struct http_exchange *ex, bool retry)
{
    const char *ticket = http_request_header(&ex->req, "Coder-Tunnel-Ticket");
    const char *err = NULL;
    json_t *claims = jose_verify_hs512(ticket, wsproxy_keys_lookup,
                                       wsproxy_keys(w, WSPROXY_KEYS_AGENT_TUNNEL), NULL, 0, &err);
    if (!claims && retry && err && strcmp(err, "unknown signing key") == 0) {
        /* rotated, or not fetched yet */
        wsproxy_keys_fetch(w, WSPROXY_KEYS_AGENT_TUNNEL, after_fetch, ex);
        return;
    }
    if (!claims) {
        refuse(ex, err);
        return;
    }
    const char *aud = json_string_value(json_object_get(claims, "aud"));
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    const char *agent = json_string_value(json_object_get(claims, "sub"));
    if (!aud || strcmp(aud, w->proxy_id) != 0 || !iss || strcmp(iss, "coder") != 0 || !agent) {
        refuse(ex, "the ticket is for another region");
    } else if (jose_check_time(claims, time_now_ms() / 1000, LEEWAY_S, &err) < 0) {
        refuse(ex, err);
    } else {
        char id[37];
        snprintf(id, sizeof(id), "%s", agent);
        if (agent_tunnels_accept(w->tunnels, ex, id) == 0)
            log_info("wsproxy: agent %s tunnel up", id);
    }
    json_decref(claims);
}

void
wsproxy_tunnel_handle(struct http_exchange *ex, struct wsproxy *w)
{
    const char *detail = NULL;
    const char *bad = agent_tunnels_check_request(&ex->req, &detail);
    if (bad) {
        http_reply_error(ex, 400, bad, detail);
        return;
    }
    const char *ticket = http_request_header(&ex->req, "Coder-Tunnel-Ticket");
    if (!ticket || strlen(ticket) > 4096) {
        refuse(ex, "Send the ticket from /api/v2/workspaceagents/me/regions in "
                   "Coder-Tunnel-Ticket.");
        return;
    }
    if (w->stopping) {
        http_reply_error(ex, 503, "The proxy is shutting down.", NULL);
        return;
    }
    try_accept(w, ex, true);
}
