/* Prometheus registry: the exact text a scraper receives, limits on peer-chosen label values,
 * and the process collector. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "metrics/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const code_method[] = {"method", "code"};

static void
test_counter_render(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    struct metrics_family *c =
        metrics_counter_new(reg, "requests_total", "Requests served.", 2, code_method);
    const char *get200[] = {"GET", "200"};
    const char *post500[] = {"POST", "500"};
    const char *get404[] = {"GET", "404"};
    assert_non_null(c);
    assert_int_equal(metrics_counter_add(c, post500, 1), 0);
    assert_int_equal(metrics_counter_add(c, get200, 2), 0);
    assert_int_equal(metrics_counter_add(c, get200, 0.5), 0);
    assert_int_equal(metrics_counter_add(c, get404, 1e6), 0);
    /* Counters never go down. */
    assert_int_equal(metrics_counter_add(c, get404, -1), -EINVAL);
    char *out = metrics_registry_render(reg);
    /* Labels in name order (code before method), series sorted by those values. */
    assert_string_equal(out, "# HELP requests_total Requests served.\n"
                             "# TYPE requests_total counter\n"
                             "requests_total{code=\"200\",method=\"GET\"} 2.5\n"
                             "requests_total{code=\"404\",method=\"GET\"} 1e+06\n"
                             "requests_total{code=\"500\",method=\"POST\"} 1\n");
    free(out);
    metrics_registry_free(reg);
}

static void
test_gauge_render_and_numbers(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    static const char *const k[] = {"k"};
    struct metrics_family *g = metrics_gauge_new(reg, "g", "A gauge.", 1, k);
    struct metrics_family *plain = metrics_gauge_new(reg, "a_plain", "", 0, NULL);
    static const struct {
        const char *label;
        double v;
    } cases[] = {
        {"a", 0.1},       {"b", -3},        {"c", 123456},   {"d", 1234567},
        {"e", 0.0001},    {"f", 0.00001},   {"g", NAN},      {"h", INFINITY},
        {"i", -INFINITY}, {"j", 1.0 / 3.0}, {"k", 24576000},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const char *v[] = {cases[i].label};
        assert_int_equal(metrics_gauge_set(g, v, cases[i].v), 0);
    }
    const char *a[] = {"a"};
    assert_int_equal(metrics_gauge_add(g, a, 0.2), 0);
    assert_int_equal(metrics_gauge_set(plain, NULL, 7), 0);
    assert_int_equal(metrics_gauge_add(plain, NULL, -2), 0);
    /* Wrong operation for the family type. */
    assert_int_equal(metrics_counter_add(g, a, 1), -EINVAL);
    assert_int_equal(metrics_histogram_observe(g, a, 1), -EINVAL);
    char *out = metrics_registry_render(reg);
    assert_string_equal(out, "# TYPE a_plain gauge\n"
                             "a_plain 5\n"
                             "# HELP g A gauge.\n"
                             "# TYPE g gauge\n"
                             "g{k=\"a\"} 0.30000000000000004\n"
                             "g{k=\"b\"} -3\n"
                             "g{k=\"c\"} 123456\n"
                             "g{k=\"d\"} 1.234567e+06\n"
                             "g{k=\"e\"} 0.0001\n"
                             "g{k=\"f\"} 1e-05\n"
                             "g{k=\"g\"} NaN\n"
                             "g{k=\"h\"} +Inf\n"
                             "g{k=\"i\"} -Inf\n"
                             "g{k=\"j\"} 0.3333333333333333\n"
                             "g{k=\"k\"} 2.4576e+07\n");
    free(out);
    /* A removed series disappears; a family without series is not rendered at all. */
    assert_int_equal(metrics_series_remove(plain, NULL), 0);
    assert_int_equal(metrics_series_remove(plain, NULL), -ENOENT);
    out = metrics_registry_render(reg);
    assert_null(strstr(out, "a_plain"));
    free(out);
    metrics_registry_free(reg);
}

static void
test_histogram_render(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    static const double b[] = {0.005, 0.1, 1, 2.5};
    static const char *const path[] = {"path"};
    struct metrics_family *h =
        metrics_histogram_new(reg, "latency_seconds", "Latency.", 1, path, b, ARRAY_LEN(b));
    struct metrics_family *u =
        metrics_histogram_new(reg, "unlabelled_seconds", "Unlabelled.", 0, NULL, b, 2);
    const char *x[] = {"/x"};
    assert_non_null(h);
    metrics_histogram_observe(h, x, 0.005); /* on a bound: counted in that bucket */
    metrics_histogram_observe(h, x, 0.05);
    metrics_histogram_observe(h, x, 0.5);
    metrics_histogram_observe(h, x, 30);
    metrics_histogram_observe(u, NULL, 0.01);
    char *out = metrics_registry_render(reg);
    assert_string_equal(out, "# HELP latency_seconds Latency.\n"
                             "# TYPE latency_seconds histogram\n"
                             "latency_seconds_bucket{path=\"/x\",le=\"0.005\"} 1\n"
                             "latency_seconds_bucket{path=\"/x\",le=\"0.1\"} 2\n"
                             "latency_seconds_bucket{path=\"/x\",le=\"1\"} 3\n"
                             "latency_seconds_bucket{path=\"/x\",le=\"2.5\"} 3\n"
                             "latency_seconds_bucket{path=\"/x\",le=\"+Inf\"} 4\n"
                             "latency_seconds_sum{path=\"/x\"} 30.555\n"
                             "latency_seconds_count{path=\"/x\"} 4\n"
                             "# HELP unlabelled_seconds Unlabelled.\n"
                             "# TYPE unlabelled_seconds histogram\n"
                             "unlabelled_seconds_bucket{le=\"0.005\"} 0\n"
                             "unlabelled_seconds_bucket{le=\"0.1\"} 1\n"
                             "unlabelled_seconds_bucket{le=\"+Inf\"} 1\n"
                             "unlabelled_seconds_sum 0.01\n"
                             "unlabelled_seconds_count 1\n");
    free(out);
    metrics_registry_free(reg);
}

static void
test_histogram_default_and_bad_buckets(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    static const double unsorted[] = {1, 0.5};
    static const double with_inf[] = {1, INFINITY};
    assert_null(metrics_histogram_new(reg, "h1", "", 0, NULL, unsorted, 2));
    struct metrics_family *h2 = metrics_histogram_new(reg, "h2", "", 0, NULL, with_inf, 2);
    struct metrics_family *h3 = metrics_histogram_new(reg, "h3", "", 0, NULL, NULL, 0);
    metrics_histogram_observe(h2, NULL, 3);
    metrics_histogram_observe(h3, NULL, 3);
    char *out = metrics_registry_render(reg);
    /* +Inf given explicitly is not repeated. */
    assert_non_null(strstr(out, "h2_bucket{le=\"1\"} 0\nh2_bucket{le=\"+Inf\"} 1\nh2_sum 3\n"));
    /* client_golang's default buckets. */
    assert_non_null(strstr(out, "h3_bucket{le=\"0.005\"} 0\nh3_bucket{le=\"0.01\"} 0\n"));
    assert_non_null(strstr(out, "h3_bucket{le=\"10\"} 1\nh3_bucket{le=\"+Inf\"} 1\n"));
    free(out);
    metrics_registry_free(reg);
}

static void
test_unlabelled_exists_at_zero(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    static const double b[] = {1};
    static const char *const l[] = {"l"};
    metrics_histogram_new(reg, "checks_seconds", "Checks.", 0, NULL, b, 1);
    metrics_counter_new(reg, "events_total", "Events.", 0, NULL);
    metrics_counter_new(reg, "labelled_total", "Not yet used.", 1, l);
    char *out = metrics_registry_render(reg);
    assert_string_equal(out, "# HELP checks_seconds Checks.\n"
                             "# TYPE checks_seconds histogram\n"
                             "checks_seconds_bucket{le=\"1\"} 0\n"
                             "checks_seconds_bucket{le=\"+Inf\"} 0\n"
                             "checks_seconds_sum 0\n"
                             "checks_seconds_count 0\n"
                             "# HELP events_total Events.\n"
                             "# TYPE events_total counter\n"
                             "events_total 0\n");
    free(out);
    metrics_registry_free(reg);
}

static void
test_escaping(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    static const char *const l[] = {"v"};
    struct metrics_family *g =
        metrics_gauge_new(reg, "esc", "Back\\slash and\nnew \"line\".", 1, l);
    const char *v1[] = {"a\\b\"c\nd"};
    const char *v2[] = {"bad\xff utf8 \xc3\xa9"};
    metrics_gauge_set(g, v1, 1);
    metrics_gauge_set(g, v2, 2);
    char *out = metrics_registry_render(reg);
    assert_string_equal(out, "# HELP esc Back\\\\slash and\\nnew \"line\".\n"
                             "# TYPE esc gauge\n"
                             "esc{v=\"a\\\\b\\\"c\\nd\"} 1\n"
                             "esc{v=\"bad\xef\xbf\xbd utf8 \xc3\xa9\"} 2\n");
    free(out);
    metrics_registry_free(reg);
}

static void
test_invalid_definitions(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    static const char *const dup[] = {"a", "a"};
    static const char *const reserved[] = {"__name"};
    static const char *const le[] = {"le"};
    static const char *const dash[] = {"a-b"};
    assert_null(metrics_counter_new(reg, "9starts_with_digit", "", 0, NULL));
    assert_null(metrics_counter_new(reg, "has space", "", 0, NULL));
    assert_null(metrics_counter_new(reg, "", "", 0, NULL));
    assert_null(metrics_counter_new(reg, "x", "", 2, dup));
    assert_null(metrics_counter_new(reg, "x", "", 1, reserved));
    assert_null(metrics_counter_new(reg, "x", "", 1, dash));
    assert_null(metrics_histogram_new(reg, "x", "", 1, le, NULL, 0));
    assert_non_null(metrics_gauge_new(reg, "x", "", 1, le)); /* le is only reserved in histograms */
    assert_null(metrics_counter_new(reg, "x", "", 0, NULL)); /* already registered */
    assert_non_null(metrics_counter_new(reg, "ns:sub_total", "", 0, NULL));
    /* Operations on a family that failed to register are harmless no-ops. */
    assert_int_equal(metrics_counter_add(NULL, NULL, 1), 0);
    metrics_registry_free(reg);
}

static void
test_series_limit(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    static const char *const peer[] = {"peer"};
    struct metrics_family *c = metrics_counter_new(reg, "peer_total", "", 1, peer);
    char name[32];
    for (int i = 0; i < METRICS_MAX_SERIES; i++) {
        const char *v[] = {name};
        snprintf(name, sizeof(name), "p%05d", i);
        assert_int_equal(metrics_counter_add(c, v, 1), 0);
    }
    const char *extra[] = {"one-too-many"};
    const char *first[] = {"p00000"};
    assert_int_equal(metrics_counter_add(c, extra, 1), -ENOSPC);
    assert_int_equal(metrics_counter_add(c, extra, 1), -ENOSPC);
    /* Existing series still count. */
    assert_int_equal(metrics_counter_add(c, first, 1), 0);
    /* A label value over the limit is dropped, not truncated. */
    char *huge = xmalloc(METRICS_MAX_LABEL_VALUE + 2);
    memset(huge, 'x', METRICS_MAX_LABEL_VALUE + 1);
    huge[METRICS_MAX_LABEL_VALUE + 1] = '\0';
    const char *hv[] = {huge};
    assert_int_equal(metrics_counter_add(c, hv, 1), -ENOSPC);
    free(huge);

    char *out = metrics_registry_render(reg);
    assert_null(strstr(out, "one-too-many"));
    assert_non_null(strstr(out, "peer_total{peer=\"p00000\"} 2\n"));
    assert_non_null(strstr(out, "peer_total{peer=\"p09999\"} 1\n"));
    assert_non_null(strstr(out, "# TYPE metrics_dropped_observations_total counter\n"
                                "metrics_dropped_observations_total{metric=\"peer_total\"} 3\n"));
    /* Exactly the first 10,000 series, in sorted order. */
    size_t lines = 0;
    for (const char *p = strstr(out, "peer_total{"); p; p = strstr(p + 1, "\npeer_total{"))
        lines++;
    assert_int_equal(lines, METRICS_MAX_SERIES);
    free(out);

    /* A lower limit set by the owner applies too. */
    struct metrics_family *g = metrics_gauge_new(reg, "small", "", 1, peer);
    metrics_family_set_max_series(g, 1);
    assert_int_equal(metrics_gauge_set(g, first, 1), 0);
    assert_int_equal(metrics_gauge_set(g, extra, 1), -ENOSPC);
    metrics_registry_free(reg);
}

static void *
hammer(void *arg)
{
    struct metrics_family *c = arg;
    char name[16];
    for (int i = 0; i < 20000; i++) {
        const char *v[] = {name};
        snprintf(name, sizeof(name), "s%d", i % 50);
        metrics_counter_add(c, v, 1);
    }
    return NULL;
}

/* Updates from the event loop and the store thread, and scrapes, may race: nothing is lost. */
static void
test_concurrent_updates(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    static const char *const l[] = {"s"};
    struct metrics_family *c = metrics_counter_new(reg, "hits_total", "", 1, l);
    pthread_t th[4];
    for (size_t i = 0; i < ARRAY_LEN(th); i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, c), 0);
    for (int i = 0; i < 20; i++)
        free(metrics_registry_render(reg));
    for (size_t i = 0; i < ARRAY_LEN(th); i++)
        pthread_join(th[i], NULL);
    char *out = metrics_registry_render(reg);
    /* 4 threads x 20000 adds over 50 series: 1600 each. */
    assert_non_null(strstr(out, "hits_total{s=\"s0\"} 1600\n"));
    assert_non_null(strstr(out, "hits_total{s=\"s49\"} 1600\n"));
    free(out);
    metrics_registry_free(reg);
}

static double
answer(void *arg)
{
    return *(double *)arg;
}

static void
test_func_gauge(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    double v = 42;
    assert_non_null(metrics_gauge_func_new(reg, "answer", "The answer.", answer, &v));
    /* Read at scrape time, so later changes show. */
    v = 43;
    char *out = metrics_registry_render(reg);
    assert_string_equal(out, "# HELP answer The answer.\n# TYPE answer gauge\nanswer 43\n");
    free(out);
    /* NaN leaves it out of this scrape. */
    v = NAN;
    out = metrics_registry_render(reg);
    assert_string_equal(out, "");
    free(out);
    /* It holds no series to update. */
    assert_null(metrics_gauge_func_new(reg, "answer", "", answer, &v));
    metrics_registry_free(reg);
}

/* The value of the unlabelled sample "name value" in text, or NAN. */
static double
sample(const char *text, const char *name)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "\n%s ", name);
    const char *p = strstr(text, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

static void
test_process_metrics(void **state)
{
    struct metrics_registry *reg = metrics_registry_new();
    assert_int_equal(metrics_process_register(reg), 0);
    /* Burn a little CPU so the counter is above zero. */
    volatile double x = 0;
    for (long i = 0; i < 20000000; i++)
        x += (double)i;
    char *out = metrics_registry_render(reg);
    assert_non_null(strstr(out, "# HELP process_cpu_seconds_total Total user and system CPU time "
                                "spent in seconds.\n# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(out, "# TYPE process_resident_memory_bytes gauge\n"));
    double cpu = sample(out, "process_cpu_seconds_total");
    double rss = sample(out, "process_resident_memory_bytes");
    double vsz = sample(out, "process_virtual_memory_bytes");
    double fds = sample(out, "process_open_fds");
    double maxfds = sample(out, "process_max_fds");
    double start = sample(out, "process_start_time_seconds");
    assert_true(cpu > 0 && cpu < 3600);
    assert_true(rss > 100000 && rss < 1e11);
    assert_true(vsz >= rss);
    assert_true(fds >= 3 && fds <= maxfds);
    double now = (double)time(NULL);
    assert_true(start > now - 3600 && start <= now + 2);
    assert_false(isnan(sample(out, "process_virtual_memory_max_bytes")));
    free(out);
    metrics_registry_free(reg);
}

/* promtool is the reference parser: everything we render must pass its lint. */
static void
test_promtool_accepts_output(void **state)
{
    if (access("/usr/bin/promtool", X_OK) != 0) {
        skip();
        return;
    }
    struct metrics_registry *reg = metrics_registry_new();
    static const char *const lbl[] = {"path", "method"};
    static const double b[] = {0.1, 1};
    struct metrics_family *c =
        metrics_counter_new(reg, "app_requests_total", "Requests with \\ and\nnewline.", 2, lbl);
    struct metrics_family *h =
        metrics_histogram_new(reg, "app_latency_seconds", "Latency.", 2, lbl, b, 2);
    struct metrics_family *small = metrics_counter_new(reg, "app_small_total", "Small.", 1, lbl);
    const char *v[] = {"/a\"b\\c\nd", "GET"};
    const char *w[] = {"bad\xfe", "POST"};
    metrics_family_set_max_series(small, 0);
    metrics_counter_add(c, v, 1);
    metrics_counter_add(c, w, 2);
    metrics_counter_add(small, v, 1); /* dropped: fills metrics_dropped_observations_total */
    metrics_histogram_observe(h, v, 0.5);
    metrics_process_register(reg);
    char *out = metrics_registry_render(reg);

    char path[] = "/tmp/test_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, out, strlen(out)), (ssize_t)strlen(out));
    close(fd);
    char *cmd = xasprintf("/usr/bin/promtool check metrics < %s > /dev/null 2>&1", path);
    int rc = system(cmd);
    if (rc != 0) {
        fputs(out, stderr);
        char *show = xasprintf("/usr/bin/promtool check metrics < %s", path);
        (void)!system(show);
        free(show);
    }
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    unlink(path);
    free(cmd);
    free(out);
    metrics_registry_free(reg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_render),
        cmocka_unit_test(test_gauge_render_and_numbers),
        cmocka_unit_test(test_histogram_render),
        cmocka_unit_test(test_histogram_default_and_bad_buckets),
        cmocka_unit_test(test_unlabelled_exists_at_zero),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_invalid_definitions),
        cmocka_unit_test(test_series_limit),
        cmocka_unit_test(test_concurrent_updates),
        cmocka_unit_test(test_func_gauge),
        cmocka_unit_test(test_process_metrics),
        cmocka_unit_test(test_promtool_accepts_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
