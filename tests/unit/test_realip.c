/* Trusted forwarding headers (http/realip.c): only a trusted peer names the client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/realip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct realip *
make(const char *header, const char *origin1, const char *origin2)
{
    char *h[] = {(char *)header};
    char *o[] = {(char *)origin1, (char *)origin2};
    struct conf_strv hs = {h, 1}, os = {o, origin2 ? 2 : 1};
    char *err = NULL;
    struct realip *rc = realip_new(&hs, &os, &err);
    assert_null(err);
    assert_non_null(rc);
    return rc;
}

static const char *
apply(const struct realip *rc, const char *peer, const char *name, const char *value)
{
    static struct http_request req;
    static struct http_header hdr;
    memset(&req, 0, sizeof(req));
    snprintf(req.remote_ip, sizeof(req.remote_ip), "%s", peer);
    hdr.name = (char *)name;
    hdr.value = (char *)value;
    req.headers = &hdr;
    req.nheaders = name ? 1 : 0;
    realip_apply(rc, &req);
    return req.remote_ip;
}

static void
test_trusted_peer_names_the_client(void **state)
{
    (void)state;
    struct realip *rc = make("X-Forwarded-For", "10.0.0.0/8", "fd00::/8");
    assert_string_equal(apply(rc, "10.1.2.3", "X-Forwarded-For", "203.0.113.7, 10.1.2.3"),
                        "203.0.113.7");
    assert_string_equal(apply(rc, "10.1.2.3", "x-forwarded-for", " 2001:db8::1 "), "2001:db8::1");
    assert_string_equal(apply(rc, "fd00::5", "X-Forwarded-For", "198.51.100.1"), "198.51.100.1");
    /* An IPv4-mapped peer is its IPv4 address. */
    assert_string_equal(apply(rc, "::ffff:10.9.9.9", "X-Forwarded-For", "198.51.100.2"),
                        "198.51.100.2");
    realip_free(rc);
}

static void
test_untrusted_or_garbage_is_ignored(void **state)
{
    (void)state;
    struct realip *rc = make("X-Forwarded-For", "10.0.0.0/8", NULL);
    assert_string_equal(apply(rc, "11.0.0.1", "X-Forwarded-For", "203.0.113.7"), "11.0.0.1");
    assert_string_equal(apply(rc, "10.0.0.1", "X-Forwarded-For", "evil"), "10.0.0.1");
    assert_string_equal(apply(rc, "10.0.0.1", "X-Forwarded-For", ""), "10.0.0.1");
    assert_string_equal(apply(rc, "10.0.0.1", "True-Client-Ip", "203.0.113.7"), "10.0.0.1");
    assert_string_equal(apply(rc, "10.0.0.1", NULL, NULL), "10.0.0.1");
    assert_string_equal(apply(NULL, "10.0.0.1", "X-Forwarded-For", "203.0.113.7"), "10.0.0.1");
    realip_free(rc);
}

static void
test_bad_origins_are_one_line(void **state)
{
    (void)state;
    const char *bad[] = {"10.0.0.1", "10.0.0.0/33", "::/129", "x/8", "10.0.0.0/", "/8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *h[] = {"X-Forwarded-For"};
        char *o[] = {(char *)bad[i]};
        struct conf_strv hs = {h, 1}, os = {o, 1};
        char *err = NULL;
        assert_null(realip_new(&hs, &os, &err));
        assert_non_null(err);
        assert_non_null(strstr(err, "invalid CIDR address"));
        free(err);
    }
    /* Nothing trusted without both. */
    struct conf_strv none = {0}, hs = {(char *[]){"X-Forwarded-For"}, 1};
    char *err = NULL;
    assert_null(realip_new(&hs, &none, &err));
    assert_null(err);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trusted_peer_names_the_client),
        cmocka_unit_test(test_untrusted_or_garbage_is_ignored),
        cmocka_unit_test(test_bad_origins_are_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
