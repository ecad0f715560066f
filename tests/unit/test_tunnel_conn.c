/* The agent tunnel on real sockets: an HTTP server upgrades the agent's request into a tunnel,
 * the region opens CONNECT streams through it, and the agent pipes them to a TCP echo server.
 * Refused upgrades, failed connects, bulk data byte-exact, and closing from either end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/util.h"
#include "http/server.h"
#include "net/stream.h"
#include "tunnel/conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uv_loop_t loop;

/* ---- a TCP echo server ---- */

static uv_tcp_t echo_listener;
static int echo_port;

static void
e_read(struct net_stream *s, const uint8_t *d, size_t n, void *arg)
{
    (void)arg;
    if (net_stream_write(s, d, n) == 0)
        net_stream_pause(s);
}

static void
e_drain(struct net_stream *s, void *arg)
{
    (void)arg;
    net_stream_resume(s);
}

static void
e_eof(struct net_stream *s, void *arg)
{
    (void)arg;
    net_stream_shutdown(s);
}

static const struct net_stream_cbs echo_cbs = {NULL, e_read, e_eof, e_drain, NULL};

static void
on_echo_conn(uv_stream_t *l, int status)
{
    assert_int_equal(status, 0);
    assert_non_null(net_stream_accept(l, NULL, &echo_cbs, NULL));
}

static int
listen_any(uv_tcp_t *t, uv_connection_cb cb)
{
    uv_tcp_init(&loop, t);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(t, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)t, 128, cb), 0);
    struct sockaddr_in b;
    int len = sizeof(b);
    uv_tcp_getsockname(t, (struct sockaddr *)&b, &len);
    return ntohs(b.sin_port);
}

/* ---- the region: an HTTP server whose tunnel route upgrades ---- */

struct region {
    struct http_server *http;
    int port;
    struct tunnel_conn *tc;
    bool ready;
    bool closed;
    char close_why[256];
};

static struct region region;

static void
r_ready(struct tunnel_conn *tc, void *arg)
{
    (void)tc;
    ((struct region *)arg)->ready = true;
}

static void
r_close(struct tunnel_conn *tc, const char *why, void *arg)
{
    (void)tc;
    struct region *r = arg;
    r->closed = true;
    r->tc = NULL;
    snprintf(r->close_why, sizeof(r->close_why), "%s", why ? why : "");
}

static const struct tunnel_conn_cbs region_cbs = {NULL, r_ready, r_close};

static void
handler(struct http_exchange *ex, void *arg)
{
    (void)arg;
    if (strcmp(ex->req.path, "/api/v2/workspaceagents/me/tunnel") != 0) {
        http_reply_error(ex, 404, "Not found.", NULL);
        return;
    }
    const char *token = http_request_header(&ex->req, "Coder-Session-Token");
    if (!token || strcmp(token, "agent-token") != 0) {
        http_reply_error(ex, 401, "Agent token is invalid.", NULL);
        return;
    }
    http_exchange_header(ex, "Upgrade", "coder-tunnel");
    http_exchange_header(ex, "Coder-Tunnel-Version", "1");
    struct buf early;
    buf_init(&early);
    struct net_stream *st = http_exchange_upgrade(ex, NULL, NULL, &early);
    assert_non_null(st);
    region.tc = tunnel_conn_new(&loop, st, TUNNEL_CLIENT, NULL, &early, &region_cbs, &region);
    buf_fini(&early);
}

/* ---- the agent ---- */

struct agent {
    struct tunnel_conn *tc;
    bool ready;
    bool closed;
    char close_why[256];
    int requests;
};

static struct agent agent;

static void
a_request(struct tunnel_conn *tc, struct tunnel_stream *s, const char *method,
          const char *authority, const char *path, const struct tunnel_header *h, size_t nh,
          void *arg)
{
    (void)tc;
    (void)path;
    (void)h;
    (void)nh;
    struct agent *a = arg;
    a->requests++;
    if (strcmp(method, "CONNECT") == 0)
        tunnel_connect_stream(&loop, s, authority);
    else
        tunnel_stream_respond(s, 404, NULL, 0, true);
}

static void
a_ready(struct tunnel_conn *tc, void *arg)
{
    (void)tc;
    ((struct agent *)arg)->ready = true;
}

static void
a_close(struct tunnel_conn *tc, const char *why, void *arg)
{
    (void)tc;
    struct agent *a = arg;
    a->closed = true;
    a->tc = NULL;
    snprintf(a->close_why, sizeof(a->close_why), "%s", why ? why : "");
}

static const struct tunnel_conn_cbs agent_cbs = {a_request, a_ready, a_close};

/* ---- a user stream at the region ---- */

struct user {
    struct tunnel_stream *s;
    int status;
    char error[256];
    struct buf got;
    bool ended, closed;
    int writable;
};

static void
u_response(struct tunnel_stream *s, int status, const struct tunnel_header *h, size_t nh, void *arg)
{
    struct user *u = arg;
    u->status = status;
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(h[i].name, "coder-error") == 0)
            snprintf(u->error, sizeof(u->error), "%s", h[i].value);
    }
    if (status >= 300)
        tunnel_stream_reset(s, TUNNEL_CANCEL); /* the region's part after a refusal */
}

static void
u_data(struct tunnel_stream *s, const uint8_t *d, size_t n, void *arg)
{
    buf_append(&((struct user *)arg)->got, d, n);
    tunnel_stream_consumed(s, n);
}

static void
u_end(struct tunnel_stream *s, void *arg)
{
    (void)s;
    ((struct user *)arg)->ended = true;
}

static void
u_writable(struct tunnel_stream *s, void *arg)
{
    (void)s;
    ((struct user *)arg)->writable++;
}

static void
u_close(struct tunnel_stream *s, uint32_t code, void *arg)
{
    (void)s;
    (void)code;
    struct user *u = arg;
    u->closed = true;
    u->s = NULL;
}

static const struct tunnel_stream_cbs user_cbs = {u_response, u_data, u_end, u_writable, u_close};

static void
run_until(bool *flag)
{
    for (int i = 0; i < 200000 && !*flag; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(*flag);
}

static void
on_http_closed(void *arg)
{
    *(bool *)arg = true;
}

static int
setup(void **state)
{
    (void)state;
    uv_loop_init(&loop);
    memset(&region, 0, sizeof(region));
    memset(&agent, 0, sizeof(agent));
    echo_port = listen_any(&echo_listener, on_echo_conn);
    struct http_server_opts o = {.handler = handler};
    region.http = http_server_new(&loop, &o);
    char bound[64], *err = NULL;
    assert_int_equal(
        http_server_listen(region.http, "127.0.0.1:0", NULL, bound, sizeof(bound), &err), 0);
    region.port = atoi(strrchr(bound, ':') + 1);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    if (agent.tc)
        tunnel_conn_close(agent.tc);
    if (region.tc)
        tunnel_conn_close(region.tc);
    bool http_closed = false;
    http_server_shutdown(region.http, 0, on_http_closed, &http_closed);
    run_until(&http_closed);
    http_server_free(region.http);
    uv_close((uv_handle_t *)&echo_listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

static void
dial_agent(const char *token)
{
    char url[64], hdr[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", region.port);
    snprintf(hdr, sizeof(hdr), "Coder-Session-Token: %s", token);
    const char *headers[] = {hdr, NULL};
    agent.tc = tunnel_dial(&loop, url, "/api/v2/workspaceagents/me/tunnel", TUNNEL_SERVER, headers,
                           NULL, &agent_cbs, &agent);
}

static struct tunnel_stream *
open_connect(struct user *u, int port)
{
    char authority[32];
    snprintf(authority, sizeof(authority), "127.0.0.1:%d", port);
    memset(u, 0, sizeof(*u));
    buf_init(&u->got);
    u->s = tunnel_stream_open(tunnel_conn_session(region.tc), "CONNECT", authority, NULL, NULL, 0,
                              &user_cbs, u);
    assert_non_null(u->s);
    return u->s;
}

static void
test_connect_through_tunnel(void **state)
{
    (void)state;
    dial_agent("agent-token");
    run_until(&region.ready);
    struct user u;
    open_connect(&u, echo_port);
    /* Optimistic: bytes go before the agent answered. */
    assert_int_equal(tunnel_stream_write(u.s, "ping", 4), 1);
    tunnel_stream_end(u.s);
    run_until(&u.closed);
    assert_int_equal(u.status, 200);
    assert_true(u.ended);
    assert_int_equal(u.got.len, 4);
    assert_memory_equal(u.got.data, "ping", 4);
    assert_int_equal(agent.requests, 1);
    buf_fini(&u.got);

    /* The region closes the tunnel: the agent hears of it. */
    tunnel_conn_close(region.tc);
    run_until(&agent.closed);
    assert_true(region.closed);
}

static void
test_refused_upgrade(void **state)
{
    (void)state;
    dial_agent("wrong");
    run_until(&agent.closed);
    assert_false(agent.ready);
    assert_string_equal(agent.close_why, "tunnel refused with status 401: Agent token is invalid.");
}

static void
test_unreachable_region(void **state)
{
    (void)state;
    agent.tc = tunnel_dial(&loop, "http://127.0.0.1:1", "/api/v2/workspaceagents/me/tunnel",
                           TUNNEL_SERVER, NULL, NULL, &agent_cbs, &agent);
    run_until(&agent.closed);
    assert_string_equal(agent.close_why, "dial tcp 127.0.0.1:1: connect: connection refused");
}

static void
test_connect_refused_by_target(void **state)
{
    (void)state;
    dial_agent("agent-token");
    run_until(&region.ready);
    struct user u;
    open_connect(&u, 1);
    run_until(&u.closed);
    assert_int_equal(u.status, 502);
    assert_string_equal(u.error, "dial tcp 127.0.0.1:1: connect: connection refused");
    /* The tunnel is unharmed. */
    struct user v;
    open_connect(&v, echo_port);
    tunnel_stream_write(v.s, "x", 1);
    tunnel_stream_end(v.s);
    run_until(&v.closed);
    assert_int_equal(v.status, 200);
    assert_int_equal(v.got.len, 1);
    buf_fini(&u.got);
    buf_fini(&v.got);
}

static void
test_bulk_byte_exact(void **state)
{
    (void)state;
    dial_agent("agent-token");
    run_until(&region.ready);
    const size_t total = 24u << 20;
    uint8_t *payload = xmalloc(total);
    for (size_t i = 0; i < total; i++)
        payload[i] = (uint8_t)(i * 2654435761u >> 9);
    struct user u;
    open_connect(&u, echo_port);
    size_t off = 0;
    while (off < total) {
        size_t n = total - off < (64u << 10) ? total - off : 64u << 10;
        int rc = tunnel_stream_write(u.s, payload + off, n);
        assert_true(rc >= 0);
        off += n;
        if (rc == 0) {
            int before = u.writable;
            for (int i = 0; i < 200000 && u.writable == before && !u.closed; i++)
                uv_run(&loop, UV_RUN_ONCE);
            assert_false(u.closed);
        }
    }
    tunnel_stream_end(u.s);
    run_until(&u.closed);
    assert_int_equal(u.status, 200);
    assert_int_equal(u.got.len, total);
    assert_memory_equal(u.got.data, payload, total);
    free(payload);
    buf_fini(&u.got);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_through_tunnel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_region, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused_by_target, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bulk_byte_exact, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
