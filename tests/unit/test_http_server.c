/* The HTTP/1.1 server: keep-alive, pipelining, strict parsing, limits, asynchronous answers,
 * and shutdown. A loop thread runs the server; the test speaks raw HTTP over sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "http/router.h"
#include "http/server.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct fixture {
    uv_loop_t loop;
    struct http_server *srv;
    uv_async_t stop;
    pthread_t thread;
    int port;
    int handled;
    int late_finished;
};

static void
h_echo(struct http_exchange *ex, void *arg)
{
    struct fixture *f = arg;
    f->handled++;
    char *q = http_request_query_param(&ex->req, "q");
    char *ck = http_request_cookie(&ex->req, "session");
    buf_printf(&ex->rbody, "%s %s q=%s cookie=%s body=%zu param=%s", ex->req.method, ex->req.path,
               q ? q : "-", ck ? ck : "-", ex->req.body.len,
               http_exchange_param(ex, "id") ? http_exchange_param(ex, "id") : "-");
    free(q);
    free(ck);
    http_exchange_finish(ex, 200);
}

static void
on_late(uv_timer_t *t)
{
    struct http_exchange *ex = t->data;
    buf_puts(&ex->rbody, "late");
    http_exchange_finish(ex, 202);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static void
h_late(struct http_exchange *ex, void *arg)
{
    uv_timer_t *t = xcalloc(1, sizeof(*t));
    uv_timer_init(&((struct fixture *)arg)->loop, t);
    t->data = ex;
    uv_timer_start(t, on_late, 200, 0);
}

static const struct http_route routes[] = {
    {"GET", "/late", h_late},
    {"*", "/items/{id}", h_echo},
    {"*", "/*", h_echo},
};

static void
handle(struct http_exchange *ex, void *arg)
{
    if (http_route_dispatch(routes, ARRAY_LEN(routes), ex, arg) < 0)
        http_reply_error(ex, 404, "nope", NULL);
}

static void
on_shutdown_done(void *arg)
{
    struct fixture *f = arg;
    uv_close((uv_handle_t *)&f->stop, NULL);
}

static void
on_stop(uv_async_t *a)
{
    struct fixture *f = a->data;
    http_server_shutdown(f->srv, 1000, on_shutdown_done, f);
}

static void *
loop_main(void *arg)
{
    struct fixture *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int
setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    uv_loop_init(&f->loop);
    struct http_server_opts o = {.handler = handle, .arg = f, .max_body = 1024};
    f->srv = http_server_new(&f->loop, &o);
    char bound[64], *err = NULL;
    assert_int_equal(http_server_listen(f->srv, "127.0.0.1:0", NULL, bound, sizeof(bound), &err),
                     0);
    f->port = atoi(strrchr(bound, ':') + 1);
    uv_async_init(&f->loop, &f->stop, on_stop);
    f->stop.data = f;
    pthread_create(&f->thread, NULL, loop_main, f);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    uv_async_send(&f->stop);
    pthread_join(f->thread, NULL);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    http_server_free(f->srv);
    free(f);
    return 0;
}

static int
dial(struct fixture *f)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void
send_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the server may close early on bad input */
        s += w;
        n -= (size_t)w;
    }
}

/* Reads until the peer closes or `want` responses (counted by status lines) have arrived. */
static char *
read_responses(int fd, int want)
{
    struct buf b;
    buf_init(&b);
    char chunk[8192];
    for (;;) {
        int seen = 0;
        for (const char *p = b.data; p && (p = strstr(p, "HTTP/1.1 ")); p++)
            seen++;
        if (want > 0 && seen >= want) {
            /* Make sure the last body arrived: bodies here are short; wait briefly. */
            usleep(50000);
            ssize_t r = recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
            if (r > 0)
                buf_append(&b, chunk, (size_t)r);
            break;
        }
        ssize_t r = recv(fd, chunk, sizeof(chunk), 0);
        if (r <= 0)
            break;
        buf_append(&b, chunk, (size_t)r);
    }
    return buf_steal(&b);
}

static void
test_keepalive_and_params(void **state)
{
    struct fixture *f = *state;
    int fd = dial(f);
    const char *req = "GET /items/a%20b?q=x%2By&z=1 HTTP/1.1\r\nHost: x\r\n"
                      "Cookie: other=1; session=abc\r\n\r\n";
    send_all(fd, req, strlen(req));
    char *r1 = read_responses(fd, 1);
    assert_non_null(strstr(r1, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(r1, "GET /items/a%20b q=x+y cookie=abc body=0 param=a b"));
    send_all(fd, req, strlen(req));
    char *r2 = read_responses(fd, 1);
    assert_non_null(strstr(r2, "HTTP/1.1 200 OK"));
    /* Many headers (the table grows past its first 8, 16, 32): the last one is still read. */
    struct buf many;
    buf_init(&many);
    buf_puts(&many, "GET /items/c HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 40; i++)
        buf_printf(&many, "X-H%d: %d\r\n", i, i);
    buf_puts(&many, "Cookie: session=last\r\n\r\n");
    send_all(fd, many.data, many.len);
    char *r3 = read_responses(fd, 1);
    assert_non_null(strstr(r3, "GET /items/c q=- cookie=last"));
    buf_fini(&many);
    free(r1);
    free(r2);
    free(r3);
    close(fd);
}

static void
test_pipelining_in_order(void **state)
{
    struct fixture *f = *state;
    int fd = dial(f);
    const char *req = "GET /late HTTP/1.1\r\nHost: x\r\n\r\n"
                      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                      "GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    send_all(fd, req, strlen(req));
    char *r = read_responses(fd, 0);
    char *a = strstr(r, "HTTP/1.1 202"), *b = strstr(r, "POST /a"), *c = strstr(r, "GET /b");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(a < b && b < c);
    assert_non_null(strstr(r, "body=3"));
    free(r);
    close(fd);
}

static void
expect_status(struct fixture *f, const char *req, size_t len, const char *status)
{
    int fd = dial(f);
    send_all(fd, req, len);
    char *r = read_responses(fd, 0);
    assert_non_null(r);
    bool ok = strstr(r, status) != NULL && strstr(r, "application/json") != NULL;
    if (!ok)
        print_error("wanted %s, got: %.200s\n", status, r);
    free(r);
    assert_true(ok);
    close(fd);
}

static void
test_strict_parsing(void **state)
{
    struct fixture *f = *state;
    const char *cl_te = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    expect_status(f, cl_te, strlen(cl_te), "HTTP/1.1 400");
    const char *dup_cl = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                         "Content-Length: 4\r\n\r\nabcd";
    expect_status(f, dup_cl, strlen(dup_cl), "HTTP/1.1 400");
    const char *empty_cl = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n";
    expect_status(f, empty_cl, strlen(empty_cl), "HTTP/1.1 400");
    const char *empty_name = "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n";
    expect_status(f, empty_name, strlen(empty_name), "HTTP/1.1 400");
    const char *fold = "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n";
    expect_status(f, fold, strlen(fold), "HTTP/1.1 400");
    const char *garbage = "NOT-HTTP\r\n\r\n";
    expect_status(f, garbage, strlen(garbage), "HTTP/1.1 400");
}

static void
test_limits(void **state)
{
    struct fixture *f = *state;
    const char *big = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n";
    expect_status(f, big, strlen(big), "HTTP/1.1 413");
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 10; i++)
        buf_printf(&b, "200\r\n%0512d\r\n", 0);
    buf_puts(&b, "0\r\n\r\n");
    expect_status(f, b.data, b.len, "HTTP/1.1 413");
    buf_reset(&b);
    buf_puts(&b, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 80; i++)
        buf_printf(&b, "X-H%d: %01000d\r\n", i, 0);
    buf_puts(&b, "\r\n");
    expect_status(f, b.data, b.len, "HTTP/1.1 431");
    buf_reset(&b);
    buf_puts(&b, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 150; i++)
        buf_printf(&b, "X-H%d: v\r\n", i);
    buf_puts(&b, "\r\n");
    expect_status(f, b.data, b.len, "HTTP/1.1 431");
    buf_fini(&b);
}

static void
test_client_gone_before_answer(void **state)
{
    struct fixture *f = *state;
    int fd = dial(f);
    const char *req = "GET /late HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, req, strlen(req));
    usleep(50000);
    close(fd); /* the handler answers 200 ms after the request, into the void */
    usleep(300000);
    fd = dial(f);
    send_all(fd, "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 48);
    char *r = read_responses(fd, 0);
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    free(r);
    close(fd);
}

static void
test_head_has_no_body(void **state)
{
    struct fixture *f = *state;
    int fd = dial(f);
    const char *req = "HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    send_all(fd, req, strlen(req));
    char *r = read_responses(fd, 0);
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    assert_non_null(strstr(r, "Content-Length: "));
    assert_string_equal(strstr(r, "\r\n\r\n"), "\r\n\r\n");
    free(r);
    close(fd);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keepalive_and_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strict_parsing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_gone_before_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_has_no_body, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
