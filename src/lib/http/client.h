/* HTTP/1.1 client for the control plane, on libuv (net/stream: TCP, TLS) and llhttp:
 * asynchronous on a loop for the servers, blocking for the CLI (the same code on a private
 * loop). Redirects are never followed: a 3xx is returned to the caller as it is. Outbound TLS
 * verifies against the system trust store, which SSL_CERT_FILE / SSL_CERT_DIR can replace, as
 * OpenSSL's and Go's clients allow. Environment proxies (http_proxy...) are not used. */
#ifndef HTTP_CLIENT_H
#define HTTP_CLIENT_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct http_client_req {
    const char *method; /* "GET", "POST", ... */
    const char *url;
    const char *const *headers; /* "Name: value" lines, NULL-terminated, or NULL */
    const char *body;           /* NULL for none */
    size_t body_len;
    long timeout_ms;         /* whole request; 0 = 30 s */
    bool fresh_connection;   /* never reuse a pooled connection (health checks) */
    const char *client_cert; /* PEM file presented to the server, or NULL */
    const char *client_key;
    size_t max_body; /* response body limit; 0 = 4 MiB. Larger → error */
};

struct http_client_header {
    char *name;
    char *value;
};

struct http_client_resp {
    long status; /* 0 when the request failed before a response */
    struct buf body;
    struct http_client_header *headers;
    size_t nheaders;
    char *error; /* transport error, worded like Go's, e.g. `Get "https://x/healthz-report": dial
                    tcp 10.0.0.1:443: connect: connection refused`; NULL on success */
};

void http_client_resp_init(struct http_client_resp *r);
void http_client_resp_fini(struct http_client_resp *r);
/* Case-insensitive header lookup; NULL if absent. */
const char *http_client_resp_header(const struct http_client_resp *r, const char *name);

/* Blocking request. Returns 0 when a response arrived (any status), -1 with resp->error set
 * otherwise. */
int http_client_do(const struct http_client_req *req, struct http_client_resp *resp);

/* Asynchronous client bound to one loop. */
struct http_client;
typedef void (*http_client_cb)(struct http_client_resp *resp, void *arg);

struct http_client *http_client_new(uv_loop_t *loop);
/* Starts a request; copies everything it needs from req. cb runs on the loop exactly once,
 * with the response (status 0 and error set on failure); resp is freed after cb returns.
 * Returns 0, or -1 if the request could not be started (cb is then not called). */
int http_client_start(struct http_client *c, const struct http_client_req *req, http_client_cb cb,
                      void *arg);
/* Cancels outstanding requests (their callbacks run with error "canceled"), then closes the
 * client's handles; the client is freed once libuv has closed them. */
void http_client_close(struct http_client *c);

#endif
