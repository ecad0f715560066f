/* A byte stream on libuv: TCP, optionally TLS (net/tls), accepted or dialled, with
 * backpressure both ways. It is what the agent tunnel, app upstreams and (in time) the HTTP
 * server and client run on.
 *
 * Writing: net_stream_write queues plaintext; it answers 0 once more than NET_STREAM_HIGH_WATER
 * bytes wait for the socket, and on_drain follows when they fell below half of it. Reading:
 * net_stream_pause stops delivering (and, through TCP, the peer); net_stream_resume restarts.
 * Callbacks never run from inside the call that caused them, except on_read/on_eof during a
 * read. A stream closes by itself once both directions ended (the peer's EOF and our shutdown
 * done), and on any error. After net_stream_close only on_close follows, from a later loop
 * iteration; the stream is freed when it returns. */
#ifndef NET_STREAM_H
#define NET_STREAM_H

#include "net/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define NET_STREAM_HIGH_WATER (256u << 10)

struct net_stream;

struct net_stream_cbs {
    /* Dialled streams: TCP (and TLS) are up (err NULL), or failed (err says why; on_close
     * follows). Accepted TLS streams: the handshake finished. Not called for accepted TCP. */
    void (*on_connect)(struct net_stream *s, const char *err, void *arg);
    void (*on_read)(struct net_stream *s, const uint8_t *data, size_t n, void *arg);
    /* The peer closed its sending side (TCP FIN or TLS close_notify). */
    void (*on_eof)(struct net_stream *s, void *arg);
    void (*on_drain)(struct net_stream *s, void *arg);
    /* why is NULL after net_stream_close, else the error that ended the stream. */
    void (*on_close)(struct net_stream *s, const char *why, void *arg);
};

/* Accepts a pending connection from listener. tls may be NULL (plain TCP). Returns NULL if the
 * accept failed (nothing to free). */
struct net_stream *net_stream_accept(uv_stream_t *listener, struct tls_ctx *tls,
                                     const struct net_stream_cbs *cbs, void *arg);
/* Dials host:port (name or address; every resolved address is tried in turn). With tls (a
 * client context), TLS runs on top with server_name for SNI and verification (NULL = host).
 * timeout_ms bounds resolution + connect + handshake (0 = 10 s). */
struct net_stream *net_stream_dial(uv_loop_t *loop, const char *host, int port, struct tls_ctx *tls,
                                   const char *server_name, int64_t timeout_ms,
                                   const struct net_stream_cbs *cbs, void *arg);

/* Queues bytes (copied). Returns 1 (go on), 0 (above the high-water mark: wait for on_drain)
 * or -1 (the stream cannot send any more). */
int net_stream_write(struct net_stream *s, const void *data, size_t n);
/* The same for several pieces at once: one system call (one TLS flush) for all of them. */
int net_stream_writev(struct net_stream *s, const uv_buf_t *bufs, size_t nbufs);
/* Holds writes back until the matching net_stream_uncork (calls nest), so the pieces of one
 * answer written in turn (a response head, then its body) leave in one TLS record and one
 * system call. A shutdown sends what was held at once. */
void net_stream_cork(struct net_stream *s);
void net_stream_uncork(struct net_stream *s);
/* Closes the sending side once the queued bytes are out (TLS close_notify, TCP FIN). */
void net_stream_shutdown(struct net_stream *s);
void net_stream_pause(struct net_stream *s);
void net_stream_resume(struct net_stream *s);
/* Aborts: queued bytes may be lost. */
void net_stream_close(struct net_stream *s);
/* Re-targets the callbacks (e.g. an HTTP upgrade hands the stream to the tunnel). */
void net_stream_bind(struct net_stream *s, const struct net_stream_cbs *cbs, void *arg);
/* fn(arg) runs once the stream is gone, after its owner's on_close, whoever owns it by then (one
 * observer: metrics of an upgraded connection). */
void net_stream_on_finalize(struct net_stream *s, void (*fn)(void *arg), void *arg);

/* Joins two streams: bytes flow both ways, each side paused while the other is full, a
 * half-close carried across, a close closing the other. Frees itself when both are closed,
 * after calling on_done (may be NULL). */
void net_stream_splice(struct net_stream *a, struct net_stream *b, void (*on_done)(void *arg),
                       void *arg);

/* Bytes queued and not yet written to the socket. */
size_t net_stream_queued(const struct net_stream *s);
/* The negotiated ALPN protocol, or "". */
const char *net_stream_alpn(const struct net_stream *s);
/* The peer's address as text ("127.0.0.1"), or "". */
const char *net_stream_peer_ip(const struct net_stream *s);

#endif
