/* net/stream on real loopback sockets: echo, half-close, refused dials, a dial abandoned half
 * way, backpressure in both directions, and the same over TLS with verification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/util.h"
#include "net/stream.h"
#include "net/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uv_loop_t loop;

/* ---- an echo server (optionally one that does not read until told) ---- */

struct echo_srv {
    uv_tcp_t listener;
    int port;
    struct tls_ctx *tls;
    bool hold;        /* accepted streams start paused */
    bool bytewise;    /* echo each byte with its own write */
    bool close_after; /* close the stream right after echoing */
    size_t held;      /* net_stream_queued after the echo, inside on_read */
    struct net_stream *last;
    size_t received;
    int accepted;
};

static void
e_read(struct net_stream *s, const uint8_t *d, size_t n, void *arg)
{
    struct echo_srv *e = arg;
    e->received += n;
    if (e->bytewise) {
        for (size_t i = 0; i < n; i++)
            net_stream_write(s, d + i, 1);
    } else {
        net_stream_write(s, d, n);
    }
    e->held = net_stream_queued(s);
    if (e->close_after)
        net_stream_close(s);
}

static void
e_eof(struct net_stream *s, void *arg)
{
    (void)arg;
    net_stream_shutdown(s);
}

static void
e_close(struct net_stream *s, const char *why, void *arg)
{
    (void)why;
    struct echo_srv *e = arg;
    if (e->last == s)
        e->last = NULL;
}

static const struct net_stream_cbs echo_cbs = {NULL, e_read, e_eof, NULL, e_close};

static void
on_conn(uv_stream_t *l, int status)
{
    struct echo_srv *e = l->data;
    assert_int_equal(status, 0);
    struct net_stream *s = net_stream_accept(l, e->tls, &echo_cbs, e);
    assert_non_null(s);
    e->accepted++;
    e->last = s;
    if (e->hold)
        net_stream_pause(s);
}

static void
echo_start(struct echo_srv *e)
{
    uv_tcp_init(&loop, &e->listener);
    e->listener.data = e;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&e->listener, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&e->listener, 128, on_conn), 0);
    struct sockaddr_in b;
    int len = sizeof(b);
    uv_tcp_getsockname(&e->listener, (struct sockaddr *)&b, &len);
    e->port = ntohs(b.sin_port);
}

static void
echo_stop(struct echo_srv *e)
{
    if (e->last)
        net_stream_close(e->last);
    uv_close((uv_handle_t *)&e->listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
}

/* ---- a client that records what happens ---- */

struct cli {
    struct net_stream *s;
    char connect_err[256];
    bool connected;
    struct buf got;
    bool eof;
    bool closed;
    int closes;
    char close_why[256];
    int drains;
    const char *send; /* written on connect, then shutdown */
    bool close_on_eof;
};

static void
c_connect(struct net_stream *s, const char *err, void *arg)
{
    struct cli *c = arg;
    if (err) {
        snprintf(c->connect_err, sizeof(c->connect_err), "%s", err);
        return;
    }
    c->connected = true;
    if (c->send) {
        assert_int_equal(net_stream_write(s, c->send, strlen(c->send)), 1);
        net_stream_shutdown(s);
    }
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
    struct cli *c = arg;
    c->eof = true;
    if (c->close_on_eof)
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
    struct cli *c = arg;
    c->closed = true;
    c->closes++;
    snprintf(c->close_why, sizeof(c->close_why), "%s", why ? why : "");
    c->s = NULL;
}

static const struct net_stream_cbs cli_cbs = {c_connect, c_read, c_eof, c_drain, c_close};

static void
cli_init(struct cli *c)
{
    memset(c, 0, sizeof(*c));
    buf_init(&c->got);
}

static void
run_until(bool *flag)
{
    for (int i = 0; i < 100000 && !*flag; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(*flag);
}

static int
setup(void **state)
{
    (void)state;
    uv_loop_init(&loop);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

/* Sends "hello, tunnel" to e, half-closes, and checks it all came back before the end. */
static void
hello_round_trip(struct echo_srv *e, struct cli *c)
{
    cli_init(c);
    c->send = "hello, tunnel";
    c->close_on_eof = true;
    c->s = net_stream_dial(&loop, "127.0.0.1", e->port, NULL, NULL, 0, &cli_cbs, c);
    run_until(&c->closed);
    assert_true(c->connected);
    assert_int_equal(c->got.len, strlen("hello, tunnel"));
    assert_memory_equal(c->got.data, "hello, tunnel", c->got.len);
    buf_fini(&c->got);
}

static void
test_echo_and_half_close(void **state)
{
    (void)state;
    struct echo_srv e = {0};
    echo_start(&e);
    struct cli c;
    hello_round_trip(&e, &c);
    assert_true(c.eof);
    assert_int_equal(c.closes, 1);
    assert_string_equal(c.close_why, "");
    echo_stop(&e);
}

/* Writes made while a read is delivered leave together when it returns (held until then), and
 * a close right after them still sends them first. */
static void
test_writes_in_a_read_are_batched(void **state)
{
    (void)state;
    for (int close_after = 0; close_after < 2; close_after++) {
        struct echo_srv e = {.bytewise = true, .close_after = close_after};
        echo_start(&e);
        struct cli c;
        hello_round_trip(&e, &c);
        assert_int_equal(e.held, e.received); /* every piece held inside on_read */
        echo_stop(&e);
    }
}

static void
test_refused(void **state)
{
    (void)state;
    struct echo_srv e = {0};
    echo_start(&e);
    int port = e.port;
    echo_stop(&e); /* nothing listens there now */
    struct cli c;
    cli_init(&c);
    c.s = net_stream_dial(&loop, "127.0.0.1", port, NULL, NULL, 0, &cli_cbs, &c);
    run_until(&c.closed);
    char want[128];
    snprintf(want, sizeof(want), "dial tcp 127.0.0.1:%d: connect: connection refused", port);
    assert_string_equal(c.connect_err, want);
    assert_string_equal(c.close_why, want);
    assert_false(c.connected);
    assert_int_equal(c.closes, 1);
    buf_fini(&c.got);
}

static void
test_close_while_dialing(void **state)
{
    (void)state;
    struct cli c;
    cli_init(&c);
    c.s = net_stream_dial(&loop, "127.0.0.1", 9, NULL, NULL, 0, &cli_cbs, &c);
    net_stream_close(c.s);
    assert_false(c.closed); /* never from inside the call */
    run_until(&c.closed);
    assert_int_equal(c.closes, 1);
    assert_string_equal(c.connect_err, "");
    assert_string_equal(c.close_why, "");
    buf_fini(&c.got);
}

/* A peer that does not read (paused from the accept, so over TLS during its handshake): the
 * writer is told to wait at the high-water mark, memory stays bounded, and all 32 MiB arrive
 * byte-exact once it reads again (over TLS, input a pause interrupts is kept, not lost). */
static void
backpressure(struct tls_ctx *server, struct tls_ctx *client)
{
    struct echo_srv e = {.hold = true, .tls = server};
    echo_start(&e);
    struct cli c;
    cli_init(&c);
    c.s = net_stream_dial(&loop, "127.0.0.1", e.port, client, NULL, 0, &cli_cbs, &c);
    run_until(&c.connected);
    const size_t total = 32u << 20;
    uint8_t *payload = xmalloc(total);
    for (size_t i = 0; i < total; i++)
        payload[i] = (uint8_t)(i * 2654435761u >> 11);
    size_t off = 0;
    int rc = 1;
    while (off < total && rc == 1) {
        rc = net_stream_write(c.s, payload + off, 64u << 10);
        off += 64u << 10;
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(rc, 0);
    /* Kernel buffers took some; the rest waits here, bounded. */
    assert_true(off < total);
    assert_true(net_stream_queued(c.s) >= NET_STREAM_HIGH_WATER);
    assert_true(net_stream_queued(c.s) < NET_STREAM_HIGH_WATER + (64u << 10));
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(c.drains, 0);
    /* The server reads again; the echo comes back to us; we read it too. */
    net_stream_resume(e.last);
    while (off < total) {
        int before = c.drains;
        for (int i = 0; i < 100000 && c.drains == before; i++)
            uv_run(&loop, UV_RUN_ONCE);
        assert_true(c.drains > before);
        while (off < total) {
            rc = net_stream_write(c.s, payload + off, 64u << 10);
            assert_true(rc >= 0);
            off += 64u << 10;
            if (rc == 0)
                break;
        }
    }
    net_stream_shutdown(c.s);
    c.close_on_eof = true;
    run_until(&c.closed);
    assert_int_equal(e.received, total);
    assert_int_equal(c.got.len, total);
    assert_memory_equal(c.got.data, payload, total);
    free(payload);
    buf_fini(&c.got);
    echo_stop(&e);
}

static void
test_backpressure(void **state)
{
    (void)state;
    backpressure(NULL, NULL);
}

static void
test_many_streams(void **state)
{
    (void)state;
    struct echo_srv e = {0};
    echo_start(&e);
    enum { N = 200 };
    struct cli *c = xcalloc(N, sizeof(*c));
    char(*msg)[32] = xcalloc(N, sizeof(*msg));
    for (int i = 0; i < N; i++) {
        cli_init(&c[i]);
        snprintf(msg[i], sizeof(msg[i]), "stream %d", i);
        c[i].send = msg[i];
        c[i].close_on_eof = true;
        c[i].s = net_stream_dial(&loop, "127.0.0.1", e.port, NULL, NULL, 0, &cli_cbs, &c[i]);
    }
    for (int i = 0; i < N; i++)
        run_until(&c[i].closed);
    /* The server's ends close by themselves: both directions are finished. */
    for (int i = 0; i < 1000 && e.last; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_null(e.last);
    for (int i = 0; i < N; i++) {
        assert_true(c[i].closed);
        assert_int_equal(c[i].got.len, strlen(msg[i]));
        assert_memory_equal(c[i].got.data, msg[i], c[i].got.len);
        buf_fini(&c[i].got);
    }
    assert_int_equal(e.accepted, N);
    free(c);
    free(msg);
    echo_stop(&e);
}

/* ---- TLS ---- */

static char *tls_dir, *tls_cert, *tls_key;

static int
tls_group_setup(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/test_stream_XXXXXX";
    tls_dir = xstrdup(mkdtemp(tmpl));
    tls_cert = xasprintf("%s/cert.pem", tls_dir);
    tls_key = xasprintf("%s/key.pem", tls_dir);
    char *cmd = xasprintf(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
        "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost "
        "-keyout %s -out %s >/dev/null 2>&1",
        tls_key, tls_cert);
    int rc = system(cmd);
    free(cmd);
    return rc == 0 ? 0 : -1;
}

static int
tls_group_teardown(void **state)
{
    (void)state;
    char *cmd = xasprintf("rm -rf %s", tls_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tls_dir);
    free(cmd);
    free(tls_dir);
    free(tls_cert);
    free(tls_key);
    return 0;
}

static struct tls_ctx *
server_ctx(void)
{
    const char *certs[] = {tls_cert}, *keys[] = {tls_key};
    struct tls_server_opts o = {.cert_files = certs, .key_files = keys, .ncerts = 1};
    char *err = NULL;
    struct tls_ctx *t = tls_ctx_new_server(&o, &err);
    assert_non_null(t);
    return t;
}

static struct tls_ctx *
client_ctx(void)
{
    struct tls_client_opts o = {0};
    char *err = NULL;
    struct tls_ctx *t = tls_ctx_new_client(&o, &err);
    assert_non_null(t);
    return t;
}

static void
test_tls_echo_and_verification(void **state)
{
    (void)state;
    struct echo_srv e = {0};
    e.tls = server_ctx();
    echo_start(&e);

    /* Not trusted yet: the handshake fails with a reason that names the certificate. */
    unsetenv("SSL_CERT_FILE");
    setenv("SSL_CERT_DIR", tls_dir, 1); /* no hashed links there: trusts nothing */
    struct tls_ctx *untrusting = client_ctx();
    struct cli c;
    cli_init(&c);
    c.s = net_stream_dial(&loop, "127.0.0.1", e.port, untrusting, NULL, 0, &cli_cbs, &c);
    run_until(&c.closed);
    assert_false(c.connected);
    assert_non_null(strstr(c.connect_err, "certificate"));
    buf_fini(&c.got);

    /* Trusted through SSL_CERT_FILE, as the project documents. */
    setenv("SSL_CERT_FILE", tls_cert, 1);
    struct tls_ctx *trusting = client_ctx();
    cli_init(&c);
    c.send = "over TLS";
    c.close_on_eof = true;
    c.s = net_stream_dial(&loop, "127.0.0.1", e.port, trusting, NULL, 0, &cli_cbs, &c);
    run_until(&c.closed);
    assert_true(c.connected);
    assert_string_equal(c.connect_err, "");
    assert_int_equal(c.got.len, 8);
    assert_memory_equal(c.got.data, "over TLS", 8);
    buf_fini(&c.got);

    /* The name checked is the one dialled: a certificate for other names is refused. */
    cli_init(&c);
    c.s = net_stream_dial(&loop, "127.0.0.1", e.port, trusting, "example.com", 0, &cli_cbs, &c);
    run_until(&c.closed);
    assert_false(c.connected);
    assert_non_null(strstr(c.connect_err, "certificate"));
    buf_fini(&c.got);

    unsetenv("SSL_CERT_FILE");
    unsetenv("SSL_CERT_DIR");
    echo_stop(&e);
    tls_ctx_free(untrusting);
    tls_ctx_free(trusting);
    tls_ctx_free(e.tls);
}

static void
test_tls_backpressure(void **state)
{
    (void)state;
    setenv("SSL_CERT_FILE", tls_cert, 1);
    struct tls_ctx *server = server_ctx(), *client = client_ctx();
    backpressure(server, client);
    unsetenv("SSL_CERT_FILE");
    tls_ctx_free(client);
    tls_ctx_free(server);
}

/* Corked writes wait for the uncork and then leave together; a shutdown sends them first. */
static void
test_cork(void **state)
{
    (void)state;
    struct echo_srv e = {0};
    echo_start(&e);
    struct cli c;
    cli_init(&c);
    c.close_on_eof = true;
    c.s = net_stream_dial(&loop, "127.0.0.1", e.port, NULL, NULL, 0, &cli_cbs, &c);
    run_until(&c.connected);
    net_stream_cork(c.s);
    net_stream_cork(c.s); /* nested */
    assert_int_equal(net_stream_write(c.s, "head ", 5), 1);
    assert_int_equal(net_stream_write(c.s, "body", 4), 1);
    assert_int_equal(net_stream_queued(c.s), 9);
    net_stream_uncork(c.s);
    for (int i = 0; i < 50; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(e.received, 0); /* still held: one uncork to go */
    net_stream_uncork(c.s);
    while (c.got.len < 9)
        uv_run(&loop, UV_RUN_ONCE);
    assert_memory_equal(c.got.data, "head body", 9);
    /* Held bytes go out before the end of the stream. */
    net_stream_cork(c.s);
    assert_int_equal(net_stream_write(c.s, " tail", 5), 1);
    net_stream_shutdown(c.s);
    run_until(&c.closed);
    assert_int_equal(c.got.len, 14);
    assert_memory_equal(c.got.data, "head body tail", 14);
    buf_fini(&c.got);
    echo_stop(&e);
}

int
main(void)
{
    const struct CMUnitTest tcp[] = {
        cmocka_unit_test_setup_teardown(test_echo_and_half_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writes_in_a_read_are_batched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_while_dialing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cork, setup, teardown),
    };
    const struct CMUnitTest tls[] = {
        cmocka_unit_test_setup_teardown(test_tls_echo_and_verification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_backpressure, setup, teardown),
    };
    int failed = cmocka_run_group_tests_name("tcp", tcp, NULL, NULL);
    failed += cmocka_run_group_tests_name("tls", tls, tls_group_setup, tls_group_teardown);
    return failed;
}
