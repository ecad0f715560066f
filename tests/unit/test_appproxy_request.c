/* Which app a request names (appproxy/request.c): path apps, subdomain apps and ports, and the
 * answers to paths and hostnames that name none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "appproxy/request.h"
#include "fake_exchange.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct apphost_pattern wildcard;
static const char own_host[] = "proxy.example.com";

static int
setup(void **state)
{
    char *err = NULL;
    return apphost_pattern_compile("*.example.com", &wildcard, &err);
}

static int
teardown(void **state)
{
    apphost_pattern_free(&wildcard);
    fake_answer_reset();
    return 0;
}

static bool
matches(const char *target, const char *host)
{
    struct http_server *s = fake_server();
    const char *h[] = {"Host", host, NULL};
    struct http_exchange *ex = fake_exchange(s, "GET", target, false, host ? h : NULL);
    bool m = app_request_match(ex, &wildcard, own_host);
    fake_exchange_drop(ex);
    http_server_free(s);
    return m;
}

static void
test_match(void **state)
{
    assert_true(matches("/@alice/dev/apps/code/", "proxy.example.com"));
    assert_true(matches("/%40alice/dev/apps/code/", "proxy.example.com"));
    assert_true(matches("/%40", NULL)); /* claimed, then refused by parse */
    assert_false(matches("/api/v2/buildinfo", "proxy.example.com"));
    assert_false(matches("/a/@alice/dev/apps/code/", "proxy.example.com"));
    assert_true(matches("/", "code--dev--alice.example.com"));
    assert_true(matches("/", "CODE--dev--alice.Example.COM:443"));
    /* The region's own host matches the wildcard's shape but is not an app. */
    assert_false(matches("/", "proxy.example.com"));
    assert_false(matches("/", "PROXY.example.com."));
    assert_false(matches("/", "a.b.example.com")); /* '*' spans one label */
    assert_false(matches("/", "example.com"));
    assert_false(matches("/", NULL));
}

/* Parses target (Host host); returns the rc and leaves the request in *r. */
static int
parse(const char *target, const char *host, const char *accept, struct app_request *r)
{
    fake_answer_reset();
    struct http_server *s = fake_server();
    const char *h[] = {"Host", host ? host : "proxy.example.com", "Accept", accept ? accept : "*/*",
                       NULL};
    struct http_exchange *ex = fake_exchange(s, "GET", target, false, h);
    int rc = app_request_parse(ex, &wildcard, own_host, r);
    if (rc == 0)
        fake_exchange_drop(ex); /* a parsed request is not answered */
    else
        assert_int_not_equal(fake_last.status, 0);
    http_server_free(s);
    return rc;
}

static void
test_parse_path_app(void **state)
{
    struct app_request r;
    assert_int_equal(parse("/@alice/dev/apps/code/src/main.c?line=3&x", NULL, NULL, &r), 0);
    assert_int_equal(r.access, APP_ACCESS_PATH);
    assert_string_equal(r.user, "alice");
    assert_string_equal(r.workspace, "dev");
    assert_string_equal(r.agent, "");
    assert_string_equal(r.slug, "code");
    assert_string_equal(r.base_path, "/@alice/dev/apps/code/");
    assert_string_equal(r.rest, "/src/main.c?line=3&x");
    assert_null(r.host);
    bool https = true;
    assert_int_equal(app_request_port(&r, &https), -1); /* path apps never name ports */
    app_request_fini(&r);

    assert_int_equal(parse("/%40alice/dev.main/apps/8080/", NULL, NULL, &r), 0);
    assert_string_equal(r.user, "alice");
    assert_string_equal(r.workspace, "dev");
    assert_string_equal(r.agent, "main");
    assert_string_equal(r.slug, "8080");
    assert_string_equal(r.base_path, "/%40alice/dev.main/apps/8080/");
    assert_string_equal(r.rest, "/");
    assert_int_equal(app_request_port(&r, &https), -1);
    app_request_fini(&r);
    assert_null(r.rest);
}

static void
test_parse_path_without_slash_redirects(void **state)
{
    struct app_request r;
    assert_int_equal(parse("/@alice/dev/apps/code", NULL, NULL, &r), -1);
    assert_int_equal(fake_last.status, 307);
    assert_string_equal(fake_header("Location"), "/@alice/dev/apps/code/");
    assert_int_equal(parse("/@alice/dev/apps/code?folder=/home/coder", NULL, NULL, &r), -1);
    assert_int_equal(fake_last.status, 307);
    assert_string_equal(fake_header("Location"), "/@alice/dev/apps/code/?folder=/home/coder");
}

static void
test_parse_path_refusals(void **state)
{
    static const char *const not_found[] = {
        "/@alice",
        "/@alice/dev",
        "/@alice/dev/",
        "/@alice/dev/apps",
        "/@alice/dev/files/code/",
        "/@/dev/apps/code/",       /* empty user */
        "/@alice//apps/code/",     /* empty workspace */
        "/@alice/.main/apps/c/",   /* empty workspace before the agent */
        "/@alice/dev./apps/code/", /* empty agent */
        "/@alice/dev/apps//",      /* empty slug */
        "/%40",
    };
    struct app_request r;
    for (size_t i = 0; i < ARRAY_LEN(not_found); i++) {
        assert_int_equal(parse(not_found[i], NULL, NULL, &r), -1);
        assert_int_equal(fake_last.status, 404);
        assert_string_equal(fake_last.body, "{\"message\":\"Route not found.\"}\n");
    }
    /* A name longer than a hostname (253) is refused, not truncated. */
    char target[400];
    char user[300];
    memset(user, 'u', 254);
    user[254] = '\0';
    snprintf(target, sizeof(target), "/@%s/dev/apps/code/", user);
    assert_int_equal(parse(target, NULL, NULL, &r), -1);
    assert_int_equal(fake_last.status, 404);
    user[253] = '\0'; /* 253 fits */
    snprintf(target, sizeof(target), "/@%s/dev/apps/code/", user);
    assert_int_equal(parse(target, NULL, NULL, &r), 0);
    assert_int_equal(strlen(r.user), 253);
    app_request_fini(&r);
}

static void
test_parse_path_me_is_refused(void **state)
{
    struct app_request r;
    assert_int_equal(parse("/@me/dev/apps/code/", NULL, NULL, &r), -1);
    assert_int_equal(fake_last.status, 404);
    assert_string_equal(fake_last.body,
                        "{\"message\":\"Workspace apps must be accessed with the full username, "
                        "not @me.\",\"detail\":\"Replace @me with the workspace owner's "
                        "username.\"}\n");
    /* A browser gets the same as a page, escaped. */
    assert_int_equal(parse("/@me/dev/apps/code/", NULL, "text/html,*/*", &r), -1);
    assert_int_equal(fake_last.status, 404);
    assert_string_equal(fake_header("Content-Type"), "text/html; charset=utf-8");
    assert_non_null(strstr(fake_last.body, "<p>Replace @me with the workspace owner&#39;s "
                                           "username.</p>"));
}

static void
test_parse_subdomain(void **state)
{
    struct app_request r;
    bool https = true;
    assert_int_equal(parse("/static/app.js?v=2", "code--dev--alice.example.com", NULL, &r), 0);
    assert_int_equal(r.access, APP_ACCESS_SUBDOMAIN);
    assert_string_equal(r.user, "alice");
    assert_string_equal(r.workspace, "dev");
    assert_string_equal(r.agent, "");
    assert_string_equal(r.slug, "code");
    assert_string_equal(r.prefix, "");
    assert_string_equal(r.base_path, "/");
    assert_string_equal(r.rest, "/static/app.js?v=2"); /* the whole target */
    assert_string_equal(r.host, "code--dev--alice.example.com");
    assert_int_equal(app_request_port(&r, &https), -1);
    app_request_fini(&r);

    assert_int_equal(parse("/", "pre---8443s--main--dev--alice.example.com:8443", NULL, &r), 0);
    assert_string_equal(r.prefix, "pre---");
    assert_string_equal(r.slug, "8443s");
    assert_string_equal(r.agent, "main");
    assert_string_equal(r.host, "pre---8443s--main--dev--alice.example.com:8443");
    assert_int_equal(app_request_port(&r, &https), 8443);
    assert_true(https);
    app_request_fini(&r);

    assert_int_equal(parse("/", "8080--main--dev--alice.example.com", NULL, &r), 0);
    assert_int_equal(app_request_port(&r, &https), 8080);
    assert_false(https);
    app_request_fini(&r);
}

static void
test_parse_subdomain_refusals(void **state)
{
    struct app_request r;
    /* A port needs an agent name: Coder's words in the detail. */
    assert_int_equal(parse("/", "8080--dev--alice.example.com", NULL, &r), -1);
    assert_int_equal(fake_last.status, 400);
    assert_string_equal(fake_last.body,
                        "{\"message\":\"Invalid application URL.\",\"detail\":\"agent name is "
                        "required for port-based URLs\"}\n");
    assert_int_equal(parse("/", "justoneword.example.com", NULL, &r), -1);
    assert_int_equal(fake_last.status, 400);
    assert_string_equal(fake_last.body,
                        "{\"message\":\"Invalid application URL.\",\"detail\":\"invalid "
                        "application url format\"}\n");
    /* Not on the wildcard, or the region's own host: no app at all. */
    assert_int_equal(parse("/", "code--dev--alice.other.com", NULL, &r), -1);
    assert_int_equal(fake_last.status, 404);
    assert_int_equal(parse("/", "proxy.example.com", NULL, &r), -1);
    assert_int_equal(fake_last.status, 404);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_parse_path_app),
        cmocka_unit_test(test_parse_path_without_slash_redirects),
        cmocka_unit_test(test_parse_path_refusals),
        cmocka_unit_test(test_parse_path_me_is_refused),
        cmocka_unit_test(test_parse_subdomain),
        cmocka_unit_test(test_parse_subdomain_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
