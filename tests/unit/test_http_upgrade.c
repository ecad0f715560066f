/* The client side of an HTTP/1.1 upgrade (http/upgrade.c) against a canned server on
 * loopback: the request it sends, the hand-over on 101 with the bytes that followed the head,
 * and one clear reason for every other answer. The loop runs on the test's thread; the server is
 * a blocking socket on another. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "http/upgrade.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- a server that answers one connection with canned bytes ----
 * It writes with MSG_NOSIGNAL: the client may hang up first, which must not be a SIGPIPE. */

struct canned {
    int lfd;
    int port;
    const char *answer; /* sent once the request head is in */
    size_t answer_len;
    const char *later; /* sent 50 ms after the answer, or NULL */
    bool close_after;  /* close at once after answering (else wait for the client to close) */
    char request[8192];
    size_t request_len;
    pthread_t thread;
};

static void *
canned_run(void *arg)
{
    struct canned *c = arg;
    int fd = accept(c->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (c->request_len < sizeof(c->request) - 1) {
        ssize_t n = read(fd, c->request + c->request_len, sizeof(c->request) - 1 - c->request_len);
        if (n <= 0)
            break;
        c->request_len += (size_t)n;
        c->request[c->request_len] = '\0';
        if (strstr(c->request, "\r\n\r\n"))
            break;
    }
    if (c->answer_len)
        (void)!send(fd, c->answer, c->answer_len, MSG_NOSIGNAL);
    if (c->later) {
        usleep(50000);
        (void)!send(fd, c->later, strlen(c->later), MSG_NOSIGNAL);
    }
    if (!c->close_after) {
        char b[256];
        while (read(fd, b, sizeof(b)) > 0) {
        }
    }
    close(fd);
    return NULL;
}

static void
canned_start(struct canned *c)
{
    c->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(c->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(c->lfd, 4), 0);
    assert_int_equal(getsockname(c->lfd, (struct sockaddr *)&a, &len), 0);
    c->port = ntohs(a.sin_port);
    if (c->answer && !c->answer_len)
        c->answer_len = strlen(c->answer);
    assert_int_equal(pthread_create(&c->thread, NULL, canned_run, c), 0);
}

static void
canned_stop(struct canned *c)
{
    pthread_join(c->thread, NULL);
    close(c->lfd);
}

/* ---- the client under test ---- */

struct outcome {
    int calls;
    int status;
    char err[512];
    bool got_stream;
    struct buf early;
    struct buf after; /* what the stream delivered once it was ours */
    bool closed;
};

static void
mine_read(struct net_stream *s, const uint8_t *data, size_t n, void *arg)
{
    struct outcome *o = arg;
    buf_append(&o->after, data, n);
    if (o->after.len >= 5)
        net_stream_close(s);
}

static void
mine_close(struct net_stream *s, const char *why, void *arg)
{
    ((struct outcome *)arg)->closed = true;
}

static const struct net_stream_cbs mine = {NULL, mine_read, NULL, NULL, mine_close};

static void
on_upgrade(struct net_stream *st, const struct buf *early, int status, const char *err, void *arg)
{
    struct outcome *o = arg;
    o->calls++;
    o->status = status;
    snprintf(o->err, sizeof(o->err), "%s", err ? err : "(null)");
    if (st) {
        o->got_stream = true;
        buf_append(&o->early, early->data, early->len);
        net_stream_bind(st, &mine, o); /* ours now: the "later" bytes come here */
    }
}

/* Dials the canned server (or port) and runs the loop until everything is closed. */
static void
dial(int port, const char *prefix, const char *const *headers, struct outcome *o)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    memset(o, 0, sizeof(*o));
    buf_init(&o->early);
    buf_init(&o->after);
    char url[128], *err = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, prefix);
    struct http_upgrade *u = http_upgrade_dial(&loop, url, "/api/v2/tunnel", "coder-tunnel",
                                               headers, NULL, 5000, on_upgrade, o, &err);
    assert_non_null(u);
    assert_null(err);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* nothing left open */
}

static void
outcome_fini(struct outcome *o)
{
    buf_fini(&o->early);
    buf_fini(&o->after);
}

static void
test_101_hands_the_stream_over(void **state)
{
    struct canned c = {.answer = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                 "Upgrade: coder-tunnel\r\n\r\nEARLY",
                       .later = "LATER"};
    canned_start(&c);
    const char *hdrs[] = {"Coder-Session-Token: abc", "X-Bad: 1\r\nX-Injected: 2", NULL};
    struct outcome o;
    dial(c.port, "/base", hdrs, &o);
    canned_stop(&c);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 101);
    assert_string_equal(o.err, "(null)");
    assert_true(o.got_stream);
    assert_int_equal(o.early.len, 5);
    assert_memory_equal(o.early.data, "EARLY", 5);
    assert_int_equal(o.after.len, 5);
    assert_memory_equal(o.after.data, "LATER", 5);
    assert_true(o.closed);
    /* The request: the base URL's path first, the Host with its port, the extra headers, and
     * not one that would smuggle a second header line. */
    char want[256];
    snprintf(want, sizeof(want),
             "GET /base/api/v2/tunnel HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: Upgrade\r\n"
             "Upgrade: coder-tunnel\r\nCoder-Session-Token: abc\r\n\r\n",
             c.port);
    assert_string_equal(c.request, want);
    outcome_fini(&o);
}

/* One refused or broken answer: what the callback was told. */
static void
refused(const char *answer, bool close_after, int want_status, const char *want_err)
{
    struct canned c = {.answer = answer, .close_after = close_after};
    canned_start(&c);
    struct outcome o;
    dial(c.port, "", NULL, &o);
    canned_stop(&c);
    assert_int_equal(o.calls, 1);
    assert_false(o.got_stream);
    assert_int_equal(o.status, want_status);
    assert_string_equal(o.err, want_err);
    outcome_fini(&o);
}

static void
test_refusals_say_why(void **state)
{
    static const char forbidden[] =
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
        "{\"message\":\"Nope.\",\"detail\":\"Because.\"}";
    refused(forbidden, false, 403, "Nope.: Because.");
    /* A body that ends with the connection. */
    refused("HTTP/1.1 404 Not Found\r\n\r\n{\"message\":\"Gone.\"}", true, 404, "Gone.");
    /* An answer that is not JSON says only its status. */
    refused("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, 200, "");
    /* An error with an empty body: the status alone. */
    refused("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", false, 502, "");
}

static void
test_broken_answers(void **state)
{
    refused("SSH-2.0-OpenSSH_9.2\r\n", false, 0,
            "upgrade: the server's answer is not valid HTTP/1.1");
    refused("", true, 0, "upgrade: the server closed the connection");
    refused("HTTP/1.1 101 Switching", true, 0, "upgrade: the server closed the connection");
    /* A head over 16 KiB is refused before it is all read. */
    size_t n = 20000;
    char *big = xcalloc(1, n + 64);
    strcpy(big, "HTTP/1.1 101 Switching Protocols\r\nX-Pad: ");
    memset(big + strlen(big), 'a', n);
    strcat(big, "\r\n\r\n");
    refused(big, false, 0, "upgrade: the server's answer is not valid HTTP/1.1");
    free(big);
    /* An error body over 4 KiB too. */
    char *body = xcalloc(1, 8000);
    int k = snprintf(body, 8000, "HTTP/1.1 500 Internal\r\nContent-Length: 6000\r\n\r\n");
    memset(body + k, 'x', 6000);
    refused(body, false, 0, "upgrade: the server's answer is not valid HTTP/1.1");
    free(body);
}

static void
test_connection_refused(void **state)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd); /* nobody listens there */
    struct outcome o;
    dial(ntohs(a.sin_port), "", NULL, &o);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 0);
    assert_false(o.got_stream);
    assert_true(strlen(o.err) > 0 && strcmp(o.err, "(null)") != 0);
    outcome_fini(&o);
}

static void
test_bad_url_and_cancel(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct outcome o = {0};
    static const char *const bad[] = {"ftp://example.com", "not a url", "ws://example.com", ""};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char *err = NULL;
        assert_null(
            http_upgrade_dial(&loop, bad[i], "/x", "p", NULL, NULL, 1000, on_upgrade, &o, &err));
        char want[128];
        snprintf(want, sizeof(want), "invalid URL \"%s\": want http or https", bad[i]);
        assert_string_equal(err, want);
        free(err);
    }
    /* Canceled before the answer: the callback never runs, and nothing is left open. */
    struct canned c = {.answer = "HTTP/1.1 101 Switching Protocols\r\n\r\n", .close_after = true};
    canned_start(&c);
    char url[64], *err = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", c.port);
    struct http_upgrade *u =
        http_upgrade_dial(&loop, url, "/x", "p", NULL, NULL, 1000, on_upgrade, &o, &err);
    assert_non_null(u);
    http_upgrade_cancel(u);
    http_upgrade_cancel(NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(o.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    /* The server may or may not have seen a connection: unblock its accept. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)c.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
        (void)!send(fd, "\r\n\r\n", 4, MSG_NOSIGNAL);
    close(fd);
    canned_stop(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_101_hands_the_stream_over),
        cmocka_unit_test(test_refusals_say_why),
        cmocka_unit_test(test_broken_answers),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_bad_url_and_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
