/* TCP (+TLS) byte streams on libuv; see stream.h. Ciphertext and plaintext move through memory
 * BIOs (net/tls); writes go out with uv_try_write first and are copied only for what the
 * socket did not take. */
#include "net/stream.h"
#include "base/buf.h"
#include "base/util.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One socket read: a tunnel read fans out to its streams' clients, and each gets one write per
 * read (batching), so larger reads make fewer, larger writes (256 KiB: 8-stream downloads +7 %
 * over 64 KiB here). One buffer per loop thread (on_alloc); pages no read reached stay untouched.
 */
#define READ_CHUNK (256u << 10)
#define DEFAULT_TIMEOUT_MS 10000
#define TLS_RECORD_MAX (16u << 10) /* the most plaintext one TLS record carries */

struct net_stream {
    uv_loop_t *loop;
    uv_tcp_t *tcp;    /* replaced when a dial moves on to the next address */
    uv_timer_t timer; /* dial deadline; then the deferred-work kick */
    uv_getaddrinfo_t gai;
    uv_connect_t conn_req;
    uv_shutdown_t shut_req;
    struct addrinfo *ai, *ai_next;
    char *host; /* for errors */
    int port;
    char *server_name;
    struct tls_session *tls;
    struct tls_ctx *tls_ctx;
    struct buf early; /* plaintext held back: before the TLS handshake finished, or corked */
    size_t inflight;  /* bytes handed to uv_write, not yet written */
    int handles;      /* open uv handles; freed at 0 after close */
    int cork;         /* net_stream_cork depth */
    bool gai_pending; /* the resolver still holds s */
    const struct net_stream_cbs *cbs;
    void *arg;
    void (*on_finalize)(void *arg); /* an observer of the end (net_stream_on_finalize) */
    void *finalize_arg;
    char peer_ip[64];
    char why[256];
    bool dialing;     /* resolution or connect under way */
    bool connected;   /* TCP up */
    bool ready;       /* TCP (+TLS handshake) up: plaintext may flow */
    bool reading;     /* uv_read_start is active */
    bool paused;      /* the owner asked not to read */
    bool draining;    /* a write answered 0: call on_drain below the low mark */
    bool shut_wanted; /* shutdown once the queue is empty */
    bool shut_sent;
    bool shut_done; /* our FIN is out */
    bool eof;
    bool closing;
    bool close_reported;
    bool in_read; /* delivering on_read: a close waits for the loop */
    bool batched; /* corked until the read being delivered returns (batch_list) */
    struct net_stream *batch_next;
};

struct wreq {
    uv_write_t req;
    struct net_stream *s;
    size_t len;
    char *owned; /* the buffer the write points into (send_owned), or NULL: data follows */
    char data[];
};

static void stream_fail(struct net_stream *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void start_reading(struct net_stream *s);
static void flush_tls(struct net_stream *s);
static void send_held(struct net_stream *s);

/* ---- batching ----
 * Writes made while input is delivered (a tunnel read fans out to many client streams, a
 * request's answer comes in pieces) are held back and leave together when the delivery
 * returns, before the loop polls again: one socket write and full TLS records for what one
 * read produced, not one of each per piece. The held bytes wait in the corked stream's early
 * buffer, so backpressure is counted as for any corked write. */
static _Thread_local int batch_depth;
static _Thread_local struct net_stream *batch_list;

static void
batch_enter(void)
{
    batch_depth++;
}

static void
batch_leave(void)
{
    if (--batch_depth > 0)
        return;
    while (batch_list) {
        struct net_stream *s = batch_list;
        batch_list = s->batch_next;
        s->batch_next = NULL;
        s->batched = false;
        net_stream_uncork(s); /* may call on_drain: writes then go out at once */
    }
}

static void
batch_join(struct net_stream *s)
{
    if (batch_depth == 0 || s->batched || !s->ready || s->closing)
        return;
    s->batched = true;
    s->cork++;
    s->batch_next = batch_list;
    batch_list = s;
}

static void
batch_forget(struct net_stream *s)
{
    for (struct net_stream **p = &batch_list; *p; p = &(*p)->batch_next) {
        if (*p == s) {
            *p = s->batch_next;
            break;
        }
    }
    s->batched = false;
}

/* ---- lifetime ---- */

static void
finalize(struct net_stream *s)
{
    if (s->handles > 0 || s->gai_pending)
        return;
    if (!s->close_reported && s->cbs->on_close) {
        s->close_reported = true;
        s->cbs->on_close(s, s->why[0] ? s->why : NULL, s->arg);
    }
    if (s->on_finalize)
        s->on_finalize(s->finalize_arg);
    if (s->batched)
        batch_forget(s);
    tls_session_free(s->tls);
    if (s->ai)
        uv_freeaddrinfo(s->ai);
    buf_fini(&s->early);
    free(s->tcp);
    free(s->host);
    free(s->server_name);
    free(s);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct net_stream *s = h->data;
    s->handles--;
    finalize(s);
}

void
net_stream_close(struct net_stream *s)
{
    if (s->closing)
        return;
    if (s->batched) {
        /* What the delivery being batched wrote goes out first, as it would have unbatched (a
         * response cut off by its app still reaches the client up to the cut). */
        batch_forget(s);
        if (s->cork > 0 && --s->cork == 0)
            send_held(s);
        if (s->closing)
            return; /* the flush failed and closed it */
    }
    s->closing = true;
    if (s->gai_pending)
        uv_cancel((uv_req_t *)&s->gai); /* its callback still runs, with UV_ECANCELED */
    uv_close((uv_handle_t *)s->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
}

static void
stream_fail(struct net_stream *s, const char *fmt, ...)
{
    if (s->closing)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->why, sizeof(s->why), fmt, ap);
    va_end(ap);
    if (!s->ready && s->cbs->on_connect && (s->dialing || s->tls))
        s->cbs->on_connect(s, s->why, s->arg);
    net_stream_close(s);
}

static struct net_stream *
stream_new(uv_loop_t *loop, const struct net_stream_cbs *cbs, void *arg)
{
    struct net_stream *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->cbs = cbs;
    s->arg = arg;
    buf_init(&s->early);
    s->tcp = xmalloc(sizeof(*s->tcp));
    uv_tcp_init(loop, s->tcp);
    uv_timer_init(loop, &s->timer);
    s->tcp->data = s->timer.data = s;
    s->handles = 2;
    return s;
}

void
net_stream_bind(struct net_stream *s, const struct net_stream_cbs *cbs, void *arg)
{
    s->cbs = cbs;
    s->arg = arg;
}

void
net_stream_on_finalize(struct net_stream *s, void (*fn)(void *arg), void *arg)
{
    s->on_finalize = fn;
    s->finalize_arg = arg;
}

/* ---- writing ---- */

static void
maybe_drain(struct net_stream *s)
{
    if (s->draining && !s->closing && s->inflight + s->early.len < NET_STREAM_HIGH_WATER / 2) {
        s->draining = false;
        if (s->cbs->on_drain)
            s->cbs->on_drain(s, s->arg);
    }
}

/* Both directions finished: nothing more can happen on this connection. */
static void
maybe_done(struct net_stream *s)
{
    if (s->eof && s->shut_done && !s->closing)
        net_stream_close(s);
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
    struct net_stream *s = req->data;
    (void)status; /* a failed shutdown shows up as a read error or EOF */
    s->shut_done = true;
    maybe_done(s);
}

static void
maybe_shutdown(struct net_stream *s)
{
    if (!s->shut_wanted || s->shut_sent || s->inflight > 0 || s->closing || !s->ready)
        return;
    s->shut_sent = true;
    if (s->tls) {
        tls_session_shutdown(s->tls);
        flush_tls(s);
    }
    s->shut_req.data = s;
    uv_shutdown(&s->shut_req, (uv_stream_t *)s->tcp, on_shutdown);
}

static void
on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct net_stream *s = w->s;
    s->inflight -= w->len;
    free(w->owned);
    free(w);
    if (s->closing)
        return;
    if (status < 0) {
        stream_fail(s, "write: %s", uv_strerror(status));
        return;
    }
    maybe_drain(s);
    maybe_shutdown(s);
}

/* Writes what the socket takes at once, when nothing is queued ahead: the byte count, or -1
 * after failing the stream. */
static ssize_t
try_socket(struct net_stream *s, const uv_buf_t *bufs, size_t nbufs)
{
    if (s->inflight > 0)
        return 0;
    int r = uv_try_write((uv_stream_t *)s->tcp, bufs, (unsigned)nbufs);
    if (r >= 0 || r == UV_EAGAIN)
        return r > 0 ? r : 0;
    stream_fail(s, "write: %s", uv_strerror(r));
    return -1;
}

/* Queues w, whose w->len bytes start at base, behind what is in flight. */
static void
queue_write(struct net_stream *s, struct wreq *w, char *base)
{
    uv_buf_t b = uv_buf_init(base, (unsigned)w->len);
    int r = uv_write(&w->req, (uv_stream_t *)s->tcp, &b, 1, on_written);
    if (r < 0) {
        free(w->owned);
        free(w);
        stream_fail(s, "write: %s", uv_strerror(r));
        return;
    }
    s->inflight += w->len;
}

/* Sends bytes on the socket: directly as far as it takes them (one syscall for all the
 * pieces), the rest queued in one copy. */
static void
send_raw(struct net_stream *s, const uv_buf_t *bufs, size_t nbufs)
{
    size_t total = 0;
    for (size_t i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (total == 0 || s->closing)
        return;
    ssize_t took = try_socket(s, bufs, nbufs);
    if (took < 0 || (size_t)took == total)
        return;
    size_t skip = (size_t)took, n = total - skip;
    struct wreq *w = xmalloc(sizeof(*w) + n);
    w->s = s;
    w->len = n;
    w->owned = NULL;
    size_t o = 0;
    for (size_t i = 0; i < nbufs; i++) {
        size_t len = bufs[i].len, off = 0;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        off = skip;
        skip = 0;
        memcpy(w->data + o, bufs[i].base + off, len - off);
        o += len - off;
    }
    queue_write(s, w, w->data);
}

/* Sends a buffer the stream may keep: what the socket does not take at once is queued where it
 * is, the buffer's memory going with the write (b is left empty), instead of being copied. */
static void
send_owned(struct net_stream *s, struct buf *b)
{
    if (b->len == 0 || s->closing)
        return;
    uv_buf_t all = uv_buf_init(b->data, (unsigned)b->len);
    ssize_t took = try_socket(s, &all, 1);
    if (took < 0 || (size_t)took == b->len)
        return;
    struct wreq *w = xmalloc(sizeof(*w));
    w->s = s;
    w->len = b->len - (size_t)took;
    w->owned = b->data;
    buf_init(b);
    queue_write(s, w, w->owned + took);
}

static void
flush_tls(struct net_stream *s)
{
    /* One scratch buffer per loop thread, given the session's ciphertext without a copy. */
    static _Thread_local struct buf out;
    buf_reset(&out);
    if (tls_session_take_output(s->tls, &out) > 0)
        send_owned(s, &out);
}

static int send_plain(struct net_stream *s, const uv_buf_t *bufs, size_t nbufs);

int
net_stream_write(struct net_stream *s, const void *data, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
    return net_stream_writev(s, &b, 1);
}

int
net_stream_writev(struct net_stream *s, const uv_buf_t *bufs, size_t nbufs)
{
    if (s->closing || s->shut_wanted)
        return -1;
    batch_join(s);
    return send_plain(s, bufs, nbufs);
}

static int
send_plain(struct net_stream *s, const uv_buf_t *bufs, size_t nbufs)
{
    if (!s->ready || s->cork) {
        for (size_t i = 0; i < nbufs; i++)
            buf_append(&s->early, bufs[i].base, bufs[i].len);
        if (s->early.len + s->inflight >= NET_STREAM_HIGH_WATER) {
            s->draining = true;
            return 0;
        }
        return 1;
    }
    if (s->tls) {
        size_t total = 0;
        for (size_t i = 0; i < nbufs; i++)
            total += bufs[i].len;
        if (nbufs > 1 && total <= TLS_RECORD_MAX) {
            /* Small pieces (a chunk's size line, its data, its CRLF) go in one record. */
            char one[TLS_RECORD_MAX];
            size_t o = 0;
            for (size_t i = 0; i < nbufs; i++) {
                memcpy(one + o, bufs[i].base, bufs[i].len);
                o += bufs[i].len;
            }
            if (tls_session_write(s->tls, one, o) < 0) {
                stream_fail(s, "TLS write failed");
                return -1;
            }
        } else {
            for (size_t i = 0; i < nbufs; i++) {
                if (bufs[i].len && tls_session_write(s->tls, bufs[i].base, bufs[i].len) < 0) {
                    stream_fail(s, "TLS write failed");
                    return -1;
                }
            }
        }
        flush_tls(s);
    } else {
        send_raw(s, bufs, nbufs);
    }
    if (s->closing)
        return -1;
    if (s->inflight >= NET_STREAM_HIGH_WATER) {
        s->draining = true;
        return 0;
    }
    return 1;
}

/* Sends what was held back (ready streams only). */
static void
send_held(struct net_stream *s)
{
    if (!s->early.len || !s->ready || s->closing)
        return;
    struct buf held = s->early;
    buf_init(&s->early);
    uv_buf_t b = uv_buf_init(held.data, (unsigned)held.len);
    send_plain(s, &b, 1);
    buf_fini(&held);
}

void
net_stream_cork(struct net_stream *s)
{
    s->cork++;
}

void
net_stream_uncork(struct net_stream *s)
{
    if (s->cork > 0 && --s->cork == 0) {
        send_held(s);
        maybe_drain(s);
    }
}

void
net_stream_shutdown(struct net_stream *s)
{
    if (s->closing)
        return;
    s->shut_wanted = true;
    s->cork = 0; /* what was held back goes before the end */
    send_held(s);
    maybe_shutdown(s);
}

size_t
net_stream_queued(const struct net_stream *s)
{
    return s->inflight + s->early.len;
}

/* ---- becoming ready ---- */

static void
become_ready(struct net_stream *s)
{
    s->ready = true;
    s->dialing = false;
    uv_timer_stop(&s->timer);
    if (s->cbs->on_connect && (s->tls || s->host))
        s->cbs->on_connect(s, NULL, s->arg);
    if (s->closing)
        return;
    if (!s->cork)
        send_held(s); /* even after a shutdown request */
    maybe_drain(s);
    maybe_shutdown(s);
}

/* ---- reading ---- */

static pthread_key_t chunk_key;
static pthread_once_t chunk_once = PTHREAD_ONCE_INIT;

static void
chunk_key_make(void)
{
    pthread_key_create(&chunk_key, free);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    /* One buffer per loop thread: data is delivered (or decrypted) before the next read. It is
     * allocated, not thread-local storage: glibc clears a thread's TLS block when the thread
     * starts, which would make every thread (the store's, libuv's pool) resident with it. */
    static _Thread_local char *chunk;
    if (!chunk) {
        pthread_once(&chunk_once, chunk_key_make);
        chunk = xmalloc(READ_CHUNK);
        pthread_setspecific(chunk_key, chunk); /* freed when its thread ends */
    }
    *b = uv_buf_init(chunk, READ_CHUNK);
}

static void
deliver_eof(struct net_stream *s)
{
    if (s->eof)
        return;
    s->eof = true;
    if (s->reading) {
        uv_read_stop((uv_stream_t *)s->tcp);
        s->reading = false;
    }
    if (s->cbs->on_eof)
        s->cbs->on_eof(s, s->arg);
    maybe_done(s);
}

/* Decrypts what the TLS session holds and delivers it while the owner reads. */
static void
pump_tls(struct net_stream *s)
{
    static _Thread_local char plain[TLS_RECORD_MAX]; /* SSL_read gives one record at a time */
    /* The handshake goes on while paused; application data waits. */
    while (!s->closing) {
        if (s->ready && s->paused) {
            if (s->reading) { /* paused during the handshake: stop reading now it is over */
                uv_read_stop((uv_stream_t *)s->tcp);
                s->reading = false;
            }
            return;
        }
        const char *why = NULL;
        int r = tls_session_read(s->tls, plain, sizeof(plain), &why);
        if (!s->ready && tls_session_handshake_done(s->tls)) {
            flush_tls(s);
            become_ready(s);
            if (s->closing)
                return;
        }
        if (r > 0) {
            s->in_read = true;
            s->cbs->on_read(s, (const uint8_t *)plain, (size_t)r, s->arg);
            s->in_read = false;
            continue;
        }
        flush_tls(s); /* handshake messages, alerts, key updates */
        if (r < 0) {
            if (strcmp(why, "peer closed TLS") == 0)
                deliver_eof(s);
            else
                stream_fail(s, "%s: %s", s->ready ? "TLS" : "TLS handshake", why);
        }
        return;
    }
}

static void
on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct net_stream *s = st->data;
    if (s->closing)
        return;
    if (nread == UV_EOF) {
        if (!s->ready) {
            stream_fail(s, "connection closed during the TLS handshake");
            return;
        }
        deliver_eof(s);
        return;
    }
    if (nread < 0) {
        stream_fail(s, "read: %s", uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    batch_enter();
    if (s->tls) {
        tls_session_feed_borrowed(s->tls, b->base, (size_t)nread); /* the chunk, read in place */
        pump_tls(s);
        tls_session_keep_input(s->tls); /* what a pause left: the chunk is reused */
    } else {
        s->in_read = true;
        s->cbs->on_read(s, (const uint8_t *)b->base, (size_t)nread, s->arg);
        s->in_read = false;
    }
    batch_leave();
}

static void
start_reading(struct net_stream *s)
{
    if (s->reading || s->paused || s->eof || s->closing || !s->connected)
        return;
    if (uv_read_start((uv_stream_t *)s->tcp, on_alloc, on_read) == 0)
        s->reading = true;
}

void
net_stream_pause(struct net_stream *s)
{
    s->paused = true;
    if (s->reading && s->ready) {
        uv_read_stop((uv_stream_t *)s->tcp);
        s->reading = false;
    }
}

static void
on_kick(uv_timer_t *t)
{
    struct net_stream *s = t->data;
    if (s->tls && !s->closing) {
        batch_enter();
        pump_tls(s); /* plaintext the session decrypted before the pause */
        batch_leave();
    }
    start_reading(s);
}

void
net_stream_resume(struct net_stream *s)
{
    if (!s->paused || s->closing)
        return;
    s->paused = false;
    /* From the loop, not from inside the owner's call. */
    uv_timer_start(&s->timer, on_kick, 0, 0);
}

/* ---- accepting ---- */

struct net_stream *
net_stream_accept(uv_stream_t *listener, struct tls_ctx *tls, const struct net_stream_cbs *cbs,
                  void *arg)
{
    struct net_stream *s = stream_new(listener->loop, cbs, arg);
    if (uv_accept(listener, (uv_stream_t *)s->tcp) != 0) {
        s->close_reported = true; /* never announced: no on_close */
        net_stream_close(s);
        return NULL;
    }
    uv_tcp_nodelay(s->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(s->tcp, (struct sockaddr *)&ss, &len) == 0)
        uv_ip_name((struct sockaddr *)&ss, s->peer_ip, sizeof(s->peer_ip));
    s->connected = true;
    if (tls) {
        s->tls = tls_session_new(tls);
    } else {
        s->ready = true;
    }
    start_reading(s);
    return s;
}

/* ---- dialling ---- */

static void try_next_address(struct net_stream *s, const char *last_err);

static void
on_dial_timeout(uv_timer_t *t)
{
    struct net_stream *s = t->data;
    if (s->why[0]) { /* an error found before the loop ran */
        char why[sizeof(s->why)];
        memcpy(why, s->why, sizeof(why));
        stream_fail(s, "%s", why);
        return;
    }
    stream_fail(s, "dial tcp %s:%d: i/o timeout", s->host, s->port);
}

static void
on_connected(uv_connect_t *req, int status)
{
    struct net_stream *s = req->data;
    if (s->closing)
        return;
    if (status < 0) {
        /* Another address may work: a fresh socket for it. */
        try_next_address(s, uv_strerror(status));
        return;
    }
    s->connected = true;
    uv_tcp_nodelay(s->tcp, 1);
    start_reading(s);
    if (!s->tls_ctx) {
        become_ready(s);
        return;
    }
    s->tls = tls_session_new_client(s->tls_ctx, s->server_name ? s->server_name : s->host);
    char dummy[1];
    const char *why = NULL;
    if (tls_session_read(s->tls, dummy, sizeof(dummy), &why) < 0) { /* sends ClientHello */
        stream_fail(s, "TLS handshake: %s", why);
        return;
    }
    flush_tls(s);
}

static void
on_old_tcp_closed(uv_handle_t *h)
{
    free(h);
}

static void
try_next_address(struct net_stream *s, const char *last_err)
{
    if (!s->ai_next) {
        stream_fail(s, "dial tcp %s:%d: connect: %s", s->host, s->port,
                    last_err ? last_err : "no address");
        return;
    }
    struct addrinfo *a = s->ai_next;
    s->ai_next = a->ai_next;
    if (last_err) {
        /* The failed socket cannot be reused: close it, dial from a new one. */
        uv_close((uv_handle_t *)s->tcp, on_old_tcp_closed);
        s->tcp = xmalloc(sizeof(*s->tcp));
        uv_tcp_init(s->loop, s->tcp);
        s->tcp->data = s;
    }
    s->conn_req.data = s;
    int r = uv_tcp_connect(&s->conn_req, s->tcp, a->ai_addr, on_connected);
    if (r < 0)
        try_next_address(s, uv_strerror(r));
}

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct net_stream *s = req->data;
    s->gai_pending = false;
    if (status == UV_ECANCELED || s->closing) {
        if (res)
            uv_freeaddrinfo(res);
        finalize(s);
        return;
    }
    if (status < 0) {
        stream_fail(s, "dial tcp: lookup %s: %s", s->host, uv_strerror(status));
        return;
    }
    s->ai = s->ai_next = res;
    try_next_address(s, NULL);
}

struct net_stream *
net_stream_dial(uv_loop_t *loop, const char *host, int port, struct tls_ctx *tls,
                const char *server_name, int64_t timeout_ms, const struct net_stream_cbs *cbs,
                void *arg)
{
    struct net_stream *s = stream_new(loop, cbs, arg);
    s->host = xstrdup(host);
    s->port = port;
    s->tls_ctx = tls;
    s->server_name = server_name ? xstrdup(server_name) : NULL;
    s->dialing = true;
    snprintf(s->peer_ip, sizeof(s->peer_ip), "%s", host);
    uv_timer_start(&s->timer, on_dial_timeout,
                   (uint64_t)(timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS), 0);
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    /* An IP literal needs no lookup: resolved here (AI_NUMERICHOST never blocks) instead of a
     * round trip through libuv's thread pool, which a proxy's agent pays per connection. */
    hints.ai_flags = AI_NUMERICSERV | AI_NUMERICHOST;
    struct addrinfo *lit = NULL;
    if (getaddrinfo(host, portstr, &hints, &lit) == 0 && lit) {
        s->ai = lit;
        s->ai_next = lit->ai_next;
        s->conn_req.data = s;
        int r = uv_tcp_connect(&s->conn_req, s->tcp, lit->ai_addr, on_connected);
        if (r < 0) { /* reported from the loop, as promised */
            snprintf(s->why, sizeof(s->why), "dial tcp %s:%d: connect: %s", host, port,
                     uv_strerror(r));
            uv_timer_start(&s->timer, on_dial_timeout, 0, 0);
        }
        return s;
    }
    hints.ai_flags = AI_NUMERICSERV;
    s->gai.data = s;
    int r = uv_getaddrinfo(loop, &s->gai, on_resolved, host, portstr, &hints);
    s->gai_pending = r == 0;
    if (r < 0) {
        snprintf(s->why, sizeof(s->why), "dial tcp: lookup %s: %s", host, uv_strerror(r));
        /* Report from the loop, as promised. */
        uv_timer_start(&s->timer, on_dial_timeout, 0, 0);
    }
    return s;
}

const char *
net_stream_alpn(const struct net_stream *s)
{
    return s->tls ? tls_session_alpn(s->tls) : "";
}

const char *
net_stream_peer_ip(const struct net_stream *s)
{
    return s->peer_ip;
}

/* ---- splicing two streams ---- */

struct splice {
    struct net_stream *end[2];
    void (*on_done)(void *arg);
    void *arg;
};

static int
splice_side(struct splice *sp, struct net_stream *s)
{
    return sp->end[0] == s ? 0 : 1;
}

static void
sp_read(struct net_stream *s, const uint8_t *d, size_t n, void *arg)
{
    struct splice *sp = arg;
    struct net_stream *other = sp->end[1 - splice_side(sp, s)];
    if (!other) {
        net_stream_close(s);
        return;
    }
    if (net_stream_write(other, d, n) == 0)
        net_stream_pause(s); /* resumed when the other side drains */
}

static void
sp_eof(struct net_stream *s, void *arg)
{
    struct splice *sp = arg;
    struct net_stream *other = sp->end[1 - splice_side(sp, s)];
    if (other)
        net_stream_shutdown(other);
}

static void
sp_drain(struct net_stream *s, void *arg)
{
    struct splice *sp = arg;
    struct net_stream *other = sp->end[1 - splice_side(sp, s)];
    if (other)
        net_stream_resume(other);
}

static void
sp_close(struct net_stream *s, const char *why, void *arg)
{
    (void)why;
    struct splice *sp = arg;
    int i = splice_side(sp, s);
    sp->end[i] = NULL;
    if (sp->end[1 - i]) {
        net_stream_close(sp->end[1 - i]);
    } else {
        if (sp->on_done)
            sp->on_done(sp->arg);
        free(sp);
    }
}

static const struct net_stream_cbs splice_cbs = {NULL, sp_read, sp_eof, sp_drain, sp_close};

void
net_stream_splice(struct net_stream *a, struct net_stream *b, void (*on_done)(void *arg), void *arg)
{
    struct splice *sp = xcalloc(1, sizeof(*sp));
    sp->end[0] = a;
    sp->end[1] = b;
    sp->on_done = on_done;
    sp->arg = arg;
    net_stream_bind(a, &splice_cbs, sp);
    net_stream_bind(b, &splice_cbs, sp);
    net_stream_resume(a);
    net_stream_resume(b);
}
