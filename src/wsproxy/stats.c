/* App usage reports (CODER-COMPAT §2.8): every relayed app request is counted in a session row,
 * requests of the same user, workspace, agent, access method and app within one minute share
 * a row, and the rows go to the primary (POST /api/v2/workspaceproxies/me/app-stats) every 30 s
 * and at shutdown. The primary stores them and moves the workspace's last_used_at. A failed
 * report stays for the next one; the backlog is bounded. */
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "base/uuid.h"
#include "wsproxy.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATS_MAX_ROWS 10000
#define STATS_PER_REPORT 1000 /* the primary's limit per request */
#define ROLLUP_MS 60000

struct stat_row {
    char user_id[37], workspace_id[37], agent_id[37], session_id[37];
    char method[12];
    char slug[65];
    int64_t start_ms, end_ms, requests;
};

struct wsproxy_stats {
    struct wsproxy *w;
    uv_timer_t timer;
    struct stat_row *v;
    size_t n;
    size_t sending; /* rows [0, sending) are in a report under way: not merged into */
    bool dropped;   /* the backlog overflowed (logged once) */
};

static void flush(struct wsproxy_stats *st);

static void
on_tick(uv_timer_t *t)
{
    flush(t->data);
}

void
wsproxy_stats_start(struct wsproxy *w, int64_t interval_ms)
{
    struct wsproxy_stats *st = xcalloc(1, sizeof(*st));
    st->w = w;
    st->v = xcalloc(STATS_MAX_ROWS, sizeof(*st->v));
    uv_timer_init(w->loop, &st->timer);
    st->timer.data = st;
    uv_timer_start(&st->timer, on_tick, (uint64_t)interval_ms, (uint64_t)interval_ms);
    w->stats = st;
}

void
wsproxy_stats_record(struct wsproxy *w, const char *user_id, const char *workspace_id,
                     const char *agent_id, const char *method, const char *slug)
{
    struct wsproxy_stats *st = w->stats;
    if (!st || !uuid_valid(user_id) || !uuid_valid(workspace_id) || !uuid_valid(agent_id))
        return;
    int64_t now = time_now_ms();
    for (size_t i = st->n; i-- > st->sending;) {
        struct stat_row *r = &st->v[i];
        if (now - r->start_ms < ROLLUP_MS && str_eq(r->user_id, user_id) &&
            str_eq(r->workspace_id, workspace_id) && str_eq(r->agent_id, agent_id) &&
            str_eq(r->method, method) && str_eq(r->slug, slug)) {
            r->requests++;
            r->end_ms = now;
            return;
        }
    }
    if (st->n == STATS_MAX_ROWS) {
        if (!st->dropped)
            log_warn("wsproxy: app stats backlog full (%d sessions); the primary is not taking "
                     "reports, dropping new ones",
                     STATS_MAX_ROWS);
        st->dropped = true;
        return;
    }
    struct stat_row *r = &st->v[st->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->user_id, sizeof(r->user_id), "%s", user_id);
    snprintf(r->workspace_id, sizeof(r->workspace_id), "%s", workspace_id);
    snprintf(r->agent_id, sizeof(r->agent_id), "%s", agent_id);
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->slug, sizeof(r->slug), "%s", slug);
    uuid_new(r->session_id);
    r->start_ms = r->end_ms = now;
    r->requests = 1;
}

static void
on_reported(struct http_client_resp *resp, void *arg)
{
    struct wsproxy_stats *st = arg;
    size_t sent = st->sending;
    st->sending = 0;
    if (resp->status != 204 && resp->status != 400) {
        log_warn("wsproxy: report app stats: %s", resp->error ? resp->error : "unexpected status");
        return; /* kept for the next report */
    }
    if (resp->status == 400) /* never accepted: do not retry it forever */
        log_warn("wsproxy: the primary refused %zu app stats rows: %.*s", sent, (int)resp->body.len,
                 resp->body.data ? resp->body.data : "");
    memmove(st->v, st->v + sent, (st->n - sent) * sizeof(*st->v));
    st->n -= sent;
    st->dropped = false;
}

static void
flush(struct wsproxy_stats *st)
{
    if (st->sending || st->n == 0)
        return;
    size_t n = st->n < STATS_PER_REPORT ? st->n : STATS_PER_REPORT;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct stat_row *r = &st->v[i];
        char start[40], end[40];
        time_format_rfc3339(r->start_ms, start, sizeof(start));
        time_format_rfc3339(r->end_ms, end, sizeof(end));
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}",
                                             "user_id", r->user_id, "workspace_id", r->workspace_id,
                                             "agent_id", r->agent_id, "access_method", r->method,
                                             "slug_or_port", r->slug, "session_id", r->session_id,
                                             "session_started_at", start, "session_ended_at", end,
                                             "requests", (json_int_t)r->requests));
    }
    json_t *j = json_pack("{s:o}", "stats", arr);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    struct wsproxy *w = st->w;
    char *url = xasprintf("%s/api/v2/workspaceproxies/me/app-stats", w->primary_url);
    struct http_client_req req;
    wsproxy_primary_req(w, &req, "POST", url, body);
    st->sending = n;
    if (http_client_start(w->client, &req, on_reported, st) < 0)
        st->sending = 0;
    free(url);
    free(body);
}

void
wsproxy_stats_stop(struct wsproxy *w)
{
    struct wsproxy_stats *st = w->stats;
    if (!st)
        return;
    uv_timer_stop(&st->timer);
    flush(st); /* the last report goes out while the proxy deregisters */
}

static void
on_timer_closed(uv_handle_t *h)
{
    struct wsproxy_stats *st = h->data;
    free(st->v);
    free(st);
}

void
wsproxy_stats_close(struct wsproxy *w)
{
    struct wsproxy_stats *st = w->stats;
    if (!st)
        return;
    w->stats = NULL;
    uv_close((uv_handle_t *)&st->timer, on_timer_closed);
}
