/* What server.c (HTTP/1.1) and h2.c (HTTP/2) share inside the HTTP server. Not for programs. */
#ifndef HTTP_SERVER_INT_H
#define HTTP_SERVER_INT_H

#include "http/server.h"

#include <llhttp.h>

struct h2_conn;

struct http_server {
    uv_loop_t *loop;
    struct http_server_opts o;
    struct http_listener *listeners;
    struct http_conn *conns;
    size_t nconns;
    struct h2_conn *h2conns; /* HTTP/2 connections (ALPN h2), counted in nconns too */
    llhttp_settings_t settings;
    bool shutting_down;
    size_t ndetached; /* exchanges whose connection closed while the handler worked */
    uv_timer_t grace_timer;
    void (*shutdown_cb)(void *);
    void *shutdown_arg;
    bool grace_timer_open;
    bool shutdown_done;
};

/* server.c */
/* A fresh exchange for a request that arrived on an HTTP/2 stream (no http_conn). */
struct http_exchange *http_exchange_alloc(struct http_server *s, bool tls, const char *remote_ip);
void http_exchange_free_internal(struct http_exchange *ex);
/* Delivers queued body while the handler reads; then a due on_end. */
void http_exchange_body_flush(struct http_exchange *ex);
/* Body bytes queued and not yet delivered to the handler. */
size_t http_exchange_body_queued(const struct http_exchange *ex);
/* Queues body bytes that arrived while the handler cannot take them (in arrival order). */
void http_exchange_body_queue(struct http_exchange *ex, const char *d, size_t n);
/* Called when the number of connections or detached exchanges went down. */
void http_server_maybe_finish_shutdown(struct http_server *s);

/* h2.c */
/* Takes over st (TLS, ALPN h2) as an HTTP/2 connection; data is what was read already. */
void h2_conn_start(struct http_server *s, struct net_stream *st, const char *remote_ip,
                   const uint8_t *data, size_t n);
/* At shutdown: GOAWAY to every HTTP/2 connection (force: close them now). */
void h2_conns_shutdown(struct http_server *s, bool force);
/* The exchange operations for exchanges on HTTP/2 streams (ex->h2 set). */
void h2_finish(struct http_exchange *ex);
int h2_begin(struct http_exchange *ex, int status);
int h2_write(struct http_exchange *ex, const void *data, size_t n);
void h2_end(struct http_exchange *ex);
void h2_abort(struct http_exchange *ex);
/* The handler reads (again): queued body delivered, then acknowledged to the client. */
void h2_body_flow(struct http_exchange *ex);
bool h2_client_gone(const struct http_exchange *ex);

#endif
