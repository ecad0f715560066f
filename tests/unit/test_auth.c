/* Credentials: password hashes in Coder's format, API key and proxy token parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth.h"
#include "base/crypto.h"
#include "base/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
test_password_hash_format_and_verify(void **state)
{
    char *h = auth_password_hash("SomeSecurePassword!1");
    int iter = 0;
    char salt[64], key[128];
    assert_int_equal(sscanf(h, "$pbkdf2-sha256$%d$%63[^$]$%127s", &iter, salt, key), 3);
    assert_int_equal(iter, 65535);
    assert_int_equal(strlen(salt), 22); /* 16 bytes, raw base64 */
    assert_int_equal(strlen(key), 86);  /* 64 bytes, raw base64 */
    assert_true(auth_password_verify("SomeSecurePassword!1", h));
    assert_false(auth_password_verify("SomeSecurePassword!2", h));
    assert_false(auth_password_verify("", h));
    free(h);
}

static void
test_password_verify_bad_hashes(void **state)
{
    assert_false(auth_password_verify("x", ""));
    assert_false(auth_password_verify("x", NULL));
    assert_false(auth_password_verify("x", "$pbkdf2-sha256$0$AAAA$AAAA"));
    assert_false(auth_password_verify("x", "plain"));
}

static void
test_password_iteration_count_is_used(void **state)
{
    /* The count is read from the string (Coder has used 1024 and 65535). */
    char *h = auth_password_hash("pw");
    char *rewritten = xstrdup(h);
    /* Re-derive with 1024 iterations through the public API is not possible; instead check that
     * a changed count fails, proving the count is used. */
    char *p = strstr(rewritten, "$65535$");
    memcpy(p, "$65534$", 7);
    assert_false(auth_password_verify("pw", rewritten));
    free(h);
    free(rewritten);
}

static void
test_password_strength(void **state)
{
    assert_null(auth_password_check("SomeSecurePassword!1"));
    char *m = auth_password_check("password");
    assert_non_null(m);
    assert_string_equal(m, "insecure password, try including more special characters, using "
                           "uppercase letters, using numbers or using a longer password");
    free(m);
    char long_pw[80];
    memset(long_pw, 'a', 65);
    long_pw[65] = '\0';
    m = auth_password_check(long_pw);
    assert_string_equal(m, "password must be no more than 64 characters");
    free(m);
}

static void
test_apikey_roundtrip(void **state)
{
    char id[11], id2[11];
    char *token = NULL;
    uint8_t hash[32], hash2[32];
    auth_apikey_new(id, &token, hash);
    assert_int_equal(strlen(token), 33);
    assert_int_equal(token[10], '-');
    const char *detail = NULL;
    assert_int_equal(auth_apikey_split(token, id2, hash2, &detail), 0);
    assert_string_equal(id, id2);
    assert_memory_equal(hash, hash2, 32);
    free(token);
}

static void
test_apikey_bad_formats(void **state)
{
    char id[11];
    uint8_t hash[32];
    const char *detail = NULL;
    assert_int_equal(auth_apikey_split("nodash", id, hash, &detail), -1);
    assert_string_equal(detail, "Invalid API key format: incorrect amount of API key parts, "
                                "expected 2 got 1");
    assert_int_equal(auth_apikey_split("a-b-c", id, hash, &detail), -1);
    assert_string_equal(detail, "Invalid API key format: incorrect amount of API key parts, "
                                "expected 2 got 3");
    assert_int_equal(auth_apikey_split("short-0123456789012345678901", id, hash, &detail), -1);
    assert_string_equal(detail,
                        "Invalid API key format: invalid API key ID length, expected 10 got 5");
    assert_int_equal(auth_apikey_split("0123456789-short", id, hash, &detail), -1);
    assert_string_equal(detail,
                        "Invalid API key format: invalid API key secret length, expected 22 got 5");
}

static void
test_proxy_token(void **state)
{
    uint8_t hash[32], hash2[32];
    const char *pid = "2fb6500b-bb47-4783-a0db-dedde895b865";
    char *token = auth_proxy_token_new(pid, hash);
    assert_int_equal(strlen(token), 36 + 1 + 64);
    char id[37];
    const char *detail = NULL;
    assert_int_equal(auth_proxy_token_split(token, id, hash2, &detail), 0);
    assert_string_equal(id, pid);
    assert_memory_equal(hash, hash2, 32);
    assert_int_equal(auth_proxy_token_split("garbage", id, hash2, &detail), -1);
    assert_int_equal(
        auth_proxy_token_split("2fb6500b-bb47-4783-a0db-dedde895b865:short", id, hash2, &detail),
        -1);
    assert_string_equal(detail, "Invalid proxy token secret.");
    free(token);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_password_hash_format_and_verify),
        cmocka_unit_test(test_password_verify_bad_hashes),
        cmocka_unit_test(test_password_iteration_count_is_used),
        cmocka_unit_test(test_password_strength),
        cmocka_unit_test(test_apikey_roundtrip),
        cmocka_unit_test(test_apikey_bad_formats),
        cmocka_unit_test(test_proxy_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
