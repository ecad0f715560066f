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
    bool relay;  /* a proxy's relay link; agent_id holds the proxy's id */
    struct held *prev, *next;
};

struct agent_tunnels {
    uv_loop_t *loop;
    agent_tunnels_event_fn event;
    void *arg;
    struct held *list;
    size_t n;
    size_t limit; /* agent tunnels held at most (0 = no limit) */
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
    log_info("tunnels: %s %s %s closed%s%s", h->relay ? "proxy" : "agent", h->agent_id,
             h->relay ? "relay link" : "tunnel", why ? ": " : "", why ? why : "");
    if (h->listed)
        record(at, h->agent_id, false); /* a replaced tunnel's successor is the live one */
    unlink_held(h);
    free(h);
    if (at->closing && at->n == 0)
        free(at);
}

static const struct tunnel_conn_cbs held_cbs = {NULL, NULL, on_tunnel_close};

/* A stream on a relay link: a CONNECT for the agent named in coder-agent-id, spliced onto that
 * agent's tunnel (docs/TUNNEL.md §5). */
static void
on_relay_request(struct tunnel_conn *tc, struct tunnel_stream *s, const char *method,
                 const char *authority, const char *path, const struct tunnel_header *h, size_t nh,
                 void *arg)
{
    (void)tc;
    (void)path;
    struct held *link = arg;
    const char *agent_id = NULL;
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(h[i].name, "coder-agent-id") == 0)
            agent_id = h[i].value;
    }
    if (strcmp(method, "CONNECT") != 0 || !authority || !agent_id) {
        const struct tunnel_header e[] = {{"coder-error", "expected CONNECT with coder-agent-id"}};
        tunnel_stream_respond(s, 404, e, 1, true);
        return;
    }
    struct held *agent = link->at->closing ? NULL : find(link->at, agent_id);
    if (!agent) {
        const struct tunnel_header e[] = {
            {"coder-error", "the primary holds no tunnel to the agent"}};
        tunnel_stream_respond(s, 404, e, 1, true);
        return;
    }
    tunnel_splice_connect(s, tunnel_conn_session(agent->tc), authority);
}

static const struct tunnel_conn_cbs relay_cbs = {on_relay_request, NULL, on_tunnel_close};

/* Answers the upgrade and adds the connection to the list as a tunnel of the given role. */
static int
hold(struct agent_tunnels *at, struct http_exchange *ex, const char *id, bool relay)
{
    if (!relay && at->limit && !find(at, id) && agent_tunnels_count(at) >= at->limit) {
        /* Before the upgrade: the agent hears 429 and tries again later (TUNNEL.md §6). */
        http_reply_error(ex, 429, "Too many tunnels.",
                         "This region holds as many agent tunnels as it is configured for "
                         "(--max-agent-tunnels).");
        return -1;
    }
    http_exchange_header(ex, "Upgrade", "coder-tunnel");
    http_exchange_header(ex, "Coder-Tunnel-Version", "1");
    struct buf early;
    buf_init(&early);
    struct net_stream *st = http_exchange_upgrade(ex, NULL, NULL, &early);
    if (st == NULL) {
        buf_fini(&early);
        return -1;
    }
    struct held *old = relay ? NULL : find(at, id);
    if (old) {
        old->listed = false; /* replaced: finishes its streams under GOAWAY */
        tunnel_conn_close(old->tc);
    }
    struct held *h = xcalloc(1, sizeof(*h));
    h->at = at;
    snprintf(h->agent_id, sizeof(h->agent_id), "%s", id);
    h->listed = !relay;
    h->relay = relay;
    h->next = at->list;
    if (at->list)
        at->list->prev = h;
    at->list = h;
    at->n++;
    /* On an agent tunnel this region opens the streams; on a relay link the proxy does. */
    h->tc = tunnel_conn_new(at->loop, st, relay ? TUNNEL_SERVER : TUNNEL_CLIENT, NULL, &early,
                            relay ? &relay_cbs : &held_cbs, h);
    buf_fini(&early);
    return 0;
}

int
agent_tunnels_accept(struct agent_tunnels *at, struct http_exchange *ex, const char *agent_id)
{
    if (hold(at, ex, agent_id, false) < 0)
        return -1;
    log_info("tunnels: agent %s connected", agent_id);
    record(at, agent_id, true);
    return 0;
}

int
agent_tunnels_accept_relay(struct agent_tunnels *at, struct http_exchange *ex, const char *proxy_id)
{
    if (hold(at, ex, proxy_id, true) < 0)
        return -1;
    log_info("tunnels: proxy %s relay link up", proxy_id);
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

void
agent_tunnels_set_limit(struct agent_tunnels *at, size_t limit)
{
    at->limit = limit;
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
