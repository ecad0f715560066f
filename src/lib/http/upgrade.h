/* The client side of an HTTP/1.1 connection upgrade: the agent's tunnel (Upgrade: coder-tunnel)
 * and `coder port-forward` (Upgrade: coder-tcp) dial with it. */
#ifndef HTTP_UPGRADE_H
#define HTTP_UPGRADE_H

#include "base/buf.h"
#include "net/stream.h"

#include <uv.h>

struct http_upgrade;

/* Called once: on 101 with the stream (the caller binds its callbacks) and the bytes that came
 * after the head; else st NULL, status the server's answer (0 for transport errors) and err a
 * one-line reason (the server's JSON message and detail, or the transport error). */
typedef void (*http_upgrade_cb)(struct net_stream *st, const struct buf *early, int status,
                                const char *err, void *arg);

/* Dials base_url ("http(s)://host:port[/prefix]") and sends GET prefix+path with Connection:
 * Upgrade, Upgrade: proto and the extra "Name: value" header lines. Returns NULL with *err for
 * a bad URL (cb is not called). */
struct http_upgrade *http_upgrade_dial(uv_loop_t *loop, const char *base_url, const char *path,
                                       const char *proto, const char *const *headers,
                                       struct tls_ctx *tls, int64_t timeout_ms, http_upgrade_cb cb,
                                       void *arg, char **err);
/* Gives up: cb will not be called. */
void http_upgrade_cancel(struct http_upgrade *u);

#endif
