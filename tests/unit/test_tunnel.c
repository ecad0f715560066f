/* The agent tunnel's HTTP/2 session, two ends wired through memory: CONNECT streams with
 * optimistic data, per-stream backpressure, limits, keepalive, resets and GOAWAY. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "tunnel/h2mem.h"
#include "tunnel/tunnel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one end of a stream saw. */
struct seen {
    int status;
    struct buf data;
    bool ended;
    bool closed;
    uint32_t close_code;
    bool consume; /* acknowledge data as it arrives */
    int writable;
    char authority[300];
    char method[16];
    char path[64];
    char hdr[64];
    struct tunnel_stream *st;
};

struct end {
    struct tunnel *t;
    struct seen srv[8]; /* server side: streams in order of arrival */
    int nsrv;
    bool srv_consume;
    bool respond;
    int goaways;
    int outputs;
};

static void
s_response(struct tunnel_stream *s, int status, const struct tunnel_header *h, size_t nh, void *arg)
{
    (void)s;
    struct seen *x = arg;
    x->status = status;
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(h[i].name, "coder-error") == 0)
            snprintf(x->hdr, sizeof(x->hdr), "%s", h[i].value);
    }
}

static void
s_data(struct tunnel_stream *s, const uint8_t *d, size_t n, void *arg)
{
    struct seen *x = arg;
    buf_append(&x->data, d, n);
    if (x->consume)
        tunnel_stream_consumed(s, n);
}

static void
s_end(struct tunnel_stream *s, void *arg)
{
    (void)s;
    ((struct seen *)arg)->ended = true;
}

static void
s_writable(struct tunnel_stream *s, void *arg)
{
    (void)s;
    ((struct seen *)arg)->writable++;
}

static void
s_close(struct tunnel_stream *s, uint32_t code, void *arg)
{
    (void)s;
    struct seen *x = arg;
    x->closed = true;
    x->close_code = code;
    x->st = NULL;
}

static const struct tunnel_stream_cbs stream_cbs = {s_response, s_data, s_end, s_writable, s_close};

static void
on_request(struct tunnel *t, struct tunnel_stream *s, const char *method, const char *authority,
           const char *path, const struct tunnel_header *h, size_t nh, void *arg)
{
    (void)t;
    struct end *e = arg;
    assert_true(e->nsrv < 8);
    struct seen *x = &e->srv[e->nsrv++];
    buf_init(&x->data);
    x->consume = e->srv_consume;
    x->st = s;
    snprintf(x->method, sizeof(x->method), "%s", method);
    snprintf(x->authority, sizeof(x->authority), "%s", authority);
    snprintf(x->path, sizeof(x->path), "%s", path);
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(h[i].name, "coder-agent-id") == 0)
            snprintf(x->hdr, sizeof(x->hdr), "%s", h[i].value);
    }
    tunnel_stream_bind(s, &stream_cbs, x);
    if (e->respond)
        assert_int_equal(tunnel_stream_respond(s, 200, NULL, 0, false), 0);
}

static void
on_output(struct tunnel *t, void *arg)
{
    (void)t;
    ((struct end *)arg)->outputs++;
}

static void
on_goaway(struct tunnel *t, uint32_t code, void *arg)
{
    (void)t;
    (void)code;
    ((struct end *)arg)->goaways++;
}

static const struct tunnel_cbs end_cbs = {on_request, on_output, on_goaway};

static struct end client, server;
/* Client-side records live here, not on a test's stack: teardown closes their streams. */
static struct seen pool[8];
static int npool;

/* Moves bytes both ways until neither side has anything to say. Returns -1 if a side broke. */
static int
pump(void)
{
    struct buf b;
    buf_init(&b);
    int rc = 0;
    for (int round = 0; round < 100000; round++) {
        size_t moved = 0;
        buf_reset(&b);
        moved += tunnel_take_output(client.t, &b, 1 << 20);
        if (b.len && tunnel_feed(server.t, (uint8_t *)b.data, b.len) < 0)
            rc = -1;
        buf_reset(&b);
        moved += tunnel_take_output(server.t, &b, 1 << 20);
        if (b.len && tunnel_feed(client.t, (uint8_t *)b.data, b.len) < 0)
            rc = -1;
        if (moved == 0 || rc < 0)
            break;
    }
    buf_fini(&b);
    return rc;
}

static int
setup(void **state)
{
    (void)state;
    memset(&client, 0, sizeof(client));
    memset(&server, 0, sizeof(server));
    server.respond = true;
    server.srv_consume = true;
    client.t = tunnel_new(TUNNEL_CLIENT, NULL, &end_cbs, &client);
    server.t = tunnel_new(TUNNEL_SERVER, NULL, &end_cbs, &server);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    tunnel_free(client.t);
    tunnel_free(server.t);
    for (int i = 0; i < server.nsrv; i++)
        buf_fini(&server.srv[i].data);
    for (int i = 0; i < npool; i++)
        buf_fini(&pool[i].data);
    npool = 0;
    return 0;
}

static struct seen *
fresh(void)
{
    assert_true(npool < 8);
    struct seen *x = &pool[npool++];
    memset(x, 0, sizeof(*x));
    buf_init(&x->data);
    x->consume = true;
    return x;
}

static void
test_connect_echo(void **state)
{
    (void)state;
    struct seen *c = fresh();
    const struct tunnel_header h[] = {{"coder-agent-id", "abc"}};
    c->st = tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:8080", NULL, h, 1, &stream_cbs, c);
    assert_non_null(c->st);
    /* Optimistic: data before the response. */
    assert_int_equal(tunnel_stream_write(c->st, "hello", 5), 1);
    assert_true(client.outputs > 0);
    assert_int_equal(pump(), 0);
    assert_int_equal(server.nsrv, 1);
    struct seen *s = &server.srv[0];
    assert_string_equal(s->method, "CONNECT");
    assert_string_equal(s->authority, "127.0.0.1:8080");
    assert_string_equal(s->path, "");
    assert_string_equal(s->hdr, "abc");
    assert_int_equal(c->status, 200);
    assert_int_equal(s->data.len, 5);
    assert_memory_equal(s->data.data, "hello", 5);
    /* Echo, then half-closes in both directions. */
    assert_int_equal(tunnel_stream_write(s->st, "world", 5), 1);
    tunnel_stream_end(s->st);
    assert_int_equal(pump(), 0);
    assert_true(c->ended);
    assert_false(c->closed);
    assert_memory_equal(c->data.data, "world", 5);
    tunnel_stream_end(c->st);
    assert_int_equal(pump(), 0);
    assert_true(s->ended);
    assert_true(c->closed && s->closed);
    assert_int_equal(c->close_code, 0);
}

static void
test_request_with_path(void **state)
{
    (void)state;
    struct seen *c = fresh();
    c->st = tunnel_stream_open(client.t, "POST", "agent", "/pty?reconnect=1&width=80", NULL, 0,
                               &stream_cbs, c);
    assert_non_null(c->st);
    tunnel_stream_end(c->st);
    assert_int_equal(pump(), 0);
    assert_int_equal(server.nsrv, 1);
    assert_string_equal(server.srv[0].method, "POST");
    assert_string_equal(server.srv[0].path, "/pty?reconnect=1&width=80");
    assert_true(server.srv[0].ended);
}

static void
test_error_response(void **state)
{
    (void)state;
    server.respond = false;
    struct seen *c = fresh();
    c->st = tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:1", NULL, 0, 0, &stream_cbs, c);
    assert_int_equal(pump(), 0);
    const struct tunnel_header h[] = {{"coder-error", "connection refused"}};
    assert_int_equal(tunnel_stream_respond(server.srv[0].st, 502, h, 1, true), 0);
    assert_int_equal(pump(), 0);
    assert_int_equal(c->status, 502);
    assert_string_equal(c->hdr, "connection refused");
    assert_true(c->ended);
    /* The client still has its sending side; it resets to finish. */
    tunnel_stream_reset(c->st, TUNNEL_CANCEL);
    assert_int_equal(pump(), 0);
    assert_true(c->closed);
}

/* A receiver that does not consume stops its own stream at the window; another stream on the
 * same tunnel keeps flowing; consuming lets the rest through, byte-exact. */
static void
test_backpressure_per_stream(void **state)
{
    (void)state;
    server.srv_consume = false;
    const size_t total = 10u << 20;
    uint8_t *payload = xmalloc(total);
    for (size_t i = 0; i < total; i++)
        payload[i] = (uint8_t)(i * 2654435761u >> 13);
    struct seen *slow = fresh(), *fast = fresh();
    slow->st =
        tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:1000", NULL, NULL, 0, &stream_cbs, slow);
    assert_int_equal(pump(), 0);
    server.srv_consume = true;
    fast->st =
        tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:2000", NULL, NULL, 0, &stream_cbs, fast);
    assert_int_equal(pump(), 0);
    assert_int_equal(server.nsrv, 2);

    size_t off = 0;
    int rc;
    while (off < total && (rc = tunnel_stream_write(slow->st, payload + off, 64 << 10)) >= 0) {
        off += 64 << 10;
        assert_int_equal(pump(), 0);
        if (rc == 0)
            break;
    }
    assert_int_equal(pump(), 0);
    /* Blocked: the server holds at most one stream window, the rest waits at the client. */
    assert_true(off < total);
    assert_int_equal(server.srv[0].data.len, TUNNEL_STREAM_WINDOW);
    assert_true(tunnel_stream_pending(slow->st) > 0);

    /* The other stream is not held up. */
    char big[100000];
    memset(big, 'x', sizeof(big));
    assert_int_equal(tunnel_stream_write(fast->st, big, sizeof(big)), 1);
    assert_int_equal(pump(), 0);
    assert_int_equal(server.srv[1].data.len, sizeof(big));

    /* Consume as a writer would, and finish the upload. */
    struct seen *rx = &server.srv[0];
    size_t acked = 0;
    int guard = 0;
    while (rx->data.len < total && guard++ < 100000) {
        if (rx->data.len > acked) {
            tunnel_stream_consumed(rx->st, rx->data.len - acked);
            acked = rx->data.len;
        }
        if (off < total && slow->writable) {
            slow->writable = 0;
            while (off < total) {
                size_t n = total - off < (64u << 10) ? total - off : 64u << 10;
                rc = tunnel_stream_write(slow->st, payload + off, n);
                assert_true(rc >= 0);
                off += n;
                if (rc == 0)
                    break;
            }
        }
        assert_int_equal(pump(), 0);
    }
    assert_int_equal(rx->data.len, total);
    assert_memory_equal(rx->data.data, payload, total);
    free(payload);
}

static void
test_stream_limit(void **state)
{
    (void)state;
    tunnel_free(server.t);
    struct tunnel_opts o = {.max_streams = 2};
    server.t = tunnel_new(TUNNEL_SERVER, &o, &end_cbs, &server);
    assert_false(tunnel_is_ready(client.t));
    assert_int_equal(pump(), 0); /* learn the limit first */
    assert_true(tunnel_is_ready(client.t));
    struct seen *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = fresh();
        c[i]->st = tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:80", NULL, NULL, 0,
                                      &stream_cbs, c[i]);
        assert_non_null(c[i]->st);
    }
    assert_int_equal(pump(), 0);
    /* The client waits for a free slot rather than overrunning the server's limit. */
    assert_int_equal(server.nsrv, 2);
    tunnel_stream_reset(c[0]->st, TUNNEL_CANCEL);
    assert_int_equal(pump(), 0);
    assert_int_equal(server.nsrv, 3);
}

static void
test_oversized_headers(void **state)
{
    (void)state;
    char *big = xmalloc(20000);
    memset(big, 'a', 19999);
    big[19999] = '\0';
    const struct tunnel_header h[] = {{"x-big", big}};
    struct seen *c = fresh();
    c->st = tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:80", NULL, h, 1, &stream_cbs, c);
    pump();
    /* Refused before reaching the agent, and the tunnel survives. */
    assert_int_equal(server.nsrv, 0);
    assert_true(c->st == NULL || c->closed);
    assert_true(!c->closed || c->close_code != 0);
    struct seen *d = fresh();
    d->st = tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:81", NULL, NULL, 0, &stream_cbs, d);
    assert_int_equal(pump(), 0);
    assert_int_equal(server.nsrv, 1);
    assert_int_equal(d->status, 200);
    free(big);
}

static void
test_keepalive(void **state)
{
    (void)state;
    assert_int_equal(pump(), 0);
    int64_t now = time_mono_ms();
    assert_int_equal(tunnel_tick(client.t, now), 0);
    /* Quiet for 15 s: a PING goes out; the answer keeps the tunnel. */
    assert_int_equal(tunnel_tick(client.t, now + TUNNEL_KEEPALIVE_MS + 1), 0);
    assert_true(tunnel_want_write(client.t));
    assert_int_equal(pump(), 0);
    assert_false(tunnel_want_write(client.t));
    /* No answer for another 15 s: the caller must close. */
    int64_t later = time_mono_ms() + TUNNEL_KEEPALIVE_MS + 1;
    assert_int_equal(tunnel_tick(client.t, later), 0);
    struct buf drop;
    buf_init(&drop);
    tunnel_take_output(client.t, &drop, 1 << 20); /* the PING is lost */
    buf_fini(&drop);
    assert_int_equal(tunnel_tick(client.t, later + TUNNEL_KEEPALIVE_MS + 1), -1);
}

static void
test_garbage_and_goaway(void **state)
{
    (void)state;
    /* A server that receives something other than the HTTP/2 preface gives up. */
    assert_int_equal(tunnel_feed(server.t, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18), -1);
    assert_true(tunnel_is_done(server.t));

    tunnel_free(server.t);
    server.t = tunnel_new(TUNNEL_SERVER, NULL, &end_cbs, &server);
    struct seen *c = fresh();
    c->st = tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:80", NULL, NULL, 0, &stream_cbs, c);
    assert_int_equal(pump(), 0);
    tunnel_shutdown(server.t);
    assert_int_equal(pump(), 0);
    assert_int_equal(client.goaways, 1);
    /* The open stream still works after GOAWAY. */
    assert_int_equal(tunnel_stream_write(c->st, "x", 1), 1);
    assert_int_equal(pump(), 0);
    assert_int_equal(server.srv[0].data.len, 1);
    /* New ones are refused. */
    struct seen *d = fresh();
    d->st = tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:80", NULL, NULL, 0, &stream_cbs, d);
    pump();
    assert_true(d->st == NULL || d->closed);
    assert_int_equal(server.nsrv, 1);
}

static void
test_free_closes_streams(void **state)
{
    (void)state;
    struct seen *c = fresh();
    c->st = tunnel_stream_open(client.t, "CONNECT", "127.0.0.1:80", NULL, NULL, 0, &stream_cbs, c);
    assert_int_equal(pump(), 0);
    tunnel_free(client.t);
    client.t = tunnel_new(TUNNEL_CLIENT, NULL, &end_cbs, &client);
    assert_true(c->closed);
    assert_int_equal(c->close_code, TUNNEL_INTERNAL_ERROR);
}

/* Every session's frame buffer sits in a page-aligned slot (h2mem.h), also after a big transfer;
 * a freed session gives its slot back. Fails if nghttp2 changes the buffer's size. */
static void
test_frame_buffers_in_slots(void **state)
{
    (void)state;
    size_t before = h2mem_slots_in_use();
    assert_true(before >= 2); /* setup's two sessions */
    struct tunnel *t = tunnel_new(TUNNEL_CLIENT, NULL, &end_cbs, &client);
    assert_int_equal(h2mem_slots_in_use(), before + 1);
    tunnel_free(t);
    assert_int_equal(h2mem_slots_in_use(), before);

    nghttp2_mem *m = h2mem();
    uint8_t *fb = m->realloc(NULL, 16394, m->mem_user_data);
    assert_non_null(fb);
    assert_int_equal((uintptr_t)fb % 4096, 0);
    assert_int_equal(h2mem_slots_in_use(), before + 1);
    for (size_t i = 0; i < 16394; i++)
        fb[i] = (uint8_t)i;
    assert_ptr_equal(m->realloc(fb, 20000, m->mem_user_data), fb); /* still inside its slot */
    uint8_t *grown = m->realloc(fb, 40000, m->mem_user_data);      /* out of it: moved */
    assert_non_null(grown);
    assert_int_equal(h2mem_slots_in_use(), before);
    for (size_t i = 0; i < 16394; i++)
        assert_int_equal(grown[i], (uint8_t)i);
    m->free(grown, m->mem_user_data);
    /* A reused slot reads as zeros (its pages went back to the kernel). */
    uint8_t *again = m->malloc(16394, m->mem_user_data);
    assert_int_equal(again[100], 0);
    m->free(again, m->mem_user_data);
    void *small = m->malloc(100, m->mem_user_data); /* any other size: malloc */
    assert_int_equal(h2mem_slots_in_use(), before);
    m->free(small, m->mem_user_data);
    assert_int_equal(h2mem_slots_in_use(), before);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_with_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_per_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_and_goaway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_closes_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frame_buffers_in_slots, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
