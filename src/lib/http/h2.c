/* HTTP/2 for the HTTP server (RFC 9113), for clients that choose it with ALPN on a TLS
 * listener. The connection runs a tunnel session (src/lib/tunnel: nghttp2 in memory, output
 * batched per loop iteration, PING keepalive) as the HTTP/2 server; every request stream
 * becomes an http_exchange that the program's handler answers exactly as an HTTP/1.1 one, so
 * routes, apps and the relay need no HTTP/2 code of their own.
 *
 * Flow control is the backpressure in both directions: a streamed request body is
 * acknowledged (WINDOW_UPDATE) only once the handler took it, and http_exchange_write answers
 * 0 while the stream's send buffer is above its mark (on_drain follows). Connection-specific
 * headers (Connection, Keep-Alive, Transfer-Encoding, Upgrade) are not sent; names go out in
 * lower case. Upgrades (WebSocket) stay on HTTP/1.1: no extended CONNECT is offered, so
 * browsers open an HTTP/1.1 connection for them. */
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "http/common.h"
#include "http/realip.h"
#include "http/server-int.h"
#include "tunnel/conn.h"
#include "tunnel/tunnel.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Concurrent streams a client may open on one connection (browsers use about 100). */
#define H2_MAX_STREAMS 256
/* HPACK's default table (RFC 7541): a browser's or h2load's repeated header fields, a session
 * cookie or token of a kilobyte among them, are sent as an index instead of decoded again on
 * every request (at 512 bytes, the tunnel's size, a token never fit). */
#define H2_HEADER_TABLE 4096

struct h2_conn {
    struct http_server *srv;
    struct tunnel_conn *tc; /* NULL once closed */
    char remote_ip[64];
    size_t nexchanges; /* exchanges not yet done (the record stays until 0 and closed) */
    struct h2_conn *prev, *next;
};

/* One request stream. Lives until both the stream closed and the exchange is done. */
struct h2_req {
    struct h2_conn *hc;
    struct tunnel_stream *ts; /* NULL once the stream closed */
    struct http_exchange *ex; /* NULL once the exchange is done */
    size_t queued;            /* body bytes in ex->body_queue, not yet acknowledged */
    bool body_done;           /* END_STREAM from the client */
    bool too_large;           /* a buffered body over the limit: answered 413 */
};

/* ---- bookkeeping ---- */

static void
conn_maybe_free(struct h2_conn *hc)
{
    if (hc->tc || hc->nexchanges)
        return;
    struct http_server *s = hc->srv;
    if (hc->prev)
        hc->prev->next = hc->next;
    else
        s->h2conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    s->nconns--;
    free(hc);
    http_server_maybe_finish_shutdown(s);
}

static void
req_maybe_free(struct h2_req *r)
{
    if (!r->ts && !r->ex)
        free(r);
}

/* The exchange is over: metrics, then it goes; the stream may outlive it briefly. */
static void
exchange_done(struct http_exchange *ex)
{
    struct h2_req *r = ex->h2;
    struct http_server *s = ex->srv;
    if (s->o.on_done)
        s->o.on_done(ex, s->o.arg);
    struct h2_conn *hc = r->hc;
    r->ex = NULL;
    ex->h2 = NULL;
    http_exchange_free_internal(ex);
    hc->nexchanges--;
    /* A client still sending a body nobody reads gets it acknowledged (s_data) until it ends:
     * a RST_STREAM now could overtake the response queued before it. */
    req_maybe_free(r);
    conn_maybe_free(hc);
}

/* ---- responses ---- */

/* Sends the head: lower-cased names, no connection-specific fields, a Date, and the body's
 * length when known. */
static int
send_head(struct http_exchange *ex, int status, bool end_stream, const size_t *length)
{
    struct h2_req *r = ex->h2;
    if (!r->ts)
        return -1;
    size_t n = 0;
    struct tunnel_header *h = xcalloc(ex->nrheaders + 3, sizeof(*h));
    char **names = xcalloc(ex->nrheaders + 1, sizeof(char *));
    for (size_t i = 0; i < ex->nrheaders; i++) {
        const char *name = ex->rheaders[i].name;
        if (http_header_hop_by_hop(name) || (length && str_eq_ci(name, "content-length")))
            continue;
        names[i] = str_lower(xstrdup(name));
        h[n++] = (struct tunnel_header){names[i], ex->rheaders[i].value};
    }
    char len[32], date[64];
    if (length) {
        snprintf(len, sizeof(len), "%zu", *length);
        h[n++] = (struct tunnel_header){"content-length", len};
    }
    if (!http_exchange_has_header(ex, "Date")) { /* an app's own Date stands */
        time_format_http(time(NULL), date, sizeof(date));
        h[n++] = (struct tunnel_header){"date", date};
    }
    int rc = tunnel_stream_respond(r->ts, status, h, n, end_stream);
    for (size_t i = 0; i < ex->nrheaders; i++)
        free(names[i]);
    free(names);
    free(h);
    return rc < 0 ? -1 : 0;
}

static bool
no_body(const struct http_exchange *ex, int status)
{
    return strcmp(ex->req.method, "HEAD") == 0 || status == 204 || status == 304 || status < 200;
}

void
h2_finish(struct http_exchange *ex)
{
    struct h2_req *r = ex->h2;
    if (r->ts) {
        bool empty = no_body(ex, ex->status);
        size_t len = ex->rbody.len;
        send_head(ex, ex->status, empty || len == 0, empty ? NULL : &len);
        if (!empty && len) {
            tunnel_stream_write(r->ts, ex->rbody.data, len);
            tunnel_stream_end(r->ts);
        }
    }
    exchange_done(ex);
}

int
h2_begin(struct http_exchange *ex, int status)
{
    if (ex->head_sent || ex->finished || !ex->h2->ts)
        return -1;
    ex->head_sent = true;
    ex->status = status;
    bool empty = no_body(ex, status);
    if (send_head(ex, status, empty, NULL) < 0)
        return -1;
    ex->chunked = false;
    return 0;
}

int
h2_write(struct http_exchange *ex, const void *data, size_t n)
{
    struct h2_req *r = ex->h2;
    if (!ex->head_sent || ex->finished || !r->ts)
        return -1;
    if (n == 0 || no_body(ex, ex->status))
        return 1;
    return tunnel_stream_write(r->ts, data, n);
}

void
h2_end(struct http_exchange *ex)
{
    struct h2_req *r = ex->h2;
    if (r->ts) {
        if (!ex->head_sent) {
            /* Ended without an answer: the handler failed. */
            send_head(ex, 502, true, NULL);
        } else if (!no_body(ex, ex->status)) {
            tunnel_stream_end(r->ts);
        }
    }
    exchange_done(ex);
}

void
h2_abort(struct http_exchange *ex)
{
    struct h2_req *r = ex->h2;
    if (r->ts)
        tunnel_stream_reset(r->ts, TUNNEL_INTERNAL_ERROR); /* the client sees it cut off */
    exchange_done(ex);
}

bool
h2_client_gone(const struct http_exchange *ex)
{
    return ex->h2->ts == NULL;
}

/* ---- request bodies ---- */

/* Acknowledges what the handler took from the queue (the client's window opens again as the
 * body moves on, not only once the whole queue has gone). */
static void
ack_queue(struct h2_req *r)
{
    if (!r->ts || !r->ex)
        return;
    size_t left = http_exchange_body_queued(r->ex);
    if (r->queued > left) {
        tunnel_stream_consumed(r->ts, r->queued - left);
        r->queued = left;
    }
}

void
h2_body_flow(struct http_exchange *ex)
{
    struct h2_req *r = ex->h2;
    http_exchange_body_flush(ex);
    if (r->ex)
        ack_queue(r);
}

/* ---- streams ---- */

static void
dispatch(struct h2_req *r)
{
    struct http_exchange *ex = r->ex;
    ex->dispatched = true;
    ex->srv->o.handler(ex, ex->srv->o.arg);
}

static void
s_data(struct tunnel_stream *ts, const uint8_t *d, size_t n, void *arg)
{
    struct h2_req *r = arg;
    struct http_exchange *ex = r->ex;
    if (!ex || r->too_large) {
        tunnel_stream_consumed(ts, n); /* nobody reads it any more */
        return;
    }
    if (!ex->streaming) {
        tunnel_stream_consumed(ts, n);
        if (ex->req.body.len + n > ex->srv->o.max_body) {
            r->too_large = true;
            http_reply_error(ex, 413, "Request body too large.", NULL);
            return;
        }
        buf_append(&ex->req.body, d, n);
        return;
    }
    if (ex->body_cbs && !ex->body_paused && http_exchange_body_queued(ex) == 0) {
        if (ex->body_cbs->on_data)
            ex->body_cbs->on_data(ex, (const char *)d, n, ex->body_arg);
        if (r->ts)
            tunnel_stream_consumed(ts, n); /* taken: the client may send more */
        return;
    }
    /* The handler is not reading: hold it, unacknowledged, so the window closes. */
    http_exchange_body_queue(ex, (const char *)d, n);
    r->queued += n;
}

static void
s_end(struct tunnel_stream *ts, void *arg)
{
    (void)ts;
    struct h2_req *r = arg;
    r->body_done = true;
    struct http_exchange *ex = r->ex;
    if (!ex || r->too_large)
        return;
    if (!ex->streaming) {
        dispatch(r);
        return;
    }
    ex->req_complete = true;
    ex->end_pending = true;
    if (ex->body_cbs && !ex->body_paused)
        http_exchange_body_flush(ex);
}

static void
s_writable(struct tunnel_stream *ts, void *arg)
{
    (void)ts;
    struct h2_req *r = arg;
    if (r->ex && r->ex->on_drain)
        r->ex->on_drain(r->ex, r->ex->stream_arg);
}

static void
s_close(struct tunnel_stream *ts, uint32_t code, void *arg)
{
    (void)ts;
    (void)code;
    struct h2_req *r = arg;
    r->ts = NULL;
    struct http_exchange *ex = r->ex;
    if (!ex) {
        free(r); /* the exchange was done already */
        return;
    }
    if (!ex->dispatched) {
        /* Reset before the body was in: nobody has the exchange yet. */
        ex->finished = true;
        exchange_done(ex); /* frees r */
        return;
    }
    /* The handler still ends it (perhaps right here, which frees r): r is not touched after. */
    if (ex->streaming && !ex->finished && ex->on_abort)
        ex->on_abort(ex, ex->stream_arg);
}

static const struct tunnel_stream_cbs stream_cbs = {NULL, s_data, s_end, s_writable, s_close};

/* A request's head: its exchange, answered at once when malformed. */
static void
on_request(struct tunnel_conn *tc, struct tunnel_stream *ts, const char *method,
           const char *authority, const char *path, const struct tunnel_header *h, size_t nh,
           void *arg)
{
    (void)tc;
    struct h2_conn *hc = arg;
    struct http_server *s = hc->srv;
    if (!*method || strcmp(method, "CONNECT") == 0 || path[0] != '/' || strlen(path) > 8192) {
        const struct tunnel_header e[] = {{"content-type", "application/json; charset=utf-8"}};
        tunnel_stream_respond(ts, 400, e, 1, true);
        return;
    }
    struct h2_req *r = xcalloc(1, sizeof(*r));
    r->hc = hc;
    r->ts = ts;
    struct http_exchange *ex = http_exchange_alloc(s, true, hc->remote_ip);
    ex->h2 = r;
    r->ex = ex;
    hc->nexchanges++;
    tunnel_stream_bind(ts, &stream_cbs, r);
    ex->req.method = xstrdup(method);
    ex->req.target = xstrdup(path);
    const char *q = strchr(path, '?');
    ex->req.path = q ? xstrndup(path, (size_t)(q - path)) : xstrdup(path);
    ex->req.query = xstrdup(q ? q + 1 : "");
    /* Headers as HTTP/1.1 would carry them: Host from :authority, cookie fields joined
     * (RFC 9113 §8.2.3). nh is bounded by the tunnel's header limits. */
    ex->req.headers = xcalloc(nh + 2, sizeof(struct http_header));
    bool has_host = false;
    struct buf cookie;
    buf_init(&cookie);
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(h[i].name, "cookie") == 0) {
            buf_cat(&cookie, cookie.len ? "; " : "", h[i].value, NULL);
            continue;
        }
        has_host |= strcmp(h[i].name, "host") == 0;
        ex->req.headers[ex->req.nheaders++] =
            (struct http_header){xstrdup(h[i].name), xstrdup(h[i].value)};
    }
    if (!has_host && *authority)
        ex->req.headers[ex->req.nheaders++] =
            (struct http_header){xstrdup("Host"), xstrdup(authority)};
    if (cookie.len)
        ex->req.headers[ex->req.nheaders++] =
            (struct http_header){xstrdup("Cookie"), xstrdup(cookie.data)};
    buf_fini(&cookie);
    realip_apply(s->o.realip, &ex->req);
    if (s->shutting_down)
        ex->close_after = true;
    if (s->o.stream && s->o.stream(ex, s->o.arg)) {
        ex->streaming = true; /* dispatched now; the body follows as it arrives */
        dispatch(r);
    }
    /* Otherwise the body is buffered and the handler runs at END_STREAM (s_end). */
}

static void
on_close(struct tunnel_conn *tc, const char *why, void *arg)
{
    (void)tc;
    (void)why;
    struct h2_conn *hc = arg;
    hc->tc = NULL; /* its streams closed first (s_close) */
    conn_maybe_free(hc);
}

static const struct tunnel_conn_cbs conn_cbs = {on_request, NULL, on_close};

void
h2_conn_start(struct http_server *s, struct net_stream *st, const char *remote_ip,
              const uint8_t *data, size_t n)
{
    struct h2_conn *hc = xcalloc(1, sizeof(*hc));
    hc->srv = s;
    snprintf(hc->remote_ip, sizeof(hc->remote_ip), "%s", remote_ip);
    hc->next = s->h2conns;
    if (s->h2conns)
        s->h2conns->prev = hc;
    s->h2conns = hc;
    s->nconns++;
    struct buf early;
    buf_init(&early);
    buf_append(&early, data, n);
    const struct tunnel_opts o = {
        .max_streams = H2_MAX_STREAMS, .header_table = H2_HEADER_TABLE, .untrusted_peer = true};
    hc->tc = tunnel_conn_new(s->loop, st, TUNNEL_SERVER, &o, &early, &conn_cbs, hc);
    buf_fini(&early);
    if (s->shutting_down)
        tunnel_conn_close(hc->tc);
}

void
h2_conns_shutdown(struct http_server *s, bool force)
{
    for (struct h2_conn *hc = s->h2conns; hc; hc = hc->next) {
        if (!hc->tc)
            continue;
        if (force)
            tunnel_conn_abort(hc->tc);
        else
            tunnel_conn_close(hc->tc);
    }
}
