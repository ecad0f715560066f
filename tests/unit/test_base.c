/* src/lib/base: buffers, strings, files, hashes and encodings, UUIDs, time and Go durations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/bufq.h"
#include "base/crypto.h"
#include "base/timeutil.h"
#include "base/util.h"
#include "base/uuid.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void
test_buf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    for (int i = 0; i < 1000; i++)
        buf_printf(&b, "%03d", i % 1000);
    assert_int_equal(b.len, 3000);
    assert_int_equal(b.data[b.len], '\0');
    buf_consume(&b, 2997);
    assert_string_equal(b.data, "999");
    buf_putc(&b, '!');
    buf_puts(&b, "ok");
    assert_string_equal(b.data, "999!ok");
    buf_reset(&b);
    buf_put_json_string(&b, "a\"b\\c\nd\x01\x7f\u00e9");
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\nd\\u0001\\u007f\u00e9\"");
    buf_reset(&b);
    buf_puts(&b, "999!ok");
    char *s = buf_steal(&b);
    assert_string_equal(s, "999!ok");
    assert_int_equal(b.len, 0);
    free(s);
    /* Formatted in place, whatever the room left: more than it has, exactly it, none at all. */
    char big[300];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    buf_puts(&b, "ab");
    buf_printf(&b, "[%s]", big);
    assert_int_equal(b.len, 2 + 301);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data, "ab[xx", 5);
    assert_string_equal(b.data + b.len - 2, "x]");
    buf_fini(&b); /* a fresh buffer: 64 bytes at first */
    for (size_t fill = 0; fill < 80; fill++) {
        buf_reset(&b);
        for (size_t i = 0; i < fill; i++)
            buf_putc(&b, '.');
        size_t cap = b.cap;
        buf_printf(&b, "%d-%s", 42, "end");
        assert_int_equal(b.len, fill + 6);
        assert_string_equal(b.data + fill, "42-end");
        assert_true(b.cap >= cap);
    }
    buf_reset(&b);
    buf_cat(&b, "Host", ": ", "", "example.com", "\r\n", NULL);
    assert_string_equal(b.data, "Host: example.com\r\n");
    char *long_one = xasprintf("%s|%s", big, big); /* longer than xvasprintf's stack buffer */
    assert_int_equal(strlen(long_one), 2 * 299 + 1);
    free(long_one);
    buf_fini(&b);
}

/* Bytes come out of a block queue in the order they went in, whatever the sizes of appends and
 * takes (within one block, across the first small block, larger than a block), and a drained
 * queue holds no block. */
static void
test_bufq(void **state)
{
    (void)state;
    const size_t total = 1u << 20;
    char *want = xmalloc(total);
    for (size_t i = 0; i < total; i++)
        want[i] = (char)(i * 2654435761u >> 13);
    const size_t puts[] = {1, 4095, 2, 70000, 65536, 3, 200000, 17};
    const size_t takes[] = {5, 4096, 65536, 1, 100000, 9000, 300000};
    struct bufq q;
    bufq_init(&q);
    struct buf got;
    buf_init(&got);
    size_t in = 0;
    for (size_t i = 0; in < total; i++) {
        size_t n = puts[i % 8] < total - in ? puts[i % 8] : total - in;
        bufq_append(&q, want + in, n);
        in += n;
        assert_int_equal(q.len, in - got.len);
        if (i % 3 == 2)
            bufq_take(&q, &got, takes[i % 7]);
        assert_int_equal(q.len, in - got.len);
    }
    bufq_take(&q, &got, total); /* more than is queued: takes what there is */
    assert_int_equal(q.len, 0);
    assert_null(q.head);
    assert_null(q.tail);
    assert_int_equal(got.len, total);
    assert_memory_equal(got.data, want, total);
    bufq_take(&q, &got, 10); /* nothing queued: nothing taken */
    assert_int_equal(got.len, total);
    bufq_append(&q, "tail", 4); /* a drained queue takes appends again */
    bufq_fini(&q);
    assert_null(q.head);
    assert_int_equal(q.len, 0);
    buf_fini(&got);
    free(want);
}

static void
test_strings(void **state)
{
    (void)state;
    assert_true(str_eq_ci("Content-Type", "content-TYPE"));
    assert_false(str_eq_ci("a", "ab"));
    assert_true(str_has_prefix("coder wsproxy", "coder"));
    assert_false(str_has_prefix("co", "coder"));
    assert_true(str_has_suffix("x.example.com", ".example.com"));
    assert_false(str_has_suffix("com", ".example.com"));
    char *t = str_trim_dup(" \t value \n");
    assert_string_equal(t, "value");
    free(t);
    char low[] = "MiXeD";
    assert_string_equal(str_lower(low), "mixed");
    char *p = NULL;
    str_replace(&p, "one");
    str_replace(&p, "two");
    assert_string_equal(p, "two");
    str_replace(&p, NULL);
    assert_null(p);
    char *f = xasprintf("%s-%d", "n", 42);
    assert_string_equal(f, "n-42");
    free(f);
}

static void
test_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_base_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *deep = xasprintf("%s/a/b/c", dir);
    assert_int_equal(dir_make_all(deep, 0700), 0);
    char *path = xasprintf("%s/file", deep);
    assert_int_equal(file_write_atomic(path, "secret\n", 7, 0600), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *data;
    size_t len;
    assert_int_equal(file_read_all(path, 100, &data, &len), 0);
    assert_int_equal(len, 7);
    assert_string_equal(data, "secret\n");
    free(data);
    assert_int_equal(file_read_all(path, 3, &data, &len), -EFBIG);
    char *missing = xasprintf("%s/none", dir);
    assert_int_equal(file_read_all(missing, 100, &data, &len), -ENOENT);
    char *cmd = xasprintf("rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(missing);
    free(path);
    free(deep);
}

static void
test_crypto(void **state)
{
    (void)state;
    uint8_t h[32];
    sha256("abc", 3, h);
    char hex[65];
    hex_encode(h, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    uint8_t back[32];
    assert_int_equal(hex_decode(hex, 64, back, sizeof(back)), 32);
    assert_memory_equal(back, h, 32);
    assert_true(hex_decode("zz", 2, back, sizeof(back)) < 0);
    assert_true(hex_decode("abc", 3, back, sizeof(back)) < 0);
    assert_true(ct_equal("same", "same", 4));
    assert_false(ct_equal("same", "sane", 4));

    char *r = rand_hex(64);
    assert_int_equal(strlen(r), 64);
    assert_int_equal(strspn(r, "0123456789abcdef"), 64);
    char *r2 = rand_hex(64);
    assert_string_not_equal(r, r2);
    free(r);
    free(r2);
    char *s = rand_string(22, "ab");
    assert_int_equal(strlen(s), 22);
    assert_int_equal(strspn(s, "ab"), 22);
    free(s);

    /* RFC 4648 §10 vectors, standard alphabet without padding (Go RawStdEncoding). */
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
             {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "+/8"}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *e = b64_raw_encode((const uint8_t *)v[i].in, strlen(v[i].in));
        assert_string_equal(e, v[i].out);
        uint8_t d[16];
        long n = b64_raw_decode(e, d, sizeof(d));
        assert_int_equal(n, (long)strlen(v[i].in));
        assert_memory_equal(d, v[i].in, (size_t)n);
        free(e);
    }
    /* base64url, as JOSE uses it: "-" and "_", and one encoding per value. */
    char *u = b64url_encode((const uint8_t *)"\xfb\xff", 2);
    assert_string_equal(u, "-_8");
    free(u);
    uint8_t d[16];
    assert_int_equal(b64url_decode("-_8", 3, d, sizeof(d)), 2);
    assert_memory_equal(d, "\xfb\xff", 2);
    assert_int_equal(b64url_decode("-_9", 3, d, sizeof(d)), -1); /* non-zero spare bits */
    assert_int_equal(b64url_decode("+/8", 3, d, sizeof(d)), -1);
    assert_int_equal(b64url_decode("Zm9vY", 5, d, sizeof(d)), -1);
    assert_int_equal(b64url_decode("Zm9vYmFy", 8, d, 5), -1); /* too long for the buffer */
    assert_true(b64_raw_decode("Zm9v=", d, sizeof(d)) < 0);
    assert_true(b64_raw_decode("Zm-v", d, sizeof(d)) < 0);
}

static void
test_uuid(void **state)
{
    (void)state;
    char a[UUID_STR_LEN], b[UUID_STR_LEN];
    uuid_new(a);
    uuid_new(b);
    assert_int_equal(strlen(a), 36);
    assert_true(uuid_valid(a));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4'); /* version 4 */
    assert_non_null(strchr("89ab", a[19]));
    assert_false(uuid_valid("not-a-uuid"));
    assert_false(uuid_valid("0000000000000000000000000000000000000"));
    assert_true(uuid_is_nil("00000000-0000-0000-0000-000000000000"));
    assert_false(uuid_is_nil(a));
}

static void
test_time(void **state)
{
    (void)state;
    char out[64];
    time_format_rfc3339(0, out, sizeof(out));
    assert_true(str_has_prefix(out, "1970-01-01T00:00:00"));
    time_format_http(784111777, out, sizeof(out)); /* RFC 9110's example */
    assert_string_equal(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    int64_t ms;
    assert_int_equal(time_parse_rfc3339("2026-11-25T10:20:30.5Z", &ms), 0);
    time_format_rfc3339(ms, out, sizeof(out));
    int64_t again;
    assert_int_equal(time_parse_rfc3339(out, &again), 0);
    assert_int_equal(again, ms);
    assert_int_equal(time_parse_rfc3339("2026-11-25T10:20:30+01:00", &again), 0);
    assert_int_equal(ms - again, 3600 * 1000 + 500);
    assert_true(time_parse_rfc3339("yesterday", &ms) < 0);
    assert_true(time_mono_ms() > 0);

    static const struct {
        const char *in;
        int64_t ms;
        const char *fmt;
    } d[] = {{"1m0s", 60000, "1m0s"},        {"5s", 5000, "5s"},
             {"90s", 90000, "1m30s"},        {"1h30m", 5400000, "1h30m0s"},
             {"250ms", 250, "250ms"},        {"24h", 86400000, "24h0m0s"},
             {"1.5s", 1500, "1.5s"},         {"1.25s", 1250, "1.25s"},
             {"61.001s", 61001, "1m1.001s"}, {"0", 0, "0s"}};
    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
        assert_int_equal(duration_parse(d[i].in, &ms), 0);
        assert_int_equal(ms, d[i].ms);
        duration_format(ms, out, sizeof(out));
        assert_string_equal(out, d[i].fmt);
    }
    const char *bad[] = {"", "5", "s", "5x", "-", "1h-5m", "99999999999999999999h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(duration_parse(bad[i], &ms), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf),   cmocka_unit_test(test_bufq),   cmocka_unit_test(test_strings),
        cmocka_unit_test(test_files), cmocka_unit_test(test_crypto), cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
