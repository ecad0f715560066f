/* The agent tunnel's HTTP/2 session on nghttp2, over memory: see tunnel.h and docs/TUNNEL.md.
 *
 * Reentrancy: nghttp2 must not be asked to send or receive from inside its own callbacks, and
 * user callbacks run inside them. So streams are freed only from nghttp2's close callback,
 * on_writable is fired after a send pass, and on_output only when the outermost public call
 * returns (depth counts the nesting). */
#include "tunnel/tunnel.h"
#include "tunnel/h2mem.h"
#include "base/bufq.h"
#include "base/log.h"
#include "base/timeutil.h"
#include "base/util.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADERS 100

struct tunnel_stream {
    struct tunnel *t;
    int32_t id;
    const struct tunnel_stream_cbs *cbs;
    void *arg;
    struct bufq out;    /* bytes to send */
    size_t unconsumed;  /* received bytes not yet acknowledged with consumed() */
    bool deferred;      /* the data provider is waiting for bytes */
    bool end_requested; /* tunnel_stream_end was called */
    bool blocked;       /* a write returned 0: fire on_writable below the low mark */
    bool want_writable; /* fire on_writable after the current send pass */
    bool providing;     /* a data provider is attached (request or response sent) */
    bool closed;        /* nghttp2 closed it; the object goes with the close callback */
    /* Request or response head being received (freed once delivered). */
    char *method, *authority, *path;
    int status;
    struct tunnel_header *hdrs;
    size_t nhdrs;
    size_t hdr_bytes;
    struct tunnel_stream *prev, *next;
};

struct tunnel {
    nghttp2_session *s;
    enum tunnel_role role;
    const struct tunnel_cbs *cbs;
    void *arg;
    struct tunnel_stream *streams; /* every live stream */
    int depth;                     /* nesting of public calls */
    bool failed;
    bool ready;         /* the peer's first SETTINGS arrived */
    int64_t last_input; /* monotonic ms */
    int64_t ping_sent;  /* 0 when no PING is outstanding */
    struct buf *out;    /* tunnel_take_output's destination, for DATA frames (send_data) */
    size_t out_limit;   /* ... and the length it may grow to in this call */
};

static const struct tunnel_stream_cbs no_cbs;

/* ---- streams ---- */

static struct tunnel_stream *
stream_new(struct tunnel *t, int32_t id)
{
    struct tunnel_stream *st = xcalloc(1, sizeof(*st));
    st->t = t;
    st->id = id;
    st->cbs = &no_cbs;
    bufq_init(&st->out);
    st->next = t->streams;
    if (t->streams)
        t->streams->prev = st;
    t->streams = st;
    return st;
}

static void
head_clear(struct tunnel_stream *st)
{
    free(st->method);
    free(st->authority);
    free(st->path);
    st->method = st->authority = st->path = NULL;
    for (size_t i = 0; i < st->nhdrs; i++) {
        free((char *)st->hdrs[i].name);
        free((char *)st->hdrs[i].value);
    }
    free(st->hdrs);
    st->hdrs = NULL;
    st->nhdrs = 0;
    st->hdr_bytes = 0;
}

static void
stream_free(struct tunnel_stream *st)
{
    struct tunnel *t = st->t;
    if (st->prev)
        st->prev->next = st->next;
    else
        t->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    head_clear(st);
    bufq_fini(&st->out);
    free(st);
}

static size_t
stream_pending(const struct tunnel_stream *st)
{
    return st->out.len;
}

/* ---- nghttp2 callbacks ---- */

/* How much of a stream's buffer the next DATA frame carries. The bytes are not copied here:
 * NGHTTP2_DATA_FLAG_NO_COPY has nghttp2 call send_data, which writes the frame straight from the
 * stream's buffer to the output (one copy fewer for every byte a tunnel carries). */
static ssize_t
read_data(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
          nghttp2_data_source *source, void *user_data)
{
    (void)session;
    (void)id;
    (void)buf;
    (void)user_data;
    struct tunnel_stream *st = source->ptr;
    size_t avail = stream_pending(st);
    if (avail == 0) {
        if (st->end_requested) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == avail && st->end_requested)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Writes one DATA frame (nghttp2's 9-byte header, then length bytes of the stream's buffer; we
 * never pad) to the output, and takes those bytes off the stream. */
static int
send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
          nghttp2_data_source *source, void *user_data)
{
    (void)session;
    struct tunnel *t = user_data;
    struct tunnel_stream *st = source->ptr;
    if (t->out == NULL || frame->data.padlen > 0 || length > stream_pending(st))
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* cannot happen: only tunnel_take_output sends */
    if (t->out->len >= t->out_limit)
        return NGHTTP2_ERR_WOULDBLOCK; /* this call's share is out: nghttp2 keeps the frame */
    buf_append(t->out, framehd, 9);
    bufq_take(&st->out, t->out, length);
    if (st->blocked && stream_pending(st) < TUNNEL_SEND_HIGH_WATER / 2) {
        st->blocked = false;
        st->want_writable = true;
    }
    return 0;
}

static int
on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct tunnel *t = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || t->role != TUNNEL_SERVER ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct tunnel_stream *st = stream_new(t, frame->hd.stream_id);
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
    return 0;
}

static int
on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
          const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct tunnel_stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!st)
        return 0;
    /* RFC 9113 §6.5.2's accounting: name + value + 32 per field. */
    st->hdr_bytes += namelen + valuelen + 32;
    if (st->hdr_bytes > TUNNEL_MAX_HEADER_LIST || st->nhdrs >= MAX_HEADERS)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    char *v = xstrndup((const char *)value, valuelen);
    if (namelen > 0 && name[0] == ':') {
        char **slot = NULL;
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            slot = &st->method;
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            slot = &st->authority;
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            slot = &st->path;
        else if (namelen == 7 && memcmp(name, ":status", 7) == 0)
            st->status = atoi(v);
        if (slot) {
            free(*slot);
            *slot = v;
            return 0;
        }
        free(v);
        return 0;
    }
    st->hdrs = xrealloc(st->hdrs, (st->nhdrs + 1) * sizeof(*st->hdrs));
    st->hdrs[st->nhdrs++] =
        (struct tunnel_header){.name = xstrndup((const char *)name, namelen), .value = v};
    return 0;
}

static int
on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct tunnel *t = user_data;
    struct tunnel_stream *st =
        frame->hd.stream_id ? nghttp2_session_get_stream_user_data(session, frame->hd.stream_id)
                            : NULL;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!st)
            break;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST && t->role == TUNNEL_SERVER) {
            if (t->cbs->on_request)
                t->cbs->on_request(t, st, st->method ? st->method : "",
                                   st->authority ? st->authority : "", st->path ? st->path : "",
                                   st->hdrs, st->nhdrs, t->arg);
            else
                nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id,
                                          NGHTTP2_REFUSED_STREAM);
            head_clear(st);
        } else if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
            if (st->status >= 200 && st->cbs->on_response)
                st->cbs->on_response(st, st->status, st->hdrs, st->nhdrs, st->arg);
            head_clear(st);
        } else {
            head_clear(st); /* trailers: nothing uses them */
        }
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->cbs->on_end)
            st->cbs->on_end(st, st->arg);
        break;
    case NGHTTP2_DATA:
        if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->cbs->on_end)
            st->cbs->on_end(st, st->arg);
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            t->ready = true;
        break;
    case NGHTTP2_GOAWAY:
        if (t->cbs->on_goaway)
            t->cbs->on_goaway(t, frame->goaway.error_code, t->arg);
        break;
    default:
        break;
    }
    return 0;
}

/* A GOAWAY with an error that nghttp2 sends by itself (the peer broke the protocol) says why the
 * tunnel ends: logged, as nothing else would tell. */
static int
on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    (void)user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR)
        log_warn("tunnel: sending GOAWAY %s (last stream %d)%s%.*s",
                 nghttp2_http2_strerror(frame->goaway.error_code), frame->goaway.last_stream_id,
                 frame->goaway.opaque_data_len ? ": " : "", (int)frame->goaway.opaque_data_len,
                 (const char *)frame->goaway.opaque_data);
    return 0;
}

static int
on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
              void *user_data)
{
    (void)flags;
    (void)user_data;
    struct tunnel_stream *st = nghttp2_session_get_stream_user_data(session, id);
    if (!st) {
        /* Not ours to deliver: give the window back at once. */
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    st->unconsumed += len;
    if (st->cbs->on_data)
        st->cbs->on_data(st, data, len, st->arg);
    else
        tunnel_stream_consumed(st, len);
    return 0;
}

static int
on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *user_data)
{
    (void)user_data;
    struct tunnel_stream *st = nghttp2_session_get_stream_user_data(session, id);
    if (!st)
        return 0;
    st->closed = true;
    /* Bytes the owner will never acknowledge still count against the connection window. */
    if (st->unconsumed)
        nghttp2_session_consume_connection(session, st->unconsumed);
    st->unconsumed = 0;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    if (st->cbs->on_close)
        st->cbs->on_close(st, error_code, st->arg);
    stream_free(st);
    return 0;
}

/* ---- the session ---- */

static void
enter(struct tunnel *t)
{
    t->depth++;
}

/* Leaves a public call; the outermost one tells the owner about output. */
static void
leave(struct tunnel *t)
{
    if (--t->depth == 0 && t->cbs->on_output && nghttp2_session_want_write(t->s))
        t->cbs->on_output(t, t->arg);
}

struct tunnel *
tunnel_new(enum tunnel_role role, const struct tunnel_opts *o, const struct tunnel_cbs *cbs,
           void *arg)
{
    struct tunnel *t = xcalloc(1, sizeof(*t));
    t->role = role;
    t->cbs = cbs;
    t->arg = arg;
    t->last_input = time_mono_ms();
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, TUNNEL_MAX_HEADER_LIST);
    uint32_t ht = o && o->header_table ? o->header_table : TUNNEL_HEADER_TABLE;
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, ht);
    if (!(o && o->untrusted_peer))
        nghttp2_option_set_stream_reset_rate_limit(opt, 100000, 10000);
    int rc = role == TUNNEL_CLIENT ? nghttp2_session_client_new3(&t->s, cb, t, opt, h2mem())
                                   : nghttp2_session_server_new3(&t->s, cb, t, opt, h2mem());
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        abort(); /* only NGHTTP2_ERR_NOMEM; xmalloc's policy */
    uint32_t sw = o && o->stream_window ? o->stream_window : TUNNEL_STREAM_WINDOW;
    uint32_t cw = o && o->conn_window ? o->conn_window : TUNNEL_CONN_WINDOW;
    uint32_t ms = o && o->max_streams ? o->max_streams : TUNNEL_MAX_STREAMS;
    nghttp2_settings_entry iv[5];
    size_t n = 0;
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, sw};
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, ht};
    iv[n++] =
        (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, TUNNEL_MAX_HEADER_LIST};
    if (role == TUNNEL_CLIENT)
        iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    else
        iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, ms};
    nghttp2_submit_settings(t->s, NGHTTP2_FLAG_NONE, iv, n);
    nghttp2_session_set_local_window_size(t->s, NGHTTP2_FLAG_NONE, 0, (int32_t)cw);
    return t;
}

void
tunnel_free(struct tunnel *t)
{
    if (!t)
        return;
    while (t->streams) {
        struct tunnel_stream *st = t->streams;
        nghttp2_session_set_stream_user_data(t->s, st->id, NULL);
        st->closed = true;
        if (st->cbs->on_close)
            st->cbs->on_close(st, TUNNEL_INTERNAL_ERROR, st->arg);
        stream_free(st);
    }
    nghttp2_session_del(t->s);
    free(t);
}

int
tunnel_feed(struct tunnel *t, const uint8_t *data, size_t n)
{
    if (t->failed)
        return -1;
    enter(t);
    t->last_input = time_mono_ms();
    t->ping_sent = 0; /* any input proves the peer alive */
    ssize_t rc = nghttp2_session_mem_recv(t->s, data, n);
    if (rc < 0) {
        t->failed = true;
        nghttp2_session_terminate_session(t->s, NGHTTP2_PROTOCOL_ERROR);
    }
    leave(t);
    return rc < 0 ? -1 : 0;
}

size_t
tunnel_take_output(struct tunnel *t, struct buf *out, size_t max)
{
    enter(t);
    size_t start = out->len;
    t->out = out; /* DATA frames are written here by send_data */
    t->out_limit = start + max;
    while (out->len - start < max) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(t->s, &data);
        if (n <= 0) {
            if (n < 0)
                t->failed = true;
            break;
        }
        buf_append(out, data, (size_t)n);
    }
    t->out = NULL;
    size_t taken = out->len - start;
    /* Writers that waited may go on (outside nghttp2's callbacks). */
    for (struct tunnel_stream *st = t->streams; st; st = st->next) {
        if (st->want_writable) {
            st->want_writable = false;
            if (st->cbs->on_writable)
                st->cbs->on_writable(st, st->arg);
        }
    }
    t->depth--; /* the owner is taking output now: no on_output from here */
    return taken;
}

bool
tunnel_is_ready(const struct tunnel *t)
{
    return t->ready && !t->failed;
}

bool
tunnel_want_write(struct tunnel *t)
{
    return nghttp2_session_want_write(t->s) != 0;
}

bool
tunnel_is_done(struct tunnel *t)
{
    return t->failed || (!nghttp2_session_want_read(t->s) && !nghttp2_session_want_write(t->s));
}

void
tunnel_shutdown(struct tunnel *t)
{
    enter(t);
    /* Graceful: streams up to the last one seen finish; the session ends after them. */
    nghttp2_submit_goaway(t->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(t->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
    leave(t);
}

int
tunnel_tick(struct tunnel *t, int64_t now_ms)
{
    if (t->ping_sent)
        return now_ms - t->ping_sent > TUNNEL_KEEPALIVE_MS ? -1 : 0;
    if (now_ms - t->last_input >= TUNNEL_KEEPALIVE_MS) {
        enter(t);
        nghttp2_submit_ping(t->s, NGHTTP2_FLAG_NONE, NULL);
        t->ping_sent = now_ms;
        leave(t);
    }
    return 0;
}

/* ---- stream operations ---- */

static nghttp2_nv
nv(const char *name, const char *value)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                        NGHTTP2_NV_FLAG_NONE};
}

struct tunnel_stream *
tunnel_stream_open(struct tunnel *t, const char *method, const char *authority, const char *path,
                   const struct tunnel_header *h, size_t nh, const struct tunnel_stream_cbs *cbs,
                   void *arg)
{
    if (t->role != TUNNEL_CLIENT || t->failed || nh > MAX_HEADERS)
        return NULL;
    nghttp2_nv *nva = xcalloc(nh + 4, sizeof(*nva));
    size_t n = 0;
    nva[n++] = nv(":method", method);
    if (strcmp(method, "CONNECT") != 0) {
        nva[n++] = nv(":scheme", "http");
        nva[n++] = nv(":path", path && *path ? path : "/");
    }
    nva[n++] = nv(":authority", authority);
    for (size_t i = 0; i < nh; i++)
        nva[n++] = nv(h[i].name, h[i].value);
    enter(t);
    struct tunnel_stream *st = stream_new(t, 0);
    st->cbs = cbs ? cbs : &no_cbs;
    st->arg = arg;
    st->providing = true;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_data};
    int32_t id = nghttp2_submit_request(t->s, NULL, nva, n, &prd, st);
    free(nva);
    if (id < 0) {
        stream_free(st);
        st = NULL;
    } else {
        st->id = id;
    }
    leave(t);
    return st;
}

void
tunnel_stream_bind(struct tunnel_stream *s, const struct tunnel_stream_cbs *cbs, void *arg)
{
    s->cbs = cbs ? cbs : &no_cbs;
    s->arg = arg;
}

int
tunnel_stream_respond(struct tunnel_stream *s, int status, const struct tunnel_header *h, size_t nh,
                      bool end_stream)
{
    struct tunnel *t = s->t;
    if (s->closed || s->providing || nh > MAX_HEADERS || status < 100 || status > 999)
        return -1;
    char code[4];
    snprintf(code, sizeof(code), "%d", status);
    nghttp2_nv *nva = xcalloc(nh + 1, sizeof(*nva));
    size_t n = 0;
    nva[n++] = nv(":status", code);
    for (size_t i = 0; i < nh; i++)
        nva[n++] = nv(h[i].name, h[i].value);
    enter(t);
    s->providing = !end_stream;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_data};
    int rc = nghttp2_submit_response(t->s, s->id, nva, n, end_stream ? NULL : &prd);
    free(nva);
    leave(t);
    return rc == 0 ? 0 : -1;
}

static void
resume(struct tunnel_stream *s)
{
    if (s->deferred && s->providing) {
        s->deferred = false;
        nghttp2_session_resume_data(s->t->s, s->id);
    }
}

int
tunnel_stream_write(struct tunnel_stream *s, const void *data, size_t n)
{
    if (s->closed || s->end_requested || s->t->failed)
        return -1;
    enter(s->t);
    bufq_append(&s->out, data, n);
    resume(s);
    int rc = 1;
    if (stream_pending(s) >= TUNNEL_SEND_HIGH_WATER) {
        s->blocked = true;
        rc = 0;
    }
    leave(s->t);
    return rc;
}

void
tunnel_stream_end(struct tunnel_stream *s)
{
    if (s->closed || s->end_requested)
        return;
    enter(s->t);
    s->end_requested = true;
    resume(s);
    leave(s->t);
}

void
tunnel_stream_reset(struct tunnel_stream *s, uint32_t code)
{
    if (s->closed)
        return;
    enter(s->t);
    nghttp2_submit_rst_stream(s->t->s, NGHTTP2_FLAG_NONE, s->id, code);
    leave(s->t);
}

void
tunnel_stream_consumed(struct tunnel_stream *s, size_t n)
{
    if (s->closed || n == 0)
        return;
    if (n > s->unconsumed)
        n = s->unconsumed;
    s->unconsumed -= n;
    enter(s->t);
    nghttp2_session_consume(s->t->s, s->id, n);
    leave(s->t);
}

size_t
tunnel_stream_pending(const struct tunnel_stream *s)
{
    return stream_pending(s);
}

int32_t
tunnel_stream_id(const struct tunnel_stream *s)
{
    return s->id;
}

struct tunnel *
tunnel_stream_tunnel(const struct tunnel_stream *s)
{
    return s->t;
}
