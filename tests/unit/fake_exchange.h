/* Exchanges without a connection, to test what a handler answers without a loop or sockets.
 * The server makes the same kind for a request whose client left while its handler worked (a
 * "detached" exchange): finishing it runs the server's on_done hook, which records the answer
 * here, and frees it. Include after cmocka.h. */
#ifndef TESTS_UNIT_FAKE_EXCHANGE_H
#define TESTS_UNIT_FAKE_EXCHANGE_H

#include "base/util.h"
#include "http/server-int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FAKE_MAX_HEADERS 32

/* The last finished exchange's answer. */
struct fake_answer {
    int status; /* 0: nothing finished since fake_answer_reset */
    char *names[FAKE_MAX_HEADERS];
    char *values[FAKE_MAX_HEADERS];
    size_t n;
    char *body; /* NUL-terminated copy */
};

static struct fake_answer fake_last __attribute__((unused));

static inline void
fake_answer_reset(void)
{
    for (size_t i = 0; i < fake_last.n; i++) {
        free(fake_last.names[i]);
        free(fake_last.values[i]);
    }
    free(fake_last.body);
    memset(&fake_last, 0, sizeof(fake_last));
}

static inline void
fake_on_done(struct http_exchange *ex, void *arg)
{
    (void)arg;
    fake_answer_reset();
    fake_last.status = ex->status;
    for (size_t i = 0; i < ex->nrheaders && i < FAKE_MAX_HEADERS; i++) {
        fake_last.names[i] = xstrdup(ex->rheaders[i].name);
        fake_last.values[i] = xstrdup(ex->rheaders[i].value);
        fake_last.n++;
    }
    fake_last.body = xstrndup(ex->rbody.data ? ex->rbody.data : "", ex->rbody.len);
}

/* A server that only records answers: never listens, needs no loop. Free with
 * http_server_free. */
static inline struct http_server *
fake_server(void)
{
    struct http_server_opts o = {.on_done = fake_on_done};
    return http_server_new(NULL, &o);
}

/* A request: target split at '?' into path and query, and headers given as name, value, ...,
 * NULL. Finish it (the answer lands in fake_last) or drop it with fake_exchange_drop. */
static inline struct http_exchange *
fake_exchange(struct http_server *s, const char *method, const char *target, bool tls,
              const char *const *headers)
{
    struct http_exchange *ex = http_exchange_alloc(s, tls, "192.0.2.10");
    s->ndetached++; /* as the server counts one whose client went away */
    ex->req.method = xstrdup(method);
    ex->req.target = xstrdup(target);
    const char *q = strchr(target, '?');
    ex->req.path = q ? xstrndup(target, (size_t)(q - target)) : xstrdup(target);
    ex->req.query = xstrdup(q ? q + 1 : "");
    size_t n = 0;
    while (headers && headers[2 * n])
        n++;
    ex->req.headers = xcalloc(n ? n : 1, sizeof(*ex->req.headers));
    for (size_t i = 0; i < n; i++) {
        ex->req.headers[i].name = xstrdup(headers[2 * i]);
        ex->req.headers[i].value = xstrdup(headers[2 * i + 1]);
    }
    ex->req.nheaders = n;
    return ex;
}

/* Frees an exchange that was not finished. */
static inline void
fake_exchange_drop(struct http_exchange *ex)
{
    ex->srv->ndetached--;
    http_exchange_free_internal(ex);
}

/* The i-th (from 0) value of a header in the last answer, case-insensitively, or NULL. */
static inline const char *
fake_header_nth(const char *name, size_t nth)
{
    for (size_t i = 0; i < fake_last.n; i++) {
        if (strcasecmp(fake_last.names[i], name) == 0 && nth-- == 0)
            return fake_last.values[i];
    }
    return NULL;
}

static inline const char *
fake_header(const char *name)
{
    return fake_header_nth(name, 0);
}

static inline size_t
fake_header_count(const char *name)
{
    size_t c = 0;
    for (size_t i = 0; i < fake_last.n; i++)
        c += strcasecmp(fake_last.names[i], name) == 0;
    return c;
}

/* The i-th value of a response header set on an unfinished exchange, or NULL. */
static inline const char *
fake_rheader_nth(const struct http_exchange *ex, const char *name, size_t nth)
{
    for (size_t i = 0; i < ex->nrheaders; i++) {
        if (strcasecmp(ex->rheaders[i].name, name) == 0 && nth-- == 0)
            return ex->rheaders[i].value;
    }
    return NULL;
}

#endif
