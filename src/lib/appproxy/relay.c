/* Relaying one HTTP exchange to a workspace app over a CONNECT stream on an agent tunnel, or
 * on a relay link to the primary (see relay.h). The request streams both ways: its body goes up
 * as it arrives (paused while the tunnel stream is full), the app's response comes down as the
 * app sends it (tunnel bytes acknowledged only once written to the client). */
#include "appproxy/relay.h"
#include "base/buf.h"
#include "base/util.h"
#include "http/common.h"
#include "net/tls.h"
#include "tunnel/conn.h"
#include "tunnel/tunnel.h"

#include <llhttp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_UPSTREAM_HEAD (64u << 10)
#define MAX_UPSTREAM_HEADERS 100

struct relay {
    struct http_exchange *ex;
    char *target; /* "host:port" */
    char *rest;   /* the path the app sees, with the query */
    struct tunnel_stream *ts;
    llhttp_t parser;
    size_t head_bytes;
    struct buf field, value;
    bool in_value;
    bool chunked_up; /* the request body goes up chunked */
    bool begun;
    size_t owed;      /* tunnel bytes written to the client, not yet acknowledged */
    bool client_full; /* the client's queue is above its mark: acknowledge on drain */
    bool done;        /* the exchange has ended */
    bool upgraded;    /* the app answered 101 to the client's upgrade */
    bool bad_accept;  /* its 101 carried the wrong Sec-WebSocket-Accept */
    size_t head_mark; /* response headers set before the app's (ours, e.g. the token cookie) */
    /* Keep-alive to the app: the stream (and the agent's TCP connection behind it) is parked
     * for the next request to the same app once a response is through. */
    struct tunnel *t; /* the session the stream is on */
    char *via;        /* on a relay link: the agent's id (coder-agent-id), else NULL */
    char *pool_key;   /* NULL: this request's stream is not reused */
    bool reused;      /* the stream came from the pool (it may have gone stale) */
    bool up_done;     /* the whole request (with its body) went up */
    size_t up_body;   /* request body bytes sent */
    /* An https app: TLS inside the tunnel stream. Plaintext written before the handshake is
     * done waits in tls_pending; decrypted bytes pass through tls_plain. */
    struct tls_session *tls;
    struct buf tls_pending, tls_out, tls_plain;
};

static void
relay_free(struct relay *r)
{
    if (r->tls)
        tls_session_free(r->tls);
    buf_fini(&r->tls_pending);
    buf_fini(&r->tls_out);
    buf_fini(&r->tls_plain);
    free(r->rest);
    free(r->target);
    free(r->pool_key);
    free(r->via);
    buf_fini(&r->field);
    buf_fini(&r->value);
    free(r);
}

static void
html_escape(struct buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            buf_puts(b, "&lt;");
            break;
        case '>':
            buf_puts(b, "&gt;");
            break;
        case '&':
            buf_puts(b, "&amp;");
            break;
        case '"':
            buf_puts(b, "&quot;");
            break;
        case '\'':
            buf_puts(b, "&#39;");
            break;
        default:
            buf_putc(b, *s);
        }
    }
}

/* An error for the user: a page for a browser, Coder's JSON for anything else. */
void
app_fail_page(struct http_exchange *ex, int status, const char *title, const char *detail)
{
    const char *accept = http_request_header(&ex->req, "Accept");
    if (!accept || !strstr(accept, "text/html")) {
        http_reply_error(ex, status, title, detail);
        return;
    }
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    html_escape(&b, title);
    buf_puts(&b, "</title></head><body><h1>");
    html_escape(&b, title);
    buf_puts(&b, "</h1><p>");
    html_escape(&b, detail ? detail : "");
    buf_puts(&b, "</p><p>Retry in a moment; if it persists, check the workspace and its agent."
                 "</p></body></html>\n");
    http_reply_text(ex, status, "text/html; charset=utf-8", b.data);
    buf_fini(&b);
}

/* ---- bytes toward the app: plain, or through TLS for an https app ---- */

/* Sends the TLS session's output. Returns what tunnel_stream_write returns (1 when idle). */
static int
tls_flush(struct relay *r)
{
    buf_reset(&r->tls_out);
    if (tls_session_take_output(r->tls, &r->tls_out) == 0 || !r->ts)
        return 1;
    return tunnel_stream_write(r->ts, r->tls_out.data, r->tls_out.len);
}

/* Writes request bytes: 1 go on, 0 wait for t_writable, -1 the stream is gone. */
static int
up_write(struct relay *r, const void *d, size_t n)
{
    if (!r->ts)
        return -1;
    if (!r->tls)
        return tunnel_stream_write(r->ts, d, n);
    if (!tls_session_handshake_done(r->tls)) {
        buf_append(&r->tls_pending, d, n);
        return r->tls_pending.len > TUNNEL_SEND_HIGH_WATER ? 0 : 1;
    }
    if (tls_session_write(r->tls, d, n) < 0)
        return -1;
    return tls_flush(r);
}

/* ---- idle upstream connections: keep-alive to apps (TUNNEL.md §5) ---- */

#define IDLE_PER_APP 256
#define IDLE_MAX 1024

/* A CONNECT stream whose app connection finished a response and may carry the next request.
 * Loop thread only: one list for the process. */
struct idle {
    struct tunnel_stream *ts;
    struct tunnel *t;
    char *key; /* the app: target and the agent (for relay links) */
    struct idle *prev, *next;
    bool listed;
};

static struct idle *idle_head;
static size_t idle_count;

static void
idle_unlink(struct idle *i)
{
    if (!i->listed)
        return;
    i->listed = false;
    if (i->prev)
        i->prev->next = i->next;
    else
        idle_head = i->next;
    if (i->next)
        i->next->prev = i->prev;
    idle_count--;
}

static void
idle_free(struct idle *i)
{
    idle_unlink(i);
    free(i->key);
    free(i);
}

/* The app spoke or closed while idle: not reusable. Our side ends; the stream then closes. */
static void
idle_retire(struct idle *i)
{
    idle_unlink(i);
    tunnel_stream_end(i->ts);
}

static void
i_data(struct tunnel_stream *s, const uint8_t *d, size_t n, void *arg)
{
    (void)d;
    tunnel_stream_consumed(s, n);
    idle_retire(arg);
}

static void
i_end(struct tunnel_stream *s, void *arg)
{
    (void)s;
    idle_retire(arg);
}

static void
i_close(struct tunnel_stream *s, uint32_t code, void *arg)
{
    (void)s;
    (void)code;
    idle_free(arg);
}

static const struct tunnel_stream_cbs idle_cbs = {NULL, i_data, i_end, NULL, i_close};

static void
idle_park(struct tunnel_stream *ts, struct tunnel *t, const char *key)
{
    size_t same = 0;
    struct idle *oldest = NULL, *oldest_same = NULL;
    for (struct idle *i = idle_head; i; i = i->next) {
        oldest = i;
        if (i->t == t && strcmp(i->key, key) == 0) {
            same++;
            oldest_same = i;
        }
    }
    if (same >= IDLE_PER_APP)
        idle_retire(oldest_same);
    else if (idle_count >= IDLE_MAX)
        idle_retire(oldest);
    struct idle *i = xcalloc(1, sizeof(*i));
    i->ts = ts;
    i->t = t;
    i->key = xstrdup(key);
    i->listed = true;
    i->next = idle_head; /* most recent first: the warmest connection is taken next */
    if (idle_head)
        idle_head->prev = i;
    idle_head = i;
    idle_count++;
    tunnel_stream_bind(ts, &idle_cbs, i);
}

static struct tunnel_stream *
idle_take(struct tunnel *t, const char *key)
{
    for (struct idle *i = idle_head; i; i = i->next) {
        if (i->t == t && strcmp(i->key, key) == 0) {
            struct tunnel_stream *ts = i->ts;
            idle_free(i); /* the caller binds the stream to itself */
            return ts;
        }
    }
    return NULL;
}

/* Ends the client's side (once) and lets go of the tunnel stream. clean: the app's response
 * is complete; otherwise a begun response is cut off, so the client cannot take it as whole,
 * and one not begun is a 502 saying why. Frees r at once when the stream is gone already. */
static void
finish_why(struct relay *r, bool clean, const char *why)
{
    if (r->done)
        return;
    r->done = true;
    struct http_exchange *ex = r->ex;
    if (r->begun && clean)
        http_exchange_end(ex);
    else if (r->begun)
        http_exchange_abort(ex);
    else
        app_fail_page(ex, 502, "Failed to proxy request to application.", why);
    if (r->ts) {
        /* A complete answer ends our side: the stream closes when the app's connection does
         * (we asked it to close), without a RST_STREAM. Resets are for aborts only: an agent
         * (nghttp2) counts them, and too many in a burst end the whole tunnel. */
        bool app_closes = !r->pool_key || !llhttp_should_keep_alive(&r->parser);
        if (clean && app_closes) /* the app closes its connection: so will this stream */
            tunnel_stream_end(r->ts);
        else /* cut off, or a keep-alive connection we do not keep: drop it */
            tunnel_stream_reset(r->ts, TUNNEL_CANCEL);
        r->ts = NULL; /* on_close frees r */
    } else {
        relay_free(r);
    }
}

static void
finish(struct relay *r, bool clean)
{
    finish_why(r, clean, "The application closed the connection without an answer.");
}

/* ---- the app's response ---- */

/* The app switched protocols: the client's connection becomes a byte stream joined to the app's
 * (WebSocket and the like), with what either side already sent. */
static void
switch_protocols(struct relay *r, struct tunnel_stream *s, const uint8_t *rest, size_t nrest)
{
    struct http_exchange *ex = r->ex;
    const char *proto = http_request_header(&ex->req, "Upgrade");
    http_exchange_header(ex, "Upgrade", proto ? proto : "websocket");
    struct buf early;
    buf_init(&early);
    struct net_stream *st = http_exchange_upgrade(ex, NULL, NULL, &early);
    r->done = true;
    if (!st) {
        buf_fini(&early);
        tunnel_stream_reset(s, TUNNEL_CANCEL); /* t_close frees r */
        return;
    }
    /* Client bytes that came early go to the app (through TLS for an https app, before the
     * session changes hands); the app's first bytes after its 101 go to the client. */
    if (early.len)
        up_write(r, early.data, early.len);
    r->ts = NULL;
    if (nrest)
        net_stream_write(st, rest, nrest);
    tunnel_pipe(s, st, r->tls); /* the pipe owns both ends (and the TLS session) now */
    r->tls = NULL;
    buf_fini(&early);
    relay_free(r);
}

static int
u_head_bytes(struct relay *r, size_t n)
{
    r->head_bytes += n;
    return r->head_bytes > MAX_UPSTREAM_HEAD ? -1 : 0;
}

/* Removes Origin and Access-Control-Request-* from a Vary list, in place. */
static void
strip_cors_vary(char *value)
{
    struct buf out;
    buf_init(&out);
    char *save = NULL;
    for (char *t = strtok_r(value, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ' || *t == '\t')
            t++;
        size_t n = strlen(t);
        while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
            t[--n] = '\0';
        if (!n || str_eq_ci(t, "origin") || strncasecmp(t, "access-control-request-", 23) == 0)
            continue;
        buf_cat(&out, out.len ? ", " : "", t, NULL);
    }
    strcpy(value, out.data ? out.data : ""); /* never longer than the input */
    buf_fini(&out);
}

static void
u_flush_header(struct relay *r)
{
    if (!r->in_value)
        return;
    /* The parser's buffers are NUL-terminated: used in place (the exchange copies what it keeps;
     * an empty value has no buffer yet). */
    char empty[1] = "";
    const char *name = r->field.data ? r->field.data : "";
    char *value = r->value.data ? r->value.data : empty; /* strip_cors_vary edits it */
    /* Hop-by-hop headers are ours to set; CORS is the deployment's, not the app's, so Vary
     * loses what only CORS varies on (as Coder's proxy does). */
    bool vary = str_eq_ci(name, "vary");
    if (vary)
        strip_cors_vary(value);
    if (!http_header_hop_by_hop(name) && strncasecmp(name, "access-control-", 15) != 0 &&
        (!vary || *value) && r->ex->nrheaders < MAX_UPSTREAM_HEADERS)
        http_exchange_header(r->ex, name, value);
    buf_reset(&r->field);
    buf_reset(&r->value);
    r->in_value = false;
}

static int
u_status(llhttp_t *p, const char *at, size_t n)
{
    (void)at;
    return u_head_bytes(p->data, n);
}

static int
u_field(llhttp_t *p, const char *at, size_t n)
{
    struct relay *r = p->data;
    if (u_head_bytes(r, n) < 0)
        return -1;
    if (r->in_value)
        u_flush_header(r);
    buf_append(&r->field, at, n);
    return 0;
}

static int
u_value(llhttp_t *p, const char *at, size_t n)
{
    struct relay *r = p->data;
    if (u_head_bytes(r, n) < 0)
        return -1;
    r->in_value = true;
    buf_append(&r->value, at, n);
    return 0;
}

/* A WebSocket upgrade switches only on the 101 that answers this very key (RFC 6455 §4.2.2):
 * Sec-WebSocket-Accept = base64(SHA-1(key + GUID)). Other upgrades have nothing to check. */
static bool
websocket_accept_ok(struct relay *r)
{
    const char *key = http_request_header(&r->ex->req, "Sec-WebSocket-Key");
    if (!key)
        return true;
    const char *got = NULL;
    for (size_t i = r->head_mark; i < r->ex->nrheaders; i++) {
        if (str_eq_ci(r->ex->rheaders[i].name, "Sec-WebSocket-Accept"))
            got = r->ex->rheaders[i].value;
    }
    char *in = xasprintf("%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char sum[SHA_DIGEST_LENGTH], want[64];
    SHA1((const unsigned char *)in, strlen(in), sum);
    free(in);
    EVP_EncodeBlock(want, sum, SHA_DIGEST_LENGTH);
    return got && strcmp(got, (const char *)want) == 0;
}

static int
u_headers_complete(llhttp_t *p)
{
    struct relay *r = p->data;
    u_flush_header(r);
    if (p->status_code == 101 && r->ex->req.upgrade) {
        if (!websocket_accept_ok(r)) {
            r->bad_accept = true; /* the client keeps speaking HTTP: a 502 (deliver) */
            return -1;
        }
        r->upgraded = true; /* a real 101: only now does the client's connection switch */
        return 0;
    }
    if (p->status_code < 200) {
        /* Interim answers are not passed on; drop what they set. */
        http_exchange_headers_truncate(r->ex, r->head_mark);
        return 0;
    }
    r->begun = true;
    if (http_exchange_begin(r->ex, p->status_code) < 0)
        return -1;
    bool head = strcmp(r->ex->req.method, "HEAD") == 0;
    return head ? 1 : 0;
}

static int
u_body(llhttp_t *p, const char *at, size_t n)
{
    struct relay *r = p->data;
    int rc = http_exchange_write(r->ex, at, n);
    if (rc < 0)
        return -1;
    if (rc == 0)
        r->client_full = true; /* c_drain acknowledges what is owed */
    return 0;
}

static int
u_message_complete(llhttp_t *p)
{
    struct relay *r = p->data;
    if (r->upgraded)
        return HPE_PAUSED;
    if (p->status_code < 200)
        return 0;
    return HPE_PAUSED; /* finish after the parser returns */
}

static void
t_response(struct tunnel_stream *s, int status, const struct tunnel_header *h, size_t nh, void *arg)
{
    (void)s;
    struct relay *r = arg;
    if (status == 200 || r->done)
        return;
    const char *why = "the agent refused the connection";
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(h[i].name, "coder-error") == 0)
            why = h[i].value;
    }
    finish_why(r, false, why);
}

/* The app's response bytes (plaintext): n_wire is what they cost on the tunnel stream, which
 * is acknowledged once they reached the client's queue. */
static bool
deliver_parsed(struct relay *r, struct tunnel_stream *s, const uint8_t *d, size_t n, size_t n_wire)
{
    llhttp_errno_t e = n ? llhttp_execute(&r->parser, (const char *)d, n) : HPE_OK;
    if (r->upgraded && (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)) {
        size_t used = (size_t)(llhttp_get_error_pos(&r->parser) - (const char *)d);
        tunnel_stream_consumed(s, n_wire);
        switch_protocols(r, s, d + used, n - used); /* frees r */
        return true;
    }
    if (e == HPE_PAUSED) { /* the whole response is through */
        size_t used = (size_t)(llhttp_get_error_pos(&r->parser) - (const char *)d);
        tunnel_stream_consumed(s, n_wire + r->owed);
        r->owed = 0;
        if (r->pool_key && r->up_done && used == n && llhttp_should_keep_alive(&r->parser)) {
            idle_park(s, r->t, r->pool_key); /* the next request to this app takes it */
            r->ts = NULL;
        }
        finish(r, true);
        return true;
    }
    if (e != HPE_OK) {
        tunnel_stream_consumed(s, n_wire);
        finish_why(r, false,
                   r->bad_accept ? "The application's 101 does not answer the WebSocket key."
                                 : "The application's response is not valid HTTP/1.1.");
        return true;
    }
    /* Acknowledge what went into the client's queue; hold the rest until it drains. */
    r->owed += n_wire;
    if (!r->client_full) {
        tunnel_stream_consumed(s, r->owed);
        r->owed = 0;
    }
    return false;
}

/* A small answer's head, body and end arrive together: they leave together too. */
static bool
deliver(struct relay *r, struct tunnel_stream *s, const uint8_t *d, size_t n, size_t n_wire)
{
    struct net_stream *cs = n && r->ex ? http_exchange_cork(r->ex) : NULL;
    bool done = deliver_parsed(r, s, d, n, n_wire); /* may free r */
    if (cs)
        net_stream_uncork(cs);
    return done;
}

/* TLS from an https app: decrypt what arrived, finish the handshake (then send what waited),
 * deliver the plaintext, and then, if the app closed TLS or broke it, end as at the app's EOF. */
static void
tls_data(struct relay *r, struct tunnel_stream *s, const uint8_t *d, size_t n)
{
    tls_session_feed(r->tls, d, n);
    buf_reset(&r->tls_plain);
    const char *why = NULL;
    int k;
    do {
        buf_reserve(&r->tls_plain, 16384);
        k = tls_session_read(r->tls, r->tls_plain.data + r->tls_plain.len, 16384, &why);
        if (k > 0)
            r->tls_plain.len += (size_t)k;
    } while (k > 0);
    if (tls_session_handshake_done(r->tls) && r->tls_pending.len) {
        struct buf waiting = r->tls_pending;
        buf_init(&r->tls_pending);
        if (tls_session_write(r->tls, waiting.data, waiting.len) == 0 && r->ex)
            http_exchange_resume_body(r->ex);
        buf_fini(&waiting);
    }
    tls_flush(r);
    char *failed = k < 0 ? xstrdup(why ? why : "TLS error") : NULL;
    if (deliver(r, s, (const uint8_t *)r->tls_plain.data, r->tls_plain.len, n) || !failed) {
        free(failed); /* ended (r may be gone), or nothing more to say */
        return;
    }
    /* A close after the response began is complete only if the parser agrees. */
    llhttp_errno_t e = r->begun ? llhttp_finish(&r->parser) : HPE_INTERNAL;
    char *detail = xasprintf("TLS with the application failed: %s", failed);
    finish_why(r, e == HPE_OK || e == HPE_PAUSED, detail);
    free(detail);
    free(failed);
}

static void
t_data(struct tunnel_stream *s, const uint8_t *d, size_t n, void *arg)
{
    struct relay *r = arg;
    if (r->done) {
        tunnel_stream_consumed(s, n);
        return;
    }
    if (r->tls)
        tls_data(r, s, d, n);
    else
        deliver(r, s, d, n, n);
}

static bool open_stream(struct relay *r);

/* A parked connection the app had just closed: the request found no one. When nothing of it
 * can have been acted on (no answer, no body, a safe method), it goes again on a fresh one. */
static bool
stale_retry(struct relay *r)
{
    const char *m = r->ex->req.method;
    if (!r->reused || r->head_bytes || r->up_body || !r->up_done ||
        (!str_eq(m, "GET") && !str_eq(m, "HEAD") && !str_eq(m, "OPTIONS")))
        return false;
    static const struct tunnel_stream_cbs orphan = {NULL, NULL, NULL, NULL, NULL};
    tunnel_stream_bind(r->ts, &orphan, NULL);
    tunnel_stream_end(r->ts); /* it closes by itself; no longer ours */
    r->ts = NULL;
    r->reused = false;
    llhttp_reset(&r->parser);
    return open_stream(r);
}

static void
t_end(struct tunnel_stream *s, void *arg)
{
    (void)s;
    struct relay *r = arg;
    if (r->done)
        return;
    if (stale_retry(r))
        return;
    /* The app closed: a body that runs to the close ends here; anything else was cut off. */
    llhttp_errno_t e = llhttp_finish(&r->parser);
    finish(r, e == HPE_OK || e == HPE_PAUSED);
}

static void
t_writable(struct tunnel_stream *s, void *arg)
{
    (void)s;
    struct relay *r = arg;
    if (!r->done)
        http_exchange_resume_body(r->ex);
}

static void
t_close(struct tunnel_stream *s, uint32_t code, void *arg)
{
    (void)s;
    struct relay *r = arg;
    r->ts = NULL;
    if (r->done)
        relay_free(r);
    else /* reset mid-response, or before any answer; frees r (the stream is gone) */
        finish_why(r, false, code ? "the connection to the application was reset" : "no answer");
}

static const struct tunnel_stream_cbs stream_cbs = {t_response, t_data, t_end, t_writable, t_close};

/* ---- the client's side ---- */

static void
c_body(struct http_exchange *ex, const char *d, size_t n, void *arg)
{
    struct relay *r = arg;
    if (r->done || !r->ts)
        return;
    r->up_body += n;
    int rc;
    if (r->chunked_up) {
        char size[24];
        int len = snprintf(size, sizeof(size), "%zx\r\n", n);
        up_write(r, size, (size_t)len);
        up_write(r, d, n);
        rc = up_write(r, "\r\n", 2);
    } else {
        rc = up_write(r, d, n);
    }
    if (rc == 0)
        http_exchange_pause_body(ex); /* t_writable resumes */
}

static void
c_body_end(struct http_exchange *ex, void *arg)
{
    (void)ex;
    struct relay *r = arg;
    if (r->chunked_up && r->ts && !r->done)
        up_write(r, "0\r\n\r\n", 5);
    r->up_done = true;
}

static const struct http_body_cbs body_cbs = {c_body, c_body_end};

static void
c_drain(struct http_exchange *ex, void *arg)
{
    (void)ex;
    struct relay *r = arg;
    r->client_full = false;
    if (r->ts && r->owed) {
        tunnel_stream_consumed(r->ts, r->owed);
        r->owed = 0;
    }
}

static void
c_abort(struct http_exchange *ex, void *arg)
{
    (void)ex;
    struct relay *r = arg;
    finish(r, false); /* the client left: reset the app's stream */
}

/* The request as the app sees it: the rest of the path, our forwarding headers, no Coder
 * credentials, and a connection the app closes after answering. */
static void
build_request(struct relay *r, struct buf *b)
{
    struct http_exchange *ex = r->ex;
    buf_cat(b, ex->req.method, " ", r->rest, " HTTP/1.1\r\nHost: ", r->target, "\r\n", NULL);
    const char *client_host = http_request_header(&ex->req, "Host");
    bool has_length = false;
    for (size_t i = 0; i < ex->req.nheaders; i++) {
        const char *n = ex->req.headers[i].name, *v = ex->req.headers[i].value;
        /* Forwarding headers are ours to set: a client's, in any spelling, never pass. */
        if (http_header_hop_by_hop(n) || str_eq_ci(n, "host") ||
            str_eq_ci(n, "coder-session-token") || strncasecmp(n, "x-forwarded-", 12) == 0 ||
            str_eq_ci(n, "forwarded") || str_eq_ci(n, "x-real-ip") ||
            str_eq_ci(n, "expect")) /* the client had its 100 Continue from us */
            continue;
        if (str_eq_ci(n, "cookie")) {
            /* Drop Coder's cookies; keep the app's own. */
            struct buf kept;
            buf_init(&kept);
            char *copy = xstrdup(v), *save = NULL;
            for (char *t = strtok_r(copy, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
                while (*t == ' ')
                    t++;
                if (str_has_prefix(t, "coder_"))
                    continue;
                buf_cat(&kept, kept.len ? "; " : "", t, NULL);
            }
            if (kept.len)
                buf_cat(b, "Cookie: ", kept.data, "\r\n", NULL);
            buf_fini(&kept);
            free(copy);
            continue;
        }
        has_length |= str_eq_ci(n, "content-length");
        buf_cat(b, n, ": ", v, "\r\n", NULL);
    }
    const char *te = http_request_header(&ex->req, "Transfer-Encoding");
    if (te && !has_length) {
        r->chunked_up = true;
        buf_puts(b, "Transfer-Encoding: chunked\r\n");
    }
    buf_cat(b, "X-Forwarded-For: ", ex->req.remote_ip,
            "\r\nX-Forwarded-Proto: ", ex->req.tls ? "https" : "http",
            "\r\nX-Forwarded-Host: ", client_host ? client_host : "", "\r\n", NULL);
    const char *upgrade = http_request_header(&ex->req, "Upgrade");
    if (ex->req.upgrade && upgrade)
        buf_cat(b, "Connection: Upgrade\r\nUpgrade: ", upgrade, "\r\n\r\n", NULL);
    else if (r->pool_key)
        buf_puts(b, "\r\n"); /* HTTP/1.1 keep-alive: the connection may serve the next one */
    else
        buf_puts(b, "Connection: close\r\n\r\n");
}

char *
app_join_path(const char *app_path, const char *rest)
{
    size_t n = strlen(app_path);
    bool a = n > 0 && app_path[n - 1] == '/', b = rest[0] == '/';
    if (n == 0)
        return xstrdup(rest);
    if (a && b)
        return xasprintf("%s%s", app_path, rest + 1);
    if (!a && !b)
        return xasprintf("%s/%s", app_path, rest);
    return xasprintf("%s%s", app_path, rest);
}

/* Takes a parked connection to the app, or opens a CONNECT stream, and sends the request head
 * (optimistically, before the agent's 200). False when the tunnel can open no stream. */
static bool
open_stream(struct relay *r)
{
    r->ts = r->pool_key ? idle_take(r->t, r->pool_key) : NULL;
    if (r->ts) {
        r->reused = true;
        tunnel_stream_bind(r->ts, &stream_cbs, r);
    } else {
        const struct tunnel_header via[] = {{"coder-agent-id", r->via}};
        r->ts = tunnel_stream_open(r->t, "CONNECT", r->target, NULL, r->via ? via : NULL,
                                   r->via ? 1 : 0, &stream_cbs, r);
        if (!r->ts)
            return false;
    }
    struct buf head;
    buf_init(&head);
    build_request(r, &head);
    up_write(r, head.data, head.len); /* for an https app it waits for the handshake */
    buf_fini(&head);
    return true;
}

void
app_relay(struct http_exchange *ex, struct tunnel *t, const char *relay_agent_id,
          const char *target, const char *rest, struct tls_ctx *tls)
{
    if (http_exchange_client_gone(ex)) { /* the client left while the caller looked it up */
        http_exchange_end(ex);
        return;
    }
    struct relay *r = xcalloc(1, sizeof(*r));
    r->ex = ex;
    r->head_mark = ex->nrheaders;
    r->target = xstrdup(target);
    r->rest = xstrdup(rest);
    buf_init(&r->field);
    buf_init(&r->value);
    buf_init(&r->tls_pending);
    buf_init(&r->tls_out);
    buf_init(&r->tls_plain);
    static const llhttp_settings_t upstream = {.on_status = u_status,
                                               .on_header_field = u_field,
                                               .on_header_value = u_value,
                                               .on_headers_complete = u_headers_complete,
                                               .on_body = u_body,
                                               .on_message_complete = u_message_complete};
    llhttp_init(&r->parser, HTTP_RESPONSE, &upstream);
    r->parser.data = r;
    r->t = t;
    r->via = relay_agent_id ? xstrdup(relay_agent_id) : NULL;
    if (tls) {
        char host[256];
        const char *colon = strrchr(target, ':');
        snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - target) : (int)strlen(target),
                 target);
        r->tls = tls_session_new_client(tls, host);
    } else if (!ex->req.upgrade) {
        r->pool_key = xasprintf("%s|%s", relay_agent_id ? relay_agent_id : "", target);
    }
    if (!t || !open_stream(r)) {
        app_fail_page(ex, 502, "Agent is not connected.", "The agent's tunnel is closing.");
        relay_free(r);
        return;
    }
    if (r->tls) { /* the ClientHello goes out; the request waits in tls_pending */
        char none[1];
        const char *why = NULL;
        tls_session_read(r->tls, none, 0, &why);
        tls_flush(r);
    }
    http_exchange_set_stream_cbs(ex, c_drain, c_abort, r);
    if (!ex->req.upgrade) /* an upgrade has no body; its bytes wait for the switch */
        http_exchange_read_body(ex, &body_cbs, r);
}

/* ---- port forwarding: a TCP stream to a workspace port, over an upgraded connection ---- */

struct pf_req {
    struct http_exchange *ex; /* NULL once answered */
};

static void
pf_response(struct tunnel_stream *s, int status, const struct tunnel_header *h, size_t nh,
            void *arg)
{
    struct pf_req *f = arg;
    struct http_exchange *ex = f->ex;
    if (status != 200) {
        const char *why = "the agent refused the connection";
        for (size_t i = 0; i < nh; i++) {
            if (strcmp(h[i].name, "coder-error") == 0)
                why = h[i].value;
        }
        http_reply_error(ex, 502, why, NULL); /* the CLI prints it after its own prefix */
        f->ex = NULL;
        tunnel_stream_reset(s, TUNNEL_CANCEL);
        return; /* pf_close frees f */
    }
    /* Connected in the workspace: now the client's connection becomes the byte stream. */
    http_exchange_header(ex, "Upgrade", "coder-tcp");
    struct buf early;
    buf_init(&early);
    struct net_stream *st = http_exchange_upgrade(ex, NULL, NULL, &early);
    f->ex = NULL;
    if (!st) {
        tunnel_stream_reset(s, TUNNEL_CANCEL);
        buf_fini(&early);
        return;
    }
    free(f); /* the pipe owns both ends from here */
    tunnel_pipe(s, st, NULL);
    if (early.len)
        tunnel_stream_write(s, early.data, early.len);
    buf_fini(&early);
}

static void
pf_close(struct tunnel_stream *s, uint32_t code, void *arg)
{
    (void)s;
    (void)code;
    struct pf_req *f = arg;
    if (f->ex)
        http_reply_error(f->ex, 502, "Failed to dial the workspace port.",
                         "The agent's tunnel closed.");
    free(f);
}

static const struct tunnel_stream_cbs pf_cbs = {pf_response, NULL, NULL, NULL, pf_close};

int
app_port_forward_port(const struct http_request *req, const char **msg, const char **detail)
{
    const char *up = http_request_header(req, "Upgrade");
    if (!req->upgrade || !up || !str_eq_ci(up, "coder-tcp")) {
        *msg = "Expected an upgrade to coder-tcp.";
        *detail = "Send Connection: Upgrade and Upgrade: coder-tcp.";
        return -1;
    }
    char *q = http_request_query_param(req, "port");
    char *end = NULL;
    long port = q ? strtol(q, &end, 10) : 0;
    bool bad = !q || *q == '\0' || *end != '\0' || port < 9 || port > 65535;
    free(q);
    if (bad) {
        *msg = "Invalid port.";
        *detail = "port must be a number from 9 to 65535.";
        return -1;
    }
    return (int)port;
}

void
app_port_forward(struct http_exchange *ex, struct tunnel *t, const char *relay_agent_id, int port)
{
    char target[32];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    struct pf_req *f = xcalloc(1, sizeof(*f));
    f->ex = ex;
    const struct tunnel_header via[] = {{"coder-agent-id", relay_agent_id}};
    if (!t || !tunnel_stream_open(t, "CONNECT", target, NULL, relay_agent_id ? via : NULL,
                                  relay_agent_id ? 1 : 0, &pf_cbs, f)) {
        free(f);
        http_reply_error(ex, 502, "Agent is not connected.", "The agent's tunnel is closing.");
    }
}
