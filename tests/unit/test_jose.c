/* JOSE: our tokens round-trip, tokens made by an independent implementation (Python's
 * cryptography + zlib, the vectors below) verify and decrypt, and every tampering, wrong key,
 * wrong algorithm, oversize and expiry is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "jose/jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* key = bytes(range(32)) for kid "7"; HS512 key = bytes(range(64)) for kid "3". */
static const char *ext_jwe =
    "eyJhbGciOiJBMjU2R0NNS1ciLCJlbmMiOiJBMjU2R0NNIiwiaXYiOiJBQUVDQXdRRkJnY0lDUW9MIiwia2lkIjoiNyIs"
    "InRhZyI6Ilo0dFNnWElOV1I2Umlld0xacTVpbVEiLCJ6aXAiOiJERUYifQ.I2ewfK2MqHDhLPnkwZgKHvej8UOIAiUHRB"
    "qb-p3ogjE.FBUWFxgZGhscHR4f.OWJBk7S-zXmdeIU9zpTc_yI4_GXYQeSlCV66JsvelrqCw8gdtV8wG1gx8pZW795fGm"
    "mQDbBmxSvSEQ._xkuXAwusBXHbAgvGVNe3g";
static const char *ext_jws =
    "eyJhbGciOiJIUzUxMiIsImtpZCI6IjMifQ.eyJ1c2VyX2lkIjoidTEiLCJleHAiOjQxMDI0NDQ4MDB9.9kk_yPidD5Zi"
    "f5k-3o06MKMMkOqXTgZbHLLk4Ue3t2NW2izChxJ1ldnlnWfuV5ZhTJA6FE2ysEzH0xGvTjAJ6g";

static int
keys(const char *kid, uint8_t *key, size_t *len, void *arg)
{
    (void)arg;
    if (strcmp(kid, "7") == 0) {
        for (int i = 0; i < 32; i++)
            key[i] = (uint8_t)i;
        *len = 32;
        return 0;
    }
    if (strcmp(kid, "3") == 0) {
        for (int i = 0; i < 64; i++)
            key[i] = (uint8_t)i;
        *len = 64;
        return 0;
    }
    return -1;
}

/* A key table the cache test can change under it: kid "5" -> key byte fill (0: none). */
static uint8_t key5_fill = 0x55;
static int key5_lookups;

static int
key5(const char *kid, uint8_t *key, size_t *len, void *arg)
{
    (void)arg;
    key5_lookups++;
    if (strcmp(kid, "5") != 0 || key5_fill == 0)
        return -1;
    memset(key, key5_fill, 64);
    *len = 64;
    return 0;
}

static void
test_external_vectors(void **state)
{
    (void)state;
    const char *err = NULL;
    char kid[16];
    json_t *c = jose_decrypt_a256gcmkw(ext_jwe, keys, NULL, kid, sizeof(kid), &err);
    assert_non_null(c);
    assert_string_equal(kid, "7");
    assert_string_equal(json_string_value(json_object_get(c, "api_key")),
                        "abcdefghij-0123456789012345678901");
    json_decref(c);
    c = jose_verify_hs512(ext_jws, keys, NULL, kid, sizeof(kid), &err);
    assert_non_null(c);
    assert_string_equal(kid, "3");
    assert_string_equal(json_string_value(json_object_get(c, "user_id")), "u1");
    assert_int_equal(jose_check_time(c, 1700000000, 0, &err), 0);
    json_decref(c);
}

static void
test_round_trip(void **state)
{
    (void)state;
    uint8_t k64[64], k32[32];
    keys("3", k64, &(size_t){0}, NULL);
    keys("7", k32, &(size_t){0}, NULL);
    json_t *claims = json_pack("{s:s, s:i, s:{s:s}}", "user_id", "u2", "exp", 4102444800LL,
                               "request", "access_method", "path");
    const char *err = NULL;
    char *jws = jose_sign_hs512(k64, 64, "3", claims);
    assert_non_null(jws);
    json_t *back = jose_verify_hs512(jws, keys, NULL, NULL, 0, &err);
    assert_non_null(back);
    assert_true(json_equal(back, claims));
    json_decref(back);

    char *jwe = jose_encrypt_a256gcmkw(k32, "7", claims);
    assert_non_null(jwe);
    back = jose_decrypt_a256gcmkw(jwe, keys, NULL, NULL, 0, &err);
    assert_non_null(back);
    assert_true(json_equal(back, claims));
    json_decref(back);
    /* Fresh randomness each time. */
    char *jwe2 = jose_encrypt_a256gcmkw(k32, "7", claims);
    assert_string_not_equal(jwe, jwe2);
    free(jwe2);
    free(jws);
    free(jwe);
    json_decref(claims);
}

/* Flips one character of part `which` (0-based, split at '.'). */
static char *
tamper(const char *token, int which)
{
    char *t = xstrdup(token);
    char *p = t;
    for (int i = 0; i < which; i++)
        p = strchr(p, '.') + 1;
    p[1] = p[1] == 'A' ? 'B' : 'A';
    return t;
}

static void
test_refusals(void **state)
{
    (void)state;
    const char *err = NULL;
    for (int part = 0; part < 3; part++) {
        char *t = tamper(ext_jws, part);
        assert_null(jose_verify_hs512(t, keys, NULL, NULL, 0, &err));
        assert_non_null(err);
        free(t);
    }
    for (int part = 0; part < 5; part++) {
        char *t = tamper(ext_jwe, part);
        assert_null(jose_decrypt_a256gcmkw(t, keys, NULL, NULL, 0, &err));
        free(t);
    }
    /* alg "none", or HS256 where HS512 is required. */
    const char *none = "eyJhbGciOiJub25lIiwia2lkIjoiMyJ9.eyJ1c2VyX2lkIjoidTEifQ.";
    assert_null(jose_verify_hs512(none, keys, NULL, NULL, 0, &err));
    assert_string_equal(err, "token is not signed with HS512");
    /* An unknown kid. */
    uint8_t k64[64] = {0};
    json_t *claims = json_pack("{s:i}", "exp", 4102444800LL);
    char *other = jose_sign_hs512(k64, 64, "99", claims);
    assert_null(jose_verify_hs512(other, keys, NULL, NULL, 0, &err));
    assert_string_equal(err, "unknown signing key");
    free(other);
    /* The right kid, the wrong key. */
    other = jose_sign_hs512(k64, 64, "3", claims);
    assert_null(jose_verify_hs512(other, keys, NULL, NULL, 0, &err));
    assert_string_equal(err, "invalid token signature");
    free(other);
    /* Not a token at all, and far too long. */
    assert_null(jose_verify_hs512("a.b", keys, NULL, NULL, 0, &err));
    assert_null(jose_decrypt_a256gcmkw("a.b.c.d", keys, NULL, NULL, 0, &err));
    char *huge = xmalloc(JOSE_MAX_TOKEN + 10);
    memset(huge, 'a', JOSE_MAX_TOKEN + 9);
    huge[JOSE_MAX_TOKEN + 9] = '\0';
    huge[10] = huge[20] = '.';
    assert_null(jose_verify_hs512(huge, keys, NULL, NULL, 0, &err));
    assert_string_equal(err, "malformed token");
    free(huge);
    json_decref(claims);
}

static void
test_time(void **state)
{
    (void)state;
    const char *err = NULL;
    json_t *c = json_pack("{s:i, s:i}", "exp", 1000, "nbf", 900);
    assert_int_equal(jose_check_time(c, 950, 0, &err), 0);
    assert_int_equal(jose_check_time(c, 1001, 0, &err), -1);
    assert_string_equal(err, "token expired");
    assert_int_equal(jose_check_time(c, 1020, 30, &err), 0);
    assert_int_equal(jose_check_time(c, 800, 0, &err), -1);
    assert_string_equal(err, "token not valid yet");
    json_decref(c);
    c = json_pack("{s:s}", "user_id", "x");
    assert_int_equal(jose_check_time(c, 1, 0, &err), -1);
    assert_string_equal(err, "token has no expiry");
    json_decref(c);
}

/* The verified-token cache answers as jose_verify_hs512 does, and a key that is deleted or
 * replaced ends the tokens it verified even on a hit. */
static void
test_cache(void **state)
{
    (void)state;
    uint8_t k[64];
    memset(k, 0x55, sizeof(k));
    json_t *claims = json_pack("{s:s, s:I}", "sub", "u1", "exp", (json_int_t)4102444800);
    char *tok = jose_sign_hs512(k, sizeof(k), "5", claims);
    json_t *claims2 = json_pack("{s:s, s:I}", "sub", "u2", "exp", (json_int_t)4102444800);
    char *tok2 = jose_sign_hs512(k, sizeof(k), "5", claims2);
    struct jose_cache *c = jose_cache_new(1); /* one slot: tok and tok2 evict each other */
    const char *err = NULL;
    key5_fill = 0x55;
    for (int i = 0; i < 3; i++) {
        json_t *got = jose_cache_verify_hs512(c, tok, key5, NULL, &err);
        assert_non_null(got);
        assert_string_equal(json_string_value(json_object_get(got, "sub")), "u1");
        json_decref(got);
    }
    json_t *got = jose_cache_verify_hs512(c, tok2, key5, NULL, &err);
    assert_string_equal(json_string_value(json_object_get(got, "sub")), "u2");
    json_decref(got);
    got = jose_cache_verify_hs512(c, tok, key5, NULL, &err); /* evicted: verified again */
    assert_string_equal(json_string_value(json_object_get(got, "sub")), "u1");
    json_decref(got);
    /* A hit costs one key lookup (to see the key is still the same), no more. */
    key5_lookups = 0;
    got = jose_cache_verify_hs512(c, tok, key5, NULL, &err);
    assert_non_null(got);
    json_decref(got);
    assert_int_equal(key5_lookups, 1);
    /* Tampered (one signature character changed) is refused, cached sibling or not. */
    char *bad = xstrdup(tok);
    bad[strlen(bad) - 2] = bad[strlen(bad) - 2] == 'A' ? 'B' : 'A';
    assert_null(jose_cache_verify_hs512(c, bad, key5, NULL, &err));
    assert_string_equal(err, "invalid token signature");
    free(bad);
    /* The key is replaced: the cached token is no longer good. */
    key5_fill = 0x66;
    assert_null(jose_cache_verify_hs512(c, tok, key5, NULL, &err));
    assert_string_equal(err, "invalid token signature");
    /* Cached again under the old key, then the key is deleted. */
    key5_fill = 0x55;
    got = jose_cache_verify_hs512(c, tok, key5, NULL, &err);
    assert_non_null(got);
    json_decref(got);
    key5_fill = 0;
    assert_null(jose_cache_verify_hs512(c, tok, key5, NULL, &err));
    assert_string_equal(err, "unknown signing key");
    /* Not a token at all. */
    assert_null(jose_cache_verify_hs512(c, "", key5, NULL, &err));
    jose_cache_free(c);
    json_decref(claims);
    json_decref(claims2);
    free(tok);
    free(tok2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_external_vectors),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
