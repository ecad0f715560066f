#include "proxyhealth.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "http/client.h"
#include "metrics/metrics.h"
#include "primary.h"
#include "worker.h"

#include <pthread.h>
#include <string.h>

#define CHECK_TIMEOUT_MS 5000
#define MAX_PARALLEL 5
#define REREGISTER_MS 5000
/* Proxies re-register every 5 s. Two missed and 3.5 s more mean the proxy is gone: checked
 * every LIVENESS_MS, a proxy that dies right after registering is shown unreachable within
 * 14 s, inside the 15 s promise, while a live one may miss two in a row. */
#define STALE_MS (2 * REREGISTER_MS + 3500)
#define LIVENESS_MS 500

struct entry {
    char id[37];
    char *status; /* "ok", "unhealthy", "unreachable", "unregistered", "unknown" */
    json_t *errors;
    json_t *warnings;
    int64_t checked_at;
    int64_t last_register; /* monotonic ms */
    bool deregistered;
    bool seen; /* still in the store (mark and sweep per check) */
};

struct target {
    char id[37];
    char *url;
};

struct proxyhealth {
    struct primary *p;
    pthread_mutex_t mu; /* guards entries: read by the store thread */
    struct entry *v;
    size_t n, cap;
    uv_timer_t ticker;
    uv_timer_t liveness;
    int handles_open;
    bool running, rerun, stopping;
    struct target *targets; /* the current round */
    size_t ntargets, next, inflight;
    int64_t round_start;
    struct metrics_family *duration, *results;
};

struct check {
    struct proxyhealth *h;
    struct target *t;
    int64_t start;
};

static struct entry *
entry_find(struct proxyhealth *h, const char *id, bool create)
{
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->v[i].id, id) == 0)
            return &h->v[i];
    }
    if (!create)
        return NULL;
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->v = xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    struct entry *e = &h->v[h->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "%s", id);
    e->status = xstrdup("unknown");
    e->errors = json_array();
    e->warnings = json_array();
    e->last_register = time_mono_ms(); /* a grace period after start-up or creation */
    return e;
}

static void
entry_fini(struct entry *e)
{
    free(e->status);
    json_decref(e->errors);
    json_decref(e->warnings);
}

static double
status_value(const char *s)
{
    if (strcmp(s, "ok") == 0)
        return 1;
    if (strcmp(s, "unhealthy") == 0)
        return -1;
    if (strcmp(s, "unreachable") == 0)
        return -2;
    if (strcmp(s, "unregistered") == 0)
        return 0;
    return -3;
}

/* Sets an entry's result; takes ownership of errors and warnings. Caller holds mu. */
static void
entry_set(struct proxyhealth *h, struct entry *e, const char *status, json_t *errors,
          json_t *warnings)
{
    if (strcmp(e->status, status) != 0)
        log_info("proxyhealth: proxy %s is now %s", e->id, status);
    str_replace(&e->status, status);
    json_decref(e->errors);
    json_decref(e->warnings);
    e->errors = errors ? errors : json_array();
    e->warnings = warnings ? warnings : json_array();
    e->checked_at = time_now_ms();
    const char *labels[] = {e->id};
    metrics_gauge_set(h->results, labels, status_value(status));
}

json_t *
proxyhealth_status_json(struct proxyhealth *h, const struct store_proxy *px, bool *ok)
{
    char ts[40];
    json_t *j;
    pthread_mutex_lock(&h->mu);
    struct entry *e = entry_find(h, px->id, false);
    if (px->url[0] == '\0' || e == NULL) {
        time_format_rfc3339(e ? e->checked_at : time_now_ms(), ts, sizeof(ts));
        j = json_pack("{s:s, s:{s:[], s:[]}, s:s}", "status",
                      px->url[0] == '\0' ? "unregistered" : "unknown", "report", "errors",
                      "warnings", "checked_at", ts);
        *ok = false;
    } else {
        time_format_rfc3339(e->checked_at, ts, sizeof(ts));
        j = json_pack("{s:s, s:{s:O, s:O}, s:s}", "status", e->status, "report", "errors",
                      e->errors, "warnings", e->warnings, "checked_at", ts);
        *ok = strcmp(e->status, "ok") == 0;
    }
    pthread_mutex_unlock(&h->mu);
    return j;
}

/* ---- one round of checks ---- */

static void round_next(struct proxyhealth *h);

static json_t *one_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *
one_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    json_t *a = json_pack("[s]", s);
    free(s);
    return a;
}

static bool
is_json_type(const char *ctype)
{
    return ctype && (str_has_prefix(ctype, "application/json") ||
                     str_has_prefix(ctype, "application/problem+json"));
}

/* Classifies one /healthz-report answer as Coder does. */
static void
classify(struct proxyhealth *h, struct entry *e, const char *url, struct http_client_resp *r)
{
    if (r->status == 0) {
        entry_set(h, e, "unreachable", one_error("request to proxy failed: %s", r->error), NULL);
        return;
    }
    if (r->status != 200) {
        struct buf b;
        buf_init(&b);
        buf_printf(&b, "unexpected status code %ld. ", r->status);
        buf_printf(&b,
                   "\nEncountered error, send a request to \"%s\" from the Coderd environment to "
                   "debug this issue.",
                   url);
        json_t *body = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
        const char *msg = json_string_value(json_object_get(body, "message"));
        const char *detail = json_string_value(json_object_get(body, "detail"));
        if (msg)
            buf_printf(&b, "\nError Message: %s\nError Detail: %s", msg, detail ? detail : "");
        buf_printf(&b, "\nError: unexpected status code %ld", r->status);
        json_decref(body);
        entry_set(h, e, "unhealthy", json_pack("[s]", b.data), NULL);
        buf_fini(&b);
        return;
    }
    const char *ctype = http_client_resp_header(r, "Content-Type");
    char *is_coder =
        http_client_resp_header(r, "X-Coder-Build-Version")
            ? xasprintf("proxy url \"%s\" is a coder instance, but unable to decode the response "
                        "payload. Could this be a primary coderd and not a proxy?",
                        url)
            : xasprintf("proxy url \"%s\" is not a coder proxy instance, verify the url is correct",
                        url);
    json_error_t jerr;
    json_t *report = NULL;
    if (!is_json_type(ctype)) {
        entry_set(h, e, "unhealthy",
                  one_error("%s\nattempted to query health at \"%s\" but got back the incorrect "
                            "content type: content type \"%s\", expected \"application/json\"",
                            is_coder, url, ctype ? ctype : ""),
                  NULL);
        goto out;
    }
    report = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &jerr);
    json_t *errs = json_object_get(report, "errors");
    json_t *warns = json_object_get(report, "warnings");
    if (report == NULL || !json_is_object(report) ||
        (errs && !json_is_array(errs) && !json_is_null(errs))) {
        entry_set(h, e, "unhealthy",
                  one_error("%s\nreceived a status code 200, but failed to decode health report "
                            "body: %s",
                            is_coder, report ? "not a health report" : jerr.text),
                  NULL);
        goto out;
    }
    json_t *errors = json_is_array(errs) ? json_incref(errs) : json_array();
    json_t *warnings = json_is_array(warns) ? json_incref(warns) : json_array();
    entry_set(h, e, json_array_size(errors) ? "unhealthy" : "ok", errors, warnings);
out:
    json_decref(report);
    free(is_coder);
}

static void
round_end(struct proxyhealth *h)
{
    for (size_t i = 0; i < h->ntargets; i++)
        free(h->targets[i].url);
    free(h->targets);
    h->targets = NULL;
    h->ntargets = h->next = 0;
    double secs = (double)(time_mono_ms() - h->round_start) / 1000.0;
    metrics_histogram_observe(h->duration, NULL, secs);
    h->running = false;
    if (h->rerun && !h->stopping) {
        h->rerun = false;
        proxyhealth_check_now(h);
    }
}

static void
on_check_done(struct http_client_resp *r, void *arg)
{
    struct check *c = arg;
    struct proxyhealth *h = c->h;
    if (!h->stopping) {
        pthread_mutex_lock(&h->mu);
        struct entry *e = entry_find(h, c->t->id, false);
        char *url = xasprintf("%s/healthz-report", c->t->url);
        /* A deregistered proxy stays unreachable until it registers again, even if its
         * listener still answers during its shutdown. */
        if (e && !e->deregistered)
            classify(h, e, url, r);
        free(url);
        pthread_mutex_unlock(&h->mu);
    }
    free(c);
    h->inflight--;
    round_next(h);
}

static void
round_next(struct proxyhealth *h)
{
    while (!h->stopping && h->inflight < MAX_PARALLEL && h->next < h->ntargets) {
        struct target *t = &h->targets[h->next++];
        struct check *c = xcalloc(1, sizeof(*c));
        c->h = h;
        c->t = t;
        char *url = xasprintf("%s/healthz-report", t->url);
        struct http_client_req req = {.method = "GET",
                                      .url = url,
                                      .timeout_ms = CHECK_TIMEOUT_MS,
                                      .fresh_connection = true,
                                      .max_body = 1 << 20};
        if (http_client_start(h->p->client, &req, on_check_done, c) == 0) {
            h->inflight++;
        } else {
            free(c);
        }
        free(url);
    }
    if (h->inflight == 0 && (h->next >= h->ntargets || h->stopping))
        round_end(h);
}

struct list_job {
    struct proxyhealth *h;
    struct store_proxy *v;
    size_t n;
    int rc;
};

static void
list_job_run(struct store *st, void *arg)
{
    struct list_job *j = arg;
    j->rc = store_proxy_list(st, false, &j->v, &j->n);
}

static void
list_job_done(void *arg)
{
    struct list_job *j = arg;
    struct proxyhealth *h = j->h;
    if (j->rc < 0 || h->stopping) {
        store_proxies_free(j->v, j->n);
        free(j);
        h->running = false;
        return;
    }
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++)
        h->v[i].seen = false;
    h->targets = xcalloc(j->n ? j->n : 1, sizeof(*h->targets));
    for (size_t i = 0; i < j->n; i++) {
        struct entry *e = entry_find(h, j->v[i].id, true);
        e->seen = true;
        if (j->v[i].url[0] == '\0') {
            /* Not registered yet: nothing to check, and the gauge says 0 as Coder's does. */
            entry_set(h, e, "unregistered", NULL, NULL);
            continue;
        }
        struct target *t = &h->targets[h->ntargets++];
        snprintf(t->id, sizeof(t->id), "%s", j->v[i].id);
        t->url = xstrdup(j->v[i].url);
        size_t len = strlen(t->url);
        while (len > 0 && t->url[len - 1] == '/')
            t->url[--len] = '\0';
    }
    /* Forget deleted proxies. */
    for (size_t i = 0; i < h->n;) {
        if (!h->v[i].seen) {
            const char *labels[] = {h->v[i].id};
            metrics_series_remove(h->results, labels);
            entry_fini(&h->v[i]);
            h->v[i] = h->v[--h->n];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&h->mu);
    store_proxies_free(j->v, j->n);
    free(j);
    h->round_start = time_mono_ms();
    round_next(h);
}

void
proxyhealth_check_now(struct proxyhealth *h)
{
    if (h->stopping)
        return;
    if (h->running) {
        h->rerun = true;
        return;
    }
    h->running = true;
    struct list_job *j = xcalloc(1, sizeof(*j));
    j->h = h;
    worker_submit(h->p->worker, list_job_run, list_job_done, j);
}

/* ---- registration liveness ---- */

void
proxyhealth_on_register(struct proxyhealth *h, const char *proxy_id)
{
    pthread_mutex_lock(&h->mu);
    struct entry *e = entry_find(h, proxy_id, true);
    e->last_register = time_mono_ms();
    bool was_ok = strcmp(e->status, "ok") == 0 && !e->deregistered;
    e->deregistered = false;
    pthread_mutex_unlock(&h->mu);
    if (!was_ok)
        proxyhealth_check_now(h);
}

void
proxyhealth_on_deregister(struct proxyhealth *h, const char *proxy_id)
{
    pthread_mutex_lock(&h->mu);
    struct entry *e = entry_find(h, proxy_id, true);
    e->deregistered = true;
    entry_set(h, e, "unreachable",
              one_error("proxy deregistered: it was shut down and has not registered again"), NULL);
    pthread_mutex_unlock(&h->mu);
}

static void
on_liveness(uv_timer_t *t)
{
    struct proxyhealth *h = t->data;
    int64_t now = time_mono_ms();
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++) {
        struct entry *e = &h->v[i];
        int64_t age = now - e->last_register;
        /* Only a proxy that was answering can go silent; unregistered ones have no URL. */
        bool answering = strcmp(e->status, "ok") == 0 || strcmp(e->status, "unhealthy") == 0;
        if (answering && age > STALE_MS) {
            entry_set(h, e, "unreachable",
                      one_error("proxy has not re-registered for %llds (it does every %ds); "
                                "it is likely offline",
                                (long long)(age / 1000), REREGISTER_MS / 1000),
                      NULL);
        }
    }
    pthread_mutex_unlock(&h->mu);
}

static void
on_tick(uv_timer_t *t)
{
    proxyhealth_check_now(t->data);
}

struct proxyhealth *
proxyhealth_new(struct primary *p)
{
    struct proxyhealth *h = xcalloc(1, sizeof(*h));
    h->p = p;
    pthread_mutex_init(&h->mu, NULL);
    static const double buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
    static const char *const idlabel[] = {"proxy_id"};
    h->duration =
        metrics_histogram_new(p->metrics, "coderd_proxyhealth_health_check_duration_seconds",
                              "Histogram for duration of proxy health collection in "
                              "seconds.",
                              0, NULL, buckets, ARRAY_LEN(buckets));
    h->results = metrics_gauge_new(p->metrics, "coderd_proxyhealth_health_check_results",
                                   "This endpoint returns a number to indicate the health status. "
                                   "-3 (unknown), -2 (Unreachable), -1 (Unhealthy), 0 "
                                   "(Unregistered), 1 (Healthy)",
                                   1, idlabel);
    uv_timer_init(p->loop, &h->ticker);
    uv_timer_init(p->loop, &h->liveness);
    h->ticker.data = h->liveness.data = h;
    h->handles_open = 2;
    return h;
}

void
proxyhealth_start(struct proxyhealth *h)
{
    uint64_t every = (uint64_t)h->p->cfg.proxy_health_interval_ms;
    uv_timer_start(&h->ticker, on_tick, every, every);
    uv_timer_start(&h->liveness, on_liveness, LIVENESS_MS, LIVENESS_MS);
    proxyhealth_check_now(h);
}

static void
on_closed(uv_handle_t *hd)
{
    struct proxyhealth *h = hd->data;
    if (--h->handles_open > 0)
        return;
    for (size_t i = 0; i < h->n; i++)
        entry_fini(&h->v[i]);
    free(h->v);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void
proxyhealth_stop(struct proxyhealth *h)
{
    h->stopping = true;
    uv_close((uv_handle_t *)&h->ticker, on_closed);
    uv_close((uv_handle_t *)&h->liveness, on_closed);
}
