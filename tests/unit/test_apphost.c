/* App hostnames: Coder's own test tables (coderd/workspaceapps/appurl/appurl_test.go) re-expressed
 * in C, plus the edge cases a hand-written matcher must get right. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "apphost/apphost.h"
#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TestApplicationURLString */
static void
test_format(void **state)
{
    static const struct {
        struct apphost_app app;
        const char *want;
    } cases[] = {
        {{"", "", "", "", ""}, "----"},
        {{"", "app", "agent", "workspace", "user"}, "app--agent--workspace--user"},
        {{"", "8080", "agent", "workspace", "user"}, "8080--agent--workspace--user"},
        {{"yolo---", "app", "agent", "workspace", "user"}, "yolo---app--agent--workspace--user"},
        {{"", "30000", "", "workspace", "user"}, "30000--workspace--user"},
        {{"", "1234", "agent", "workspace", "user"}, "1234--agent--workspace--user"},
        {{"", "123", "", "workspace", "user"}, "123--workspace--user"},
        {{"", "myapp", "agent", "workspace", "user"}, "myapp--agent--workspace--user"},
        {{"", "app123", "", "workspace", "user"}, "app123--workspace--user"},
        {{"", "8080abc", "", "workspace", "user"}, "8080abc--workspace--user"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *got = apphost_format(&cases[i].app);
        assert_string_equal(got, cases[i].want);
        free(got);
    }
}

/* Expected result of a failed parse (never compared). */
#define NO_APP                                                                                     \
    {                                                                                              \
        "", "", "", "", ""                                                                         \
    }

/* TestParseSubdomainAppURL */
static void
test_parse(void **state)
{
    static const struct {
        const char *subdomain;
        int err;
        struct apphost_app want;
    } cases[] = {
        {"test", -EINVAL, NO_APP},
        {"workspace.agent--app", -EINVAL, NO_APP},
        {"workspace--app", -EINVAL, NO_APP},
        {"app--workspace--user", 0, {"", "app", "", "workspace", "user"}},
        {"1--2--3--4--5", -EINVAL, NO_APP},
        {"8080--workspace--user", -EDESTADDRREQ, NO_APP},
        {"app--agent--workspace--user", 0, {"", "app", "", "workspace", "user"}},
        {"8080--agent--workspace--user", 0, {"", "8080", "agent", "workspace", "user"}},
        {"12412--agent--workspace--user", 0, {"", "12412", "agent", "workspace", "user"}},
        {"8080s--agent--workspace--user", 0, {"", "8080s", "agent", "workspace", "user"}},
        {"app-slug--agent-name--workspace-name--user-name",
         0,
         {"", "app-slug", "", "workspace-name", "user-name"}},
        {"dean---was---here---app--agent--workspace--user",
         0,
         {"dean---was---here---", "app", "", "workspace", "user"}},
        {"30000--agent--workspace--user", 0, {"", "30000", "agent", "workspace", "user"}},
        {"1234--workspace--user", -EDESTADDRREQ, NO_APP},
        {"123--workspace--user", 0, {"", "123", "", "workspace", "user"}},
        {"8080s--workspace--user", -EDESTADDRREQ, NO_APP},
        {"myapp--agent--workspace--user", 0, {"", "myapp", "", "workspace", "user"}},
        /* Beyond Coder's table. */
        {"", -EINVAL, NO_APP},
        {"prefix---8080--main--dev--dean", 0, {"prefix---", "8080", "main", "dev", "dean"}},
        {"x----app--dev--dean", -EINVAL, NO_APP}, /* "---" then "-app": Go's Split, left to right */
        {"a---", -EINVAL, NO_APP},
        {"App--Dev--Dean", 0, {"", "App", "", "Dev", "Dean"}},
        {"app---dev--dean", -EINVAL, NO_APP},
        {"-app--dev--dean", -EINVAL, NO_APP},
        {"app--dev--dean-", -EINVAL, NO_APP},
        {"app_x--dev--dean", -EINVAL, NO_APP},
        {"app--dev--dean.example", -EINVAL, NO_APP},
        {"app--dev--dean:8080", -EINVAL, NO_APP},
        {"808--main--dev--dean", 0, {"", "808", "", "dev", "dean"}}, /* 3 digits: a slug */
        {"123456--main--dev--dean", 0, {"", "123456", "", "dev", "dean"}},
        {"99999--main--dev--dean", 0, {"", "99999", "main", "dev", "dean"}},
        {"8080S--main--dev--dean", 0, {"", "8080S", "", "dev", "dean"}}, /* only lower "s" */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct apphost_app got;
        int rc = apphost_parse(cases[i].subdomain, &got);
        if (rc != cases[i].err)
            fail_msg("%s: got %d want %d", cases[i].subdomain, rc, cases[i].err);
        if (rc != 0)
            continue;
        assert_string_equal(got.prefix, cases[i].want.prefix);
        assert_string_equal(got.app_slug_or_port, cases[i].want.app_slug_or_port);
        assert_string_equal(got.agent, cases[i].want.agent);
        assert_string_equal(got.workspace, cases[i].want.workspace);
        assert_string_equal(got.username, cases[i].want.username);
    }
    assert_string_equal(apphost_strerror(-EINVAL), "invalid application url format");
    assert_string_equal(apphost_strerror(-EDESTADDRREQ),
                        "agent name is required for port-based URLs");
}

/* TestURLGenerationVsParsing, and the round trip for every valid shape. */
static void
test_format_parse_round_trip(void **state)
{
    static const char *const subs[] = {
        "8080--agent--workspace--user",
        "8080s--a-b--c-d--e-f",
        "myapp--workspace--user",
        "pre---fix---app--ws--user",
    };
    for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
        struct apphost_app app;
        assert_int_equal(apphost_parse(subs[i], &app), 0);
        char *back = apphost_format(&app);
        assert_string_equal(back, subs[i]);
        free(back);
    }
    /* An agent given with an app slug is dropped, with a port it is kept. */
    struct apphost_app app = {"", "myapp", "agent", "workspace", "user"};
    char *s = apphost_format(&app);
    struct apphost_app parsed;
    assert_int_equal(apphost_parse(s, &parsed), 0);
    assert_string_equal(parsed.agent, "");
    free(s);
}

static void
test_parse_length_limit(void **state)
{
    char long_sub[APPHOST_MAX_HOSTNAME + 2];
    struct apphost_app app;
    /* "aaaa...--w--u" of exactly 253 bytes parses; one more byte does not. */
    memset(long_sub, 'a', sizeof(long_sub));
    memcpy(long_sub + APPHOST_MAX_HOSTNAME - 6, "--w--u", 6);
    long_sub[APPHOST_MAX_HOSTNAME] = '\0';
    assert_int_equal(apphost_parse(long_sub, &app), 0);
    assert_int_equal(strlen(app.app_slug_or_port), APPHOST_MAX_HOSTNAME - 6);
    memmove(long_sub + 1, long_sub, APPHOST_MAX_HOSTNAME + 1);
    long_sub[0] = 'a';
    assert_int_equal(apphost_parse(long_sub, &app), -EINVAL);
    assert_int_equal(apphost_parse(NULL, &app), -EINVAL);
}

static void
test_app_port(void **state)
{
    static const struct {
        const char *slug;
        int port;
        bool https;
    } cases[] = {
        {"8080", 8080, false}, {"8080s", 8080, true}, {"65535", 65535, false},
        {"65536", -1, false},  {"99999s", -1, false}, {"app", -1, false},
        {"s", -1, false},      {"80", 80, false},     {"0080", 80, false},
        {"8080ss", -1, false}, {"12a4", -1, false},   {"000000000000000443s", 443, true},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct apphost_app app = {0};
        bool https = true;
        snprintf(app.app_slug_or_port, sizeof(app.app_slug_or_port), "%s", cases[i].slug);
        int port = apphost_app_port(&app, &https);
        if (port != cases[i].port || https != cases[i].https)
            fail_msg("%s: got %d/%d", cases[i].slug, port, https);
    }
}

/* TestCompileHostnamePattern: errors. */
static void
test_pattern_errors(void **state)
{
    static const struct {
        const char *pattern;
        const char *err;
    } cases[] = {
        {"http://*.hi.com", "must not contain a scheme"},
        {"https://*.hi.com", "must not contain a scheme"},
        {"HTTPS://*.hi.com", "must not contain a scheme"},
        {".hi.com", "must not start or end with a period"},
        {"hi.com.", "must not start or end with a period"},
        {"", "must contain at least two labels"},
        {"hi", "must contain at least two labels"},
        {"*", "must contain at least two labels"},
        {"hi.com", "must contain exactly one asterisk"},
        {"**.hi.com", "must contain exactly one asterisk"},
        {"*.*.hi.com", "must contain exactly one asterisk"},
        {"hi.*.com", "must only contain an asterisk at the beginning"},
        {"a*.hi.com", "must only contain an asterisk at the beginning"},
        {"*.h_i.com", "contains invalid label"},
        {"*.hi-.com", "contains invalid label"},
        {"*.-hi.com", "contains invalid label"},
        {"*-.hi.com", "contains invalid label"},
        {"*..hi.com", "contains invalid label"},
        {"* .hi.com", "contains invalid label"},
        {"*.hi.com.:8080", "contains invalid label"},
        {"*.hi.com:80:80", "contains invalid label"},
        {"*.hi.com:abc", "has an invalid port"},
        {"*.hi.com:", "has an invalid port"},
        {"*.hi.com:70000", "has an invalid port"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct apphost_pattern p;
        char *err = NULL;
        int rc = apphost_pattern_compile(cases[i].pattern, &p, &err);
        if (rc != -EINVAL || err == NULL || strstr(err, cases[i].err) == NULL)
            fail_msg("%s: rc %d err %s", cases[i].pattern, rc, err ? err : "(none)");
        assert_null(p.host);
        free(err);
    }
    /* The message quotes the pattern as Coder does; a NULL err is allowed. */
    struct apphost_pattern p;
    char *err = NULL;
    assert_int_equal(apphost_pattern_compile("*.h_i.com", &p, &err), -EINVAL);
    assert_string_equal(err, "hostname pattern contains invalid label \"h_i\": \"*.h_i.com\"");
    free(err);
    assert_int_equal(apphost_pattern_compile("hi", &p, NULL), -EINVAL);
    /* Too long to be a hostname. */
    char big[600];
    memset(big, 'a', sizeof(big));
    memcpy(big, "*.", 2);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(apphost_pattern_compile(big, &p, NULL), -EINVAL);
}

struct match_case {
    const char *host;
    const char *want; /* NULL: no match */
};

static void
check_pattern(const char *pattern, const char *host, int port, const struct match_case *mc,
              size_t n)
{
    struct apphost_pattern p;
    char *err = NULL;
    if (apphost_pattern_compile(pattern, &p, &err) != 0)
        fail_msg("%s: %s", pattern, err);
    assert_string_equal(p.host, host);
    assert_int_equal(p.port, port);
    for (size_t i = 0; i < n; i++) {
        char *sub = (char *)"unset";
        bool ok = apphost_pattern_match(&p, mc[i].host, &sub);
        if (ok != (mc[i].want != NULL))
            fail_msg("%s ~ '%s': got %d", pattern, mc[i].host, ok);
        if (ok) {
            assert_string_equal(sub, mc[i].want);
            free(sub);
        } else {
            assert_null(sub);
        }
    }
    apphost_pattern_free(&p);
}

/* TestCompileHostnamePattern: valid patterns and their match cases. */
static void
test_pattern_match(void **state)
{
    static const struct match_case simple[] = {
        {"hi", NULL},
        {"hi.com", NULL},
        {"hi.hi.hi", NULL},
        {"abcd.hi", "abcd"},
        {"abcd.hi.", "abcd"},
        {"  abcd.hi.  ", "abcd"},
        {"abcd.hi:8080", "abcd"},
        {"ab__invalid__cd-.hi", "ab__invalid__cd-"},
        /* Beyond Coder's table. */
        {"ABCD.HI", "ABCD"},
        {"abcd.hi.:443", "abcd"},
        {".hi", NULL},
        {"abcd.hi:", NULL},
        {"abcd.hi:80:90", NULL},
        {"abcd.hi:8080.", NULL},
        {"abcd.hi..", NULL},
        {"x.abcd.hi", NULL},
        {"", NULL},
    };
    static const struct match_case multi[] = {
        {"hi.com", NULL},
        {"abcd.hi.com", "abcd"},
        {"ab__invalid__cd-.hi.com", "ab__invalid__cd-"},
        {"8080--main--dev--dean.hi.com", "8080--main--dev--dean"},
        {"abcd.hi.com.evil", NULL},
        {"abcd.evilhi.com", NULL},
    };
    static const struct match_case suffix1[] = {
        {"hi.com", NULL},
        {"abcd.hi.com", NULL},
        {"ab__invalid__cd-.hi.com", NULL},
        {"abcda.hi.com", "abcd"},
        {"ab__invalid__cd-a.hi.com", "ab__invalid__cd-"},
        {"a.hi.com", NULL}, /* the wildcard part may not be empty */
    };
    static const struct match_case suffix2[] = {
        {"hi.com", NULL},
        {"abcd.hi.com", NULL},
        {"ab__invalid__cd-.hi.com", NULL},
        {"abcd-test.hi.com", "abcd"},
        {"ab__invalid__cd-test.hi.com", "ab__invalid__cd"},
    };
    static const struct match_case with_port[] = {
        {"abcd.hi.com", "abcd"},
        {"abcd.hi.com:8080", "abcd"},
        {"abcd.hi.com:9999", "abcd"},
    };
    check_pattern("*.hi", "*.hi", 0, simple, ARRAY_LEN(simple));
    check_pattern("*.hi.com", "*.hi.com", 0, multi, ARRAY_LEN(multi));
    check_pattern("*a.hi.com", "*a.hi.com", 0, suffix1, ARRAY_LEN(suffix1));
    check_pattern("*-test.hi.com", "*-test.hi.com", 0, suffix2, ARRAY_LEN(suffix2));
    check_pattern("*.Hi.COM:8080", "*.hi.com", 8080, with_port, ARRAY_LEN(with_port));
    check_pattern("*--suffix.x.com", "*--suffix.x.com", 0, NULL, 0);
    check_pattern("*.com", "*.com", 0, NULL, 0);
}

static void
test_pattern_match_limits(void **state)
{
    struct apphost_pattern p;
    assert_int_equal(apphost_pattern_compile("*.hi.com", &p, NULL), 0);
    /* A wildcard part making the hostname longer than 253 bytes is not a hostname. */
    char host[300];
    memset(host, 'a', sizeof(host));
    strcpy(host + APPHOST_MAX_HOSTNAME - 7, ".hi.com");
    assert_true(apphost_pattern_match(&p, host, NULL));
    memmove(host + 1, host, strlen(host) + 1);
    assert_false(apphost_pattern_match(&p, host, NULL));
    assert_false(apphost_pattern_match(&p, NULL, NULL));
    assert_false(apphost_pattern_match(NULL, "a.hi.com", NULL));
    apphost_pattern_free(&p);
    apphost_pattern_free(&p); /* idempotent on a freed (zeroed) pattern */
}

static void
test_hostnames_match(void **state)
{
    static const struct {
        const char *a, *b;
        bool want;
    } cases[] = {
        {"example.com", "example.com", true},
        {"Example.COM", "example.com", true},
        {"example.com.", "example.com", true},
        {".example.com", "example.com", true},
        {"example.com:8080", "example.com", true},
        {"example.com:8080", "example.com:443", true},
        {"example.com.:80", "example.com", true},
        {"[::1]:80", "::1", true},
        {"[::1]", "[::1]:443", false}, /* no port: the brackets stay, as in Go */
        {"example.com", "example.org", false},
        {"a.example.com", "example.com", false},
        {"example.com", "", false},
        {"", "", true},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        if (apphost_hostnames_match(cases[i].a, cases[i].b) != cases[i].want)
            fail_msg("'%s' vs '%s'", cases[i].a, cases[i].b);
        if (apphost_hostnames_match(cases[i].b, cases[i].a) != cases[i].want)
            fail_msg("'%s' vs '%s' (swapped)", cases[i].b, cases[i].a);
    }
    assert_false(apphost_hostnames_match(NULL, "x"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_format_parse_round_trip),
        cmocka_unit_test(test_parse_length_limit),
        cmocka_unit_test(test_app_port),
        cmocka_unit_test(test_pattern_errors),
        cmocka_unit_test(test_pattern_match),
        cmocka_unit_test(test_pattern_match_limits),
        cmocka_unit_test(test_hostnames_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
