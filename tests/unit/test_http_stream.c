/* The HTTP server's streaming mode (for reverse proxying): a request dispatched at its head, its
 * body read as it arrives with backpressure, a chunked response written as it is produced, a
 * buffered request pipelined behind a streamed one, an early answer, and a client that leaves
 * in the middle of its upload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/util.h"
#include "http/server.h"
#include "net/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uv_loop_t loop;
static struct http_server *srv;
static int port;
static int aborts, streamed, buffered;

/* ---- the server's handler: echo the body back, chunked, with backpressure ---- */

static void
echo_data(struct http_exchange *ex, const char *d, size_t n, void *arg)
{
    (void)arg;
    if (http_exchange_write(ex, d, n) == 0)
        http_exchange_pause_body(ex); /* the client reads slower than it sends */
}

static void
echo_end(struct http_exchange *ex, void *arg)
{
    (void)arg;
    http_exchange_end(ex);
}

static const struct http_body_cbs echo_body = {echo_data, echo_end};

static void
echo_drain(struct http_exchange *ex, void *arg)
{
    (void)arg;
    http_exchange_resume_body(ex);
}

static void
echo_abort(struct http_exchange *ex, void *arg)
{
    (void)arg;
    aborts++;
    http_exchange_end(ex);
}

static bool
stream_match(struct http_exchange *ex, void *arg)
{
    (void)arg;
    return str_has_prefix(ex->req.path, "/stream");
}

static void
handler(struct http_exchange *ex, void *arg)
{
    (void)arg;
    if (!ex->streaming) {
        buffered++;
        buf_printf(&ex->rbody, "buffered %s body=%zu", ex->req.path, ex->req.body.len);
        http_exchange_finish(ex, 200);
        return;
    }
    streamed++;
    if (strcmp(ex->req.path, "/stream/deny") == 0) {
        http_reply_error(ex, 401, "No.", NULL); /* without reading the body */
        return;
    }
    http_exchange_set_stream_cbs(ex, echo_drain, echo_abort, NULL);
    http_exchange_header(ex, "Content-Type", "application/octet-stream");
    assert_int_equal(http_exchange_begin(ex, 200), 0);
    http_exchange_read_body(ex, &echo_body, NULL);
}

/* ---- a client over net_stream ---- */

struct cli {
    struct net_stream *s;
    struct buf got;
    bool closed;
    bool connected;
    int drains;
};

static void
c_connect(struct net_stream *s, const char *err, void *arg)
{
    (void)s;
    assert_null(err);
    ((struct cli *)arg)->connected = true;
}

static void
c_read(struct net_stream *s, const uint8_t *d, size_t n, void *arg)
{
    (void)s;
    buf_append(&((struct cli *)arg)->got, d, n);
}

static void
c_eof(struct net_stream *s, void *arg)
{
    (void)arg;
    net_stream_close(s);
}

static void
c_drain(struct net_stream *s, void *arg)
{
    (void)s;
    ((struct cli *)arg)->drains++;
}

static void
c_close(struct net_stream *s, const char *why, void *arg)
{
    (void)s;
    (void)why;
    ((struct cli *)arg)->closed = true;
}

static const struct net_stream_cbs cli_cbs = {c_connect, c_read, c_eof, c_drain, c_close};

static void
run_until(bool *flag)
{
    for (int i = 0; i < 500000 && !*flag; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(*flag);
}

static void
cli_open(struct cli *c)
{
    memset(c, 0, sizeof(*c));
    buf_init(&c->got);
    c->s = net_stream_dial(&loop, "127.0.0.1", port, NULL, NULL, 0, &cli_cbs, c);
    run_until(&c->connected);
}

/* Decodes a chunked body starting at p; returns the bytes (new buf) or fails the test. */
static void
dechunk(const char *p, size_t n, struct buf *out)
{
    const char *end = p + n;
    for (;;) {
        char *crlf = memmem(p, (size_t)(end - p), "\r\n", 2);
        assert_non_null(crlf);
        size_t len = strtoul(p, NULL, 16);
        p = crlf + 2;
        if (len == 0)
            return;
        assert_true((size_t)(end - p) >= len + 2);
        buf_append(out, p, len);
        p += len + 2;
    }
}

static int
setup(void **state)
{
    (void)state;
    uv_loop_init(&loop);
    aborts = streamed = buffered = 0;
    struct http_server_opts o = {.handler = handler, .stream = stream_match};
    srv = http_server_new(&loop, &o);
    char bound[64], *err = NULL;
    assert_int_equal(http_server_listen(srv, "127.0.0.1:0", NULL, bound, sizeof(bound), &err), 0);
    port = atoi(strrchr(bound, ':') + 1);
    return 0;
}

static void
on_closed(void *arg)
{
    *(bool *)arg = true;
}

static int
teardown(void **state)
{
    (void)state;
    bool done = false;
    http_server_shutdown(srv, 0, on_closed, &done);
    run_until(&done);
    http_server_free(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

static void
test_echo_large_body_with_backpressure(void **state)
{
    (void)state;
    const size_t total = 12u << 20;
    uint8_t *payload = xmalloc(total);
    for (size_t i = 0; i < total; i++)
        payload[i] = (uint8_t)(i * 2654435761u >> 7);
    struct cli c;
    cli_open(&c);
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "POST /stream/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      total);
    net_stream_write(c.s, head, (size_t)hl);
    size_t off = 0;
    while (off < total) {
        size_t n = total - off < (64u << 10) ? total - off : 64u << 10;
        int rc = net_stream_write(c.s, payload + off, n);
        assert_true(rc >= 0);
        off += n;
        if (rc == 0) {
            int before = c.drains;
            for (int i = 0; i < 500000 && c.drains == before; i++)
                uv_run(&loop, UV_RUN_ONCE);
        }
    }
    run_until(&c.closed);
    char *body = memmem(c.got.data, c.got.len, "\r\n\r\n", 4);
    assert_non_null(body);
    assert_true(str_has_prefix(c.got.data, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(
        memmem(c.got.data, (size_t)(body - c.got.data), "Transfer-Encoding: chunked", 26));
    struct buf out;
    buf_init(&out);
    dechunk(body + 4, c.got.len - (size_t)(body + 4 - c.got.data), &out);
    assert_int_equal(out.len, total);
    assert_memory_equal(out.data, payload, total);
    buf_fini(&out);
    buf_fini(&c.got);
    free(payload);
    assert_int_equal(streamed, 1);
}

static void
test_pipelined_after_a_stream(void **state)
{
    (void)state;
    struct cli c;
    cli_open(&c);
    const char *reqs = "POST /stream/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                       "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                       "Connection: close\r\n\r\nabc";
    net_stream_write(c.s, reqs, strlen(reqs));
    run_until(&c.closed);
    const char *second = strstr(c.got.data, "HTTP/1.1 200 OK\r\nContent-Length");
    assert_non_null(strstr(c.got.data, "5\r\nhello\r\n0\r\n\r\n"));
    assert_non_null(second);
    assert_true(second > strstr(c.got.data, "hello"));
    assert_non_null(strstr(second, "buffered /plain body=3"));
    assert_int_equal(streamed, 1);
    assert_int_equal(buffered, 1);
    buf_fini(&c.got);
}

static void
test_early_answer_closes(void **state)
{
    (void)state;
    struct cli c;
    cli_open(&c);
    /* The body is not read: the next "request" inside it must never be parsed. */
    const char *req = "POST /stream/deny HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n"
                      "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n";
    net_stream_write(c.s, req, strlen(req));
    run_until(&c.closed);
    assert_true(str_has_prefix(c.got.data, "HTTP/1.1 401 "));
    assert_non_null(strstr(c.got.data, "Connection: close"));
    assert_null(strstr(c.got.data, "buffered"));
    assert_int_equal(buffered, 0);
    buf_fini(&c.got);
}

static void
test_client_leaves_mid_upload(void **state)
{
    (void)state;
    struct cli c;
    cli_open(&c);
    const char *req = "POST /stream/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                      "only a little";
    net_stream_write(c.s, req, strlen(req));
    for (int i = 0; i < 200 && streamed == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    net_stream_close(c.s);
    for (int i = 0; i < 100000 && aborts == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(aborts, 1);
    run_until(&c.closed);
    buf_fini(&c.got);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo_large_body_with_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_after_a_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_early_answer_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_leaves_mid_upload, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
