/* HTTP client for the control plane on libcurl.
 *
 * One transfer (struct client_xfer) wraps a curl easy handle with everything it points at:
 * curl copies option strings but not the header list, the request body or the error buffer,
 * so those live here for as long as the handle does. The blocking client performs one
 * transfer with curl_easy_perform; the asynchronous client adds transfers to a curl multi
 * handle driven by libuv through the multi socket API: curl tells us which sockets to watch
 * (client_socket_cb -> one uv_poll_t each) and when to wake it (client_timer_cb -> one
 * uv_timer_t), and we tell curl what happened with curl_multi_socket_action. */
#include "http/client.h"

#include "base/log.h"
#include "base/util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT_TIMEOUT_MS 30000L
#define CLIENT_CONNECT_TIMEOUT_MS 10000L
#define CLIENT_MAX_BODY ((size_t)4 << 20)
#define CLIENT_MAX_HEADERS 100
#define CLIENT_MAX_HEADER_BYTES ((size_t)64 << 10)

/* Why a transfer was stopped by our own callbacks; curl only sees CURLE_WRITE_ERROR. */
enum client_limit {
    CLIENT_LIMIT_NONE,
    CLIENT_LIMIT_BODY,
    CLIENT_LIMIT_HEADER_COUNT,
    CLIENT_LIMIT_HEADER_BYTES,
};

struct client_xfer {
    CURL *easy;
    struct curl_slist *headers;
    char *method;
    char *url;
    char *body;
    size_t max_body;
    size_t header_bytes;
    enum client_limit limit;
    char errbuf[CURL_ERROR_SIZE];
    struct http_client_resp resp;
    /* Asynchronous transfers only. */
    struct http_client *client;
    http_client_cb cb;
    void *arg;
    struct client_xfer *prev, *next;
};

/* A socket curl asked us to watch. */
struct client_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct http_client *client;
    struct client_sock *prev, *next;
};

struct http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct client_xfer *xfers; /* in flight */
    struct client_sock *socks; /* watched, not yet closing */
    unsigned open_handles;     /* uv handles whose close callback has not run */
    bool closing;
};

/* ---- process-wide setup ---- */

static pthread_once_t client_global_once = PTHREAD_ONCE_INIT;
static CURLcode client_global_rc = CURLE_FAILED_INIT;

static void
client_global_init(void)
{
    /* Never undone with curl_global_cleanup: other threads may still be using curl when
     * the process exits, and the OS frees the rest. */
    client_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int
client_global_ensure(void)
{
    pthread_once(&client_global_once, client_global_init);
    return client_global_rc == CURLE_OK ? 0 : -1;
}

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

/* ---- curl callbacks shared by both clients ---- */

static size_t
client_body_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    struct client_xfer *x = userp;
    size_t n = size * nmemb;
    if (n > x->max_body - x->resp.body.len) {
        x->limit = CLIENT_LIMIT_BODY;
        return 0; /* curl aborts the transfer */
    }
    buf_append(&x->resp.body, data, n);
    return n;
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

/* obs-fold: a line starting with white space continues the previous header's value. */
static void
client_header_fold(struct http_client_resp *r, const char *line, size_t len)
{
    if (r->nheaders == 0)
        return;
    struct http_client_header *h = &r->headers[r->nheaders - 1];
    char *more = client_strndup_trim(line, len);
    char *value = xasprintf("%s%s%s", h->value, h->value[0] && more[0] ? " " : "", more);
    free(more);
    free(h->value);
    h->value = value;
}

/* curl hands over one complete line at a time, for every response it reads (1xx interim
 * responses included), so the list restarts at each status line and ends up holding the
 * final response's headers (and trailers, if any). */
static size_t
client_header_cb(char *line, size_t size, size_t nitems, void *userp)
{
    struct client_xfer *x = userp;
    struct http_client_resp *r = &x->resp;
    size_t n = size * nitems;
    if (n > CLIENT_MAX_HEADER_BYTES - x->header_bytes) {
        x->limit = CLIENT_LIMIT_HEADER_BYTES;
        return 0;
    }
    x->header_bytes += n;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        client_resp_headers_clear(r);
        return n;
    }
    size_t len = n;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    if (len == 0)
        return n;
    if (line[0] == ' ' || line[0] == '\t') {
        client_header_fold(r, line, len);
        return n;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL)
        return n;
    if (r->nheaders >= CLIENT_MAX_HEADERS) {
        x->limit = CLIENT_LIMIT_HEADER_COUNT;
        return 0;
    }
    r->headers = xrealloc(r->headers, (r->nheaders + 1) * sizeof(*r->headers));
    struct http_client_header *h = &r->headers[r->nheaders++];
    h->name = client_strndup_trim(line, (size_t)(colon - line));
    h->value = client_strndup_trim(colon + 1, len - (size_t)(colon - line) - 1);
    return n;
}

/* ---- building a transfer ---- */

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

/* Whether header line `line` ("Name: value") is named `name`. */
static bool
client_header_is(const char *line, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(line, name, n) == 0 && (line[n] == ':' || line[n] == ';');
}

static void
client_xfer_add_header(struct client_xfer *x, const char *line)
{
    struct curl_slist *l = curl_slist_append(x->headers, line);
    if (l == NULL)
        abort(); /* allocation failure, as xmalloc treats it */
    x->headers = l;
}

static void
client_xfer_free(struct client_xfer *x)
{
    if (x == NULL)
        return;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->method);
    free(x->url);
    free(x->body);
    http_client_resp_fini(&x->resp);
    free(x);
}

/* Builds the header list: the caller's lines, then blanks for the headers curl would add
 * on its own. Sets resp.error instead when a caller's line could split the request (CR or
 * LF inside). */
static void
client_xfer_set_headers(struct client_xfer *x, const char *const *lines, bool has_body)
{
    bool content_type = false, expect = false, accept = false;
    for (size_t i = 0; lines && lines[i]; i++) {
        const char *line = lines[i];
        if (strpbrk(line, "\r\n") != NULL) {
            /* Name the field only: the value may be a session token. */
            char *name = xstrndup(line, strcspn(line, ":;\r\n"));
            char *reason = xasprintf("net/http: invalid header field value for \"%s\"", name);
            free(name);
            client_resp_fail(&x->resp, client_error_format(x->method, x->url, reason));
            free(reason);
            return;
        }
        content_type |= client_header_is(line, "Content-Type");
        expect |= client_header_is(line, "Expect");
        accept |= client_header_is(line, "Accept");
        client_xfer_add_header(x, line);
    }
    /* "Name:" tells curl to drop a header it would add itself: it would label every body
     * a form, hold each upload back waiting for "100 Continue", and send a catch-all
     * Accept. Go's client does none of that, and Coder's servers expect none of it. */
    if (has_body && !content_type)
        client_xfer_add_header(x, "Content-Type:");
    if (!expect)
        client_xfer_add_header(x, "Expect:");
    if (!accept)
        client_xfer_add_header(x, "Accept:");
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
}

/* Sets method and body. Like Go, POST, PUT and PATCH always carry a body (Content-Length:
 * 0 when there is none); other methods carry one only when given. Returns whether a body is
 * sent. */
static bool
client_xfer_set_method(struct client_xfer *x, const struct http_client_req *req)
{
    CURL *e = x->easy;
    const char *m = x->method;
    bool has_body =
        req->body != NULL || str_eq(m, "POST") || str_eq(m, "PUT") || str_eq(m, "PATCH");
    if (has_body) {
        size_t n = req->body ? req->body_len : 0;
        x->body = xmalloc(n + 1);
        if (n)
            memcpy(x->body, req->body, n);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
        if (!str_eq(m, "POST"))
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    } else if (str_eq(m, "GET")) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (str_eq(m, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L); /* else curl waits for a body */
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }
    return has_body;
}

/* SSL_CERT_FILE / SSL_CERT_DIR replace the system trust store, as in Go: when only one is
 * set, the other source is dropped rather than left at curl's built-in default. */
static void
client_xfer_set_tls(struct client_xfer *x, const struct http_client_req *req)
{
    CURL *e = x->easy;
    const char *file = getenv("SSL_CERT_FILE");
    const char *dir = getenv("SSL_CERT_DIR");
    if (file && file[0] == '\0')
        file = NULL;
    if (dir && dir[0] == '\0')
        dir = NULL;
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2); /* Go's minimum */
    if (file || dir) {
        curl_easy_setopt(e, CURLOPT_CAINFO, file);
        curl_easy_setopt(e, CURLOPT_CAPATH, dir);
    }
    if (req->client_cert)
        curl_easy_setopt(e, CURLOPT_SSLCERT, req->client_cert);
    if (req->client_key)
        curl_easy_setopt(e, CURLOPT_SSLKEY, req->client_key);
}

/* Returns a transfer ready to perform, or one whose resp.error says why it cannot run.
 * Returns NULL only when req itself is missing or curl cannot be set up at all. */
static struct client_xfer *
client_xfer_new(const struct http_client_req *req)
{
    if (req == NULL || client_global_ensure() < 0)
        return NULL;
    CURL *e = curl_easy_init();
    if (e == NULL)
        return NULL;
    struct client_xfer *x = xcalloc(1, sizeof(*x));
    http_client_resp_init(&x->resp);
    x->easy = e;
    x->method = xstrdup(req->method && req->method[0] ? req->method : "GET");
    x->url = xstrdup(req->url ? req->url : "");
    x->max_body = req->max_body ? req->max_body : CLIENT_MAX_BODY;
    if (!client_is_token(x->method)) {
        client_resp_fail(&x->resp, xasprintf("net/http: invalid method \"%s\"", x->method));
        return x;
    }
    long timeout = req->timeout_ms > 0 ? req->timeout_ms : CLIENT_TIMEOUT_MS;
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    /* Both: PROXY "" overrides the *_proxy environment, NOPROXY "*" covers any later
     * default; the control plane reaches its peers directly (loopback in tests). */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L); /* many threads, and no SIGALRM games */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout < CLIENT_CONNECT_TIMEOUT_MS ? timeout : CLIENT_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, client_body_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, client_header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    /* Refuses an announced Content-Length over the limit before any of it arrives; the body
     * callback catches the rest. A HEAD's Content-Length describes no body. */
    if (!str_eq(x->method, "HEAD") && (uint64_t)x->max_body <= (uint64_t)INT64_MAX)
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->max_body);
    if (req->fresh_connection) {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    client_xfer_set_tls(x, req);
    bool has_body = client_xfer_set_method(x, req);
    client_xfer_set_headers(x, req->headers, has_body);
    return x;
}

/* Fills in the response once curl is done with rc. Returns 0 if a response arrived, -1 with
 * resp.error set otherwise. */
static int
client_xfer_finish(struct client_xfer *x, CURLcode rc)
{
    char reason[96];
    const char *why = NULL;
    if (x->limit == CLIENT_LIMIT_BODY || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(reason, sizeof(reason), "response body too large (limit %zu bytes)", x->max_body);
        why = reason;
    } else if (x->limit == CLIENT_LIMIT_HEADER_COUNT) {
        snprintf(reason, sizeof(reason), "too many response headers (limit %d)",
                 CLIENT_MAX_HEADERS);
        why = reason;
    } else if (x->limit == CLIENT_LIMIT_HEADER_BYTES) {
        snprintf(reason, sizeof(reason), "response headers too large (limit %zu bytes)",
                 CLIENT_MAX_HEADER_BYTES);
        why = reason;
    } else if (rc != CURLE_OK) {
        why = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
    }
    if (why) {
        client_resp_fail(&x->resp, client_error_format(x->method, x->url, why));
        return -1;
    }
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->resp.status);
    return 0;
}

/* ---- blocking client ---- */

/* resp is (re)initialised here and always needs http_client_resp_fini afterwards. */
int
http_client_do(const struct http_client_req *req, struct http_client_resp *resp)
{
    http_client_resp_init(resp);
    struct client_xfer *x = client_xfer_new(req);
    if (x == NULL) {
        resp->error =
            xstrdup(req ? "http client: cannot set up libcurl" : "http client: no request");
        return -1;
    }
    int rc = -1;
    if (x->resp.error == NULL)
        rc = client_xfer_finish(x, curl_easy_perform(x->easy));
    *resp = x->resp;
    http_client_resp_init(&x->resp);
    client_xfer_free(x);
    return rc;
}

/* ---- asynchronous client ---- */

static void
client_release(struct http_client *c)
{
    if (--c->open_handles == 0 && c->closing)
        free(c);
}

static void
client_sock_closed(uv_handle_t *h)
{
    struct client_sock *s = h->data;
    struct http_client *c = s->client;
    free(s);
    client_release(c);
}

static void
client_sock_close(struct http_client *c, struct client_sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    /* Stops the watch now, before curl closes the descriptor. */
    uv_close((uv_handle_t *)&s->poll, client_sock_closed);
}

static void
client_xfer_unlink(struct http_client *c, struct client_xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        c->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

/* Runs the caller's callback, then frees the transfer: resp lives exactly as long as cb. */
static void
client_xfer_complete(struct client_xfer *x)
{
    x->cb(&x->resp, x->arg);
    client_xfer_free(x);
}

/* Delivers every finished transfer. Stops as soon as a callback closed the client: the
 * close has already delivered the rest. */
static void
client_multi_drain(struct http_client *c)
{
    CURLMsg *msg;
    int left;
    while (!c->closing && (msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result; /* msg dies with the removal below */
        void *p = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &p);
        struct client_xfer *x = p;
        curl_multi_remove_handle(c->multi, e);
        client_xfer_unlink(c, x);
        client_xfer_finish(x, rc);
        client_xfer_complete(x);
    }
}

static void
client_poll_cb(uv_poll_t *h, int status, int events)
{
    struct client_sock *s = h->data;
    struct http_client *c = s->client;
    int flags = 0, running;
    if (c->closing)
        return;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    /* s may be closed by client_socket_cb inside this call; its memory stays until the
     * close callback, but read nothing from it afterwards. */
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    client_multi_drain(c);
}

static void
client_timeout_cb(uv_timer_t *t)
{
    struct http_client *c = t->data;
    int running;
    if (c->closing)
        return;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    client_multi_drain(c);
}

static int
client_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct http_client *c = userp;
    struct client_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s)
            client_sock_close(c, s);
        return 0;
    }
    if (s == NULL) {
        s = xcalloc(1, sizeof(*s));
        int err = uv_poll_init_socket(c->loop, &s->poll, fd);
        if (err < 0) {
            /* Returning -1 would kill every transfer of this multi handle; this one will
             * time out instead. */
            log_error("http client: cannot watch socket %d: %s", (int)fd, uv_strerror(err));
            free(s);
            return 0;
        }
        s->poll.data = s;
        s->fd = fd;
        s->client = c;
        s->next = c->socks;
        if (c->socks)
            c->socks->prev = s;
        c->socks = s;
        c->open_handles++;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    int err = uv_poll_start(&s->poll, events, client_poll_cb);
    if (err < 0)
        log_error("http client: cannot poll socket %d: %s", (int)fd, uv_strerror(err));
    return 0;
}

static int
client_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct http_client *c = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, client_timeout_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

static void
client_timer_closed(uv_handle_t *h)
{
    client_release(h->data);
}

/* Returns a client bound to loop, or NULL if curl cannot be set up. Use it from the loop's
 * thread only; end it with http_client_close. */
struct http_client *
http_client_new(uv_loop_t *loop)
{
    if (client_global_ensure() < 0)
        return NULL;
    CURLM *multi = curl_multi_init();
    if (multi == NULL)
        return NULL;
    struct http_client *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->multi = multi;
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, client_socket_cb);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, client_timer_cb);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, c);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 1;
    return c;
}

/* Copies what it needs from req; cb runs later on the loop, never from inside this call. */
int
http_client_start(struct http_client *c, const struct http_client_req *req, http_client_cb cb,
                  void *arg)
{
    if (c == NULL || c->closing || cb == NULL)
        return -1;
    struct client_xfer *x = client_xfer_new(req);
    if (x == NULL)
        return -1;
    if (x->resp.error) {
        log_debug("http client: %s", x->resp.error);
        client_xfer_free(x);
        return -1;
    }
    x->client = c;
    x->cb = cb;
    x->arg = arg;
    if (curl_multi_add_handle(c->multi, x->easy) != CURLM_OK) {
        client_xfer_free(x);
        return -1;
    }
    x->next = c->xfers;
    if (c->xfers)
        c->xfers->prev = x;
    c->xfers = x;
    return 0;
}

/* The callbacks of outstanding requests run before this returns, so once it returns no
 * callback will ever run again and the caller may free what their args point at. The
 * memory goes once the loop has run the close callbacks, so c must not be used after this
 * call (a second close before then is a no-op). Calling it from one of the client's own
 * callbacks is fine. */
void
http_client_close(struct http_client *c)
{
    if (c == NULL || c->closing)
        return;
    c->closing = true;
    while (c->xfers) {
        struct client_xfer *x = c->xfers;
        client_xfer_unlink(c, x);
        curl_multi_remove_handle(c->multi, x->easy);
        client_resp_fail(&x->resp, xstrdup("canceled"));
        client_xfer_complete(x);
    }
    /* Closes pooled connections; curl reports their sockets to client_socket_cb first. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->socks)
        client_sock_close(c, c->socks);
    uv_close((uv_handle_t *)&c->timer, client_timer_closed);
}
