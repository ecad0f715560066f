/* The primary's crypto keys (CODER-COMPAT §2.5), one series per feature: app tokens (HS512),
 * API keys handed between domains (A256GCMKW) and tunnel tickets (HS512). Every feature has a
 * key in use from the first start; a key older than the rotation interval is replaced by a new
 * one, and the keys it replaces stay readable for RETIRE_GRACE_MS so tokens signed just before
 * still verify (proxies fetch a key they do not know when a token names it). Secrets live in
 * the store only and are never logged. */
#include "cryptokeys.h"
#include "base/crypto.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "worker.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* Longer than any token signed with a key lives (tickets: 10 min). */
#define RETIRE_GRACE_MS (60 * 60 * 1000)

static const struct {
    const char *feature;
    size_t bytes;
} features[] = {
    {"workspace_apps_token", 64},   /* HS512 */
    {"workspace_apps_api_key", 32}, /* A256GCMKW */
    {"agent_tunnel", 64},           /* HS512 tunnel tickets */
};

int
cryptokeys_rotate(struct store *st, int64_t now, int64_t interval_ms)
{
    for (size_t i = 0; i < ARRAY_LEN(features); i++) {
        const char *f = features[i].feature;
        struct store_crypto_key *v = NULL;
        size_t n = 0;
        if (store_crypto_key_list(st, f, now, &v, &n) < 0)
            return -1;
        int64_t newest = -1; /* starts_at of the newest key in use */
        for (size_t k = 0; k < n; k++) {
            if (v[k].starts_at <= now && v[k].starts_at > newest)
                newest = v[k].starts_at;
        }
        store_crypto_keys_free(v, n);
        if (newest >= 0 && now - newest < interval_ms)
            continue;
        char *secret = rand_hex(features[i].bytes * 2);
        int64_t seq = 0;
        int rc = store_begin(st);
        if (rc == 0)
            rc = store_crypto_key_insert(st, f, secret, now, &seq);
        if (rc == 0)
            rc = store_crypto_key_retire(st, f, seq, now + RETIRE_GRACE_MS);
        if (rc == 0)
            rc = store_commit(st);
        else
            store_rollback(st);
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
        if (rc < 0)
            return -1;
        log_info("server: %s %s key %lld", newest < 0 ? "created" : "rotated to", f,
                 (long long)seq);
    }
    return 0;
}

/* ---- the timer ---- */

struct cryptokeys {
    struct primary *p;
    uv_timer_t timer;
    int64_t interval_ms;
    bool running; /* a rotation is on the store thread */
};

static void
rotate_run(struct store *st, void *arg)
{
    struct cryptokeys *ck = arg;
    if (cryptokeys_rotate(st, time_now_ms(), ck->interval_ms) < 0)
        log_error("server: rotating crypto keys failed; the current keys stay in use");
}

static void
rotate_done(void *arg)
{
    struct cryptokeys *ck = arg;
    ck->running = false;
}

static void
on_tick(uv_timer_t *t)
{
    struct cryptokeys *ck = t->data;
    if (ck->running || ck->p->stopping)
        return;
    ck->running = true;
    worker_submit(ck->p->worker, rotate_run, rotate_done, ck);
}

struct cryptokeys *
cryptokeys_start(struct primary *p, int64_t interval_ms)
{
    struct cryptokeys *ck = xcalloc(1, sizeof(*ck));
    ck->p = p;
    ck->interval_ms = interval_ms;
    uv_timer_init(p->loop, &ck->timer);
    ck->timer.data = ck;
    /* Checked four times per interval (at most hourly), so a key is never much older than it. */
    int64_t every = interval_ms / 4;
    if (every > 3600000)
        every = 3600000;
    if (every < 100)
        every = 100;
    uv_timer_start(&ck->timer, on_tick, (uint64_t)every, (uint64_t)every);
    return ck;
}

static void
on_closed(uv_handle_t *h)
{
    free(h->data);
}

void
cryptokeys_stop(struct cryptokeys *ck)
{
    if (ck)
        uv_close((uv_handle_t *)&ck->timer, on_closed);
}
