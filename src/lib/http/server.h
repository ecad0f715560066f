/* HTTP/1.1 server on libuv, with TLS (net/tls) on any listener, and HTTP/2 (h2.c) on TLS
 * connections whose client chose it with ALPN. Requests are parsed strictly
 * (llhttp, no lenient flags: see SECURITY.md #1), bodies are buffered up to a limit, and the
 * program's handler answers each request with an exchange, at once or later (asynchronously,
 * e.g. after a store query), always on the loop thread. */
#ifndef HTTP_SERVER_H
#define HTTP_SERVER_H

#include "base/buf.h"
#include "net/stream.h"
#include "net/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_header {
    char *name;
    char *value;
};

struct http_request {
    char *method; /* "GET" */
    char *target; /* raw request-target, e.g. "/api/v2/x?y=1" */
    char *path;   /* target up to '?', not decoded */
    char *query;  /* after '?', not decoded; "" when absent */
    struct http_header *headers;
    size_t nheaders;
    struct buf body;
    char remote_ip[64];
    bool tls;     /* arrived on a TLS listener */
    bool upgrade; /* Connection: upgrade with an Upgrade header */
};

#define HTTP_MAX_PARAMS 4

struct http_exchange;
struct http_server;
struct realip;

/* Handles one request. Must eventually call http_exchange_finish (now or later, on the loop). */
typedef void (*http_handler_fn)(struct http_exchange *ex, void *arg);
/* Called once per finished exchange (metrics, access logs), before it is freed. */
typedef void (*http_done_fn)(struct http_exchange *ex, void *arg);
/* Decides, once the request head is in, whether the handler streams this request: it is
 * dispatched at once, takes the body as it arrives (http_exchange_read_body) and may stream its
 * response (http_exchange_begin/_write/_end). For a reverse proxy. */
typedef bool (*http_stream_fn)(struct http_exchange *ex, void *arg);

/* The body of a streamed request, as it arrives. */
struct http_body_cbs {
    void (*on_data)(struct http_exchange *ex, const char *data, size_t n, void *arg);
    void (*on_end)(struct http_exchange *ex, void *arg); /* the whole body was delivered */
};

struct http_exchange {
    struct http_request req;
    int status;
    struct http_header *rheaders;
    size_t nrheaders;
    size_t caprheaders;
    struct buf rbody;
    const char *route; /* the matched route pattern (static string), for metrics */
    const char *param_names[HTTP_MAX_PARAMS];
    char *param_values[HTTP_MAX_PARAMS];
    size_t nparams;
    int64_t start_us; /* monotonic */
    bool routed;      /* on_routed ran (a route matched) */
    void *user;       /* the program's per-request state */
    /* internals */
    struct http_conn *conn; /* NULL once the connection is gone */
    struct http_server *srv;
    bool dispatched; /* handed to the handler */
    bool finished;
    /* streaming */
    bool streaming;        /* dispatched at the head (stream_fn said so) */
    bool req_complete;     /* the whole request was parsed */
    bool body_paused;      /* the handler asked the body to wait */
    bool end_pending;      /* on_end is due once the queue drains */
    bool head_sent;        /* http_exchange_begin was called */
    bool chunked;          /* the response is framed in chunks */
    bool end_deferred;     /* ended from inside the parser: completed once it returns */
    bool expect_continue;  /* HTTP/1.1 "Expect: 100-continue": "100 Continue" is still owed */
    int finish_deferred;   /* finished (with this status) from inside the parser */
    struct buf body_queue; /* body that arrived while paused, delivered from body_queue_off */
    size_t body_queue_off;
    const struct http_body_cbs *body_cbs;
    void *body_arg;
    void (*on_drain)(struct http_exchange *ex, void *arg);
    void (*on_abort)(struct http_exchange *ex, void *arg);
    void *stream_arg;
    bool close_after;
    struct h2_req *h2; /* the HTTP/2 stream this request came on, or NULL (h2.c) */
};

struct http_server_opts {
    http_handler_fn handler;
    void *arg;
    http_done_fn on_done;
    http_done_fn on_routed; /* a route matched ex (ex->route set), before its handler runs */
    /* ex switched protocols (101) and st is handed to its new owner (metrics). */
    void (*on_upgrade)(struct http_exchange *ex, struct net_stream *st, void *arg);
    size_t max_body;             /* 0 = 1 MiB; larger bodies get 413 */
    size_t max_header_bytes;     /* 0 = 64 KiB (request line + headers); larger gets 431 */
    size_t max_headers;          /* 0 = 100 headers; more gets 431 */
    int64_t header_timeout_ms;   /* 0 = 10 s to receive a whole request head */
    int64_t idle_timeout_ms;     /* 0 = 60 s between requests on a keep-alive connection */
    size_t max_conns;            /* 0 = 10000; over it new connections are closed at once */
    http_stream_fn stream;       /* NULL: every request is buffered */
    const struct realip *realip; /* trusted forwarding headers (realip.h), or NULL */
};

/* Creates a server on loop. The opts are copied. */
struct http_server *http_server_new(uv_loop_t *loop, const struct http_server_opts *opts);
/* Starts listening on addr ("127.0.0.1:3000", "[::1]:80", "0.0.0.0:443", "localhost:3000",
 * ":3000"), with TLS when tls is not NULL (the server does not own tls). On success writes
 * the bound "host:port" into bound (if not NULL) and returns 0; else sets *err. */
int http_server_listen(struct http_server *s, const char *addr, struct tls_ctx *tls, char *bound,
                       size_t boundcap, char **err);
/* Stops accepting, closes idle connections, lets in-flight requests finish for up to
 * grace_ms, then closes the rest. cb runs once everything is closed; then free the server. */
void http_server_shutdown(struct http_server *s, int64_t grace_ms, void (*cb)(void *), void *arg);
void http_server_free(struct http_server *s);
size_t http_server_conn_count(const struct http_server *s);

/* Request helpers. */
const char *http_request_header(const struct http_request *r, const char *name);
/* The decoded value of a query parameter (new string), or NULL. */
char *http_request_query_param(const struct http_request *r, const char *key);
/* The values of the first max cookies called name (new strings), in the order sent; returns the
 * count. */
size_t http_request_cookies(const struct http_request *r, const char *name, char **out, size_t max);
/* The value of the first cookie called name (new string), or NULL. */
char *http_request_cookie(const struct http_request *r, const char *name);
/* A route parameter by name ("workspaceproxy"), or NULL. */
const char *http_exchange_param(const struct http_exchange *ex, const char *name);

/* Response helpers: set headers and body, then finish. Header names are sent as given. */
void http_exchange_header(struct http_exchange *ex, const char *name, const char *value);
/* Replaces the first header of that name (case-insensitively), or adds it. */
void http_exchange_header_set(struct http_exchange *ex, const char *name, const char *value);
void http_exchange_header_printf(struct http_exchange *ex, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool http_exchange_has_header(const struct http_exchange *ex, const char *name);
/* Drops the response headers set after the first n (an interim answer's, say). */
void http_exchange_headers_truncate(struct http_exchange *ex, size_t n);
/* Sends the response with the status and the body in ex->rbody. Idempotent. On the loop only. */
void http_exchange_finish(struct http_exchange *ex, int status);
/* Answers 101 Switching Protocols (with the headers set on ex, e.g. Upgrade) and hands the
 * connection to the caller: the exchange ends, the server forgets the connection, and from now
 * on the stream calls cbs with arg. Bytes the client sent after the request head are moved into
 * *early (to be treated as the first input). Returns NULL (and answers 400) when the request
 * did not ask for an upgrade or its connection is gone. */
struct net_stream *http_exchange_upgrade(struct http_exchange *ex, const struct net_stream_cbs *cbs,
                                         void *arg, struct buf *early);
/* Streaming (ex->streaming requests only). read_body starts the body flowing into cbs; pause and
 * resume hold it back (the connection stops reading: backpressure to the client). */
void http_exchange_read_body(struct http_exchange *ex, const struct http_body_cbs *cbs, void *arg);
void http_exchange_pause_body(struct http_exchange *ex);
void http_exchange_resume_body(struct http_exchange *ex);
/* on_drain runs when a write that answered 0 may go on; on_abort when the client went away
 * (the handler still ends the exchange, with http_exchange_end). */
void http_exchange_set_stream_cbs(struct http_exchange *ex,
                                  void (*on_drain)(struct http_exchange *ex, void *arg),
                                  void (*on_abort)(struct http_exchange *ex, void *arg), void *arg);
/* http_route_find matched ex: runs the server's on_routed hook. */
void http_exchange_routed(struct http_exchange *ex);
/* Holds the exchange's writes back so that what follows until net_stream_uncork(returned
 * stream) leaves together (a relayed head and body: one TLS record, one system call). Returns
 * the stream to uncork, which outlives the exchange for the rest of this callback, or NULL when
 * there is nothing to hold (HTTP/2 batches its frames by itself, or the client is gone). */
struct net_stream *http_exchange_cork(struct http_exchange *ex);
/* Sends the status and the headers set on ex. Without a Content-Length header the body is
 * chunked. Returns 0, or -1 when the client is gone. */
int http_exchange_begin(struct http_exchange *ex, int status);
/* Sends body bytes. Returns 1 (go on), 0 (wait for on_drain) or -1 (the client is gone). */
int http_exchange_write(struct http_exchange *ex, const void *data, size_t n);
/* Ends the response (and the exchange, which is freed). A request whose body was not read to
 * the end closes the connection after the response. */
void http_exchange_end(struct http_exchange *ex);

/* Ends a response that began but cannot be completed (the upstream broke off): the connection
 * closes without the end of the body, so the client cannot take the part for the whole. */
void http_exchange_abort(struct http_exchange *ex);
/* True when the client went away (its connection or HTTP/2 stream closed). */
bool http_exchange_client_gone(const struct http_exchange *ex);

/* Shorthands: body + Content-Type + finish. */
void http_reply_text(struct http_exchange *ex, int status, const char *ctype, const char *body);
/* {"message": msg, "detail": detail?} as application/json. */
void http_reply_error(struct http_exchange *ex, int status, const char *msg, const char *detail);

/* The reason phrase of a status ("Partial Content"), or NULL for a code with none. */
const char *http_status_text(int status);

#endif
