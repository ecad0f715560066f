/* Tests for the control-plane HTTP client against a small HTTP/1.1 server on loopback that
 * runs in this process (one thread per connection, plain or TLS, canned responses). */
#include "http/client.h"

#include "base/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

/* ---- the loopback server ---- */

#define SRV_MAX_CONNS 128
#define SRV_MAX_REQ (64 * 1024)

struct srv {
    int lfd;
    int port;
    SSL_CTX *ssl;
    atomic_bool stop;
    atomic_int next_id;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_t conns[SRV_MAX_CONNS];
    int nconns;
};

struct srv_conn {
    struct srv *srv;
    int fd;
    int id;
    int drop_next; /* 1: read the next request and close (FIN); 2: reset (RST) */
    SSL *ssl;
    char buf[SRV_MAX_REQ];
    size_t len;
};

struct srv_req {
    char method[32];
    char path[256];
    char content_type[256];
    char expect[64];
    char accept[64];
    char content_length[32];
    char *body;
    size_t body_len;
};

/* Waits until the connection has something to read; false when the server stops or the
 * client stays silent for 10 s. */
static bool
srv_conn_wait(struct srv_conn *c)
{
    if (c->ssl && SSL_pending(c->ssl) > 0)
        return true;
    for (int i = 0; i < 200 && !atomic_load(&c->srv->stop); i++) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0)
            return true;
    }
    return false;
}

static ssize_t
srv_conn_read(struct srv_conn *c, void *p, size_t n)
{
    if (!srv_conn_wait(c))
        return -1;
    if (c->ssl) {
        int r = SSL_read(c->ssl, p, (int)n);
        return r > 0 ? r : (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1);
    }
    return recv(c->fd, p, n, 0);
}

static int
srv_conn_write(struct srv_conn *c, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = c->ssl ? SSL_write(c->ssl, s, (int)n) : send(c->fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
srv_conn_printf(struct srv_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    int rc = srv_conn_write(c, s, strlen(s));
    free(s);
    return rc;
}

static void
srv_header_copy(char *dst, size_t cap, const char *line, const char *name)
{
    size_t n = strlen(name);
    if (strncasecmp(line, name, n) != 0 || line[n] != ':')
        return;
    const char *v = line + n + 1;
    while (*v == ' ')
        v++;
    snprintf(dst, cap, "%.*s", (int)strcspn(v, "\r"), v);
}

/* Reads one request. Returns 1, 0 on a clean end of the connection, -1 on error. */
static int
srv_conn_read_req(struct srv_conn *c, struct srv_req *r)
{
    char *end;
    memset(r, 0, sizeof(*r));
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
        if (c->len == sizeof(c->buf))
            return -1;
        ssize_t n = srv_conn_read(c, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n <= 0)
            return n == 0 && c->len == 0 ? 0 : -1;
        c->len += (size_t)n;
    }
    *end = '\0';
    sscanf(c->buf, "%31s %255s", r->method, r->path);
    snprintf(r->content_type, sizeof(r->content_type), "(none)");
    snprintf(r->expect, sizeof(r->expect), "(none)");
    snprintf(r->accept, sizeof(r->accept), "(none)");
    snprintf(r->content_length, sizeof(r->content_length), "(none)");
    for (char *line = strstr(c->buf, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        srv_header_copy(r->content_type, sizeof(r->content_type), line, "Content-Type");
        srv_header_copy(r->expect, sizeof(r->expect), line, "Expect");
        srv_header_copy(r->accept, sizeof(r->accept), line, "Accept");
        srv_header_copy(r->content_length, sizeof(r->content_length), line, "Content-Length");
    }
    size_t head = (size_t)(end - c->buf) + 4;
    size_t want = strcmp(r->content_length, "(none)") ? strtoul(r->content_length, NULL, 10) : 0;
    if (want > 4 << 20)
        return -1;
    r->body = xmalloc(want + 1);
    size_t have = c->len - head < want ? c->len - head : want;
    memcpy(r->body, c->buf + head, have);
    memmove(c->buf, c->buf + head + have, c->len - head - have);
    c->len -= head + have;
    while (have < want) {
        ssize_t n = srv_conn_read(c, r->body + have, want - have);
        if (n <= 0) {
            free(r->body);
            return -1;
        }
        have += (size_t)n;
    }
    r->body_len = want;
    return 1;
}

/* Holds the request unanswered until the client gives up. */
static void
srv_conn_hang(struct srv_conn *c)
{
    char tmp[512];
    while (srv_conn_read(c, tmp, sizeof(tmp)) > 0)
        ;
}

/* Answers one request. Returns 0 to keep the connection, -1 to drop it. */
static int
srv_conn_answer(struct srv_conn *c, struct srv_req *r)
{
    const char *p = r->path;
    if (strcmp(p, "/hello") == 0)
        return srv_conn_printf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                  "X-Test:   padded value  \r\nContent-Length: 11\r\n\r\n"
                                  "hello world");
    if (strcmp(p, "/echo") == 0) {
        if (srv_conn_printf(c,
                            "HTTP/1.1 200 OK\r\nX-Method: %s\r\nX-Content-Type: %s\r\n"
                            "X-Expect: %s\r\nX-Accept: %s\r\nX-Content-Length: %s\r\n"
                            "Content-Length: %zu\r\n\r\n",
                            r->method, r->content_type, r->expect, r->accept, r->content_length,
                            r->body_len) < 0)
            return -1;
        return srv_conn_write(c, r->body, r->body_len);
    }
    if (strcmp(p, "/see-other") == 0)
        return srv_conn_printf(c, "HTTP/1.1 303 See Other\r\nLocation: /hello\r\n"
                                  "Content-Length: 0\r\n\r\n");
    if (strcmp(p, "/drop-next") == 0 || strcmp(p, "/reset-next") == 0) {
        /* Answers, then drops the next request on this connection unanswered, as a server
         * does that closes an idle keep-alive connection just as the client reuses it. */
        c->drop_next = strcmp(p, "/drop-next") == 0 ? 1 : 2;
        return srv_conn_printf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d",
                               snprintf(NULL, 0, "%d", c->id), c->id);
    }
    if (strcmp(p, "/until-close") == 0) {
        if (srv_conn_printf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ") < 0)
            return -1;
        usleep(50 * 1000);
        srv_conn_printf(c, "the end");
        return -1;
    }
    if (strcmp(p, "/truncated") == 0) {
        srv_conn_printf(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf");
        return -1;
    }
    if (strcmp(p, "/interim") == 0)
        return srv_conn_printf(c, "HTTP/1.1 100 Continue\r\n\r\n"
                                  "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                                  "HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 5\r\n\r\n"
                                  "final");
    if (strcmp(p, "/no-content") == 0)
        return srv_conn_printf(c, "HTTP/1.1 204 No Content\r\nX-Empty: yes\r\n\r\n");
    if (strcmp(p, "/length-only") == 0) {
        /* A HEAD's answer announces a body it does not send. */
        if (strcmp(r->method, "HEAD") == 0)
            return srv_conn_printf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        return srv_conn_printf(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
    if (strcmp(p, "/conn") == 0)
        return srv_conn_printf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d",
                               snprintf(NULL, 0, "%d", c->id), c->id);
    if (strncmp(p, "/delay?ms=", 10) == 0) {
        usleep((useconds_t)atoi(p + 10) * 1000);
        return srv_conn_printf(c, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndelayed");
    }
    if (strcmp(p, "/slow") == 0) {
        srv_conn_hang(c);
        return -1;
    }
    if (strcmp(p, "/big") == 0) {
        char body[1000];
        memset(body, 'a', sizeof(body));
        if (srv_conn_printf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n") < 0)
            return -1;
        return srv_conn_write(c, body, sizeof(body));
    }
    if (strcmp(p, "/chunked-big") == 0) {
        /* No Content-Length: the limit has to be caught while the body streams in. */
        char chunk[100];
        memset(chunk, 'b', sizeof(chunk));
        if (srv_conn_printf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") < 0)
            return -1;
        for (int i = 0; i < 10; i++) {
            if (srv_conn_printf(c, "64\r\n") < 0 || srv_conn_write(c, chunk, 100) < 0 ||
                srv_conn_printf(c, "\r\n") < 0)
                return -1;
        }
        return srv_conn_printf(c, "0\r\n\r\n");
    }
    if (strcmp(p, "/many-headers") == 0 || strcmp(p, "/huge-headers") == 0) {
        bool huge = strcmp(p, "/huge-headers") == 0;
        char value[1001];
        memset(value, 'v', 1000);
        value[huge ? 1000 : 1] = '\0';
        if (srv_conn_printf(c, "HTTP/1.1 200 OK\r\n") < 0)
            return -1;
        for (int i = 0; i < (huge ? 80 : 150); i++) {
            if (srv_conn_printf(c, "X-H-%d: %s\r\n", i, value) < 0)
                return -1;
        }
        return srv_conn_printf(c, "Content-Length: 0\r\n\r\n");
    }
    return srv_conn_printf(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
}

static void *
srv_conn_main(void *arg)
{
    struct srv_conn *c = arg;
    if (c->ssl) {
        struct timeval tv = {.tv_sec = 5};
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        SSL_set_fd(c->ssl, c->fd);
        if (SSL_accept(c->ssl) != 1)
            goto out;
    }
    for (;;) {
        struct srv_req r;
        if (srv_conn_read_req(c, &r) <= 0)
            break;
        if (c->drop_next) {
            free(r.body);
            if (c->drop_next == 2) {
                struct linger l = {.l_onoff = 1, .l_linger = 0};
                setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
            }
            break;
        }
        int rc = srv_conn_answer(c, &r);
        free(r.body);
        if (rc < 0)
            break;
    }
out:
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    close(c->fd);
    free(c);
    ERR_clear_error();
    return NULL;
}

static void *
srv_main(void *arg)
{
    struct srv *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        struct srv_conn *c = xcalloc(1, sizeof(*c));
        c->srv = s;
        c->fd = fd;
        c->id = atomic_fetch_add(&s->next_id, 1);
        c->ssl = s->ssl ? SSL_new(s->ssl) : NULL;
        pthread_mutex_lock(&s->mu);
        if (s->nconns == SRV_MAX_CONNS ||
            pthread_create(&s->conns[s->nconns], NULL, srv_conn_main, c) != 0) {
            if (c->ssl)
                SSL_free(c->ssl);
            close(fd);
            free(c);
        } else {
            s->nconns++;
        }
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* Starts a server on 127.0.0.1:<free port>: plain when cert is NULL, else TLS with cert and
 * key, and when client_ca is set it demands a client certificate signed by it. */
static struct srv *
srv_start(const char *cert, const char *key, const char *client_ca)
{
    struct srv *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->next_id = 1;
    if (cert) {
        s->ssl = SSL_CTX_new(TLS_server_method());
        assert_non_null(s->ssl);
        assert_int_equal(SSL_CTX_use_certificate_file(s->ssl, cert, SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(s->ssl, key, SSL_FILETYPE_PEM), 1);
        if (client_ca) {
            assert_int_equal(SSL_CTX_load_verify_locations(s->ssl, client_ca, NULL), 1);
            SSL_CTX_set_verify(s->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    }
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
    return s;
}

static void
srv_stop(struct srv *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    for (int i = 0; i < s->nconns; i++)
        pthread_join(s->conns[i], NULL);
    close(s->lfd);
    if (s->ssl)
        SSL_CTX_free(s->ssl);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static char *
srv_url(struct srv *s, const char *path)
{
    return xasprintf("%s://127.0.0.1:%d%s", s->ssl ? "https" : "http", s->port, path);
}

/* A loopback port nobody listens on. */
static int
closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static long
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---- blocking client ---- */

/* Runs a blocking request; the caller finis resp. */
static int
do_req(struct srv *s, const char *method, const char *path, const char *body, size_t body_len,
       const char *const *headers, size_t max_body, struct http_client_resp *resp)
{
    char *url = srv_url(s, path);
    struct http_client_req req = {.method = method,
                                  .url = url,
                                  .headers = headers,
                                  .body = body,
                                  .body_len = body_len,
                                  .max_body = max_body};
    int rc = http_client_do(&req, resp);
    free(url);
    return rc;
}

static void
test_get_ok(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    struct http_client_resp r;
    assert_int_equal(do_req(s, "GET", "/hello", NULL, 0, NULL, 0, &r), 0);
    assert_null(r.error);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 11);
    assert_string_equal(r.body.data, "hello world");
    assert_string_equal(http_client_resp_header(&r, "x-test"), "padded value");
    assert_string_equal(http_client_resp_header(&r, "CONTENT-TYPE"), "text/plain");
    assert_null(http_client_resp_header(&r, "Location"));
    http_client_resp_fini(&r);

    assert_int_equal(do_req(s, "GET", "/nope", NULL, 0, NULL, 0, &r), 0);
    assert_int_equal(r.status, 404); /* an error status is still a response */
    http_client_resp_fini(&r);
    srv_stop(s);
}

static void
test_post_echo(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    struct http_client_resp r;
    static const char body[] = {'a', '\0', 'b', '\n'};

    /* No Content-Type, Expect or Accept unless the caller sets one. */
    assert_int_equal(do_req(s, "POST", "/echo", body, sizeof(body), NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, sizeof(body));
    assert_memory_equal(r.body.data, body, sizeof(body));
    assert_string_equal(http_client_resp_header(&r, "X-Method"), "POST");
    assert_string_equal(http_client_resp_header(&r, "X-Content-Type"), "(none)");
    assert_string_equal(http_client_resp_header(&r, "X-Expect"), "(none)");
    assert_string_equal(http_client_resp_header(&r, "X-Accept"), "(none)");
    http_client_resp_fini(&r);

    const char *const hdrs[] = {"Content-Type: application/json", "Accept: application/json", NULL};
    assert_int_equal(do_req(s, "PATCH", "/echo", "{\"a\":1}", 7, hdrs, 0, &r), 0);
    assert_string_equal(http_client_resp_header(&r, "X-Method"), "PATCH");
    assert_string_equal(http_client_resp_header(&r, "X-Content-Type"), "application/json");
    assert_string_equal(http_client_resp_header(&r, "X-Accept"), "application/json");
    assert_string_equal(r.body.data, "{\"a\":1}");
    http_client_resp_fini(&r);

    /* curl asks for "100 Continue" before uploads over 1 MiB; Go never does. */
    size_t big_len = (3 << 20) / 2;
    char *big = xmalloc(big_len);
    memset(big, 'z', big_len);
    assert_int_equal(do_req(s, "POST", "/echo", big, big_len, NULL, 2 << 20, &r), 0);
    assert_string_equal(http_client_resp_header(&r, "X-Expect"), "(none)");
    assert_int_equal(r.body.len, big_len);
    assert_memory_equal(r.body.data, big, big_len);
    http_client_resp_fini(&r);
    free(big);

    /* Like Go: PUT without a body says Content-Length: 0, DELETE without one says nothing. */
    assert_int_equal(do_req(s, "PUT", "/echo", NULL, 0, NULL, 0, &r), 0);
    assert_string_equal(http_client_resp_header(&r, "X-Method"), "PUT");
    assert_string_equal(http_client_resp_header(&r, "X-Content-Length"), "0");
    http_client_resp_fini(&r);
    assert_int_equal(do_req(s, "DELETE", "/echo", NULL, 0, NULL, 0, &r), 0);
    assert_string_equal(http_client_resp_header(&r, "X-Method"), "DELETE");
    assert_string_equal(http_client_resp_header(&r, "X-Content-Length"), "(none)");
    http_client_resp_fini(&r);
    srv_stop(s);
}

static void
test_redirect_not_followed(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    struct http_client_resp r;
    assert_int_equal(do_req(s, "GET", "/see-other", NULL, 0, NULL, 0, &r), 0);
    assert_int_equal(r.status, 303);
    assert_string_equal(http_client_resp_header(&r, "Location"), "/hello");
    assert_int_equal(r.body.len, 0);
    http_client_resp_fini(&r);
    srv_stop(s);
}

/* Every way a response can end: at the close, cut short, after interim answers, without a
 * body. */
static void
test_response_framing(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    struct http_client_resp r;
    assert_int_equal(do_req(s, "GET", "/until-close", NULL, 0, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "until the end");
    http_client_resp_fini(&r);

    assert_int_equal(do_req(s, "GET", "/truncated", NULL, 0, NULL, 0, &r), -1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.body.len, 0);
    char *url = srv_url(s, "/truncated");
    char *want = xasprintf("Get \"%s\": unexpected EOF", url);
    assert_string_equal(r.error, want);
    free(want);
    free(url);
    http_client_resp_fini(&r);

    assert_int_equal(do_req(s, "GET", "/interim", NULL, 0, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "final");
    assert_string_equal(http_client_resp_header(&r, "X-Final"), "yes");
    assert_null(http_client_resp_header(&r, "Link")); /* the 103's headers are not the 200's */
    http_client_resp_fini(&r);

    assert_int_equal(do_req(s, "GET", "/no-content", NULL, 0, NULL, 0, &r), 0);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body.len, 0);
    assert_string_equal(http_client_resp_header(&r, "X-Empty"), "yes");
    http_client_resp_fini(&r);

    assert_int_equal(do_req(s, "HEAD", "/length-only", NULL, 0, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 0);
    assert_string_equal(http_client_resp_header(&r, "Content-Length"), "1000");
    http_client_resp_fini(&r);
    srv_stop(s);
}

static void
test_connection_refused(void **state)
{
    int port = closed_port();
    char *url = xasprintf("http://127.0.0.1:%d/healthz-report", port);
    char *want =
        xasprintf("Get \"%s\": dial tcp 127.0.0.1:%d: connect: connection refused", url, port);
    struct http_client_req req = {.method = "GET", .url = url};
    struct http_client_resp r;
    assert_int_equal(http_client_do(&req, &r), -1);
    assert_int_equal(r.status, 0);
    assert_non_null(r.error);
    assert_true(str_has_prefix(r.error, want));
    http_client_resp_fini(&r);
    free(want);
    free(url);

    /* Go's title-case operation, and no password in the text. */
    url = xasprintf("http://user:secret@127.0.0.1:%d/x", port);
    want = xasprintf("Delete \"http://user:xxxxx@127.0.0.1:%d/x\": ", port);
    req = (struct http_client_req){.method = "DELETE", .url = url};
    assert_int_equal(http_client_do(&req, &r), -1);
    assert_true(str_has_prefix(r.error, want));
    assert_null(strstr(r.error, "secret"));
    http_client_resp_fini(&r);
    free(want);
    free(url);
}

static void
test_timeout(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    char *url = srv_url(s, "/slow");
    char *want = xasprintf("Get \"%s\": ", url);
    struct http_client_req req = {.method = "GET", .url = url, .timeout_ms = 300};
    struct http_client_resp r;
    long t0 = now_ms();
    assert_int_equal(http_client_do(&req, &r), -1);
    long took = now_ms() - t0;
    assert_true(took >= 250 && took < 3000);
    assert_int_equal(r.status, 0);
    assert_true(str_has_prefix(r.error, want));
    assert_non_null(strstr(r.error, "timed out"));
    http_client_resp_fini(&r);
    free(want);
    free(url);
    srv_stop(s);
}

static void
test_limits(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    struct http_client_resp r;
    char *url = srv_url(s, "/big");
    char *want = xasprintf("Get \"%s\": response body too large (limit 100 bytes)", url);
    assert_int_equal(do_req(s, "GET", "/big", NULL, 0, NULL, 100, &r), -1);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.error, want);
    assert_int_equal(r.body.len, 0);
    http_client_resp_fini(&r);
    free(want);
    free(url);

    /* Exactly at the limit is fine. */
    assert_int_equal(do_req(s, "GET", "/big", NULL, 0, NULL, 1000, &r), 0);
    assert_int_equal(r.body.len, 1000);
    http_client_resp_fini(&r);

    /* Chunked: no length announced, caught while reading. */
    url = srv_url(s, "/chunked-big");
    want = xasprintf("Get \"%s\": response body too large (limit 500 bytes)", url);
    assert_int_equal(do_req(s, "GET", "/chunked-big", NULL, 0, NULL, 500, &r), -1);
    assert_string_equal(r.error, want);
    http_client_resp_fini(&r);
    free(want);
    free(url);

    assert_int_equal(do_req(s, "GET", "/many-headers", NULL, 0, NULL, 0, &r), -1);
    assert_non_null(strstr(r.error, "too many response headers (limit 100)"));
    assert_int_equal(r.nheaders, 0);
    http_client_resp_fini(&r);
    assert_int_equal(do_req(s, "GET", "/huge-headers", NULL, 0, NULL, 0, &r), -1);
    assert_non_null(strstr(r.error, "response headers too large (limit 65536 bytes)"));
    http_client_resp_fini(&r);
    srv_stop(s);
}

static void
test_bad_requests(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    struct http_client_resp r;
    assert_int_equal(do_req(s, "GE T", "/hello", NULL, 0, NULL, 0, &r), -1);
    assert_non_null(strstr(r.error, "invalid method"));
    http_client_resp_fini(&r);

    /* A CR/LF in a header would smuggle a second header; the value may be a secret, so the
     * error names the field only. */
    const char *const hdrs[] = {"Coder-Session-Token: abc\r\nX-Evil: 1", NULL};
    assert_int_equal(do_req(s, "GET", "/hello", NULL, 0, hdrs, 0, &r), -1);
    assert_non_null(strstr(r.error, "\"Coder-Session-Token\""));
    assert_null(strstr(r.error, "abc"));
    http_client_resp_fini(&r);

    /* Only http and https. */
    struct http_client_req req = {.method = "GET", .url = "file:///etc/passwd"};
    assert_int_equal(http_client_do(&req, &r), -1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.body.len, 0);
    assert_true(str_has_prefix(r.error, "Get \"file:///etc/passwd\": "));
    http_client_resp_fini(&r);
    srv_stop(s);
}

static void
test_proxy_env_ignored(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    char *proxy = xasprintf("http://127.0.0.1:%d", closed_port());
    setenv("http_proxy", proxy, 1);
    setenv("HTTP_PROXY", proxy, 1);
    setenv("ALL_PROXY", proxy, 1);
    struct http_client_resp r;
    int rc = do_req(s, "GET", "/hello", NULL, 0, NULL, 0, &r);
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("ALL_PROXY");
    assert_int_equal(rc, 0);
    assert_int_equal(r.status, 200);
    http_client_resp_fini(&r);
    free(proxy);
    srv_stop(s);
}

/* ---- asynchronous client ---- */

struct result {
    int calls;
    long status;
    char *body;
    char *error;
    struct http_client *client;
    bool close_in_cb;
    int *pending; /* when it reaches 0, the callback closes the client */
    struct result *next_req;
};

static void
result_cb(struct http_client_resp *resp, void *arg)
{
    struct result *res = arg;
    res->calls++;
    res->status = resp->status;
    str_replace(&res->body, resp->body.data ? resp->body.data : "");
    str_replace(&res->error, resp->error);
    if (res->close_in_cb || (res->pending && --*res->pending == 0))
        http_client_close(res->client);
}

static void
result_fini(struct result *res)
{
    free(res->body);
    free(res->error);
}

static int
start_req(struct http_client *c, struct srv *s, const char *method, const char *path,
          const char *body, struct result *res)
{
    char *url = srv_url(s, path);
    struct http_client_req req = {
        .method = method, .url = url, .body = body, .body_len = body ? strlen(body) : 0};
    res->client = c;
    int rc = http_client_start(c, &req, result_cb, res);
    free(url); /* the client keeps its own copy */
    return rc;
}

/* Runs the loop to the end; every handle must be closed by then. */
static void
loop_finish(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void
test_async_concurrent(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct http_client *c = http_client_new(&loop);
    assert_non_null(c);
    struct result res[6] = {0};
    int pending = 6;
    for (int i = 0; i < 6; i++)
        res[i].pending = &pending;
    assert_int_equal(start_req(c, s, "GET", "/delay?ms=300", NULL, &res[0]), 0);
    assert_int_equal(start_req(c, s, "GET", "/delay?ms=300", NULL, &res[1]), 0);
    assert_int_equal(start_req(c, s, "GET", "/delay?ms=300", NULL, &res[2]), 0);
    assert_int_equal(start_req(c, s, "GET", "/hello", NULL, &res[3]), 0);
    assert_int_equal(start_req(c, s, "POST", "/echo", "ping", &res[4]), 0);
    assert_int_equal(start_req(c, s, "GET", "/see-other", NULL, &res[5]), 0);
    assert_int_equal(res[0].calls, 0); /* never from inside start */
    long t0 = now_ms();
    loop_finish(&loop);
    long took = now_ms() - t0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_null(res[i].error);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].status, 200);
        assert_string_equal(res[i].body, "delayed");
    }
    assert_true(took < 800); /* in parallel, not 3 x 300 ms */
    assert_string_equal(res[3].body, "hello world");
    assert_string_equal(res[4].body, "ping");
    assert_int_equal(res[5].status, 303);
    for (int i = 0; i < 6; i++)
        result_fini(&res[i]);
    srv_stop(s);
}

struct chain {
    struct http_client *client;
    struct srv *srv;
    int step;
    char ids[3][16];
};

/* Three requests in a row, each started from the previous one's callback: the second
 * reuses the pooled connection, the third asks for a fresh one. */
static void
chain_cb(struct http_client_resp *resp, void *arg)
{
    struct chain *ch = arg;
    assert_null(resp->error);
    snprintf(ch->ids[ch->step], sizeof(ch->ids[0]), "%s", resp->body.data);
    if (++ch->step == 3) {
        http_client_close(ch->client);
        return;
    }
    char *url = srv_url(ch->srv, "/conn");
    struct http_client_req req = {.method = "GET", .url = url, .fresh_connection = ch->step == 2};
    assert_int_equal(http_client_start(ch->client, &req, chain_cb, ch), 0);
    free(url);
}

static void
test_async_fresh_connection(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct chain ch = {.client = http_client_new(&loop), .srv = s};
    char *url = srv_url(s, "/conn");
    struct http_client_req req = {.method = "GET", .url = url};
    assert_int_equal(http_client_start(ch.client, &req, chain_cb, &ch), 0);
    free(url);
    loop_finish(&loop);
    assert_int_equal(ch.step, 3);
    assert_string_equal(ch.ids[0], ch.ids[1]);
    assert_string_not_equal(ch.ids[1], ch.ids[2]);
    srv_stop(s);
}

/* A script of requests, each started from the previous one's callback, so that each may
 * reuse the connection the one before it left in the pool. */
struct step {
    const char *method, *path;
    long status;
    char body[32];
    char error[160];
};

struct script {
    struct http_client *client;
    struct srv *srv;
    struct step *steps;
    int n, at;
};

static void script_next(struct script *sc);

static void
script_cb(struct http_client_resp *resp, void *arg)
{
    struct script *sc = arg;
    struct step *st = &sc->steps[sc->at];
    st->status = resp->status;
    snprintf(st->body, sizeof(st->body), "%s", resp->body.data ? resp->body.data : "");
    snprintf(st->error, sizeof(st->error), "%s", resp->error ? resp->error : "");
    if (++sc->at == sc->n) {
        http_client_close(sc->client);
        return;
    }
    script_next(sc);
}

static void
script_next(struct script *sc)
{
    struct step *st = &sc->steps[sc->at];
    char *url = srv_url(sc->srv, st->path);
    bool post = strcmp(st->method, "POST") == 0;
    struct http_client_req req = {
        .method = st->method, .url = url, .body = post ? "x" : NULL, .body_len = post};
    assert_int_equal(http_client_start(sc->client, &req, script_cb, sc), 0);
    free(url);
}

static void
script_run(struct srv *s, struct step *steps, int n)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct script sc = {.client = http_client_new(&loop), .srv = s, .steps = steps, .n = n};
    script_next(&sc);
    loop_finish(&loop);
    assert_int_equal(sc.at, n);
}

/* A pooled connection the server drops as it is reused (closed or reset) costs a GET one
 * retry on a new connection; a POST is not sent twice: it fails. */
static void
test_async_retry_dropped_connection(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    struct step st[] = {
        {.method = "GET", .path = "/drop-next"},  /* 0: conn A, which drops the next request */
        {.method = "GET", .path = "/conn"},       /* 1: A drops it (FIN): retried on conn B */
        {.method = "GET", .path = "/reset-next"}, /* 2: B, which resets on the next request */
        {.method = "GET", .path = "/conn"},       /* 3: B resets (RST): retried on conn C */
        {.method = "GET", .path = "/drop-next"},  /* 4: C */
        {.method = "POST", .path = "/echo"},      /* 5: C drops it: not retried */
        {.method = "GET", .path = "/conn"},       /* 6: conn D */
        {.method = "HEAD", .path = "/length-only"},
        {.method = "GET",
         .path = "/conn"}, /* 8: still D: the HEAD's Content-Length was not read as a body */
    };
    script_run(s, st, (int)(sizeof(st) / sizeof(st[0])));
    for (int i = 0; i < 9; i++) {
        if (i != 5) {
            assert_string_equal(st[i].error, "");
            assert_int_equal(st[i].status, 200);
        }
    }
    assert_string_not_equal(st[1].body, st[0].body);
    assert_string_equal(st[2].body, st[1].body);
    assert_string_not_equal(st[3].body, st[2].body);
    assert_string_equal(st[4].body, st[3].body);
    assert_int_equal(st[5].status, 0);
    char *url = srv_url(s, "/echo");
    char *want = xasprintf("Post \"%s\": EOF", url);
    assert_string_equal(st[5].error, want);
    free(want);
    free(url);
    assert_string_not_equal(st[6].body, st[4].body);
    assert_string_equal(st[8].body, st[6].body);
    srv_stop(s);
}

static void
close_timer_cb(uv_timer_t *t)
{
    http_client_close(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

static void
test_async_close_cancels(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct http_client *c = http_client_new(&loop);
    struct result res[3] = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(start_req(c, s, "GET", "/slow", NULL, &res[i]), 0);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = c;
    uv_timer_start(&t, close_timer_cb, 200, 0);
    long t0 = now_ms();
    loop_finish(&loop);
    assert_true(now_ms() - t0 < 3000);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].status, 0);
        assert_string_equal(res[i].error, "canceled");
        result_fini(&res[i]);
    }
    srv_stop(s); /* joins the server threads: the client did hang up */
}

static void
test_async_close_from_callback(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct http_client *c = http_client_new(&loop);
    struct result fast = {.close_in_cb = true}, slow = {0};
    assert_int_equal(start_req(c, s, "GET", "/slow", NULL, &slow), 0);
    assert_int_equal(start_req(c, s, "GET", "/hello", NULL, &fast), 0);
    loop_finish(&loop);
    assert_int_equal(fast.calls, 1);
    assert_int_equal(fast.status, 200);
    assert_int_equal(slow.calls, 1);
    assert_string_equal(slow.error, "canceled");
    result_fini(&fast);
    result_fini(&slow);

    /* A client closed with nothing in flight. */
    uv_loop_init(&loop);
    http_client_close(http_client_new(&loop));
    loop_finish(&loop);
    srv_stop(s);
}

static void
test_async_errors(void **state)
{
    struct srv *s = srv_start(NULL, NULL, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct http_client *c = http_client_new(&loop);
    struct result res[3] = {0};
    int pending = 3;
    for (int i = 0; i < 3; i++)
        res[i].pending = &pending;

    int port = closed_port();
    char *url = xasprintf("http://127.0.0.1:%d/healthz-report", port);
    struct http_client_req req = {.method = "POST", .url = url, .body = "x", .body_len = 1};
    res[0].client = c;
    assert_int_equal(http_client_start(c, &req, result_cb, &res[0]), 0);
    char *want0 =
        xasprintf("Post \"%s\": dial tcp 127.0.0.1:%d: connect: connection refused", url, port);
    free(url);

    url = srv_url(s, "/chunked-big");
    req = (struct http_client_req){.method = "GET", .url = url, .max_body = 500};
    res[1].client = c;
    assert_int_equal(http_client_start(c, &req, result_cb, &res[1]), 0);
    char *want1 = xasprintf("Get \"%s\": response body too large (limit 500 bytes)", url);
    free(url);

    url = srv_url(s, "/slow");
    req = (struct http_client_req){.method = "GET", .url = url, .timeout_ms = 300};
    res[2].client = c;
    assert_int_equal(http_client_start(c, &req, result_cb, &res[2]), 0);
    free(url);

    /* Refused synchronously: no callback, ever. */
    struct result bad = {0};
    assert_int_equal(start_req(c, s, "BAD METHOD", "/hello", NULL, &bad), -1);

    loop_finish(&loop);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].status, 0);
    }
    assert_true(str_has_prefix(res[0].error, want0));
    assert_string_equal(res[1].error, want1);
    assert_non_null(strstr(res[2].error, "timed out"));
    assert_int_equal(bad.calls, 0);
    for (int i = 0; i < 3; i++)
        result_fini(&res[i]);
    free(want0);
    free(want1);
    srv_stop(s);
}

/* ---- TLS ---- */

static char tls_dir[64];
static char *tls_cert, *tls_key, *tls_hashdir;

static int
tls_setup(void **state)
{
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/test_client.XXXXXX");
    if (mkdtemp(tls_dir) == NULL)
        return -1;
    tls_cert = xasprintf("%s/cert.pem", tls_dir);
    tls_key = xasprintf("%s/key.pem", tls_dir);
    tls_hashdir = xasprintf("%s/certs", tls_dir);
    char *cmd = xasprintf(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
        "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s "
        ">/dev/null 2>&1 && mkdir %s && cp %s %s/ && openssl rehash %s >/dev/null 2>&1",
        tls_key, tls_cert, tls_hashdir, tls_cert, tls_hashdir, tls_hashdir);
    int rc = system(cmd);
    free(cmd);
    unsetenv("SSL_CERT_FILE");
    unsetenv("SSL_CERT_DIR");
    return rc == 0 ? 0 : -1;
}

static int
tls_teardown(void **state)
{
    char *cmd = xasprintf("rm -rf %s", tls_dir);
    int rc = system(cmd);
    free(cmd);
    free(tls_cert);
    free(tls_key);
    free(tls_hashdir);
    return rc == 0 ? 0 : -1;
}

static void
test_tls_verify(void **state)
{
    struct srv *s = srv_start(tls_cert, tls_key, NULL);
    struct http_client_resp r;

    /* Self-signed: the system store does not know it. */
    assert_int_equal(do_req(s, "GET", "/hello", NULL, 0, NULL, 0, &r), -1);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.error, "certificate"));
    char *url = srv_url(s, "/hello");
    char *want = xasprintf("Get \"%s\": tls: failed to verify certificate: x509: certificate "
                           "signed by unknown authority",
                           url); /* as Go prints it */
    assert_string_equal(r.error, want);
    free(want);
    free(url);
    http_client_resp_fini(&r);

    setenv("SSL_CERT_FILE", tls_cert, 1);
    assert_int_equal(do_req(s, "GET", "/hello", NULL, 0, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "hello world");
    http_client_resp_fini(&r);

    /* A trusted certificate for another name: the certificate is for IP 127.0.0.1 only. A
     * minimal root (debootstrap) may have no /etc/hosts: then "localhost" cannot be dialled and
     * this part has nothing to check. */
    struct addrinfo *ai = NULL;
    if (getaddrinfo("localhost", NULL, NULL, &ai) == 0) {
        freeaddrinfo(ai);
        url = xasprintf("https://localhost:%d/hello", s->port);
        struct http_client_req req = {.method = "GET", .url = url};
        assert_int_equal(http_client_do(&req, &r), -1);
        assert_non_null(strstr(r.error, "tls: failed to verify certificate: x509: certificate "
                                        "is not valid for localhost"));
        http_client_resp_fini(&r);
        free(url);
    } else {
        fprintf(stderr, "note: \"localhost\" does not resolve here; name check not exercised\n");
    }
    unsetenv("SSL_CERT_FILE");

    setenv("SSL_CERT_DIR", tls_hashdir, 1);
    assert_int_equal(do_req(s, "GET", "/hello", NULL, 0, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    http_client_resp_fini(&r);

    /* A directory without the cert grants no trust. */
    setenv("SSL_CERT_DIR", tls_dir, 1);
    assert_int_equal(do_req(s, "GET", "/hello", NULL, 0, NULL, 0, &r), -1);
    http_client_resp_fini(&r);
    unsetenv("SSL_CERT_DIR");

    /* The asynchronous client honours it as well. */
    setenv("SSL_CERT_FILE", tls_cert, 1);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct http_client *c = http_client_new(&loop);
    struct result res = {.close_in_cb = true};
    assert_int_equal(start_req(c, s, "GET", "/hello", NULL, &res), 0);
    loop_finish(&loop);
    unsetenv("SSL_CERT_FILE");
    assert_int_equal(res.calls, 1);
    assert_null(res.error);
    assert_string_equal(res.body, "hello world");
    result_fini(&res);
    srv_stop(s);
}

static void
test_tls_client_cert(void **state)
{
    /* The server demands a certificate signed by our test cert (itself). */
    struct srv *s = srv_start(tls_cert, tls_key, tls_cert);
    setenv("SSL_CERT_FILE", tls_cert, 1);
    char *url = srv_url(s, "/hello");
    struct http_client_req req = {.method = "GET", .url = url};
    struct http_client_resp r;
    assert_int_equal(http_client_do(&req, &r), -1);
    assert_int_equal(r.status, 0);
    http_client_resp_fini(&r);

    req.client_cert = tls_cert;
    req.client_key = tls_key;
    assert_int_equal(http_client_do(&req, &r), 0);
    assert_int_equal(r.status, 200);
    http_client_resp_fini(&r);
    unsetenv("SSL_CERT_FILE");
    free(url);
    srv_stop(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_ok),
        cmocka_unit_test(test_post_echo),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_response_framing),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_proxy_env_ignored),
        cmocka_unit_test(test_async_concurrent),
        cmocka_unit_test(test_async_fresh_connection),
        cmocka_unit_test(test_async_retry_dropped_connection),
        cmocka_unit_test(test_async_close_cancels),
        cmocka_unit_test(test_async_close_from_callback),
        cmocka_unit_test(test_async_errors),
    };
    const struct CMUnitTest tls_tests[] = {
        cmocka_unit_test(test_tls_verify),
        cmocka_unit_test(test_tls_client_cert),
    };
    int failed = cmocka_run_group_tests_name("http_client", tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("http_client_tls", tls_tests, tls_setup, tls_teardown);
    return failed;
}
