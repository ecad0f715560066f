/* A tunnel session on a net_stream, the agent's dialler, and stream<->TCP pipes: see conn.h. */
#include "tunnel/conn.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "http/upgrade.h"
#include "http/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUTPUT_CHUNK (64u << 10)
#define TICK_MS 5000
#define HANDSHAKE_TIMEOUT_MS 10000

struct tunnel_conn {
    uv_loop_t *loop;
    struct net_stream *st;
    struct tunnel *t;
    uv_timer_t timer;
    uv_prepare_t prep; /* flushes output once per loop iteration, before the loop sleeps */
    bool flush_scheduled;
    const struct tunnel_conn_cbs *cbs;
    void *arg;
    struct buf out;
    bool blocked;  /* the socket is full: wait for on_drain */
    bool flushing; /* reentrancy guard */
    bool ready_told;
    bool closing;
    int open; /* the stream, the timer and the prepare handle */
    char why[256];
    /* Dialling only: the upgrade under way (the session exists once it succeeded), and the
     * role the session takes after it. */
    struct http_upgrade *up;
    enum tunnel_role dial_role;
};

static void tc_flush(struct tunnel_conn *tc);
static void tc_fail(struct tunnel_conn *tc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- lifetime ---- */

static void
tc_release(struct tunnel_conn *tc)
{
    if (--tc->open > 0)
        return;
    if (tc->cbs->on_close)
        tc->cbs->on_close(tc, tc->why[0] ? tc->why : NULL, tc->arg);
    buf_fini(&tc->out);
    free(tc);
}

static void
on_timer_closed(uv_handle_t *h)
{
    tc_release(h->data);
}

static void
close_handles(struct tunnel_conn *tc)
{
    uv_close((uv_handle_t *)&tc->timer, on_timer_closed);
    uv_close((uv_handle_t *)&tc->prep, on_timer_closed);
}

static void
tc_close_now(struct tunnel_conn *tc)
{
    if (tc->closing)
        return;
    tc->closing = true;
    close_handles(tc);
    if (tc->st)
        net_stream_close(tc->st);
}

static void
tc_fail(struct tunnel_conn *tc, const char *fmt, ...)
{
    if (tc->closing)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tc->why, sizeof(tc->why), fmt, ap);
    va_end(ap);
    tc_close_now(tc);
}

/* ---- the session's plumbing ---- */

static void
t_request(struct tunnel *t, struct tunnel_stream *s, const char *method, const char *authority,
          const char *path, const struct tunnel_header *h, size_t nh, void *arg)
{
    (void)t;
    struct tunnel_conn *tc = arg;
    if (tc->cbs->on_request)
        tc->cbs->on_request(tc, s, method, authority, path, h, nh, tc->arg);
    else
        tunnel_stream_reset(s, TUNNEL_REFUSED_STREAM);
}

static void
on_prepare(uv_prepare_t *h)
{
    struct tunnel_conn *tc = h->data;
    uv_prepare_stop(h);
    tc->flush_scheduled = false;
    tc_flush(tc);
}

/* Output waits for the end of the loop iteration: writes are batched, and no tunnel call made
 * by an owner's callback runs other callbacks before it returns. */
static void
tc_schedule_flush(struct tunnel_conn *tc)
{
    if (tc->flush_scheduled || tc->closing)
        return;
    tc->flush_scheduled = true;
    uv_prepare_start(&tc->prep, on_prepare);
}

static void
t_output(struct tunnel *t, void *arg)
{
    (void)t;
    tc_schedule_flush(arg);
}

static void
t_goaway(struct tunnel *t, uint32_t code, void *arg)
{
    (void)t;
    (void)code;
    (void)arg; /* existing streams finish; tc_flush closes once the session is done */
}

static const struct tunnel_cbs session_cbs = {t_request, t_output, t_goaway};

/* Moves session output to the socket until either runs dry or the socket is full. */
static void
tc_flush(struct tunnel_conn *tc)
{
    if (tc->flushing || tc->closing || !tc->t)
        return;
    tc->flushing = true;
    while (!tc->blocked && !tc->closing) {
        buf_reset(&tc->out);
        if (tunnel_take_output(tc->t, &tc->out, OUTPUT_CHUNK) == 0)
            break;
        int rc = net_stream_write(tc->st, tc->out.data, tc->out.len);
        if (rc < 0) {
            tc_fail(tc, "tunnel write failed");
            break;
        }
        if (rc == 0)
            tc->blocked = true;
    }
    tc->flushing = false;
    if (tc->closing)
        return;
    if (!tc->ready_told && tunnel_is_ready(tc->t)) {
        tc->ready_told = true;
        if (tc->cbs->on_ready)
            tc->cbs->on_ready(tc, tc->arg);
    }
    if (!tc->closing && tunnel_is_done(tc->t) && !tunnel_want_write(tc->t))
        net_stream_shutdown(tc->st); /* GOAWAY sent and nothing left: the stream ends */
}

static void
s_read(struct net_stream *st, const uint8_t *data, size_t n, void *arg)
{
    (void)st;
    struct tunnel_conn *tc = arg;
    if (tunnel_feed(tc->t, data, n) < 0) {
        tc_flush(tc); /* the GOAWAY that says why */
        tc_fail(tc, "tunnel protocol error from the peer");
        return;
    }
    tc_schedule_flush(tc);
}

static void
s_eof(struct net_stream *st, void *arg)
{
    (void)st;
    struct tunnel_conn *tc = arg;
    tc_fail(tc, "tunnel closed by the peer");
}

static void
s_drain(struct net_stream *st, void *arg)
{
    (void)st;
    struct tunnel_conn *tc = arg;
    tc->blocked = false;
    tc_flush(tc);
}

static void
s_close(struct net_stream *st, const char *why, void *arg)
{
    (void)st;
    struct tunnel_conn *tc = arg;
    if (why && !tc->why[0])
        snprintf(tc->why, sizeof(tc->why), "%s", why);
    tc->st = NULL;
    if (!tc->closing) {
        tc->closing = true;
        close_handles(tc);
    }
    /* Streams hear of it before the owner does. */
    tunnel_free(tc->t);
    tc->t = NULL;
    tc_release(tc);
}

static const struct net_stream_cbs stream_cbs = {NULL, s_read, s_eof, s_drain, s_close};

static void
on_tick(uv_timer_t *timer)
{
    struct tunnel_conn *tc = timer->data;
    if (!tc->t)
        return;
    if (tunnel_tick(tc->t, time_mono_ms()) < 0) {
        tc_fail(tc, "tunnel keepalive: no answer to PING for %d s", TUNNEL_KEEPALIVE_MS / 1000);
        return;
    }
    tc_flush(tc);
}

static struct tunnel_conn *
tc_alloc(uv_loop_t *loop, const struct tunnel_conn_cbs *cbs, void *arg)
{
    struct tunnel_conn *tc = xcalloc(1, sizeof(*tc));
    tc->loop = loop;
    tc->cbs = cbs;
    tc->arg = arg;
    buf_init(&tc->out);
    uv_timer_init(loop, &tc->timer);
    uv_prepare_init(loop, &tc->prep);
    tc->timer.data = tc->prep.data = tc;
    tc->open = 3;
    return tc;
}

/* Starts the session on tc->st, which already calls stream_cbs. */
static void
tc_start(struct tunnel_conn *tc, enum tunnel_role role, const struct tunnel_opts *o,
         const uint8_t *early, size_t nearly)
{
    tc->t = tunnel_new(role, o, &session_cbs, tc);
    uv_timer_start(&tc->timer, on_tick, TICK_MS, TICK_MS);
    if (nearly)
        s_read(tc->st, early, nearly, tc);
    else
        tc_schedule_flush(tc);
}

struct tunnel_conn *
tunnel_conn_new(uv_loop_t *loop, struct net_stream *st, enum tunnel_role role,
                const struct tunnel_opts *o, const struct buf *early,
                const struct tunnel_conn_cbs *cbs, void *arg)
{
    struct tunnel_conn *tc = tc_alloc(loop, cbs, arg);
    tc->st = st;
    net_stream_bind(st, &stream_cbs, tc);
    tc_start(tc, role, o, early ? (const uint8_t *)early->data : NULL, early ? early->len : 0);
    return tc;
}

struct tunnel *
tunnel_conn_session(struct tunnel_conn *tc)
{
    return tc->t;
}

void
tunnel_conn_close(struct tunnel_conn *tc)
{
    if (tc->closing)
        return;
    if (tc->up) { /* still dialling: give up, the stream never becomes ours */
        http_upgrade_cancel(tc->up);
        tc->up = NULL;
        tc->open--;
    }
    if (tc->t) {
        tunnel_shutdown(tc->t);
        tc_flush(tc);
    }
    tc_close_now(tc);
}

void
tunnel_conn_abort(struct tunnel_conn *tc)
{
    if (tc->up) {
        http_upgrade_cancel(tc->up);
        tc->up = NULL;
        tc->open--;
    }
    tc_close_now(tc);
}

/* ---- dialling: the upgrade handshake ---- */

static void
on_upgraded(struct net_stream *st, const struct buf *early, int status, const char *err, void *arg)
{
    struct tunnel_conn *tc = arg;
    tc->up = NULL;
    if (!st) {
        if (status)
            snprintf(tc->why, sizeof(tc->why), "tunnel refused with status %d%s%s", status,
                     err && *err ? ": " : "", err ? err : "");
        else
            snprintf(tc->why, sizeof(tc->why), "%s", err ? err : "tunnel handshake failed");
        tc->open--; /* no stream will report */
        tc_close_now(tc);
        return;
    }
    uv_timer_stop(&tc->timer);
    tc->st = st;
    net_stream_bind(st, &stream_cbs, tc);
    tc_start(tc, tc->dial_role, NULL, (const uint8_t *)early->data, early->len);
}

static void
on_handshake_timeout(uv_timer_t *timer)
{
    struct tunnel_conn *tc = timer->data;
    http_upgrade_cancel(tc->up);
    tc->up = NULL;
    tc->open--; /* the stream never became ours */
    tc_fail(tc, "tunnel handshake: timed out after %d s", HANDSHAKE_TIMEOUT_MS / 1000);
}

struct tunnel_conn *
tunnel_dial(uv_loop_t *loop, const char *url, const char *path, enum tunnel_role role,
            const char *const *headers, struct tls_ctx *tls, const struct tunnel_conn_cbs *cbs,
            void *arg)
{
    struct tunnel_conn *tc = tc_alloc(loop, cbs, arg);
    tc->dial_role = role;
    size_t n = 0;
    while (headers && headers[n])
        n++;
    const char **hdrs = xcalloc(n + 2, sizeof(*hdrs)); /* the version, the caller's, NULL */
    hdrs[0] = "Coder-Tunnel-Version: 1";
    for (size_t i = 0; i < n; i++)
        hdrs[i + 1] = headers[i];
    char *err = NULL;
    tc->up = http_upgrade_dial(loop, url, path, "coder-tunnel", hdrs, tls, HANDSHAKE_TIMEOUT_MS,
                               on_upgraded, tc, &err);
    free(hdrs); /* the request was built from them */
    if (!tc->up) {
        snprintf(tc->why, sizeof(tc->why), "invalid region URL \"%s\"", url);
        free(err);
        tc->open--; /* no stream */
        tc_close_now(tc);
        return tc;
    }
    uv_timer_start(&tc->timer, on_handshake_timeout, HANDSHAKE_TIMEOUT_MS, 0);
    return tc;
}

/* ---- pipes ---- */

struct pipe {
    struct tunnel_stream *ts;
    struct net_stream *ns;
    size_t owed;         /* tunnel bytes written to ns but not yet acknowledged */
    bool ns_full;        /* ns's queue is above its mark: acknowledge when it drains */
    bool respond;        /* answer the stream when ns connects (CONNECT) */
    bool ns_eof_sent;    /* ns EOF carried to the tunnel stream */
    bool answered_error; /* a 502 went out with END_STREAM */
    /* TLS between ns's plaintext and the tunnel stream (an https app behind a relay), or NULL,
     * and what passes through it each way. */
    struct tls_session *tls;
    struct buf out, plain;
};

static void
pipe_maybe_free(struct pipe *p)
{
    if (p->ts || p->ns)
        return;
    if (p->tls)
        tls_session_free(p->tls);
    buf_fini(&p->out);
    buf_fini(&p->plain);
    free(p);
}

/* Sends what the TLS layer has for the tunnel. Returns what tunnel_stream_write returns. */
static int
pipe_tls_flush(struct pipe *p)
{
    buf_reset(&p->out);
    if (tls_session_take_output(p->tls, &p->out) == 0 || !p->ts)
        return 1;
    return tunnel_stream_write(p->ts, p->out.data, p->out.len);
}

static void
pt_data(struct tunnel_stream *ts, const uint8_t *d, size_t n, void *arg)
{
    struct pipe *p = arg;
    if (!p->ns) {
        tunnel_stream_consumed(ts, n);
        return;
    }
    const uint8_t *out = d;
    size_t nout = n;
    bool tls_closed = false;
    if (p->tls) { /* decrypt; a DATA frame may hold no whole record */
        tls_session_feed(p->tls, d, n);
        buf_reset(&p->plain);
        const char *why = NULL;
        int k;
        do {
            buf_reserve(&p->plain, 16384);
            k = tls_session_read(p->tls, p->plain.data + p->plain.len, 16384, &why);
            if (k > 0)
                p->plain.len += (size_t)k;
        } while (k > 0);
        pipe_tls_flush(p); /* what the session answers (key updates, close_notify) */
        out = (const uint8_t *)p->plain.data;
        nout = p->plain.len;
        tls_closed = k < 0;
    }
    if (nout && net_stream_write(p->ns, out, nout) == 0)
        p->ns_full = true;
    p->owed += n;
    if (!p->ns_full) { /* under the socket's mark: these bytes (and any owed) count as written */
        tunnel_stream_consumed(ts, p->owed);
        p->owed = 0;
    }
    if (tls_closed) /* the app closed TLS (or broke it): its side ends */
        net_stream_shutdown(p->ns);
}

static void
pt_end(struct tunnel_stream *ts, void *arg)
{
    (void)ts;
    struct pipe *p = arg;
    if (p->ns)
        net_stream_shutdown(p->ns);
}

static void
pt_writable(struct tunnel_stream *ts, void *arg)
{
    (void)ts;
    struct pipe *p = arg;
    if (p->ns)
        net_stream_resume(p->ns);
}

static void
pt_close(struct tunnel_stream *ts, uint32_t code, void *arg)
{
    (void)ts;
    (void)code;
    struct pipe *p = arg;
    p->ts = NULL;
    if (p->ns)
        net_stream_close(p->ns);
    pipe_maybe_free(p);
}

static const struct tunnel_stream_cbs pipe_tcbs = {NULL, pt_data, pt_end, pt_writable, pt_close};

static void
pn_connect(struct net_stream *ns, const char *err, void *arg)
{
    (void)ns;
    struct pipe *p = arg;
    if (!p->respond || !p->ts)
        return;
    p->respond = false;
    if (err) {
        p->answered_error = true;
        const struct tunnel_header h[] = {{"coder-error", err}};
        tunnel_stream_respond(p->ts, 502, h, 1, true);
        return;
    }
    tunnel_stream_respond(p->ts, 200, NULL, 0, false);
}

static void
pn_read(struct net_stream *ns, const uint8_t *d, size_t n, void *arg)
{
    struct pipe *p = arg;
    if (!p->ts || (p->tls && tls_session_write(p->tls, d, n) < 0)) {
        net_stream_close(ns);
        return;
    }
    if ((p->tls ? pipe_tls_flush(p) : tunnel_stream_write(p->ts, d, n)) == 0)
        net_stream_pause(ns); /* resumed by pt_writable */
}

static void
pn_eof(struct net_stream *ns, void *arg)
{
    (void)ns;
    struct pipe *p = arg;
    p->ns_eof_sent = true;
    if (!p->ts)
        return;
    if (p->tls) {
        tls_session_shutdown(p->tls); /* close_notify, then the end */
        pipe_tls_flush(p);
    }
    tunnel_stream_end(p->ts);
}

static void
pn_drain(struct net_stream *ns, void *arg)
{
    (void)ns;
    struct pipe *p = arg;
    p->ns_full = false;
    if (p->ts && p->owed) {
        tunnel_stream_consumed(p->ts, p->owed);
        p->owed = 0;
    }
}

static void
pn_close(struct net_stream *ns, const char *why, void *arg)
{
    (void)ns;
    struct pipe *p = arg;
    p->ns = NULL;
    if (!p->ts) {
        pipe_maybe_free(p);
        return;
    }
    if (p->answered_error)
        return; /* the 502 ended our side; the region resets the stream (TUNNEL.md §5) */
    /* From here the tunnel stream's close may free p (pt_close sees ns gone): no p after. */
    {
        if (p->respond) { /* the dial failed: pn_connect answered already, or it closed early */
            p->respond = false;
            const struct tunnel_header h[] = {{"coder-error", why ? why : "closed"}};
            tunnel_stream_respond(p->ts, 502, h, 1, true);
        } else if (why || !p->ns_eof_sent) {
            tunnel_stream_reset(p->ts, TUNNEL_CONNECT_ERROR);
        } else {
            tunnel_stream_end(p->ts);
        }
    }
}

static const struct net_stream_cbs pipe_ncbs = {pn_connect, pn_read, pn_eof, pn_drain, pn_close};

void
tunnel_pipe(struct tunnel_stream *ts, struct net_stream *ns, struct tls_session *tls)
{
    struct pipe *p = xcalloc(1, sizeof(*p));
    p->ts = ts;
    p->ns = ns;
    p->tls = tls;
    buf_init(&p->out);
    buf_init(&p->plain);
    tunnel_stream_bind(ts, &pipe_tcbs, p);
    net_stream_bind(ns, &pipe_ncbs, p);
}

void
tunnel_connect_stream(uv_loop_t *loop, struct tunnel_stream *ts, const char *authority)
{
    /* "host:port" or "[v6]:port" */
    char host[256];
    const char *colon = strrchr(authority, ':');
    int port = colon ? atoi(colon + 1) : 0;
    size_t hl = colon ? (size_t)(colon - authority) : 0;
    if (hl >= 2 && authority[0] == '[' && authority[hl - 1] == ']') {
        authority++;
        hl -= 2;
    }
    if (!colon || hl == 0 || hl >= sizeof(host) || port <= 0 || port > 65535) {
        const struct tunnel_header h[] = {{"coder-error", "invalid CONNECT authority"}};
        tunnel_stream_respond(ts, 400, h, 1, true);
        return;
    }
    memcpy(host, authority, hl);
    host[hl] = '\0';
    struct pipe *p = xcalloc(1, sizeof(*p));
    p->ts = ts;
    p->respond = true;
    buf_init(&p->out);
    buf_init(&p->plain);
    tunnel_stream_bind(ts, &pipe_tcbs, p);
    p->ns = net_stream_dial(loop, host, port, NULL, NULL, 10000, &pipe_ncbs, p);
}

/* ---- splices: a relay-link stream joined to a CONNECT on an agent's tunnel ---- */

struct splice {
    struct tunnel_stream *in;  /* from the proxy: we are its server */
    struct tunnel_stream *out; /* to the agent: we are its client */
    size_t owed_in;            /* bytes from in queued on out, not yet acknowledged to in */
    size_t owed_out;           /* the same the other way */
    bool answered;             /* in has its response head */
};

/* One direction's data: from src into dst, acknowledged to src once dst's buffer took it. */
static void
sp_forward(struct tunnel_stream *src, struct tunnel_stream *dst, size_t *owed, const uint8_t *d,
           size_t n)
{
    if (!dst) {
        tunnel_stream_consumed(src, n);
        return;
    }
    if (tunnel_stream_write(dst, d, n) == 1) {
        tunnel_stream_consumed(src, *owed + n);
        *owed = 0;
    } else {
        *owed += n; /* acknowledged when dst says it is writable */
    }
}

/* A side closed: forget it; an abort carries over, a clean close needs nothing more (both
 * directions already ended, and the ends were passed on). Frees sp once both are gone. */
static void
sp_closed(struct splice *sp, struct tunnel_stream **side, struct tunnel_stream *other,
          uint32_t code)
{
    *side = NULL;
    if (!other) {
        free(sp);
        return;
    }
    if (code != TUNNEL_NO_ERROR)
        tunnel_stream_reset(other, TUNNEL_CANCEL); /* its on_close frees sp */
}

static void
spi_data(struct tunnel_stream *s, const uint8_t *d, size_t n, void *arg)
{
    struct splice *sp = arg;
    sp_forward(s, sp->out, &sp->owed_in, d, n);
}

static void
spi_end(struct tunnel_stream *s, void *arg)
{
    (void)s;
    struct splice *sp = arg;
    if (sp->out)
        tunnel_stream_end(sp->out);
}

static void
spi_writable(struct tunnel_stream *s, void *arg)
{
    (void)s;
    struct splice *sp = arg;
    if (sp->out && sp->owed_out) {
        tunnel_stream_consumed(sp->out, sp->owed_out);
        sp->owed_out = 0;
    }
}

static void
spi_close(struct tunnel_stream *s, uint32_t code, void *arg)
{
    (void)s;
    struct splice *sp = arg;
    sp_closed(sp, &sp->in, sp->out, code);
}

static const struct tunnel_stream_cbs splice_in_cbs = {NULL, spi_data, spi_end, spi_writable,
                                                       spi_close};

static void
spo_response(struct tunnel_stream *s, int status, const struct tunnel_header *h, size_t nh,
             void *arg)
{
    struct splice *sp = arg;
    if (!sp->in || sp->answered)
        return;
    sp->answered = true;
    const struct tunnel_header *why = NULL;
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(h[i].name, "coder-error") == 0)
            why = &h[i];
    }
    tunnel_stream_respond(sp->in, status, why, why ? 1 : 0, status != 200);
    if (status != 200)
        tunnel_stream_reset(s, TUNNEL_CANCEL); /* the agent ended its side (TUNNEL.md §5) */
}

static void
spo_data(struct tunnel_stream *s, const uint8_t *d, size_t n, void *arg)
{
    struct splice *sp = arg;
    sp_forward(s, sp->in, &sp->owed_out, d, n);
}

static void
spo_end(struct tunnel_stream *s, void *arg)
{
    (void)s;
    struct splice *sp = arg;
    if (sp->in && sp->answered)
        tunnel_stream_end(sp->in);
}

static void
spo_writable(struct tunnel_stream *s, void *arg)
{
    (void)s;
    struct splice *sp = arg;
    if (sp->in && sp->owed_in) {
        tunnel_stream_consumed(sp->in, sp->owed_in);
        sp->owed_in = 0;
    }
}

static void
spo_close(struct tunnel_stream *s, uint32_t code, void *arg)
{
    (void)s;
    struct splice *sp = arg;
    if (sp->in && !sp->answered) {
        /* The agent's tunnel went away before it answered. */
        sp->answered = true;
        const struct tunnel_header h[] = {{"coder-error", "the agent's tunnel closed"}};
        tunnel_stream_respond(sp->in, 502, h, 1, true);
        code = TUNNEL_NO_ERROR; /* the 502 ended our side; the proxy resets the stream */
    }
    sp_closed(sp, &sp->out, sp->in, code);
}

static const struct tunnel_stream_cbs splice_out_cbs = {spo_response, spo_data, spo_end,
                                                        spo_writable, spo_close};

void
tunnel_splice_connect(struct tunnel_stream *in, struct tunnel *to, const char *authority)
{
    struct splice *sp = xcalloc(1, sizeof(*sp));
    sp->in = in;
    tunnel_stream_bind(in, &splice_in_cbs, sp);
    sp->out = to ? tunnel_stream_open(to, "CONNECT", authority, NULL, NULL, 0, &splice_out_cbs, sp)
                 : NULL;
    if (!sp->out) {
        sp->answered = true;
        const struct tunnel_header h[] = {{"coder-error", "the agent's tunnel is closing"}};
        tunnel_stream_respond(in, 502, h, 1, true);
    }
}
