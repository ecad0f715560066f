/* Agents' tunnels to this proxy (docs/TUNNEL.md §2-§3). A proxy has no database: an agent
 * proves itself with a tunnel ticket the primary signed for this proxy alone, checked here with
 * the agent_tunnel keys fetched from the primary (cached; fetched again when a ticket names an
 * unknown key). After that the connection becomes a tunnel in the proxy's table. */
#include "base/crypto.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "jose/jwt.h"
#include "tunnel/table.h"
#include "wsproxy.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEEWAY_S 30

struct key {
    int64_t sequence;
    uint8_t secret[JOSE_MAX_KEY];
    size_t len;
};

struct keycache {
    struct key *v;
    size_t n;
    bool fetching;
    struct pending *waiting; /* exchanges waiting for the keys */
};

/* An upgrade request waiting for a key fetch. */
struct pending {
    struct http_exchange *ex;
    struct pending *next;
};

static struct keycache *
cache(struct wsproxy *w)
{
    if (!w->keys)
        w->keys = xcalloc(1, sizeof(struct keycache));
    return w->keys;
}

static int
lookup(const char *kid, uint8_t *key, size_t *len, void *arg)
{
    struct keycache *kc = arg;
    char *end;
    long long seq = strtoll(kid, &end, 10);
    if (*kid == '\0' || *end != '\0')
        return -1;
    for (size_t i = 0; i < kc->n; i++) {
        if (kc->v[i].sequence == seq) {
            memcpy(key, kc->v[i].secret, kc->v[i].len);
            *len = kc->v[i].len;
            return 0;
        }
    }
    return -1;
}

static void
keys_replace(struct keycache *kc, json_t *list)
{
    OPENSSL_cleanse(kc->v, kc->n * sizeof(*kc->v));
    free(kc->v);
    kc->v = xcalloc(json_array_size(list) + 1, sizeof(*kc->v));
    kc->n = 0;
    size_t i;
    json_t *k;
    json_array_foreach(list, i, k)
    {
        const char *hex = json_string_value(json_object_get(k, "secret"));
        struct key *e = &kc->v[kc->n];
        long got = hex ? hex_decode(hex, strlen(hex), e->secret, sizeof(e->secret)) : -1;
        if (got <= 0)
            continue;
        e->len = (size_t)got;
        e->sequence = json_integer_value(json_object_get(k, "sequence"));
        kc->n++;
    }
}

void
wsproxy_tunnels_free(struct wsproxy *w)
{
    struct keycache *kc = w->keys;
    if (!kc)
        return;
    OPENSSL_cleanse(kc->v, kc->n * sizeof(*kc->v));
    free(kc->v);
    free(kc);
    w->keys = NULL;
}

/* ---- accepting ---- */

static void
refuse(struct http_exchange *ex, const char *why)
{
    http_reply_error(ex, 401, "Invalid tunnel ticket.", why);
}

/* Verifies the ticket and upgrades. retry: whether an unknown key may trigger a fetch. */
static void try_accept(struct wsproxy *w, struct http_exchange *ex, bool retry);

static void
on_keys(struct http_client_resp *r, void *arg)
{
    struct wsproxy *w = arg;
    struct keycache *kc = cache(w);
    kc->fetching = false;
    if (r->status == 200) {
        json_t *j = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
        keys_replace(kc, json_object_get(j, "crypto_keys"));
        json_decref(j);
    } else {
        log_warn("wsproxy: fetch agent tunnel keys from the primary: %s",
                 r->error ? r->error : "unexpected status");
    }
    struct pending *p = kc->waiting;
    kc->waiting = NULL;
    while (p) {
        struct pending *next = p->next;
        if (w->stopping)
            http_reply_error(p->ex, 503, "The proxy is shutting down.", NULL);
        else
            try_accept(w, p->ex, false);
        free(p);
        p = next;
    }
}

static void
fetch_keys(struct wsproxy *w, struct http_exchange *ex)
{
    struct keycache *kc = cache(w);
    struct pending *p = xcalloc(1, sizeof(*p));
    p->ex = ex;
    p->next = kc->waiting;
    kc->waiting = p;
    if (kc->fetching)
        return;
    kc->fetching = true;
    char *url =
        xasprintf("%s/api/v2/workspaceproxies/me/crypto-keys?feature=agent_tunnel", w->primary_url);
    struct http_client_req req;
    wsproxy_primary_req(w, &req, "GET", url, NULL);
    if (http_client_start(w->client, &req, on_keys, w) < 0) {
        struct http_client_resp fail;
        http_client_resp_init(&fail);
        fail.error = xstrdup("could not start the request");
        on_keys(&fail, w);
        http_client_resp_fini(&fail);
    }
    free(url);
}

static void
try_accept(struct wsproxy *w, struct http_exchange *ex, bool retry)
{
    const char *ticket = http_request_header(&ex->req, "Coder-Tunnel-Ticket");
    const char *err = NULL;
    json_t *claims = jose_verify_hs512(ticket, lookup, cache(w), NULL, 0, &err);
    if (!claims && retry && err && strcmp(err, "unknown signing key") == 0) {
        fetch_keys(w, ex); /* rotated, or not fetched yet */
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
