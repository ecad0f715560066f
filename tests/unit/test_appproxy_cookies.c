/* App cookies and the session hand-off (appproxy/cookies.c): the cookie names browsers keep,
 * where a session token is taken from, and the exact Set-Cookie and Location a region answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "appproxy/cookies.h"
#include "fake_exchange.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct apphost_pattern
pattern(const char *p)
{
    struct apphost_pattern w;
    char *err = NULL;
    assert_int_equal(apphost_pattern_compile(p, &w, &err), 0);
    return w;
}

static void
test_subdomain_cookie_name_known_answer(void **state)
{
    /* hashlib.sha256(b"*.apps.example.com").hexdigest()[:32] */
    struct apphost_pattern w = pattern("*.apps.example.com");
    char *name = app_subdomain_cookie_name(&w);
    assert_string_equal(name, "coder_subdomain_app_session_token_a303882f63a443902998796bd7724f3d");
    free(name);
    apphost_pattern_free(&w);
    /* The port is not part of the hostname hashed. */
    w = pattern("*.apps.example.com:8443");
    name = app_subdomain_cookie_name(&w);
    assert_string_equal(name, "coder_subdomain_app_session_token_a303882f63a443902998796bd7724f3d");
    free(name);
    apphost_pattern_free(&w);
    /* Another wildcard, another cookie (SECURITY.md #7: no two regions share one). */
    w = pattern("*--apps.example.com");
    name = app_subdomain_cookie_name(&w);
    assert_string_equal(name, "coder_subdomain_app_session_token_de0e60d716a0fb74f934974faab33a20");
    free(name);
    apphost_pattern_free(&w);
}

#define SUB_COOKIE "coder_subdomain_app_session_token_a303882f63a443902998796bd7724f3d"

/* The token app_session_token finds for a request with these headers and target. */
static char *
token_for(enum app_access access, const char *target, const char *const *headers,
          const struct apphost_pattern *w)
{
    struct http_server *s = fake_server();
    struct http_exchange *ex = fake_exchange(s, "GET", target, false, headers);
    struct app_request r = {.access = access};
    char *t = app_session_token(&ex->req, &r, w);
    fake_exchange_drop(ex);
    http_server_free(s);
    return t;
}

static void
assert_token(char *got, const char *want)
{
    if (want == NULL) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void
test_session_token_sources_in_order(void **state)
{
    struct apphost_pattern w = pattern("*.apps.example.com");
    const char *all[] = {"Coder-Session-Token", "from-header", "Cookie",
                         "coder_session_token=from-cookie; " APP_PATH_SESSION_COOKIE "=from-app",
                         NULL};
    assert_token(token_for(APP_ACCESS_PATH, "/x?coder_session_token=from-query", all, &w),
                 "from-header");
    /* An empty header counts as none. */
    const char *empty_header[] = {"Coder-Session-Token", "", "Cookie",
                                  "coder_session_token=from-cookie", NULL};
    assert_token(token_for(APP_ACCESS_PATH, "/x?coder_session_token=q", empty_header, &w),
                 "from-cookie");
    /* Then the query parameter, decoded. */
    const char *app_only[] = {"Cookie", APP_PATH_SESSION_COOKIE "=from-app", NULL};
    assert_token(token_for(APP_ACCESS_PATH, "/x?a=1&coder_session_token=abc%2Ddef", app_only, &w),
                 "abc-def");
    /* Last, the cookie of the access method. */
    assert_token(token_for(APP_ACCESS_PATH, "/x", app_only, &w), "from-app");
    assert_token(token_for(APP_ACCESS_PATH, "/x", NULL, &w), NULL);
    apphost_pattern_free(&w);
}

static void
test_session_token_app_cookie_matches_access(void **state)
{
    struct apphost_pattern w = pattern("*.apps.example.com");
    const char *both[] = {"Cookie", APP_PATH_SESSION_COOKIE "=path-token; " SUB_COOKIE "=sub-token",
                          NULL};
    assert_token(token_for(APP_ACCESS_PATH, "/", both, &w), "path-token");
    assert_token(token_for(APP_ACCESS_SUBDOMAIN, "/", both, &w), "sub-token");
    /* The path cookie never serves a subdomain app, nor another wildcard's cookie. */
    const char *path_only[] = {"Cookie", APP_PATH_SESSION_COOKIE "=path-token", NULL};
    assert_token(token_for(APP_ACCESS_SUBDOMAIN, "/", path_only, &w), NULL);
    struct apphost_pattern other = pattern("*--apps.example.com");
    assert_token(token_for(APP_ACCESS_SUBDOMAIN, "/", both, &other), NULL);
    /* No wildcard: no subdomain cookie to read. */
    assert_token(token_for(APP_ACCESS_SUBDOMAIN, "/", both, NULL), NULL);
    /* An empty cookie is none. */
    const char *empty[] = {"Cookie", SUB_COOKIE "=", NULL};
    assert_token(token_for(APP_ACCESS_SUBDOMAIN, "/", empty, &w), NULL);
    apphost_pattern_free(&other);
    apphost_pattern_free(&w);
}

/* Runs app_reply_session_cookie on a request for target; the answer is in fake_last. */
static void
reply_for(enum app_access access, const char *target, const struct apphost_pattern *w, bool secure)
{
    struct http_server *s = fake_server();
    struct http_exchange *ex = fake_exchange(s, "GET", target, false, NULL);
    struct app_request r = {.access = access};
    app_reply_session_cookie(ex, &r, w, "KEY-123", secure);
    http_server_free(s);
}

static void
test_reply_session_cookie_subdomain(void **state)
{
    struct apphost_pattern w = pattern("*.apps.example.com");
    reply_for(APP_ACCESS_SUBDOMAIN, "/index.html?" APP_KEY_PARAM "=enc", &w, false);
    assert_int_equal(fake_last.status, 303);
    assert_int_equal(fake_header_count("Set-Cookie"), 1);
    assert_string_equal(fake_header("Set-Cookie"), SUB_COOKIE "=KEY-123; Path=/; "
                                                              "Domain=.apps.example.com; HttpOnly; "
                                                              "SameSite=Lax");
    assert_string_equal(fake_header("Location"), "/index.html");
    assert_string_equal(fake_header("Cache-Control"), "no-store");
    /* Secure on request; a "*--" wildcard's apps share the parent domain. */
    apphost_pattern_free(&w);
    w = pattern("*--apps.example.com");
    reply_for(APP_ACCESS_SUBDOMAIN, "/?" APP_KEY_PARAM "=enc", &w, true);
    assert_string_equal(fake_header("Set-Cookie"),
                        "coder_subdomain_app_session_token_de0e60d716a0fb74f934974faab33a20=KEY-"
                        "123; Path=/; Domain=.example.com; HttpOnly; SameSite=Lax; Secure");
    assert_string_equal(fake_header("Location"), "/");
    apphost_pattern_free(&w);
    fake_answer_reset();
}

static void
test_reply_session_cookie_path(void **state)
{
    struct apphost_pattern w = pattern("*.apps.example.com");
    /* A path app gets the path cookie even when the region has a wildcard. */
    reply_for(APP_ACCESS_PATH, "/@u/ws/apps/a/?" APP_KEY_PARAM "=enc", &w, true);
    assert_int_equal(fake_last.status, 303);
    assert_string_equal(fake_header("Set-Cookie"),
                        APP_PATH_SESSION_COOKIE "=KEY-123; Path=/; HttpOnly; SameSite=Lax; Secure");
    assert_string_equal(fake_header("Location"), "/@u/ws/apps/a/");
    apphost_pattern_free(&w);
    fake_answer_reset();
}

static void
test_reply_strips_only_the_key_param(void **state)
{
    static const struct {
        const char *target, *location;
    } cases[] = {
        {"/p?a=1&" APP_KEY_PARAM "=x&b=2", "/p?a=1&b=2"},
        {"/p?" APP_KEY_PARAM "=x&" APP_KEY_PARAM "=y", "/p"},
        {"/p?" APP_KEY_PARAM, "/p"},                                    /* no value */
        {"/p?" APP_KEY_PARAM "x=1&c=3", "/p?" APP_KEY_PARAM "x=1&c=3"}, /* a longer name */
        {"/p?a=1&&b=2&", "/p?a=1&b=2"},                                 /* empty pairs */
        {"/p?a=" APP_KEY_PARAM, "/p?a=" APP_KEY_PARAM},                 /* only names count */
        {"/p", "/p"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        reply_for(APP_ACCESS_PATH, cases[i].target, NULL, false);
        assert_string_equal(fake_header("Location"), cases[i].location);
    }
    fake_answer_reset();
}

static void
test_reply_location_stays_on_host(void **state)
{
    /* SECURITY.md #6: "//evil" and "/\evil" would send the browser to another host. */
    static const struct {
        const char *target, *location;
    } cases[] = {
        {"//evil.example/x?" APP_KEY_PARAM "=k", "/evil.example/x"},
        {"/\\evil.example/x", "/evil.example/x"},
        {"/\\/\\//evil.example", "/evil.example"},
        {"/a\\b/c\\", "/a%5Cb/c%5C"},
        {"/", "/"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        reply_for(APP_ACCESS_PATH, cases[i].target, NULL, false);
        assert_int_equal(fake_last.status, 303);
        assert_string_equal(fake_header("Location"), cases[i].location);
    }
    fake_answer_reset();
}

static void
test_token_cookie(void **state)
{
    struct http_server *s = fake_server();
    struct http_exchange *ex = fake_exchange(s, "GET", "/", false, NULL);
    struct app_request r = {.access = APP_ACCESS_PATH, .base_path = "/@u/ws.main/apps/code/"};
    app_set_token_cookie(ex, &r, "jws.token.sig", 1700000000, false);
    app_set_token_cookie(ex, &r, "jws2", 0, true);
    assert_string_equal(fake_rheader_nth(ex, "Set-Cookie", 0),
                        "coder_signed_app_token=jws.token.sig; Path=/@u/ws.main/apps/code/; "
                        "Expires=Tue, 14 Nov 2023 22:13:20 GMT; HttpOnly");
    assert_string_equal(fake_rheader_nth(ex, "Set-Cookie", 1),
                        "coder_signed_app_token=jws2; Path=/@u/ws.main/apps/code/; "
                        "Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Secure");
    fake_exchange_drop(ex);
    http_server_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subdomain_cookie_name_known_answer),
        cmocka_unit_test(test_session_token_sources_in_order),
        cmocka_unit_test(test_session_token_app_cookie_matches_access),
        cmocka_unit_test(test_reply_session_cookie_subdomain),
        cmocka_unit_test(test_reply_session_cookie_path),
        cmocka_unit_test(test_reply_strips_only_the_key_param),
        cmocka_unit_test(test_reply_location_stays_on_host),
        cmocka_unit_test(test_token_cookie),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
