/* Extra request headers from --header and --header-command (http/headers.c): what goes on the
 * wire, and the clear refusals of what must not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "http/headers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t
count(char **h)
{
    size_t n = 0;
    while (h && h[n])
        n++;
    return n;
}

/* headers_build over kv (NULL-terminated) and command; *err is NULL on success. */
static char **
build(const char *const *kv, const char *command, char **err)
{
    char *v[128];
    size_t n = 0;
    while (kv && kv[n]) {
        v[n] = (char *)kv[n];
        n++;
    }
    struct conf_strv sv = {v, n};
    char **out = NULL;
    *err = NULL;
    int rc = headers_build(&sv, command, &out, err);
    if (rc < 0) {
        assert_non_null(*err);
        return NULL;
    }
    assert_int_equal(rc, 0);
    assert_null(*err);
    return out;
}

static void
test_key_value_pairs(void **state)
{
    char *err;
    const char *kv[] = {"X-Team=infra", "Authorization=Bearer a=b=c", "X-Empty=", NULL};
    char **h = build(kv, NULL, &err);
    assert_int_equal(count(h), 3);
    assert_string_equal(h[0], "X-Team: infra");
    assert_string_equal(h[1], "Authorization: Bearer a=b=c"); /* split at the first '=' only */
    assert_string_equal(h[2], "X-Empty: ");
    headers_free(h);
    /* Nothing at all is an empty list, not NULL. */
    h = build(NULL, "", &err);
    assert_non_null(h);
    assert_int_equal(count(h), 0);
    headers_free(h);
    headers_free(NULL);
}

static void
test_bad_pairs_are_refused(void **state)
{
    char *err;
    const char *no_eq[] = {"X-Ok=1", "novalue", NULL};
    assert_null(build(no_eq, NULL, &err));
    assert_string_equal(err, "split header \"novalue\" had less than two parts");
    free(err);
    const char *no_name[] = {"=value", NULL};
    assert_null(build(no_name, NULL, &err));
    assert_string_equal(err, "split header \"=value\" had less than two parts");
    free(err);
    /* A line break would let a value start a header of its own (request splitting). */
    const char *crlf[] = {"X-A=1\r\nX-Injected: 2", NULL};
    assert_null(build(crlf, NULL, &err));
    assert_string_equal(err, "header values must not contain line breaks");
    free(err);
    const char *lf[] = {"X-A=1\nX", NULL};
    assert_null(build(lf, NULL, &err));
    free(err);
}

static void
test_header_count_is_bounded(void **state)
{
    char *err;
    char bufs[100][16];
    const char *kv[101];
    for (int i = 0; i < 100; i++) {
        snprintf(bufs[i], sizeof(bufs[i]), "X-H%d=%d", i, i);
        kv[i] = bufs[i];
    }
    kv[63] = NULL;
    char **h = build(kv, NULL, &err); /* 63 fit */
    assert_int_equal(count(h), 63);
    assert_string_equal(h[62], "X-H62: 62");
    headers_free(h);
    kv[63] = bufs[63];
    kv[100] = NULL;
    assert_null(build(kv, NULL, &err));
    assert_string_equal(err, "too many headers (limit 64)");
    free(err);
}

static void
test_header_command(void **state)
{
    char *err;
    const char *kv[] = {"X-First=flag", NULL};
    /* Flags first, then the command's lines: trimmed, blank ones skipped. */
    char **h = build(kv, "printf 'X-Cmd=one\\n\\n   X-Pad=two  \\r\\nX-Last=three'", &err);
    assert_int_equal(count(h), 4);
    assert_string_equal(h[0], "X-First: flag");
    assert_string_equal(h[1], "X-Cmd: one");
    assert_string_equal(h[2], "X-Pad: two");
    assert_string_equal(h[3], "X-Last: three");
    headers_free(h);
}

static void
test_header_command_failures(void **state)
{
    char *err;
    assert_null(build(NULL, "echo X-A=1; exit 3", &err));
    assert_string_equal(err, "failed to run header command \"echo X-A=1; exit 3\": exit status 3");
    free(err);
    assert_null(build(NULL, "echo not-a-pair", &err));
    assert_string_equal(err, "split header \"not-a-pair\" had less than two parts");
    free(err);
    /* Output is bounded (64 KiB): a runaway command is an error, not a huge header list. */
    assert_null(build(NULL, "yes X-A=1 | head -c 200000", &err));
    assert_non_null(strstr(err, "failed to run header command"));
    free(err);
}

static void
test_concat(void **state)
{
    char *a[] = {"A: 1", "B: 2", NULL};
    const char *extra[] = {"C: 3", NULL};
    char **v = headers_concat(a, extra);
    assert_int_equal(count(v), 3);
    assert_string_equal(v[0], "A: 1");
    assert_string_equal(v[2], "C: 3");
    assert_ptr_not_equal(v[0], a[0]); /* copies: v is freed on its own */
    headers_free(v);
    v = headers_concat(NULL, NULL);
    assert_non_null(v);
    assert_int_equal(count(v), 0);
    headers_free(v);
    v = headers_concat(NULL, extra);
    assert_int_equal(count(v), 1);
    headers_free(v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_value_pairs),
        cmocka_unit_test(test_bad_pairs_are_refused),
        cmocka_unit_test(test_header_count_is_bounded),
        cmocka_unit_test(test_header_command),
        cmocka_unit_test(test_header_command_failures),
        cmocka_unit_test(test_concat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
