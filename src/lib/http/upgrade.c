/* The client side of an HTTP/1.1 upgrade (RFC 9110 §7.8): dial, send the request, read the
 * answer, and on 101 hand the connection over with the bytes that followed the head. */
#include "http/upgrade.h"
#include "base/util.h"
#include "http/url.h"

#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEAD (16u << 10)
#define MAX_BODY (4u << 10)

struct http_upgrade {
    struct net_stream *st;
    struct buf request;
    llhttp_t parser;
    size_t head_bytes;
    int status;
    struct buf body;
    http_upgrade_cb cb;
    void *arg;
    bool reported; /* cb ran (or was canceled) */
    char why[256];
};

static void
report(struct http_upgrade *u, struct net_stream *st, const struct buf *early, int status,
       const char *err)
{
    if (u->reported)
        return;
    u->reported = true;
    u->cb(st, early, status, err, u->arg);
}

static int
p_bytes(llhttp_t *p, const char *at, size_t n)
{
    (void)at;
    struct http_upgrade *u = p->data;
    u->head_bytes += n;
    return u->head_bytes > MAX_HEAD ? -1 : 0;
}

static int
p_headers_complete(llhttp_t *p)
{
    ((struct http_upgrade *)p->data)->status = p->status_code;
    return 0;
}

static int
p_body(llhttp_t *p, const char *at, size_t n)
{
    struct http_upgrade *u = p->data;
    if (u->body.len + n > MAX_BODY)
        return -1;
    buf_append(&u->body, at, n);
    return 0;
}

static int
p_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

/* A refused upgrade: the server's JSON message when it sent one. */
static void
refused(struct http_upgrade *u)
{
    json_t *j = json_loadb(u->body.data ? u->body.data : "", u->body.len, 0, NULL);
    const char *msg = json_string_value(json_object_get(j, "message"));
    const char *detail = json_string_value(json_object_get(j, "detail"));
    char text[512];
    if (msg && detail && *detail)
        snprintf(text, sizeof(text), "%s: %s", msg, detail);
    else
        snprintf(text, sizeof(text), "%s", msg ? msg : "");
    json_decref(j);
    report(u, NULL, NULL, u->status, text);
    net_stream_close(u->st);
}

static void
u_read(struct net_stream *st, const uint8_t *data, size_t n, void *arg)
{
    struct http_upgrade *u = arg;
    if (u->reported)
        return;
    llhttp_errno_t e = llhttp_execute(&u->parser, (const char *)data, n);
    if ((e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) && u->status == 101) {
        size_t used = (size_t)(llhttp_get_error_pos(&u->parser) - (const char *)data);
        struct buf early;
        buf_init(&early);
        buf_append(&early, data + used, n - used);
        u->st = NULL; /* the caller's now; its on_close never reaches u */
        report(u, st, &early, 101, NULL);
        buf_fini(&early);
        buf_fini(&u->request);
        buf_fini(&u->body);
        free(u);
        return;
    }
    if (e == HPE_PAUSED) {
        refused(u);
        return;
    }
    if (e != HPE_OK) {
        report(u, NULL, NULL, 0, "upgrade: the server's answer is not valid HTTP/1.1");
        net_stream_close(st);
    }
}

static void
u_connect(struct net_stream *st, const char *err, void *arg)
{
    struct http_upgrade *u = arg;
    if (err) {
        report(u, NULL, NULL, 0, err);
        return; /* the stream closes itself */
    }
    net_stream_write(st, u->request.data, u->request.len);
}

static void
u_eof(struct net_stream *st, void *arg)
{
    struct http_upgrade *u = arg;
    if (u->status && u->status != 101) {
        llhttp_finish(&u->parser);
        refused(u);
        return;
    }
    report(u, NULL, NULL, 0, "upgrade: the server closed the connection");
    net_stream_close(st);
}

static void
u_close(struct net_stream *st, const char *why, void *arg)
{
    (void)st;
    struct http_upgrade *u = arg;
    report(u, NULL, NULL, 0, why ? why : "upgrade: connection closed");
    buf_fini(&u->request);
    buf_fini(&u->body);
    free(u);
}

static const struct net_stream_cbs upgrade_cbs = {u_connect, u_read, u_eof, NULL, u_close};

struct http_upgrade *
http_upgrade_dial(uv_loop_t *loop, const char *base_url, const char *path, const char *proto,
                  const char *const *headers, struct tls_ctx *tls, int64_t timeout_ms,
                  http_upgrade_cb cb, void *arg, char **err)
{
    struct url u;
    bool https = false;
    if (url_parse(base_url, &u) < 0 ||
        !((https = str_eq(u.scheme, "https")) || str_eq(u.scheme, "http"))) {
        if (u.scheme)
            url_free(&u);
        *err = xasprintf("invalid URL \"%s\": want http or https", base_url);
        return NULL;
    }
    struct http_upgrade *up = xcalloc(1, sizeof(*up));
    up->cb = cb;
    up->arg = arg;
    buf_init(&up->request);
    buf_init(&up->body);
    int port = u.port ? u.port : url_default_port(&u);
    buf_printf(&up->request, "GET %s%s HTTP/1.1\r\n", str_eq(u.path, "/") ? "" : u.path, path);
    buf_printf(&up->request, "Host: %s%s%s:%d\r\n", u.ipv6 ? "[" : "", u.host, u.ipv6 ? "]" : "",
               port);
    buf_printf(&up->request, "Connection: Upgrade\r\nUpgrade: %s\r\n", proto);
    for (size_t i = 0; headers && headers[i]; i++) {
        if (!strpbrk(headers[i], "\r\n"))
            buf_printf(&up->request, "%s\r\n", headers[i]);
    }
    buf_puts(&up->request, "\r\n");
    static const llhttp_settings_t answer = {.on_status = p_bytes,
                                             .on_header_field = p_bytes,
                                             .on_header_value = p_bytes,
                                             .on_headers_complete = p_headers_complete,
                                             .on_body = p_body,
                                             .on_message_complete = p_message_complete};
    llhttp_init(&up->parser, HTTP_RESPONSE, &answer);
    up->parser.data = up;
    up->st =
        net_stream_dial(loop, u.host, port, https ? tls : NULL, NULL, timeout_ms, &upgrade_cbs, up);
    url_free(&u);
    return up;
}

void
http_upgrade_cancel(struct http_upgrade *u)
{
    if (!u || u->reported)
        return;
    u->reported = true; /* no callback from here on; u_close frees u */
    net_stream_close(u->st);
}
