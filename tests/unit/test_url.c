/* URL validation and percent-encoding: what an operator's --access-url or a peer's registration
 * request is held to, and how query strings and path segments are decoded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "http/url.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
test_parse_good(void **state)
{
    static const struct {
        const char *in;
        const char *scheme, *userinfo, *host;
        int port;
        const char *path, *query, *fragment;
        bool ipv6, has_query;
    } cases[] = {
        {"http://example.com", "http", "", "example.com", 0, "", "", "", false, false},
        {"HTTPS://Coder.Example.COM:8443/", "https", "", "coder.example.com", 8443, "/", "", "",
         false, false},
        {"http://127.0.0.1:3000/api/v2?x=1&y=2#frag", "http", "", "127.0.0.1", 3000, "/api/v2",
         "x=1&y=2", "frag", false, true},
        {"https://[::1]:443/p", "https", "", "::1", 443, "/p", "", "", true, false},
        {"http://[2001:DB8::1]", "http", "", "2001:db8::1", 0, "", "", "", true, false},
        {"http://user:pa%20ss@host/", "http", "user:pa%20ss", "host", 0, "/", "", "", false, false},
        {"http://host/?", "http", "", "host", 0, "/", "", "", false, true},
        {"http://host:/", "http", "", "host", 0, "/", "", "", false, false},
        {"http://host:65535", "http", "", "host", 65535, "", "", "", false, false},
        {"http://host/a%2Fb/%e2%82%ac", "http", "", "host", 0, "/a%2Fb/%e2%82%ac", "", "", false,
         false},
        {"file:///etc/hosts", "file", "", "", 0, "/etc/hosts", "", "", false, false},
        {"mailto:someone@example.com", "mailto", "", "", 0, "someone@example.com", "", "", false,
         false},
        {"git+ssh://h/x", "git+ssh", "", "h", 0, "/x", "", "", false, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct url u;
        if (url_parse(cases[i].in, &u) != 0)
            fail_msg("%s: rejected", cases[i].in);
        assert_string_equal(u.scheme, cases[i].scheme);
        assert_string_equal(u.userinfo, cases[i].userinfo);
        assert_string_equal(u.host, cases[i].host);
        assert_int_equal(u.port, cases[i].port);
        assert_string_equal(u.path, cases[i].path);
        assert_string_equal(u.query, cases[i].query);
        assert_string_equal(u.fragment, cases[i].fragment);
        assert_int_equal(u.ipv6, cases[i].ipv6);
        assert_int_equal(u.has_query, cases[i].has_query);
        assert_int_equal(u.has_userinfo, cases[i].userinfo[0] != '\0');
        url_free(&u);
    }
}

static void
test_parse_bad(void **state)
{
    static const char *const bad[] = {
        "",
        "example.com",    /* no scheme */
        "//example.com/", /* no scheme */
        "1http://x",      /* scheme must start with a letter */
        "ht tp://x",      /* space */
        "http://exa mple.com",
        "http://x/a b",
        "http://x/\t",
        "http://x/\x01",
        "http://x/\x7f",
        " http://x",
        "http://x\n",
        "http://",           /* empty host */
        "https:///path",     /* empty host */
        "http://:80/",       /* empty host */
        "http:x",            /* http without authority */
        "http://host:65536", /* port too large */
        "http://host:99999999999",
        "http://host:-1",
        "http://host:8o",
        "http://host:80:80",
        "http://[::1",     /* unclosed bracket */
        "http://[::1]x",   /* junk after the bracket */
        "http://[zz::1]/", /* not an IPv6 address */
        "http://[]/",
        "http://[fe80::1%25eth0]/", /* zones are not accepted */
        "http://ho%41st/",          /* no escapes in hosts */
        "http://ho<st/",
        "http://x/%zz", /* bad escape in the path */
        "http://x/%4",
        "http://x/#%", /* bad escape in the fragment */
        NULL,
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        struct url u;
        memset(&u, 0xab, sizeof(u));
        if (url_parse(bad[i], &u) != -EINVAL)
            fail_msg("accepted: %s", bad[i] ? bad[i] : "(null)");
        /* Left empty: freeing it is safe. */
        assert_null(u.scheme);
        url_free(&u);
    }
    /* Longer than URL_MAX_LEN. */
    char *big = xmalloc(URL_MAX_LEN + 2);
    memset(big, 'a', URL_MAX_LEN + 1);
    memcpy(big, "http://x/", 9);
    big[URL_MAX_LEN + 1] = '\0';
    struct url u;
    assert_int_equal(url_parse(big, &u), -EINVAL);
    big[URL_MAX_LEN] = '\0';
    assert_int_equal(url_parse(big, &u), 0);
    url_free(&u);
    free(big);
}

static void
test_host_port(void **state)
{
    static const struct {
        const char *in, *want;
        int def;
    } cases[] = {
        {"http://example.com", "example.com:80", 80},
        {"https://example.com", "example.com:443", 443},
        {"https://example.com:8443/x", "example.com:8443", 443},
        {"wss://h", "h:443", 443},
        {"ws://h", "h:80", 80},
        {"http://[::1]", "[::1]:80", 80},
        {"https://[::1]:9443", "[::1]:9443", 443},
        {"ftp://h", "h", 0},
        {"ftp://h:21", "h:21", 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct url u;
        assert_int_equal(url_parse(cases[i].in, &u), 0);
        char *hp = url_host_port(&u);
        assert_string_equal(hp, cases[i].want);
        assert_int_equal(url_default_port(&u), cases[i].def);
        free(hp);
        url_free(&u);
    }
}

static void
test_is_http_base(void **state)
{
    static const struct {
        const char *in;
        bool want;
    } cases[] = {
        {"http://proxy.example.com", true},
        {"https://proxy.example.com/", true},
        {"https://proxy.example.com:8443", true},
        {"http://127.0.0.1:3001", true},
        {"http://[::1]:3001/", true},
        {"https://proxy.example.com/path", false},
        {"https://proxy.example.com//", false},
        {"https://proxy.example.com/?x=1", false},
        {"https://proxy.example.com/?", false},
        {"https://proxy.example.com/#f", false},
        {"https://user@proxy.example.com/", false},
        {"ftp://proxy.example.com", false},
        {"proxy.example.com", false},
        {"", false},
        {NULL, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        if (url_is_http_base(cases[i].in) != cases[i].want)
            fail_msg("%s", cases[i].in ? cases[i].in : "(null)");
    }
}

static void
test_unescape(void **state)
{
    static const struct {
        const char *in;
        bool plus;
        const char *want; /* NULL: rejected */
    } cases[] = {
        {"abc", false, "abc"}, {"a%20b", false, "a b"}, {"a+b", false, "a+b"},
        {"a+b", true, "a b"},  {"%2f%2F", false, "//"}, {"%e2%82%AC", false, "\xe2\x82\xac"},
        {"%", false, NULL},    {"%4", false, NULL},     {"%4g", false, NULL},
        {"%g4", false, NULL},  {"a%00b", false, NULL},  {"", false, ""},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *got = url_unescape(cases[i].in, strlen(cases[i].in), cases[i].plus);
        if (cases[i].want == NULL) {
            if (got != NULL)
                fail_msg("%s: accepted", cases[i].in);
            continue;
        }
        if (got == NULL)
            fail_msg("%s: rejected", cases[i].in);
        assert_string_equal(got, cases[i].want);
        free(got);
    }
    /* Only n bytes are read: an escape cut by n is malformed. */
    assert_null(url_unescape("ab%41", 4, false));
    char *two = url_unescape("ab%41", 2, false);
    assert_string_equal(two, "ab");
    free(two);
}

static void
test_escape_query(void **state)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"abcXYZ019-_.~", "abcXYZ019-_.~"},
        {"a b", "a+b"},
        {"a&b=c?d/e:f@g+h#i%j", "a%26b%3Dc%3Fd%2Fe%3Af%40g%2Bh%23i%25j"},
        {"\xe2\x82\xac", "%E2%82%AC"},
        {"", ""},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *got = url_escape_query(cases[i].in);
        assert_string_equal(got, cases[i].want);
        /* And it decodes back. */
        char *back = url_unescape(got, strlen(got), true);
        assert_string_equal(back, cases[i].in);
        free(back);
        free(got);
    }
}

static void
test_query_get(void **state)
{
    static const struct {
        const char *query, *key, *want;
    } cases[] = {
        {"a=1&b=2", "a", "1"},
        {"a=1&b=2", "b", "2"},
        {"a=1&b=2", "c", NULL},
        {"a=1&a=2", "a", "1"},
        {"flag&x=y", "flag", ""},
        {"flag=&x=y", "flag", ""},
        {"redirect_uri=http%3A%2F%2Fx%2F%3Fa%3Db", "redirect_uri", "http://x/?a=b"},
        {"q=a+b%20c", "q", "a b c"},
        {"my+key=v", "my key", "v"},
        {"k%3D=v", "k=", "v"},
        {"a=1=2", "a", "1=2"},
        {"a=%zz&a=ok", "a", "ok"}, /* a bad pair is skipped */
        {"a=1;b=2&a=3", "a", "3"}, /* so is a pair with ';' (Go 1.17+) */
        {"&&a=1&", "a", "1"},
        {"", "a", NULL},
        {"=v", "", "v"},
        {"a=%00", "a", NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *got = url_query_get(cases[i].query, cases[i].key);
        if (cases[i].want == NULL) {
            if (got != NULL)
                fail_msg("%s [%s]: got %s", cases[i].query, cases[i].key, got);
            continue;
        }
        if (got == NULL)
            fail_msg("%s [%s]: absent", cases[i].query, cases[i].key);
        assert_string_equal(got, cases[i].want);
        free(got);
    }
    assert_null(url_query_get(NULL, "a"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good), cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_host_port),  cmocka_unit_test(test_is_http_base),
        cmocka_unit_test(test_unescape),   cmocka_unit_test(test_escape_query),
        cmocka_unit_test(test_query_get),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
