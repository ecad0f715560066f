#include "http/server.h"
#include "http/realip.h"
#include "http/server-int.h"
#include "net/stream.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "http/url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <llhttp.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define LINGER_MS 5000 /* after a closing response, for the client to close its side */
#define MAX_URL 8192
#define MAX_PENDING_INPUT (256 * 1024)

struct http_listener {
    uv_tcp_t tcp;
    struct http_server *srv;
    struct tls_ctx *tls;
    struct http_listener *next;
};

struct http_conn {
    struct net_stream *s; /* NULL once it reported its close */
    uv_timer_t timer;
    struct http_server *srv;
    struct http_conn *prev, *next;
    bool tls;
    llhttp_t parser;
    struct http_exchange *ex; /* being parsed or being answered */
    struct buf pending;       /* plaintext received while a request is being answered */
    struct buf field, value;  /* header being parsed */
    bool in_value;
    const char *exec_start; /* the buffer being parsed, and the byte before it */
    char prev_last;
    size_t head_bytes;
    int err_status; /* status to answer a malformed request with */
    const char *err_msg;
    bool paused;
    bool stream_paused; /* reading stopped: too much pipelined input */
    bool closing;
    bool peer_eof;
    bool parsing; /* inside llhttp_execute: an exchange cannot end now */
    bool alpn_checked;
    int open; /* the stream and the timer; freed when both closed */
    char remote_ip[64];
};

static void conn_close(struct http_conn *c);
static void conn_teardown(struct http_conn *c);
static void conn_release(struct http_conn *c);
static void conn_process(struct http_conn *c, const char *data, size_t n);

const char *
http_status_text(int status)
{
    /* The reason phrases of Go's net/http (what Coder's servers send), every registered code. */
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 102:
        return "Processing";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 207:
        return "Multi-Status";
    case 208:
        return "Already Reported";
    case 226:
        return "IM Used";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 305:
        return "Use Proxy";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Request Entity Too Large";
    case 414:
        return "Request URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Requested Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 418:
        return "I'm a teapot";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Entity";
    case 423:
        return "Locked";
    case 424:
        return "Failed Dependency";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    case 506:
        return "Variant Also Negotiates";
    case 507:
        return "Insufficient Storage";
    case 508:
        return "Loop Detected";
    case 510:
        return "Not Extended";
    case 511:
        return "Network Authentication Required";
    default:
        return NULL;
    }
}

/* ---- exchanges ---- */

struct http_exchange *
http_exchange_alloc(struct http_server *s, bool tls, const char *remote_ip)
{
    struct http_exchange *ex = xcalloc(1, sizeof(*ex));
    ex->srv = s;
    ex->start_us = time_mono_us();
    buf_init(&ex->req.body);
    buf_init(&ex->rbody);
    buf_init(&ex->body_queue);
    ex->req.tls = tls;
    snprintf(ex->req.remote_ip, sizeof(ex->req.remote_ip), "%s", remote_ip);
    return ex;
}

static struct http_exchange *
exchange_new(struct http_conn *c)
{
    struct http_exchange *ex = http_exchange_alloc(c->srv, c->tls, c->remote_ip);
    ex->conn = c;
    return ex;
}

void
http_exchange_free_internal(struct http_exchange *ex)
{
    free(ex->req.method);
    free(ex->req.target);
    free(ex->req.path);
    free(ex->req.query);
    for (size_t i = 0; i < ex->req.nheaders; i++) {
        free(ex->req.headers[i].name);
        free(ex->req.headers[i].value);
    }
    free(ex->req.headers);
    buf_fini(&ex->req.body);
    for (size_t i = 0; i < ex->nrheaders; i++) {
        free(ex->rheaders[i].name);
        free(ex->rheaders[i].value);
    }
    free(ex->rheaders);
    buf_fini(&ex->rbody);
    buf_fini(&ex->body_queue);
    for (size_t i = 0; i < ex->nparams; i++)
        free(ex->param_values[i]);
    free(ex);
}

const char *
http_request_header(const struct http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    }
    return NULL;
}

char *
http_request_query_param(const struct http_request *r, const char *key)
{
    return url_query_get(r->query ? r->query : "", key);
}

size_t
http_request_cookies(const struct http_request *r, const char *name, char **out, size_t max)
{
    size_t nlen = strlen(name), n = 0;
    for (size_t i = 0; i < r->nheaders && n < max; i++) {
        if (strcasecmp(r->headers[i].name, "Cookie") != 0)
            continue;
        const char *p = r->headers[i].value;
        while (*p && n < max) {
            while (*p == ' ' || *p == ';')
                p++;
            const char *eq = strchr(p, '=');
            const char *semi = strchr(p, ';');
            if (semi == NULL)
                semi = p + strlen(p);
            if (eq && eq < semi && (size_t)(eq - p) == nlen && strncmp(p, name, nlen) == 0) {
                const char *v = eq + 1;
                size_t vlen = (size_t)(semi - v);
                if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
                    v++;
                    vlen -= 2;
                }
                out[n++] = xstrndup(v, vlen);
            }
            p = semi;
        }
    }
    return n;
}

char *
http_request_cookie(const struct http_request *r, const char *name)
{
    char *v = NULL;
    http_request_cookies(r, name, &v, 1);
    return v;
}

const char *
http_exchange_param(const struct http_exchange *ex, const char *name)
{
    /* Names point into route patterns: "name}..." */
    size_t n = strlen(name);
    for (size_t i = 0; i < ex->nparams; i++) {
        if (strncmp(ex->param_names[i], name, n) == 0 && ex->param_names[i][n] == '}')
            return ex->param_values[i];
    }
    return NULL;
}

void
http_exchange_header(struct http_exchange *ex, const char *name, const char *value)
{
    if (ex->nrheaders == ex->caprheaders) {
        ex->caprheaders = ex->caprheaders ? ex->caprheaders * 2 : 8;
        ex->rheaders = xrealloc(ex->rheaders, ex->caprheaders * sizeof(*ex->rheaders));
    }
    ex->rheaders[ex->nrheaders].name = xstrdup(name);
    ex->rheaders[ex->nrheaders].value = xstrdup(value);
    ex->nrheaders++;
}

void
http_exchange_header_set(struct http_exchange *ex, const char *name, const char *value)
{
    for (size_t i = 0; i < ex->nrheaders; i++) {
        if (str_eq_ci(ex->rheaders[i].name, name)) {
            free(ex->rheaders[i].value);
            ex->rheaders[i].value = xstrdup(value);
            return;
        }
    }
    http_exchange_header(ex, name, value);
}

void
http_exchange_header_printf(struct http_exchange *ex, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *v = xvasprintf(fmt, ap);
    va_end(ap);
    http_exchange_header(ex, name, v);
    free(v);
}

void
http_exchange_headers_truncate(struct http_exchange *ex, size_t n)
{
    while (ex->nrheaders > n) {
        ex->nrheaders--;
        free(ex->rheaders[ex->nrheaders].name);
        free(ex->rheaders[ex->nrheaders].value);
    }
}

bool
http_exchange_has_header(const struct http_exchange *ex, const char *name)
{
    for (size_t i = 0; i < ex->nrheaders; i++) {
        if (strcasecmp(ex->rheaders[i].name, name) == 0)
            return true;
    }
    return false;
}

/* ---- output ---- */

static void conn_arm_timer(struct http_conn *c, int64_t ms);

/* Sends plaintext (net/stream encrypts it on TLS connections). close_after half-closes once it
 * is out and gives the client LINGER_MS to close its side (a lingering close: closing at once
 * could reset the connection before the client read the response). */
static void
conn_send(struct http_conn *c, const char *data, size_t n, bool close_after)
{
    if (c->closing)
        return;
    if (n && net_stream_write(c->s, data, n) < 0) {
        conn_close(c);
        return;
    }
    if (close_after) {
        net_stream_shutdown(c->s);
        conn_arm_timer(c, LINGER_MS);
    }
}

/* "HTTP/1.1 206 Partial Content\r\n"; a code without a reason phrase reads "status code 299",
 * as Go writes it. */
static void
put_status_line(struct buf *out, int status)
{
    char code[16];
    if (status >= 100 && status <= 999) { /* three digits, as llhttp parses an app's status */
        code[0] = (char)('0' + status / 100);
        code[1] = (char)('0' + status / 10 % 10);
        code[2] = (char)('0' + status % 10);
        code[3] = '\0';
    } else {
        snprintf(code, sizeof(code), "%d", status);
    }
    const char *text = http_status_text(status);
    buf_cat(out, "HTTP/1.1 ", code, text ? " " : " status code ", text ? text : code, "\r\n", NULL);
}

static void
serialize_response(struct http_exchange *ex, struct buf *out)
{
    bool head = ex->req.method && strcmp(ex->req.method, "HEAD") == 0;
    bool no_body = ex->status == 204 || ex->status == 304 || ex->status < 200;
    put_status_line(out, ex->status);
    for (size_t i = 0; i < ex->nrheaders; i++)
        buf_cat(out, ex->rheaders[i].name, ": ", ex->rheaders[i].value, "\r\n", NULL);
    if (!no_body)
        buf_printf(out, "Content-Length: %zu\r\n", ex->rbody.len);
    char date[64];
    time_format_http(time(NULL), date, sizeof(date));
    buf_cat(out, "Date: ", date, "\r\n", NULL);
    if (ex->close_after)
        buf_puts(out, "Connection: close\r\n");
    buf_puts(out, "\r\n");
    if (!head && !no_body)
        buf_append(out, ex->rbody.data, ex->rbody.len);
}

static void exchange_done(struct http_exchange *ex);
static void stream_settle(struct http_exchange *ex);
static void exchange_end_now(struct http_exchange *ex);

void
http_exchange_finish(struct http_exchange *ex, int status)
{
    if (ex->finished)
        return;
    if (ex->h2) {
        ex->finished = true;
        ex->status = status;
        h2_finish(ex);
        return;
    }
    if (ex->conn && ex->conn->parsing && ex->streaming) {
        ex->finish_deferred = status; /* stream_settle completes it */
        return;
    }
    ex->finished = true;
    ex->status = status;
    struct http_conn *c = ex->conn;
    struct http_server *s = ex->srv;
    if (c && s->shutting_down)
        ex->close_after = true;
    if (ex->streaming && (!ex->req_complete || http_exchange_body_queued(ex)))
        ex->close_after = true; /* an unread body is still on the wire */
    if (c && !c->closing) {
        struct buf out;
        buf_init(&out);
        serialize_response(ex, &out);
        conn_send(c, out.data, out.len, ex->close_after);
        buf_fini(&out);
    }
    exchange_done(ex);
}

/* After the response went out: the exchange goes, and the connection moves on to the next
 * request (or closes). */
static void
exchange_done(struct http_exchange *ex)
{
    struct http_conn *c = ex->conn;
    struct http_server *s = ex->srv;
    if (s->o.on_done)
        s->o.on_done(ex, s->o.arg);
    bool close_after = ex->close_after;
    http_exchange_free_internal(ex);
    if (c == NULL) {
        s->ndetached--;
        http_server_maybe_finish_shutdown(s);
        return;
    }
    c->ex = NULL;
    if (c->closing || close_after) {
        c->paused = true; /* the rest of that request, if any, is not parsed: it has no owner */
        return;
    }
    if (c->peer_eof && c->pending.len == 0) {
        conn_close(c); /* the client sent its last request */
        return;
    }
    /* Resume with whatever the client already sent (pipelining). */
    c->paused = false;
    llhttp_resume(&c->parser);
    conn_arm_timer(c, s->o.idle_timeout_ms);
    if (c->stream_paused) {
        c->stream_paused = false;
        net_stream_resume(c->s);
    }
    if (c->pending.len) {
        struct buf p = c->pending;
        buf_init(&c->pending);
        conn_process(c, p.data, p.len);
        buf_fini(&p);
    }
}

struct net_stream *
http_exchange_upgrade(struct http_exchange *ex, const struct net_stream_cbs *cbs, void *arg,
                      struct buf *early)
{
    struct http_conn *c = ex->conn;
    if (ex->finished || c == NULL || c->closing || !ex->req.upgrade) {
        http_reply_error(ex, 400, "The request did not ask to upgrade the connection.", NULL);
        return NULL;
    }
    struct http_server *s = ex->srv;
    ex->finished = true;
    ex->status = 101;
    ex->close_after = false;
    buf_reset(&ex->rbody);
    if (!http_exchange_has_header(ex, "Connection"))
        http_exchange_header(ex, "Connection", "Upgrade");
    struct buf out;
    buf_init(&out);
    serialize_response(ex, &out);
    net_stream_write(c->s, out.data, out.len);
    buf_fini(&out);
    if (s->o.on_upgrade)
        s->o.on_upgrade(ex, c->s, s->o.arg);
    if (s->o.on_done)
        s->o.on_done(ex, s->o.arg);
    http_exchange_free_internal(ex);
    c->ex = NULL;
    /* The stream changes hands; the connection record goes without closing it. */
    struct net_stream *st = c->s;
    buf_append(early, c->pending.data, c->pending.len);
    buf_reset(&c->pending);
    net_stream_bind(st, cbs, arg);
    if (c->stream_paused)
        net_stream_resume(st);
    c->s = NULL;
    conn_teardown(c);
    conn_release(c); /* the stream's share */
    return st;
}

void
http_reply_text(struct http_exchange *ex, int status, const char *ctype, const char *body)
{
    buf_reset(&ex->rbody);
    buf_puts(&ex->rbody, body);
    if (ctype)
        http_exchange_header(ex, "Content-Type", ctype);
    http_exchange_finish(ex, status);
}

void
http_reply_error(struct http_exchange *ex, int status, const char *msg, const char *detail)
{
    buf_reset(&ex->rbody);
    buf_puts(&ex->rbody, "{\"message\":");
    buf_put_json_string(&ex->rbody, msg);
    if (detail && *detail) {
        buf_puts(&ex->rbody, ",\"detail\":");
        buf_put_json_string(&ex->rbody, detail);
    }
    buf_puts(&ex->rbody, "}\n");
    http_exchange_header(ex, "Content-Type", "application/json; charset=utf-8");
    http_exchange_finish(ex, status);
}

/* ---- parsing ---- */

static int
fail_request(struct http_conn *c, int status, const char *msg)
{
    c->err_status = status;
    c->err_msg = msg;
    return -1;
}

static int
on_message_begin(llhttp_t *p)
{
    struct http_conn *c = p->data;
    c->ex = exchange_new(c);
    c->head_bytes = 0;
    c->in_value = false;
    buf_reset(&c->field);
    buf_reset(&c->value);
    conn_arm_timer(c, c->srv->o.header_timeout_ms);
    return 0;
}

static int
count_head(struct http_conn *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > c->srv->o.max_header_bytes)
        return fail_request(c, 431, "Request header fields too large.");
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    struct http_exchange *ex = c->ex;
    size_t old = ex->req.target ? strlen(ex->req.target) : 0;
    if (old + n > MAX_URL)
        return fail_request(c, 414, "Request URI too long.");
    if (count_head(c, n) < 0)
        return -1;
    ex->req.target = xrealloc(ex->req.target, old + n + 1);
    memcpy(ex->req.target + old, at, n);
    ex->req.target[old + n] = '\0';
    return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    if (count_head(c, n) < 0)
        return -1;
    buf_append(&c->field, at, n);
    return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    if (count_head(c, n) < 0)
        return -1;
    /* llhttp 8 accepts obs-fold: a continuation chunk of a value that starts right after a
     * line end. Folded headers are a smuggling vector (SECURITY.md #1): refuse them. */
    char before = at > c->exec_start ? at[-1] : c->prev_last;
    if (c->value.len > 0 && before == '\n')
        return fail_request(c, 400, "Folded header lines are not allowed.");
    buf_append(&c->value, at, n);
    return 0;
}

static int
on_header_value_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    struct http_exchange *ex = c->ex;
    if (c->field.len == 0)
        return fail_request(c, 400, "Invalid header name.");
    if (ex->req.nheaders >= c->srv->o.max_headers)
        return fail_request(c, 431, "Too many request headers.");
    /* Room for 8, then doubled (the array is only appended to here while parsing). */
    size_t n = ex->req.nheaders;
    if (n == 0 || (n >= 8 && (n & (n - 1)) == 0))
        ex->req.headers = xrealloc(ex->req.headers, (n ? 2 * n : 8) * sizeof(struct http_header));
    ex->req.headers[ex->req.nheaders].name = buf_steal(&c->field);
    /* Optional whitespace around values is not part of them (RFC 9110 5.5). */
    ex->req.headers[ex->req.nheaders].value = str_trim_dup(c->value.data ? c->value.data : "");
    buf_reset(&c->value);
    ex->req.nheaders++;
    return 0;
}

/* Sends the "100 Continue" an "Expect: 100-continue" request waits for, once. */
static void
send_continue(struct http_exchange *ex)
{
    if (!ex->expect_continue || ex->head_sent || !ex->conn || ex->conn->closing)
        return;
    ex->expect_continue = false;
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    net_stream_write(ex->conn->s, line, sizeof(line) - 1);
}

static int
on_headers_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    struct http_exchange *ex = c->ex;
    /* The head's scratch buffers (the longest header value: a cookie) are not kept for the
     * connection's idle life; the next request allocates them again. */
    buf_fini(&c->field);
    buf_fini(&c->value);
    ex->req.method = xstrdup(llhttp_method_name((llhttp_method_t)p->method));
    if (ex->req.target == NULL)
        ex->req.target = xstrdup("/");
    const char *q = strchr(ex->req.target, '?');
    if (q) {
        ex->req.path = xstrndup(ex->req.target, (size_t)(q - ex->req.target));
        ex->req.query = xstrdup(q + 1);
    } else {
        ex->req.path = xstrdup(ex->req.target);
        ex->req.query = xstrdup("");
    }
    realip_apply(c->srv->o.realip, &ex->req);
    bool has_body =
        (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    /* RFC 9110 §10.1.1: a client that sent "Expect: 100-continue" waits (curl for a second)
     * before the body; "100 Continue" goes out once the body is wanted (below, or when a
     * streaming handler starts reading it), and never when a final answer comes first. */
    const char *expect = http_request_header(&ex->req, "Expect");
    ex->expect_continue = has_body && expect && str_eq_ci(expect, "100-continue") &&
                          p->http_major == 1 && p->http_minor >= 1;
    if (c->srv->o.stream && c->srv->o.stream(ex, c->srv->o.arg)) {
        /* The handler takes it from here: dispatch now, body as it arrives. */
        ex->streaming = true;
        /* llhttp decides "upgrade" only after this callback: read the headers ourselves. */
        const char *conn = http_request_header(&ex->req, "Connection");
        ex->req.upgrade = http_request_header(&ex->req, "Upgrade") && conn &&
                          strcasestr(conn, "upgrade") && strcmp(ex->req.method, "GET") == 0;
        if (!has_body)
            return 0; /* complete already: on_message_complete pauses, and it is dispatched */
        c->paused = true;
        uv_timer_stop(&c->timer);
        return HPE_PAUSED;
    }
    if (p->content_length > c->srv->o.max_body && (p->flags & F_CONTENT_LENGTH))
        return fail_request(c, 413, "Request body too large.");
    send_continue(ex); /* the server reads the whole body before the handler runs */
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    struct http_exchange *ex = c->ex;
    if (ex->streaming) {
        if (ex->body_paused || !ex->body_cbs || http_exchange_body_queued(ex)) {
            http_exchange_body_queue(ex, at, n); /* at most what one read brought */
            if (!c->stream_paused) {
                net_stream_pause(c->s);
                c->stream_paused = true;
            }
        } else if (ex->body_cbs->on_data) {
            ex->body_cbs->on_data(ex, at, n, ex->body_arg);
        }
        return 0;
    }
    if (ex->req.body.len + n > c->srv->o.max_body)
        return fail_request(c, 413, "Request body too large.");
    buf_append(&ex->req.body, at, n);
    return 0;
}

static int
on_message_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    struct http_exchange *ex = c->ex;
    ex->close_after = ex->close_after || !llhttp_should_keep_alive(p) || p->upgrade;
    ex->req.upgrade = p->upgrade;
    if (ex->streaming) {
        ex->req_complete = true;
        ex->end_pending = true; /* delivered once the parser returned (conn_process) */
    }
    c->paused = true;
    uv_timer_stop(&c->timer);
    return HPE_PAUSED;
}

static void
answer_parse_error(struct http_conn *c, int status, const char *msg)
{
    if (c->ex == NULL)
        c->ex = exchange_new(c);
    struct http_exchange *ex = c->ex;
    if (ex->req.method == NULL)
        ex->req.method = xstrdup("GET");
    if (ex->req.path == NULL)
        ex->req.path = xstrdup("");
    ex->close_after = true;
    c->paused = true;
    http_reply_error(ex, status, msg, NULL);
}

/* Feeds plaintext to the parser; dispatches each complete request to the handler. */
static void
conn_process(struct http_conn *c, const char *data, size_t n)
{
    while (n > 0 && !c->closing) {
        if (c->paused) {
            if (c->pending.len + n > MAX_PENDING_INPUT) {
                /* A client pipelining far ahead: stop reading until we catch up. */
                net_stream_pause(c->s);
                c->stream_paused = true;
            }
            buf_append(&c->pending, data, n);
            return;
        }
        c->exec_start = data;
        c->parsing = true;
        llhttp_errno_t err = llhttp_execute(&c->parser, data, n);
        c->parsing = false;
        size_t used = n;
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
        } else if (err != HPE_OK) {
            int status = c->err_status ? c->err_status : 400;
            const char *msg = c->err_msg ? c->err_msg : "Malformed HTTP request.";
            if (err == HPE_INVALID_METHOD && c->ex == NULL)
                msg = "Malformed HTTP request.";
            answer_parse_error(c, status, msg);
            return;
        }
        if (used > 0)
            c->prev_last = data[used - 1];
        data += used;
        n -= used;
        if (err == HPE_OK && c->ex && c->ex->streaming && c->ex->dispatched) {
            stream_settle(c->ex); /* body delivered mid-request; the handler may have ended */
            return;
        }
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            struct http_exchange *ex = c->ex;
            if (n > 0)
                buf_append(&c->pending, data, n);
            n = 0;
            if (ex && ex->streaming && ex->dispatched) {
                c->paused = true; /* the body is all in; the next request waits for the end */
                stream_settle(ex);
                return;
            }
            ex->dispatched = true;
            c->srv->o.handler(ex, c->srv->o.arg);
            return; /* finish() (or read_body) resumes with pending input */
        }
    }
}

/* ---- connections ---- */

static void
conn_release(struct http_conn *c)
{
    if (--c->open > 0)
        return;
    struct http_server *s = c->srv;
    buf_fini(&c->pending);
    buf_fini(&c->field);
    buf_fini(&c->value);
    free(c);
    http_server_maybe_finish_shutdown(s);
}

static void
on_timer_closed(uv_handle_t *h)
{
    conn_release(h->data);
}

/* Forgets the connection: off the list, its exchange detached, its timer closing. */
static void
conn_teardown(struct http_conn *c)
{
    c->closing = true;
    struct http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    struct http_exchange *aborted = NULL;
    if (c->ex) {
        /* A dispatched exchange belongs to the handler until it finishes (into the void). */
        if (c->ex->dispatched) {
            c->ex->conn = NULL;
            s->ndetached++;
            aborted = c->ex;
        } else {
            http_exchange_free_internal(c->ex);
        }
        c->ex = NULL;
    }
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    if (aborted && aborted->streaming && !aborted->finished && aborted->on_abort)
        aborted->on_abort(aborted, aborted->stream_arg); /* the client is gone */
}

static void
conn_close(struct http_conn *c)
{
    if (c->closing)
        return;
    conn_teardown(c);
    net_stream_close(c->s); /* c_on_close follows */
}

static void
on_timer(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    if (c->ex && c->paused)
        return; /* the handler is working; its time is its own business */
    conn_close(c);
}

static void
conn_arm_timer(struct http_conn *c, int64_t ms)
{
    if (!c->closing)
        uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

static void
c_on_read(struct net_stream *st, const uint8_t *data, size_t n, void *arg)
{
    struct http_conn *c = arg;
    if (c->tls && !c->alpn_checked) {
        /* The handshake is done by the first read: HTTP/2 if the client chose it. */
        c->alpn_checked = true;
        if (strcmp(net_stream_alpn(st), "h2") == 0) {
            char ip[64];
            snprintf(ip, sizeof(ip), "%s", c->remote_ip);
            struct http_server *s = c->srv;
            c->s = NULL; /* the stream changes hands; the connection record goes */
            conn_teardown(c);
            conn_release(c);
            h2_conn_start(s, st, ip, data, n);
            return;
        }
    }
    conn_process(c, (const char *)data, n);
}

bool
http_exchange_client_gone(const struct http_exchange *ex)
{
    return ex->h2 ? h2_client_gone(ex) : ex->conn == NULL;
}

static void
c_on_eof(struct net_stream *st, void *arg)
{
    (void)st;
    struct http_conn *c = arg;
    c->peer_eof = true;
    if (c->ex && c->ex->streaming && !c->ex->req_complete) {
        conn_close(c); /* the body was cut short: the handler hears on_abort */
        return;
    }
    /* A request being answered still gets its response; then the connection ends. */
    if (c->ex == NULL || !c->ex->dispatched)
        conn_close(c);
}

static void
c_on_drain(struct net_stream *st, void *arg)
{
    (void)st;
    struct http_conn *c = arg;
    if (c->ex && c->ex->on_drain)
        c->ex->on_drain(c->ex, c->ex->stream_arg);
}

static void
c_on_close(struct net_stream *st, const char *why, void *arg)
{
    (void)st;
    (void)why;
    struct http_conn *c = arg;
    c->s = NULL;
    if (!c->closing)
        conn_teardown(c);
    conn_release(c);
}

static const struct net_stream_cbs conn_cbs = {NULL, c_on_read, c_on_eof, c_on_drain, c_on_close};

static void
on_connection(uv_stream_t *ls, int status)
{
    struct http_listener *l = ls->data;
    struct http_server *s = l->srv;
    if (status < 0)
        return;
    struct http_conn *c = xcalloc(1, sizeof(*c));
    c->srv = s;
    c->s = net_stream_accept(ls, l->tls, &conn_cbs, c);
    if (c->s == NULL) {
        free(c);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->open = 2;
    c->tls = l->tls != NULL;
    snprintf(c->remote_ip, sizeof(c->remote_ip), "%s", net_stream_peer_ip(c->s));
    buf_init(&c->pending);
    buf_init(&c->field);
    buf_init(&c->value);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (s->shutting_down || s->nconns > s->o.max_conns) {
        conn_close(c);
        return;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    conn_arm_timer(c, s->o.header_timeout_ms);
}

/* ---- server ---- */

struct http_server *
http_server_new(uv_loop_t *loop, const struct http_server_opts *opts)
{
    struct http_server *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->o = *opts;
    if (s->o.max_body == 0)
        s->o.max_body = 1 << 20;
    if (s->o.max_header_bytes == 0)
        s->o.max_header_bytes = 64 << 10;
    if (s->o.max_headers == 0)
        s->o.max_headers = 100;
    if (s->o.header_timeout_ms == 0)
        s->o.header_timeout_ms = 10000;
    if (s->o.idle_timeout_ms == 0)
        s->o.idle_timeout_ms = 60000;
    if (s->o.max_conns == 0)
        s->o.max_conns = 10000;
    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_header_value_complete = on_header_value_complete;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    return s;
}

/* Resolves "host:port" (host may be empty, bracketed IPv6, or a name) to a socket address. */
static int
resolve_listen_addr(const char *addr, struct sockaddr_storage *ss, char **err)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL) {
        *err = xasprintf("invalid address \"%s\": missing port", addr);
        return -1;
    }
    char *host = xstrndup(addr, (size_t)(colon - addr));
    const char *port = colon + 1;
    char *end;
    long pn = strtol(port, &end, 10);
    int rc = 0;
    if (*port == '\0' || *end != '\0' || pn < 0 || pn > 65535) {
        *err = xasprintf("invalid address \"%s\": bad port", addr);
        rc = -1;
        goto out;
    }
    if (host[0] == '[' && str_has_suffix(host, "]")) {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    if (host[0] == '\0')
        str_replace(&host, "0.0.0.0");
    if (uv_ip4_addr(host, (int)pn, (struct sockaddr_in *)ss) == 0 ||
        uv_ip6_addr(host, (int)pn, (struct sockaddr_in6 *)ss) == 0)
        goto out;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0 || res == NULL) {
        *err = xasprintf("invalid address \"%s\": %s", addr, gai_strerror(gai));
        rc = -1;
        goto out;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
out:
    free(host);
    return rc;
}

int
http_server_listen(struct http_server *s, const char *addr, struct tls_ctx *tls, char *bound,
                   size_t boundcap, char **err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (resolve_listen_addr(addr, &ss, err) < 0)
        return -1;
    struct http_listener *l = xcalloc(1, sizeof(*l));
    l->srv = s;
    l->tls = tls;
    uv_tcp_init(s->loop, &l->tcp);
    l->tcp.data = l;
    int r = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
    if (r < 0) {
        *err = xasprintf("listen %s: %s", addr, uv_strerror(r));
        uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
        return -1;
    }
    l->next = s->listeners;
    s->listeners = l;
    if (bound) {
        struct sockaddr_storage got;
        int len = sizeof(got);
        uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&got, &len);
        char ip[64];
        if (got.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&got, ip, sizeof(ip));
            snprintf(bound, boundcap, "[%s]:%d", ip,
                     ntohs(((struct sockaddr_in6 *)&got)->sin6_port));
        } else {
            uv_ip4_name((struct sockaddr_in *)&got, ip, sizeof(ip));
            snprintf(bound, boundcap, "%s:%d", ip, ntohs(((struct sockaddr_in *)&got)->sin_port));
        }
    }
    return 0;
}

size_t
http_server_conn_count(const struct http_server *s)
{
    return s->nconns;
}

static void
on_grace_closed(uv_handle_t *h)
{
    struct http_server *s = h->data;
    s->grace_timer_open = false;
    http_server_maybe_finish_shutdown(s);
}

void
http_server_maybe_finish_shutdown(struct http_server *s)
{
    if (!s->shutting_down || s->shutdown_done)
        return;
    /* Close connections that became idle. */
    for (struct http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->ex == NULL)
            conn_close(c);
    }
    if (s->conns || s->h2conns || s->listeners || s->ndetached)
        return;
    if (s->grace_timer_open) {
        if (!uv_is_closing((uv_handle_t *)&s->grace_timer))
            uv_close((uv_handle_t *)&s->grace_timer, on_grace_closed);
        return;
    }
    s->shutdown_done = true;
    if (s->shutdown_cb)
        s->shutdown_cb(s->shutdown_arg);
}

static void
on_grace_timeout(uv_timer_t *t)
{
    struct http_server *s = t->data;
    for (struct http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c);
    }
    h2_conns_shutdown(s, true);
    http_server_maybe_finish_shutdown(s);
}

static void
on_listener_closed(uv_handle_t *h)
{
    struct http_listener *l = h->data;
    struct http_server *s = l->srv;
    free(l);
    http_server_maybe_finish_shutdown(s);
}

void
http_server_shutdown(struct http_server *s, int64_t grace_ms, void (*cb)(void *), void *arg)
{
    s->shutting_down = true;
    s->shutdown_cb = cb;
    s->shutdown_arg = arg;
    uv_timer_init(s->loop, &s->grace_timer);
    s->grace_timer.data = s;
    s->grace_timer_open = true;
    uv_timer_start(&s->grace_timer, on_grace_timeout, (uint64_t)grace_ms, 0);
    h2_conns_shutdown(s, false); /* GOAWAY: streams in flight finish */
    struct http_listener *l = s->listeners;
    s->listeners = NULL;
    while (l) {
        struct http_listener *next = l->next;
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
        l = next;
    }
    http_server_maybe_finish_shutdown(s);
}

void
http_server_free(struct http_server *s)
{
    free(s);
}

/* ---- streaming ---------------------------------------------------------------------------- */

/* Feeds the parser what waited in c->pending (the body, while it was not being read). */
static void
conn_resume_input(struct http_conn *c)
{
    c->paused = false;
    llhttp_resume(&c->parser);
    if (c->pending.len) {
        struct buf p = c->pending;
        buf_init(&c->pending);
        conn_process(c, p.data, p.len);
        buf_fini(&p);
    }
    if (c->stream_paused && !c->closing && c->ex && !c->ex->body_paused &&
        http_exchange_body_queued(c->ex) == 0) {
        c->stream_paused = false;
        net_stream_resume(c->s);
    }
}

size_t
http_exchange_body_queued(const struct http_exchange *ex)
{
    return ex->body_queue.len - ex->body_queue_off;
}

void
http_exchange_body_queue(struct http_exchange *ex, const char *d, size_t n)
{
    if (ex->body_queue_off && ex->body_queue_off >= ex->body_queue.len / 2) {
        buf_consume(&ex->body_queue, ex->body_queue_off); /* moves at most half of it */
        ex->body_queue_off = 0;
    }
    buf_append(&ex->body_queue, d, n);
}

/* The queue goes to the handler in pieces of this size, so that a handler that pauses (its
 * destination is full) stops the flow within one piece, not after a whole HTTP/2 window. */
#define BODY_PIECE (64u << 10)

void
http_exchange_body_flush(struct http_exchange *ex)
{
    /* Nothing appends to the queue while a piece is delivered: arrivals come from reads of
     * the client's connection, which run from the loop, never from inside the handler. */
    while (http_exchange_body_queued(ex) && !ex->body_paused && ex->body_cbs) {
        size_t n = http_exchange_body_queued(ex);
        if (n > BODY_PIECE)
            n = BODY_PIECE;
        const char *d = ex->body_queue.data + ex->body_queue_off;
        ex->body_queue_off += n;
        if (ex->body_cbs->on_data)
            ex->body_cbs->on_data(ex, d, n, ex->body_arg);
    }
    if (ex->body_queue_off == ex->body_queue.len && ex->body_queue_off) {
        buf_fini(&ex->body_queue); /* an HTTP/2 window's worth need not stay allocated */
        ex->body_queue_off = 0;
    }
    if (ex->end_pending && !ex->body_paused && http_exchange_body_queued(ex) == 0 && ex->body_cbs) {
        ex->end_pending = false;
        if (ex->body_cbs->on_end)
            ex->body_cbs->on_end(ex, ex->body_arg);
    }
}

void
http_exchange_read_body(struct http_exchange *ex, const struct http_body_cbs *cbs, void *arg)
{
    ex->body_cbs = cbs;
    ex->body_arg = arg;
    if (ex->h2) {
        h2_body_flow(ex);
        return;
    }
    struct http_conn *c = ex->conn;
    if (c && c->ex == ex)
        send_continue(ex);
    http_exchange_body_flush(ex);
    if (c && !c->closing && !ex->req_complete && c->ex == ex)
        conn_resume_input(c);
}

void
http_exchange_pause_body(struct http_exchange *ex)
{
    struct http_conn *c = ex->conn;
    ex->body_paused = true; /* HTTP/2: arriving DATA waits unacknowledged (h2.c) */
    if (c && !c->closing && !c->stream_paused) {
        net_stream_pause(c->s);
        c->stream_paused = true;
    }
}

void
http_exchange_resume_body(struct http_exchange *ex)
{
    if (!ex->body_paused)
        return;
    ex->body_paused = false;
    if (ex->h2) {
        h2_body_flow(ex);
        return;
    }
    http_exchange_body_flush(ex);
    struct http_conn *c = ex->conn;
    if (c && !c->closing && c->stream_paused && !ex->body_paused &&
        http_exchange_body_queued(ex) == 0 && !ex->req_complete) {
        c->stream_paused = false;
        net_stream_resume(c->s);
    }
}

void
http_exchange_set_stream_cbs(struct http_exchange *ex,
                             void (*on_drain)(struct http_exchange *ex, void *arg),
                             void (*on_abort)(struct http_exchange *ex, void *arg), void *arg)
{
    ex->on_drain = on_drain;
    ex->on_abort = on_abort;
    ex->stream_arg = arg;
}

int
http_exchange_begin(struct http_exchange *ex, int status)
{
    if (ex->h2)
        return h2_begin(ex, status);
    struct http_conn *c = ex->conn;
    if (ex->head_sent || ex->finished || !c || c->closing)
        return -1;
    ex->head_sent = true;
    ex->status = status;
    bool head = ex->req.method && strcmp(ex->req.method, "HEAD") == 0;
    bool no_body = head || status == 204 || status == 304 || status < 200;
    if (ex->srv->shutting_down)
        ex->close_after = true;
    struct buf out;
    buf_init(&out);
    put_status_line(&out, status);
    for (size_t i = 0; i < ex->nrheaders; i++)
        buf_cat(&out, ex->rheaders[i].name, ": ", ex->rheaders[i].value, "\r\n", NULL);
    if (!no_body && !http_exchange_has_header(ex, "Content-Length")) {
        ex->chunked = true;
        buf_puts(&out, "Transfer-Encoding: chunked\r\n");
    }
    if (ex->close_after)
        buf_puts(&out, "Connection: close\r\n");
    buf_puts(&out, "\r\n");
    int rc = net_stream_write(c->s, out.data, out.len);
    buf_fini(&out);
    return rc < 0 ? -1 : 0;
}

void
http_exchange_routed(struct http_exchange *ex)
{
    ex->routed = true;
    if (ex->srv->o.on_routed)
        ex->srv->o.on_routed(ex, ex->srv->o.arg);
}

struct net_stream *
http_exchange_cork(struct http_exchange *ex)
{
    struct http_conn *c = ex->conn;
    if (ex->h2 || ex->finished || !c || c->closing)
        return NULL;
    net_stream_cork(c->s);
    return c->s;
}

int
http_exchange_write(struct http_exchange *ex, const void *data, size_t n)
{
    if (ex->h2)
        return h2_write(ex, data, n);
    struct http_conn *c = ex->conn;
    if (!ex->head_sent || ex->finished || !c || c->closing)
        return -1;
    if (n == 0)
        return 1;
    if (!ex->chunked)
        return net_stream_write(c->s, data, n);
    char size[24];
    int len = snprintf(size, sizeof(size), "%zx\r\n", n);
    uv_buf_t chunk[3] = {uv_buf_init(size, (unsigned)len), uv_buf_init((char *)data, (unsigned)n),
                         uv_buf_init((char *)"\r\n", 2)};
    return net_stream_writev(c->s, chunk, 3);
}

void
http_exchange_end(struct http_exchange *ex)
{
    if (ex->finished)
        return;
    if (ex->h2) {
        ex->finished = true;
        h2_end(ex);
        return;
    }
    if (ex->conn && ex->conn->parsing) {
        ex->end_deferred = true; /* stream_settle completes it */
        return;
    }
    exchange_end_now(ex);
}

void
http_exchange_abort(struct http_exchange *ex)
{
    if (ex->finished)
        return;
    if (ex->h2) {
        ex->finished = true;
        h2_abort(ex);
        return;
    }
    struct http_conn *c = ex->conn;
    if (!c || c->closing || c->parsing || !ex->head_sent) {
        /* Nothing half-sent to cut (or not safely now): end it, closing the connection. */
        ex->close_after = true;
        http_exchange_end(ex);
        return;
    }
    ex->finished = true;
    conn_close(c); /* no terminator: the client sees the response cut short */
    exchange_done(ex);
}

/* After the parser returned: completes an end or finish asked for during it, else delivers
 * queued body and a due on_end. The exchange may be gone afterwards. */
static void
stream_settle(struct http_exchange *ex)
{
    if (ex->end_deferred) {
        exchange_end_now(ex);
        return;
    }
    if (ex->finish_deferred) {
        int status = ex->finish_deferred;
        ex->finish_deferred = 0;
        http_exchange_finish(ex, status);
        return;
    }
    http_exchange_body_flush(ex);
}

static void
exchange_end_now(struct http_exchange *ex)
{
    ex->finished = true;
    struct http_conn *c = ex->conn;
    if (c && !c->closing) {
        if (!ex->head_sent) {
            ex->close_after = true;
            http_exchange_begin(ex, 502);
        }
        if (ex->chunked)
            net_stream_write(c->s, "0\r\n\r\n", 5);
        /* A body not read to its end is still on the wire: this connection cannot go on. */
        if (!ex->req_complete || http_exchange_body_queued(ex))
            ex->close_after = true;
        if (ex->close_after) {
            net_stream_shutdown(c->s);
            conn_arm_timer(c, LINGER_MS);
        }
    }
    exchange_done(ex);
}
