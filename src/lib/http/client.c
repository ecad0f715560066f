/* HTTP/1.1 client for the control plane, on net/stream (TCP, TLS) and llhttp.
 *
 * One request is one xfer: it takes an idle pooled connection to the same origin or dials one,
 * writes the request in one go, parses the response with limits (head 64 KiB, 100 headers,
 * body max_body), and ends in the caller's callback exactly once. Connections that may be
 * reused go back to a small per-client pool; an idempotent request that fails on a reused
 * connection before any response byte arrived is retried once on a fresh one (the server may
 * have closed the idle connection just then). Redirects are never followed. The blocking
 * client runs the same code on a private loop. */
#include "http/client.h"

#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "http/url.h"
#include "net/stream.h"
#include "net/tls.h"

#include <llhttp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT_TIMEOUT_MS 30000L
#define CLIENT_MAX_BODY ((size_t)4 << 20)
#define CLIENT_MAX_HEADERS 100
#define CLIENT_MAX_HEADER_BYTES ((size_t)64 << 10)
#define POOL_PER_ORIGIN 4
#define POOL_IDLE_MS 30000

struct tls_entry {
    char *cert, *key;
    struct tls_ctx *ctx;
};

struct pooled {
    struct http_client *c;
    struct net_stream *s;
    char *key;
    int64_t since;
    bool linked; /* in c->idle; false once the peer closed it and it only waits for on_close */
    struct pooled *prev, *next;
};

struct http_client {
    uv_loop_t *loop;
    struct xfer *xfers;  /* in flight */
    struct pooled *idle; /* connections waiting for reuse, newest first */
    uv_timer_t sweep;    /* closes connections idle for longer than POOL_IDLE_MS */
    struct tls_entry *tls;
    size_t ntls;
    int refs; /* xfers and streams that still call back into c */
    bool closing;
};

struct xfer {
    struct http_client *c;
    http_client_cb cb;
    void *arg;
    char *method, *url, *key;
    char *host;
    int port;
    bool https;
    struct tls_ctx *tls;
    struct buf req; /* the serialised request */
    size_t max_body;
    long timeout_ms;
    bool fresh, retryable, head;
    bool reused; /* the connection came from the pool */
    bool retried;
    bool got_bytes; /* some response byte arrived */
    bool done;
    struct net_stream *s;
    uv_timer_t timer;
    llhttp_t parser;
    size_t header_bytes;
    bool in_value;
    struct buf field, value;
    size_t headers_cap; /* slots in resp.headers */
    const char *limit;  /* why a parser callback stopped, or NULL */
    char limit_text[96];
    bool complete; /* a final response was parsed */
    bool keep_alive;
    struct http_client_resp resp;
    struct xfer *prev, *next;
};

static void client_unref(struct http_client *c);

/* ---- responses ---- */

void
http_client_resp_init(struct http_client_resp *r)
{
    r->status = 0;
    buf_init(&r->body);
    r->headers = NULL;
    r->nheaders = 0;
    r->error = NULL;
}

static void
client_resp_headers_clear(struct http_client_resp *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    r->headers = NULL;
    r->nheaders = 0;
}

void
http_client_resp_fini(struct http_client_resp *r)
{
    if (r == NULL)
        return;
    client_resp_headers_clear(r);
    buf_fini(&r->body);
    free(r->error);
    http_client_resp_init(r);
}

const char *
http_client_resp_header(const struct http_client_resp *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (str_eq_ci(r->headers[i].name, name))
            return r->headers[i].value;
    }
    return NULL;
}

/* Turns r into a failed response: a caller never sees half a response next to an error. */
static void
client_resp_fail(struct http_client_resp *r, char *error)
{
    client_resp_headers_clear(r);
    buf_fini(&r->body);
    free(r->error);
    r->status = 0;
    r->error = error;
}

/* ---- error text, as Go's url.Error prints it ---- */

/* Go's url.Error names the operation with the method in title case ("Get", "Post"). */
static void
client_put_op(struct buf *b, const char *method)
{
    if (method[0] == '\0') {
        buf_puts(b, "Get");
        return;
    }
    buf_putc(b, method[0]);
    for (const char *p = method + 1; *p; p++)
        buf_putc(b, (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p);
}

/* Appends url quoted like Go's %q, with any password replaced by "xxxxx" as Go's
 * URL.Redacted does: error text ends up in logs, passwords must not. */
static void
client_put_url(struct buf *b, const char *url)
{
    const char *pass = NULL, *at = NULL;
    const char *auth = strstr(url, "://");
    if (auth) {
        auth += 3;
        size_t n = strcspn(auth, "/?#");
        for (const char *p = auth; p < auth + n; p++) {
            if (*p == '@')
                at = p;
        }
        if (at)
            pass = memchr(auth, ':', (size_t)(at - auth));
    }
    buf_putc(b, '"');
    for (const char *p = url; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (pass && p == pass + 1) {
            buf_puts(b, "xxxxx");
            p = at - 1;
            continue;
        }
        if (ch == '"' || ch == '\\') {
            buf_putc(b, '\\');
            buf_putc(b, (char)ch);
        } else if (ch < 0x20 || ch == 0x7f) {
            buf_printf(b, "\\x%02x", ch);
        } else {
            buf_putc(b, (char)ch);
        }
    }
    buf_putc(b, '"');
}

/* `<Op> "<url>": <reason>`, the text Coder's Go code shows for a failed request. */
static char *
client_error_format(const char *method, const char *url, const char *reason)
{
    struct buf b;
    buf_init(&b);
    client_put_op(&b, method);
    buf_putc(&b, ' ');
    client_put_url(&b, url);
    buf_puts(&b, ": ");
    size_t n = strlen(reason);
    while (n > 0 && (reason[n - 1] == '\n' || reason[n - 1] == '\r' || reason[n - 1] == ' '))
        n--;
    buf_append(&b, reason, n);
    return buf_steal(&b);
}

static bool
client_is_token(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool alnum =
            (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
        if (!alnum && strchr(extra, ch) == NULL)
            return false;
    }
    return true;
}

static char *
client_strndup_trim(const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return xstrndup(s, n);
}

/* ---- the client's lifetime ---- */

static void
client_unref(struct http_client *c)
{
    if (--c->refs > 0 || !c->closing)
        return;
    for (size_t i = 0; i < c->ntls; i++) {
        free(c->tls[i].cert);
        free(c->tls[i].key);
        tls_ctx_free(c->tls[i].ctx);
    }
    free(c->tls);
    free(c);
}

/* TLS contexts per client certificate: the trust store is loaded once per client. */
static struct tls_ctx *
client_tls(struct http_client *c, const char *cert, const char *key, char **err)
{
    cert = cert ? cert : "";
    key = key ? key : "";
    for (size_t i = 0; i < c->ntls; i++) {
        if (str_eq(c->tls[i].cert, cert) && str_eq(c->tls[i].key, key))
            return c->tls[i].ctx;
    }
    struct tls_client_opts o = {.cert_file = cert, .key_file = key};
    struct tls_ctx *ctx = tls_ctx_new_client(&o, err);
    if (!ctx)
        return NULL;
    c->tls = xrealloc(c->tls, (c->ntls + 1) * sizeof(*c->tls));
    c->tls[c->ntls++] = (struct tls_entry){xstrdup(cert), xstrdup(key), ctx};
    return ctx;
}

/* ---- the idle pool ---- */

static void
pool_unlink(struct pooled *p)
{
    struct http_client *c = p->c;
    if (!p->linked)
        return;
    p->linked = false;
    if (p->prev)
        p->prev->next = p->next;
    else
        c->idle = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/* The connection stops being reusable at once; its memory goes in idle_close. */
static void
pool_kill(struct pooled *p)
{
    pool_unlink(p);
    net_stream_close(p->s);
}

static void
idle_read(struct net_stream *s, const uint8_t *d, size_t n, void *arg)
{
    (void)s;
    (void)d;
    (void)n;
    pool_kill(arg); /* nothing may arrive on an idle connection */
}

static void
idle_eof(struct net_stream *s, void *arg)
{
    (void)s;
    pool_kill(arg);
}

static void
idle_close(struct net_stream *s, const char *why, void *arg)
{
    (void)s;
    (void)why;
    struct pooled *p = arg;
    struct http_client *c = p->c;
    pool_unlink(p);
    free(p->key);
    free(p);
    client_unref(c);
}

static const struct net_stream_cbs idle_cbs = {NULL, idle_read, idle_eof, NULL, idle_close};

/* A stream nobody waits for any more: it only has to report its close. */
static void
orphan_close(struct net_stream *s, const char *why, void *arg)
{
    (void)s;
    (void)why;
    client_unref(arg);
}

static const struct net_stream_cbs orphan_cbs = {NULL, NULL, NULL, NULL, orphan_close};

static void
stream_drop(struct http_client *c, struct net_stream *s)
{
    net_stream_bind(s, &orphan_cbs, c);
    net_stream_close(s);
}

/* Closes the connections that sat idle too long. The list is newest first, so they are its
 * tail. Servers close idle connections too, but one that never does must not keep a slot of
 * the pool (and a socket) for ever. */
static void
pool_expire(struct http_client *c, int64_t now)
{
    struct pooled *p = c->idle;
    while (p && now - p->since <= POOL_IDLE_MS)
        p = p->next;
    while (p) {
        struct pooled *next = p->next;
        pool_kill(p);
        p = next;
    }
    if (c->idle == NULL)
        uv_timer_stop(&c->sweep);
}

static void
on_sweep(uv_timer_t *t)
{
    pool_expire(t->data, time_mono_ms());
}

static void
pool_put(struct http_client *c, const char *key, struct net_stream *s)
{
    int same = 0;
    for (struct pooled *p = c->idle; p; p = p->next)
        same += str_eq(p->key, key);
    if (c->closing || same >= POOL_PER_ORIGIN) {
        stream_drop(c, s);
        return;
    }
    struct pooled *p = xcalloc(1, sizeof(*p));
    p->c = c;
    p->s = s;
    p->key = xstrdup(key);
    p->since = time_mono_ms();
    p->linked = true;
    p->next = c->idle;
    if (c->idle)
        c->idle->prev = p;
    c->idle = p;
    net_stream_bind(s, &idle_cbs, p);
    if (!uv_is_active((uv_handle_t *)&c->sweep))
        uv_timer_start(&c->sweep, on_sweep, POOL_IDLE_MS / 2, POOL_IDLE_MS / 2);
}

/* Takes the most recently used idle connection for key, or returns NULL. */
static struct net_stream *
pool_take(struct http_client *c, const char *key)
{
    pool_expire(c, time_mono_ms());
    for (struct pooled *p = c->idle; p; p = p->next) {
        if (!str_eq(p->key, key))
            continue;
        pool_unlink(p);
        struct net_stream *s = p->s;
        free(p->key);
        free(p);
        if (c->idle == NULL)
            uv_timer_stop(&c->sweep);
        return s; /* its client reference passes to the xfer that takes it */
    }
    return NULL;
}

/* ---- one request ---- */

static void xfer_send(struct xfer *x);
static void xfer_dial(struct xfer *x);

static void xfer_discard(struct xfer *x);

static void
xfer_timer_closed(uv_handle_t *h)
{
    struct xfer *x = h->data;
    struct http_client *c = x->c;
    xfer_discard(x);
    client_unref(c);
}

static void
xfer_unlink(struct xfer *x)
{
    struct http_client *c = x->c;
    if (x->prev)
        x->prev->next = x->next;
    else if (c->xfers == x)
        c->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

/* Ends the xfer: the connection goes back to the pool or closes, the callback runs once. */
static void
xfer_finish(struct xfer *x)
{
    if (x->done)
        return;
    x->done = true;
    struct http_client *c = x->c;
    uv_timer_stop(&x->timer);
    xfer_unlink(x);
    if (x->s) {
        if (x->resp.error == NULL && x->keep_alive && !x->fresh && !c->closing)
            pool_put(c, x->key, x->s);
        else
            stream_drop(c, x->s);
        x->s = NULL;
    }
    x->cb(&x->resp, x->arg);
    uv_close((uv_handle_t *)&x->timer, xfer_timer_closed);
}

static void
xfer_fail(struct xfer *x, const char *reason)
{
    if (x->done)
        return;
    client_resp_fail(&x->resp, client_error_format(x->method, x->url, reason));
    x->keep_alive = false;
    xfer_finish(x);
}

/* A reused connection that died before answering: once more, on a new one. */
static bool
xfer_retry(struct xfer *x)
{
    if (!x->reused || x->retried || x->got_bytes || !x->retryable || x->c->closing)
        return false;
    x->retried = true;
    x->reused = false;
    if (x->s) { /* NULL when the stream already closed (reset, write error) */
        stream_drop(x->c, x->s);
        x->s = NULL;
    }
    http_client_resp_fini(&x->resp);
    x->headers_cap = 0;
    xfer_dial(x);
    return true;
}

static void
on_timeout(uv_timer_t *t)
{
    struct xfer *x = t->data;
    char reason[96];
    snprintf(reason, sizeof(reason),
             "request timed out after %.1fs (Client.Timeout exceeded while awaiting headers)",
             (double)x->timeout_ms / 1000.0);
    xfer_fail(x, reason);
}

/* ---- response parsing ---- */

static int
stop(struct xfer *x, const char *fmt, size_t limit)
{
    snprintf(x->limit_text, sizeof(x->limit_text), fmt, limit);
    x->limit = x->limit_text;
    return -1;
}

static int
count_head(struct xfer *x, size_t n)
{
    x->header_bytes += n;
    if (x->header_bytes > CLIENT_MAX_HEADER_BYTES)
        return stop(x, "response headers too large (limit %zu bytes)", CLIENT_MAX_HEADER_BYTES);
    return 0;
}

static void
flush_header(struct xfer *x)
{
    if (!x->in_value)
        return;
    struct http_client_resp *r = &x->resp;
    if (r->nheaders == x->headers_cap) {
        x->headers_cap = x->headers_cap ? 2 * x->headers_cap : 16;
        r->headers = xrealloc(r->headers, x->headers_cap * sizeof(*r->headers));
    }
    struct http_client_header *h = &r->headers[r->nheaders++];
    h->name = client_strndup_trim(x->field.data ? x->field.data : "", x->field.len);
    h->value = client_strndup_trim(x->value.data ? x->value.data : "", x->value.len);
    buf_reset(&x->field);
    buf_reset(&x->value);
    x->in_value = false;
}

static int
p_message_begin(llhttp_t *p)
{
    struct xfer *x = p->data;
    client_resp_headers_clear(&x->resp);
    x->headers_cap = 0;
    buf_reset(&x->resp.body);
    x->in_value = false;
    buf_reset(&x->field);
    buf_reset(&x->value);
    return 0;
}

static int
p_status(llhttp_t *p, const char *at, size_t n)
{
    (void)at;
    return count_head(p->data, n);
}

static int
p_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct xfer *x = p->data;
    if (count_head(x, n) < 0)
        return -1;
    if (x->in_value) {
        flush_header(x);
    }
    if (x->field.len == 0 && x->resp.nheaders >= CLIENT_MAX_HEADERS)
        return stop(x, "too many response headers (limit %zu)", CLIENT_MAX_HEADERS);
    buf_append(&x->field, at, n);
    return 0;
}

static int
p_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct xfer *x = p->data;
    if (count_head(x, n) < 0)
        return -1;
    x->in_value = true;
    buf_append(&x->value, at, n);
    return 0;
}

static int
p_headers_complete(llhttp_t *p)
{
    struct xfer *x = p->data;
    flush_header(x);
    x->resp.status = p->status_code;
    if (p->status_code >= 200 && !x->head && (p->flags & F_CONTENT_LENGTH) &&
        p->content_length > (uint64_t)x->max_body)
        return stop(x, "response body too large (limit %zu bytes)", x->max_body);
    /* A HEAD's Content-Length describes a body that is not sent. */
    return x->head && p->status_code >= 200 ? 1 : 0;
}

static int
p_body(llhttp_t *p, const char *at, size_t n)
{
    struct xfer *x = p->data;
    if (n > x->max_body - x->resp.body.len)
        return stop(x, "response body too large (limit %zu bytes)", x->max_body);
    buf_append(&x->resp.body, at, n);
    return 0;
}

static int
p_message_complete(llhttp_t *p)
{
    struct xfer *x = p->data;
    if (p->status_code < 200)
        return 0; /* an interim response: the final one follows */
    x->complete = true;
    x->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED; /* nothing after the response is ours */
}

static const llhttp_settings_t parser_settings = {.on_message_begin = p_message_begin,
                                                  .on_status = p_status,
                                                  .on_header_field = p_header_field,
                                                  .on_header_value = p_header_value,
                                                  .on_headers_complete = p_headers_complete,
                                                  .on_body = p_body,
                                                  .on_message_complete = p_message_complete};

/* ---- the connection's callbacks ---- */

static void
x_connect(struct net_stream *s, const char *err, void *arg)
{
    struct xfer *x = arg;
    if (err) {
        /* It closes itself; its close must not reach x, which ends now. */
        net_stream_bind(s, &orphan_cbs, x->c);
        x->s = NULL;
        /* Go says "tls: ..." where net/stream says "TLS handshake: ...". */
        static const char hs[] = "TLS handshake: ";
        if (strncmp(err, hs, sizeof(hs) - 1) == 0) {
            char *why = xasprintf("tls: %s", err + sizeof(hs) - 1);
            xfer_fail(x, why);
            free(why);
        } else {
            xfer_fail(x, err);
        }
        return;
    }
    xfer_send(x);
}

static void
x_read(struct net_stream *s, const uint8_t *data, size_t n, void *arg)
{
    (void)s;
    struct xfer *x = arg;
    if (x->done)
        return;
    x->got_bytes = true;
    llhttp_errno_t e = llhttp_execute(&x->parser, (const char *)data, n);
    if (x->complete) {
        if (e == HPE_PAUSED && llhttp_get_error_pos(&x->parser) != (const char *)data + n)
            x->keep_alive = false; /* bytes after the response: the connection is not clean */
        xfer_finish(x);
        return;
    }
    if (e != HPE_OK) {
        if (x->limit)
            xfer_fail(x, x->limit);
        else
            xfer_fail(x, "malformed HTTP response");
    }
}

static void
x_eof(struct net_stream *s, void *arg)
{
    (void)s;
    struct xfer *x = arg;
    if (x->done)
        return;
    if (x->got_bytes)
        (void)llhttp_finish(&x->parser); /* completes a body that runs to the close */
    if (x->complete) {
        x->keep_alive = false; /* a body that ended with the connection */
        xfer_finish(x);
        return;
    }
    if (xfer_retry(x))
        return;
    xfer_fail(x, x->got_bytes ? "unexpected EOF" : "EOF");
}

static void
x_close(struct net_stream *s, const char *why, void *arg)
{
    (void)s;
    struct xfer *x = arg;
    struct http_client *c = x->c;
    if (x->s == s)
        x->s = NULL;
    if (!x->done && !xfer_retry(x))
        xfer_fail(x, why ? why : "connection closed");
    client_unref(c);
}

static const struct net_stream_cbs xfer_cbs = {x_connect, x_read, x_eof, NULL, x_close};

static void
xfer_send(struct xfer *x)
{
    llhttp_init(&x->parser, HTTP_RESPONSE, &parser_settings);
    x->parser.data = x;
    x->complete = false;
    x->got_bytes = false;
    if (net_stream_write(x->s, x->req.data, x->req.len) < 0 && !xfer_retry(x))
        xfer_fail(x, "write failed");
}

static void
xfer_dial(struct xfer *x)
{
    struct net_stream *s = x->fresh ? NULL : pool_take(x->c, x->key);
    if (s) {
        x->reused = true;
        x->s = s;
        net_stream_bind(s, &xfer_cbs, x);
        xfer_send(x);
        return;
    }
    x->c->refs++;
    /* The request's timer ends the xfer first; this only bounds the stream on its own. */
    x->s = net_stream_dial(x->c->loop, x->host, x->port, x->https ? x->tls : NULL, NULL,
                           x->timeout_ms, &xfer_cbs, x);
}

/* ---- building a request ---- */

/* Whether header line `line` ("Name: value") is named `name`. */
static bool
client_header_is(const char *line, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* Returns NULL, or the reason the request cannot be sent (a new string). */
static char *
xfer_build(struct xfer *x, const struct http_client_req *req)
{
    if (!client_is_token(x->method))
        return xasprintf("net/http: invalid method \"%s\"", x->method);
    struct url u;
    if (url_parse(x->url, &u) < 0)
        return xstrdup("invalid URL");
    char *why = NULL;
    if (!str_eq(u.scheme, "http") && !str_eq(u.scheme, "https")) {
        why = xasprintf("unsupported protocol scheme \"%s\"", u.scheme);
        goto out;
    }
    x->https = str_eq(u.scheme, "https");
    x->host = xstrdup(u.host);
    x->port = u.port ? u.port : url_default_port(&u);
    bool has_body = req->body != NULL || str_eq(x->method, "POST") || str_eq(x->method, "PUT") ||
                    str_eq(x->method, "PATCH");
    size_t body_len = req->body ? req->body_len : 0;
    struct buf *b = &x->req;
    buf_printf(b, "%s %s%s%s%s HTTP/1.1\r\n", x->method, u.path[0] ? "" : "/", u.path,
               u.has_query ? "?" : "", u.query);
    if (u.port && u.port != url_default_port(&u))
        buf_printf(b, "Host: %s%s%s:%d\r\n", u.ipv6 ? "[" : "", u.host, u.ipv6 ? "]" : "", u.port);
    else
        buf_printf(b, "Host: %s%s%s\r\n", u.ipv6 ? "[" : "", u.host, u.ipv6 ? "]" : "");
    bool user_agent = false;
    for (size_t i = 0; req->headers && req->headers[i]; i++) {
        const char *line = req->headers[i];
        if (strpbrk(line, "\r\n") != NULL || strchr(line, ':') == NULL) {
            /* Name the field only: the value may be a session token. */
            char *name = xstrndup(line, strcspn(line, ":;\r\n"));
            why = xasprintf("net/http: invalid header field value for \"%s\"", name);
            free(name);
            goto out;
        }
        if (client_header_is(line, "Host") || client_header_is(line, "Content-Length") ||
            client_header_is(line, "Transfer-Encoding") || client_header_is(line, "Connection"))
            continue; /* framing is ours */
        user_agent |= client_header_is(line, "User-Agent");
        buf_printf(b, "%s\r\n", line);
    }
    if (!user_agent)
        buf_puts(b, "User-Agent: coder/" CODER_VERSION "\r\n");
    if (has_body)
        buf_printf(b, "Content-Length: %zu\r\n", body_len);
    if (x->fresh)
        buf_puts(b, "Connection: close\r\n");
    buf_puts(b, "\r\n");
    if (body_len)
        buf_append(b, req->body, body_len);
    x->key =
        xasprintf("%s://%s:%d|%s|%s", u.scheme, u.host, x->port,
                  req->client_cert ? req->client_cert : "", req->client_key ? req->client_key : "");
out:
    url_free(&u);
    return why;
}

static struct xfer *
xfer_new(struct http_client *c, const struct http_client_req *req, char **why)
{
    struct xfer *x = xcalloc(1, sizeof(*x));
    x->c = c;
    http_client_resp_init(&x->resp);
    buf_init(&x->req);
    buf_init(&x->field);
    buf_init(&x->value);
    x->method = xstrdup(req->method && req->method[0] ? req->method : "GET");
    x->url = xstrdup(req->url ? req->url : "");
    x->max_body = req->max_body ? req->max_body : CLIENT_MAX_BODY;
    x->timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : CLIENT_TIMEOUT_MS;
    x->fresh = req->fresh_connection;
    x->head = str_eq(x->method, "HEAD");
    /* Only what is safe to send twice: a server may have acted on a request that then lost
     * its answer with the connection. */
    x->retryable = str_eq(x->method, "GET") || x->head;
    *why = xfer_build(x, req);
    if (!*why && x->https) {
        char *err = NULL;
        x->tls = client_tls(c, req->client_cert, req->client_key, &err);
        if (!x->tls)
            *why = err;
    }
    return x;
}

static void
xfer_discard(struct xfer *x)
{
    http_client_resp_fini(&x->resp);
    buf_fini(&x->req);
    buf_fini(&x->field);
    buf_fini(&x->value);
    free(x->method);
    free(x->url);
    free(x->key);
    free(x->host);
    free(x);
}

/* ---- the asynchronous client ---- */

static void
client_sweep_closed(uv_handle_t *h)
{
    client_unref(h->data);
}

struct http_client *
http_client_new(uv_loop_t *loop)
{
    struct http_client *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    uv_timer_init(loop, &c->sweep);
    c->sweep.data = c;
    c->refs = 2; /* the owner's, dropped by http_client_close, and the sweep timer's */
    return c;
}

/* http_client_start, with the reason a request could not start returned in *why (the full
 * Go-style text; the caller frees it). */
static int
client_start(struct http_client *c, const struct http_client_req *req, http_client_cb cb, void *arg,
             char **why)
{
    char *reason = NULL;
    struct xfer *x = xfer_new(c, req, &reason);
    if (reason) {
        *why = client_error_format(x->method, x->url, reason);
        free(reason);
        xfer_discard(x);
        return -1;
    }
    x->cb = cb;
    x->arg = arg;
    c->refs++; /* the xfer's, until its timer closed */
    uv_timer_init(c->loop, &x->timer);
    x->timer.data = x;
    uv_timer_start(&x->timer, on_timeout, (uint64_t)x->timeout_ms, 0);
    x->next = c->xfers;
    if (c->xfers)
        c->xfers->prev = x;
    c->xfers = x;
    xfer_dial(x);
    return 0;
}

/* Copies what it needs from req; cb runs later on the loop, never from inside this call. */
int
http_client_start(struct http_client *c, const struct http_client_req *req, http_client_cb cb,
                  void *arg)
{
    if (c == NULL || c->closing || cb == NULL || req == NULL)
        return -1;
    char *why = NULL;
    if (client_start(c, req, cb, arg, &why) < 0) {
        log_debug("http client: %s", why);
        free(why);
        return -1;
    }
    return 0;
}

/* The callbacks of outstanding requests run before this returns, so once it returns no
 * callback will ever run again and the caller may free what their args point at. The memory
 * goes once the loop has closed the client's handles; c must not be used after this call (a
 * second close before then is a no-op). Calling it from one of the client's own callbacks is
 * fine. */
void
http_client_close(struct http_client *c)
{
    if (c == NULL || c->closing)
        return;
    c->closing = true;
    while (c->xfers) {
        struct xfer *x = c->xfers;
        x->done = true;
        uv_timer_stop(&x->timer);
        xfer_unlink(x);
        if (x->s) {
            stream_drop(c, x->s);
            x->s = NULL;
        }
        client_resp_fail(&x->resp, xstrdup("canceled"));
        x->cb(&x->resp, x->arg);
        uv_close((uv_handle_t *)&x->timer, xfer_timer_closed);
    }
    while (c->idle)
        pool_kill(c->idle); /* idle_close frees each */
    uv_close((uv_handle_t *)&c->sweep, client_sweep_closed);
    client_unref(c);
}

/* ---- the blocking client ---- */

struct sync_result {
    struct http_client_resp *out;
    bool done;
};

static void
sync_cb(struct http_client_resp *r, void *arg)
{
    struct sync_result *s = arg;
    *s->out = *r;
    http_client_resp_init(r); /* the caller owns it now */
    s->done = true;
}

/* resp is (re)initialised here and always needs http_client_resp_fini afterwards. */
int
http_client_do(const struct http_client_req *req, struct http_client_resp *resp)
{
    http_client_resp_init(resp);
    if (req == NULL) {
        resp->error = xstrdup("http client: no request");
        return -1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct http_client *c = http_client_new(&loop);
    struct sync_result sr = {resp, false};
    if (client_start(c, req, sync_cb, &sr, &resp->error) == 0) {
        while (!sr.done && uv_run(&loop, UV_RUN_ONCE))
            ;
    }
    http_client_close(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return resp->error ? -1 : 0;
}
