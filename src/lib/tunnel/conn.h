/* The agent tunnel on a connection (docs/TUNNEL.md §2): a tunnel session bound to a net_stream,
 * with output flow-controlled by the socket and PING keepalive; the agent's dialler with the
 * upgrade handshake; and pipes that join a tunnel stream to a TCP stream with backpressure both
 * ways (the agent's CONNECT target, a region's port-forward client). */
#ifndef TUNNEL_CONN_H
#define TUNNEL_CONN_H

#include "base/buf.h"
#include "net/stream.h"
#include "tunnel/tunnel.h"

#include <uv.h>

struct tunnel_conn;

struct tunnel_conn_cbs {
    /* Server side (the agent): a stream the region opened; see tunnel_cbs.on_request. */
    void (*on_request)(struct tunnel_conn *tc, struct tunnel_stream *s, const char *method,
                       const char *authority, const char *path, const struct tunnel_header *h,
                       size_t nh, void *arg);
    /* The peer's SETTINGS arrived: streams may be opened (client side). */
    void (*on_ready)(struct tunnel_conn *tc, void *arg);
    /* The tunnel is gone (why NULL after tunnel_conn_close). Its streams were closed first. */
    void (*on_close)(struct tunnel_conn *tc, const char *why, void *arg);
};

/* Takes over st (upgraded, or freshly dialled) and runs a tunnel session of the given role on
 * it; early holds bytes that arrived with the upgrade (may be NULL). */
struct tunnel_conn *tunnel_conn_new(uv_loop_t *loop, struct net_stream *st, enum tunnel_role role,
                                    const struct tunnel_opts *o, const struct buf *early,
                                    const struct tunnel_conn_cbs *cbs, void *arg);
struct tunnel *tunnel_conn_session(struct tunnel_conn *tc);
/* Sends GOAWAY and closes once the output is out; on_close follows. */
void tunnel_conn_close(struct tunnel_conn *tc);
/* Closes at once, dropping what was not sent; on_close follows. */
void tunnel_conn_abort(struct tunnel_conn *tc);

/* The dialler's side of §2: dials url ("https://host:port" or "http://..."), sends the upgrade
 * request for path with the extra header lines ("Name: value"), and on 101 runs the tunnel in
 * the given role (the agent: TUNNEL_SERVER; a proxy's relay link: TUNNEL_CLIENT). Failures
 * (transport, or a status other than 101 with the server's message) arrive as on_close(tc, why)
 * without on_ready. tls may be NULL for http URLs. */
struct tunnel_conn *tunnel_dial(uv_loop_t *loop, const char *url, const char *path,
                                enum tunnel_role role, const char *const *headers,
                                struct tls_ctx *tls, const struct tunnel_conn_cbs *cbs, void *arg);

/* Joins a tunnel stream and a TCP stream: bytes flow both ways, each direction paused while
 * the other end is full, half-closes carried across, and an abort on either side resets the
 * other. tls (taken over, or NULL): a client TLS session between them, the tunnel side
 * carrying its records and the TCP side its plaintext (an upgraded connection to an https
 * app). The pipe frees itself when both sides closed. */
void tunnel_pipe(struct tunnel_stream *ts, struct net_stream *ns, struct tls_session *tls);

/* The agent's CONNECT handler body: dials authority ("host:port") and answers the stream 200
 * once connected (then pipes), or 502 with a coder-error header. Data the region sent early is
 * held until the connection is up. */
void tunnel_connect_stream(uv_loop_t *loop, struct tunnel_stream *ts, const char *authority);

/* The primary's end of a relay-link stream (docs/TUNNEL.md §5): opens CONNECT authority on the
 * agent's session `to`, sends the agent's answer back on `in` (not yet answered), and joins the
 * two streams, each direction acknowledged only once the other stream took the bytes. Data the
 * proxy sent early goes on at once. Answers `in` 502 when `to` can open no stream. */
void tunnel_splice_connect(struct tunnel_stream *in, struct tunnel *to, const char *authority);

#endif
