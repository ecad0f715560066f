/* The agent tunnels a region holds (docs/TUNNEL.md): accepted from the upgrade of
 * GET /api/v2/workspaceagents/me/tunnel, one per agent (a new one replaces the old), kept in a
 * table by agent id for the app router; the owner hears of each agent coming and going. Loop
 * thread only. */
#include "tunnel/table.h"
#include "base/log.h"
#include "base/util.h"
#include "tunnel/conn.h"

#include <stdlib.h>
#include <string.h>

struct held {
    struct agent_tunnels *at;
    char agent_id[37];
    struct tunnel_conn *tc;
    bool listed; /* in the table (not yet replaced or closed) */
    struct held *prev, *next;
};

struct agent_tunnels {
    uv_loop_t *loop;
    agent_tunnels_event_fn event;
    void *arg;
    struct held *list;
    size_t n;
    bool closing;
};

const char *
agent_tunnels_check_request(const struct http_request *r, const char **detail)
{
    const char *up = http_request_header(r, "Upgrade");
    const char *version = http_request_header(r, "Coder-Tunnel-Version");
    if (!r->upgrade || !up || !str_eq_ci(up, "coder-tunnel")) {
        *detail = "Send Connection: Upgrade and Upgrade: coder-tunnel.";
        return "Expected an upgrade to coder-tunnel.";
    }
    if (!version || strcmp(version, "1") != 0) {
        *detail = "This region speaks Coder-Tunnel-Version 1.";
        return "Unsupported tunnel version.";
    }
    return NULL;
}

struct agent_tunnels *
agent_tunnels_new(uv_loop_t *loop, agent_tunnels_event_fn event, void *arg)
{
    struct agent_tunnels *at = xcalloc(1, sizeof(*at));
    at->loop = loop;
    at->event = event;
    at->arg = arg;
    return at;
}

static void
record(struct agent_tunnels *at, const char *agent_id, bool up)
{
    if (at->event && !at->closing)
        at->event(at->arg, agent_id, up);
}

/* ---- the table ---- */

static struct held *
find(struct agent_tunnels *at, const char *agent_id)
{
    for (struct held *h = at->list; h; h = h->next) {
        if (h->listed && strcmp(h->agent_id, agent_id) == 0)
            return h;
    }
    return NULL;
}

static void
unlink_held(struct held *h)
{
    struct agent_tunnels *at = h->at;
    if (h->prev)
        h->prev->next = h->next;
    else
        at->list = h->next;
    if (h->next)
        h->next->prev = h->prev;
    at->n--;
}

static void
on_tunnel_close(struct tunnel_conn *tc, const char *why, void *arg)
{
    (void)tc;
    struct held *h = arg;
    struct agent_tunnels *at = h->at;
    log_info("tunnels: agent %s tunnel closed%s%s", h->agent_id, why ? ": " : "", why ? why : "");
    if (h->listed)
        record(at, h->agent_id, false); /* a replaced tunnel's successor is the live one */
    unlink_held(h);
    free(h);
    if (at->closing && at->n == 0)
        free(at);
}

static const struct tunnel_conn_cbs held_cbs = {NULL, NULL, on_tunnel_close};

int
agent_tunnels_accept(struct agent_tunnels *at, struct http_exchange *ex, const char *agent_id)
{
    http_exchange_header(ex, "Upgrade", "coder-tunnel");
    http_exchange_header(ex, "Coder-Tunnel-Version", "1");
    struct buf early;
    buf_init(&early);
    struct net_stream *st = http_exchange_upgrade(ex, NULL, NULL, &early);
    if (st == NULL) {
        buf_fini(&early);
        return -1;
    }
    struct held *old = find(at, agent_id);
    if (old) {
        old->listed = false; /* replaced: finishes its streams under GOAWAY */
        tunnel_conn_close(old->tc);
    }
    struct held *h = xcalloc(1, sizeof(*h));
    h->at = at;
    snprintf(h->agent_id, sizeof(h->agent_id), "%s", agent_id);
    h->listed = true;
    h->next = at->list;
    if (at->list)
        at->list->prev = h;
    at->list = h;
    at->n++;
    h->tc = tunnel_conn_new(at->loop, st, TUNNEL_CLIENT, NULL, &early, &held_cbs, h);
    buf_fini(&early);
    log_info("tunnels: agent %s connected", agent_id);
    record(at, agent_id, true);
    return 0;
}

struct tunnel_conn *
agent_tunnels_get(struct agent_tunnels *at, const char *agent_id)
{
    struct held *h = find(at, agent_id);
    return h ? h->tc : NULL;
}

void
agent_tunnels_drop(struct agent_tunnels *at, const char *agent_id)
{
    struct held *h = find(at, agent_id);
    if (h)
        tunnel_conn_close(h->tc); /* on_tunnel_close records the disconnect */
}

size_t
agent_tunnels_count(const struct agent_tunnels *at)
{
    size_t n = 0;
    for (const struct held *h = at->list; h; h = h->next)
        n += h->listed;
    return n;
}

void
agent_tunnels_close(struct agent_tunnels *at)
{
    if (at == NULL || at->closing)
        return;
    at->closing = true;
    if (at->n == 0) {
        free(at);
        return;
    }
    /* Each close reports back through on_tunnel_close, which frees at after the last. */
    for (struct held *h = at->list; h; h = h->next) {
        h->listed = false;
        tunnel_conn_close(h->tc);
    }
}
