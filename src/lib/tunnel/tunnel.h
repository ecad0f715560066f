/* The agent tunnel's HTTP/2 session (docs/TUNNEL.md §4-§6), independent of sockets and TLS:
 * plaintext bytes go in with tunnel_feed and come out with tunnel_take_output, so the same
 * code runs over a TLS connection, a relay link, or two buffers in a unit test.
 *
 * The client side (a region) opens streams; the server side (an agent, or the primary on a
 * relay link) accepts them. Flow control is the backpressure: bytes handed to on_data are
 * acknowledged to the peer only when the receiver calls tunnel_stream_consumed, after it wrote
 * them to their destination, so a reader that stops closes its own stream's window only. */
#ifndef TUNNEL_TUNNEL_H
#define TUNNEL_TUNNEL_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tunnel_role {
    TUNNEL_CLIENT, /* opens streams: the region on an agent tunnel, the proxy on a relay link */
    TUNNEL_SERVER, /* accepts streams: the agent, or the primary on a relay link */
};

/* Sizes from docs/TUNNEL.md; a deployment may change the windows. */
#define TUNNEL_STREAM_WINDOW (4u << 20)
#define TUNNEL_CONN_WINDOW (16u << 20)
#define TUNNEL_MAX_STREAMS 1024
#define TUNNEL_MAX_HEADER_LIST (16u << 10)
/* HPACK dynamic table, each way: room for the few header fields streams repeat (an app's
 * :authority), not the 4 KiB default that an idle tunnel would keep filled. */
#define TUNNEL_HEADER_TABLE 512
#define TUNNEL_KEEPALIVE_MS 15000
/* Bytes a stream buffers for sending before tunnel_stream_write asks its writer to wait. */
#define TUNNEL_SEND_HIGH_WATER (256u << 10)

/* Error codes of RST_STREAM / GOAWAY (RFC 9113 §7) that callers use. */
enum {
    TUNNEL_NO_ERROR = 0x0,
    TUNNEL_PROTOCOL_ERROR = 0x1,
    TUNNEL_INTERNAL_ERROR = 0x2,
    TUNNEL_REFUSED_STREAM = 0x7,
    TUNNEL_CANCEL = 0x8,
    TUNNEL_CONNECT_ERROR = 0xa,
};

struct tunnel;
struct tunnel_stream;

struct tunnel_header {
    const char *name; /* lower case */
    const char *value;
};

/* What a stream tells its owner. Every callback may be NULL. */
struct tunnel_stream_cbs {
    /* Client side: the response head. */
    void (*on_response)(struct tunnel_stream *s, int status, const struct tunnel_header *h,
                        size_t nh, void *arg);
    /* Received bytes; call tunnel_stream_consumed(s, n) once they are written onward. */
    void (*on_data)(struct tunnel_stream *s, const uint8_t *data, size_t n, void *arg);
    /* The peer finished sending (END_STREAM): a half-close. */
    void (*on_end)(struct tunnel_stream *s, void *arg);
    /* The send buffer drained below the high-water mark after a write said to wait. */
    void (*on_writable)(struct tunnel_stream *s, void *arg);
    /* The stream is gone (error_code 0 after a clean close both ways, else the RST code or
     * TUNNEL_INTERNAL_ERROR when the tunnel died). The stream must not be used afterwards. */
    void (*on_close)(struct tunnel_stream *s, uint32_t error_code, void *arg);
};

struct tunnel_cbs {
    /* Server side: a new stream's request. The owner answers with tunnel_stream_respond (now
     * or later) after setting the stream's callbacks with tunnel_stream_bind. */
    void (*on_request)(struct tunnel *t, struct tunnel_stream *s, const char *method,
                       const char *authority, const char *path, const struct tunnel_header *h,
                       size_t nh, void *arg);
    /* The session has output to send (tunnel_take_output); called at most once per change. */
    void (*on_output)(struct tunnel *t, void *arg);
    /* The peer sent GOAWAY: no new streams; existing ones may finish. */
    void (*on_goaway)(struct tunnel *t, uint32_t error_code, void *arg);
};

struct tunnel_opts {
    uint32_t stream_window; /* 0 = TUNNEL_STREAM_WINDOW */
    uint32_t conn_window;   /* 0 = TUNNEL_CONN_WINDOW */
    uint32_t max_streams;   /* server side: concurrent streams the client may open */
    uint32_t header_table;  /* HPACK dynamic table each way; 0 = TUNNEL_HEADER_TABLE */
    /* Server side: the client is anyone (HTTP/2 from browsers), so nghttp2's RST_STREAM flood
     * limit stays at its default; a tunnel peer is authenticated and cancels requests as its
     * users come and go, so it gets a far larger one. */
    bool untrusted_peer;
};

struct tunnel *tunnel_new(enum tunnel_role role, const struct tunnel_opts *o,
                          const struct tunnel_cbs *cbs, void *arg);
/* Frees the session. Streams still open get on_close(TUNNEL_INTERNAL_ERROR) first. */
void tunnel_free(struct tunnel *t);

/* Hands received bytes to the session. Returns 0, or -1 when the peer broke the protocol and
 * the connection must close (after sending what tunnel_take_output still has: a GOAWAY). */
int tunnel_feed(struct tunnel *t, const uint8_t *data, size_t n);
/* Moves up to max bytes of pending output into out. Returns the count (0 when idle). */
size_t tunnel_take_output(struct tunnel *t, struct buf *out, size_t max);
/* True once the peer's SETTINGS arrived. A client should open streams only then: before it,
 * the peer's stream limit is unknown and streams beyond it would be refused. */
bool tunnel_is_ready(const struct tunnel *t);
/* True while the session has output pending or could produce more without input. */
bool tunnel_want_write(struct tunnel *t);
/* True when neither side can use the session any more (GOAWAY both ways, or an error). */
bool tunnel_is_done(struct tunnel *t);
/* Sends GOAWAY(NO_ERROR): no new streams, existing ones finish. */
void tunnel_shutdown(struct tunnel *t);

/* Keepalive (docs/TUNNEL.md §4): call every few seconds with a monotonic clock. Sends a PING
 * after TUNNEL_KEEPALIVE_MS without input; returns -1 when a PING went unanswered for as long
 * (the caller closes the connection), else 0. */
int tunnel_tick(struct tunnel *t, int64_t now_ms);

/* Client side: opens a stream. method "CONNECT" sends only :authority (RFC 9113 §8.5);
 * others send :scheme "http", :authority and :path. Data may be written at once (optimistic
 * open). Returns NULL when the session cannot open streams (GOAWAY, error). */
struct tunnel_stream *tunnel_stream_open(struct tunnel *t, const char *method,
                                         const char *authority, const char *path,
                                         const struct tunnel_header *h, size_t nh,
                                         const struct tunnel_stream_cbs *cbs, void *arg);
/* Server side: sets the callbacks of a stream received in on_request. */
void tunnel_stream_bind(struct tunnel_stream *s, const struct tunnel_stream_cbs *cbs, void *arg);
/* Server side: sends the response head. end_stream closes the sending side at once (errors). */
int tunnel_stream_respond(struct tunnel_stream *s, int status, const struct tunnel_header *h,
                          size_t nh, bool end_stream);
/* Queues bytes to send (copied). Returns 1 when the writer may go on, 0 when the buffer is
 * above the high-water mark (wait for on_writable), -1 when the stream can no longer send. */
int tunnel_stream_write(struct tunnel_stream *s, const void *data, size_t n);
/* Ends the sending side after the queued bytes (END_STREAM). */
void tunnel_stream_end(struct tunnel_stream *s);
/* Aborts the stream with RST_STREAM(code); on_close follows. */
void tunnel_stream_reset(struct tunnel_stream *s, uint32_t code);
/* Acknowledges n bytes delivered by on_data: they opened the peer's window again. */
void tunnel_stream_consumed(struct tunnel_stream *s, size_t n);
/* Bytes queued to send and not yet taken by the session. */
size_t tunnel_stream_pending(const struct tunnel_stream *s);
int32_t tunnel_stream_id(const struct tunnel_stream *s);
struct tunnel *tunnel_stream_tunnel(const struct tunnel_stream *s);

#endif
