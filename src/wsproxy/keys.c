/* The crypto keys a proxy checks with (CODER-COMPAT §2.5): one cache per feature, filled from
 * GET /api/v2/workspaceproxies/me/crypto-keys and fetched again when a token names a key the
 * cache does not have (rotation). Requests that need a fetch wait on it; one fetch per feature
 * is in flight at a time. Secrets are wiped when replaced. */
#include "base/crypto.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "jose/jwt.h"
#include "wsproxy.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const feature_names[WSPROXY_KEYS_N] = {"agent_tunnel", "workspace_apps_token",
                                                          "workspace_apps_api_key"};

/* Fetches happen at most this often: a miss soon after one waits for the next slot, so a
 * made-up kid cannot keep the primary busy, and a real new key is still found. */
#define REFETCH_MIN_MS 1000

struct key {
    int64_t sequence;
    int64_t deletes_ms; /* 0: not scheduled */
    uint8_t secret[JOSE_MAX_KEY];
    size_t len;
};

struct waiter {
    wsproxy_keys_fn fn;
    void *arg;
    struct waiter *next;
};

struct wsproxy_keycache {
    struct wsproxy *w;
    enum wsproxy_keys feature;
    struct key *v;
    size_t n;
    bool fetching;
    int64_t last_fetch_ms; /* monotonic */
    uv_timer_t timer;      /* the next fetch slot, when a miss came too soon */
    bool timer_open, timer_armed;
    struct waiter *waiting;
};

struct wsproxy_keycache *
wsproxy_keys(struct wsproxy *w, enum wsproxy_keys feature)
{
    if (!w->keys[feature]) {
        struct wsproxy_keycache *kc = xcalloc(1, sizeof(*kc));
        kc->w = w;
        kc->feature = feature;
        w->keys[feature] = kc;
    }
    return w->keys[feature];
}

int
wsproxy_keys_lookup(const char *kid, uint8_t *key, size_t *len, void *arg)
{
    struct wsproxy_keycache *kc = arg;
    char *end;
    long long seq = strtoll(kid, &end, 10);
    if (*kid == '\0' || *end != '\0')
        return -1;
    int64_t now = time_now_ms();
    for (size_t i = 0; i < kc->n; i++) {
        if (kc->v[i].deletes_ms && now >= kc->v[i].deletes_ms)
            continue; /* deleted at the primary: tokens signed with it are over */
        if (kc->v[i].sequence == seq) {
            memcpy(key, kc->v[i].secret, kc->v[i].len);
            *len = kc->v[i].len;
            return 0;
        }
    }
    return -1;
}

static void
keys_wipe(struct wsproxy_keycache *kc)
{
    if (kc->v)
        OPENSSL_cleanse(kc->v, kc->n * sizeof(*kc->v));
    free(kc->v);
    kc->v = NULL;
    kc->n = 0;
}

static void
keys_replace(struct wsproxy_keycache *kc, json_t *list)
{
    keys_wipe(kc);
    kc->v = xcalloc(json_array_size(list) + 1, sizeof(*kc->v));
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
        const char *del = json_string_value(json_object_get(k, "deletes_at"));
        int64_t ms = 0;
        if (del && time_parse_rfc3339(del, &ms) == 0 && ms > 0)
            e->deletes_ms = ms;
        kc->n++;
    }
}

static void
on_keys(struct http_client_resp *r, void *arg)
{
    struct wsproxy_keycache *kc = arg;
    kc->fetching = false;
    if (r->status == 200) {
        json_t *j = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
        keys_replace(kc, json_object_get(j, "crypto_keys"));
        json_decref(j);
        OPENSSL_cleanse(r->body.data, r->body.len);
    } else {
        log_warn("wsproxy: fetch %s keys from the primary: %s", feature_names[kc->feature],
                 r->error ? r->error : "unexpected status");
    }
    struct waiter *p = kc->waiting;
    kc->waiting = NULL;
    while (p) {
        struct waiter *next = p->next;
        p->fn(kc->w, p->arg);
        free(p);
        p = next;
    }
}

static void
start_fetch(struct wsproxy_keycache *kc)
{
    struct wsproxy *w = kc->w;
    kc->fetching = true;
    kc->last_fetch_ms = time_mono_ms();
    char *url = xasprintf("%s/api/v2/workspaceproxies/me/crypto-keys?feature=%s", w->primary_url,
                          feature_names[kc->feature]);
    struct http_client_req req;
    wsproxy_primary_req(w, &req, "GET", url, NULL);
    if (http_client_start(w->client, &req, on_keys, kc) < 0) {
        struct http_client_resp fail;
        http_client_resp_init(&fail);
        fail.error = xstrdup("could not start the request");
        on_keys(&fail, kc);
        http_client_resp_fini(&fail);
    }
    free(url);
}

static void
on_slot(uv_timer_t *t)
{
    struct wsproxy_keycache *kc = t->data;
    kc->timer_armed = false;
    if (!kc->fetching && kc->waiting)
        start_fetch(kc);
}

void
wsproxy_keys_fetch(struct wsproxy *w, enum wsproxy_keys feature, wsproxy_keys_fn fn, void *arg)
{
    if (w->stopping) {
        fn(w, arg); /* no new fetches while the proxy stops */
        return;
    }
    struct wsproxy_keycache *kc = wsproxy_keys(w, feature);
    struct waiter *p = xcalloc(1, sizeof(*p));
    p->fn = fn;
    p->arg = arg;
    p->next = kc->waiting;
    kc->waiting = p;
    if (kc->fetching || kc->timer_armed)
        return;
    int64_t wait = kc->last_fetch_ms ? kc->last_fetch_ms + REFETCH_MIN_MS - time_mono_ms() : 0;
    if (wait <= 0) {
        start_fetch(kc);
        return;
    }
    if (!kc->timer_open) {
        uv_timer_init(w->loop, &kc->timer);
        kc->timer.data = kc;
        kc->timer_open = true;
    }
    kc->timer_armed = true;
    uv_timer_start(&kc->timer, on_slot, (uint64_t)wait, 0);
}

void
wsproxy_keys_close(struct wsproxy *w)
{
    for (int f = 0; f < WSPROXY_KEYS_N; f++) {
        struct wsproxy_keycache *kc = w->keys[f];
        if (!kc || !kc->timer_open)
            continue;
        kc->timer_open = false;
        uv_close((uv_handle_t *)&kc->timer, NULL);
        if (kc->timer_armed && !kc->fetching) {
            /* Waiters for a slot that will not come: they answer now (the proxy stops). */
            kc->timer_armed = false;
            struct waiter *p = kc->waiting;
            kc->waiting = NULL;
            while (p) {
                struct waiter *next = p->next;
                p->fn(w, p->arg);
                free(p);
                p = next;
            }
        }
    }
}

void
wsproxy_keys_free(struct wsproxy *w)
{
    for (int f = 0; f < WSPROXY_KEYS_N; f++) {
        struct wsproxy_keycache *kc = w->keys[f];
        if (!kc)
            continue;
        keys_wipe(kc);
        free(kc);
        w->keys[f] = NULL;
    }
}
