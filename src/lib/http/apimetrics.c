#include "http/apimetrics.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "metrics/metrics.h"
#include "net/stream.h"

#include <stdio.h>
#include <stdlib.h>

struct api_metrics {
    struct metrics_family *processed;
    struct metrics_family *latency;
    struct metrics_family *concurrent;
    struct metrics_family *ws_concurrent;
    struct metrics_family *ws_durations;
};

/* One upgraded connection being counted (freed when its stream ends). */
struct ws_count {
    struct api_metrics *m;
    const char *path; /* a static route pattern */
    int64_t start_us;
};

struct api_metrics *
api_metrics_new(struct metrics_registry *reg)
{
    static const char *const processed_labels[] = {"code", "method", "path"};
    static const char *const latency_labels[] = {"method", "path"};
    static const double buckets[] = {0.001, 0.005, 0.010, 0.025, 0.050, 0.100, 0.500, 1, 5, 10, 30};
    struct api_metrics *m = xcalloc(1, sizeof(*m));
    m->processed =
        metrics_counter_new(reg, "coderd_api_requests_processed_total",
                            "The total number of processed API requests", 3, processed_labels);
    m->latency = metrics_histogram_new(reg, "coderd_api_request_latencies_seconds",
                                       "Latency distribution of requests in seconds.", 2,
                                       latency_labels, buckets, ARRAY_LEN(buckets));
    m->concurrent = metrics_gauge_new(reg, "coderd_api_concurrent_requests",
                                      "The number of concurrent API requests.", 2, latency_labels);
    static const char *const path_only[] = {"path"};
    static const double ws_buckets[] = {0.001, 1, 60, 3600, 54000, 108000};
    m->ws_concurrent =
        metrics_gauge_new(reg, "coderd_api_concurrent_websockets",
                          "The total number of concurrent API websockets.", 1, path_only);
    m->ws_durations = metrics_histogram_new(reg, "coderd_api_websocket_durations_seconds",
                                            "Websocket duration distribution of requests in "
                                            "seconds.",
                                            1, path_only, ws_buckets, ARRAY_LEN(ws_buckets));
    return m;
}

static const char *
path_label(const struct http_exchange *ex)
{
    /* Unrouted requests share one label so clients cannot mint series. */
    return ex->route ? ex->route : "/*";
}

void
api_metrics_begin(struct api_metrics *m, const struct http_exchange *ex)
{
    if (m == NULL)
        return;
    const char *ll[] = {ex->req.method ? ex->req.method : "", path_label(ex)};
    metrics_gauge_add(m->concurrent, ll, 1);
}

void
api_metrics_free(struct api_metrics *m)
{
    free(m);
}

void
api_metrics_end(struct api_metrics *m, const struct http_exchange *ex)
{
    if (m == NULL)
        return;
    char code[8];
    snprintf(code, sizeof(code), "%d", ex->status);
    const char *path = path_label(ex);
    const char *method = ex->req.method ? ex->req.method : "";
    const char *pl[] = {code, method, path};
    const char *ll[] = {method, path};
    metrics_counter_add(m->processed, pl, 1);
    metrics_histogram_observe(m->latency, ll, (double)(time_mono_us() - ex->start_us) / 1e6);
    if (ex->routed)
        metrics_gauge_add(m->concurrent, ll, -1);
}

static void
ws_end(void *arg)
{
    struct ws_count *w = arg;
    const char *ll[] = {w->path};
    metrics_gauge_add(w->m->ws_concurrent, ll, -1);
    metrics_histogram_observe(w->m->ws_durations, ll, (double)(time_mono_us() - w->start_us) / 1e6);
    free(w);
}

void
api_metrics_upgraded(struct api_metrics *m, const struct http_exchange *ex, struct net_stream *st)
{
    if (m == NULL)
        return;
    struct ws_count *w = xcalloc(1, sizeof(*w));
    w->m = m;
    w->path = path_label(ex);
    w->start_us = time_mono_us();
    const char *ll[] = {w->path};
    metrics_gauge_add(m->ws_concurrent, ll, 1);
    net_stream_on_finalize(st, ws_end, w);
}
