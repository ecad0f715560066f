/* The process_* metrics (metrics/process.c): client_golang's names, help texts and types, and
 * values that follow what the process does (descriptors opened, memory touched, CPU burned,
 * limits set), each checked against a source other than the one the collector reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "metrics/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static struct metrics_registry *reg;

static int
setup(void **state)
{
    reg = metrics_registry_new();
    return metrics_process_register(reg);
}

static int
teardown(void **state)
{
    metrics_registry_free(reg);
    return 0;
}

/* The value of the unlabelled sample name in a fresh rendering. */
static double
sample(const char *name)
{
    char *out = metrics_registry_render(reg);
    char pat[128];
    snprintf(pat, sizeof(pat), "\n%s ", name);
    const char *p = strstr(out, pat);
    double v = p ? strtod(p + strlen(pat), NULL) : NAN;
    free(out);
    return v;
}

static void
test_names_help_and_types(void **state)
{
    /* client_golang's process collector, word for word. */
    static const char *const want[] = {
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\n",
        "# HELP process_max_fds Maximum number of open file descriptors.\n"
        "# TYPE process_max_fds gauge\n",
        "# HELP process_open_fds Number of open file descriptors.\n"
        "# TYPE process_open_fds gauge\n",
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\n",
        "# HELP process_start_time_seconds Start time of the process since unix epoch in "
        "seconds.\n# TYPE process_start_time_seconds gauge\n",
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
        "# TYPE process_virtual_memory_bytes gauge\n",
        "# HELP process_virtual_memory_max_bytes Maximum amount of virtual memory available in "
        "bytes.\n# TYPE process_virtual_memory_max_bytes gauge\n",
    };
    char *out = metrics_registry_render(reg);
    const char *prev = out;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *at = strstr(out, want[i]);
        assert_non_null(at);
        assert_true(at >= prev); /* sorted by name */
        prev = at;
    }
    free(out);
    /* Registering twice fails and changes nothing. */
    assert_int_equal(metrics_process_register(reg), -EEXIST);
    out = metrics_registry_render(reg);
    const char *first = strstr(out, "# TYPE process_open_fds");
    assert_null(strstr(first + 1, "# TYPE process_open_fds"));
    free(out);
}

static void
test_open_fds_follow_the_process(void **state)
{
    double before = sample("process_open_fds");
    int fds[7];
    for (int i = 0; i < 7; i++)
        fds[i] = open("/dev/null", O_RDONLY);
    assert_true(sample("process_open_fds") == before + 7);
    for (int i = 0; i < 7; i++)
        close(fds[i]);
    assert_true(sample("process_open_fds") == before);
}

static void
test_limits(void **state)
{
    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    struct rlimit lower = {.rlim_cur = 1000, .rlim_max = saved.rlim_max};
    if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < 1000)
        lower.rlim_cur = saved.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &lower), 0);
    assert_true(sample("process_max_fds") == (double)lower.rlim_cur);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    assert_true(sample("process_max_fds") == (double)saved.rlim_cur);
    /* "unlimited" is 2^64-1, rendered as Go renders it. */
    struct rlimit as;
    assert_int_equal(getrlimit(RLIMIT_AS, &as), 0);
    char *out = metrics_registry_render(reg);
    if (as.rlim_cur == RLIM_INFINITY) {
        assert_non_null(strstr(out, "\nprocess_virtual_memory_max_bytes 1.8446744073709552e+19\n"));
    } else {
        assert_true(sample("process_virtual_memory_max_bytes") == (double)as.rlim_cur);
    }
    free(out);
}

static double
cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
test_cpu_seconds_follow_the_clock(void **state)
{
    double m0 = sample("process_cpu_seconds_total"), c0 = cpu_now();
    volatile double x = 0;
    while (cpu_now() - c0 < 0.3)
        x += 1;
    double m1 = sample("process_cpu_seconds_total"), c1 = cpu_now();
    /* Allow two scheduler ticks each way between the two clocks. */
    double slack = 2.0 / (double)sysconf(_SC_CLK_TCK) + 0.01;
    assert_true(m1 - m0 >= (c1 - c0) - 0.05 - slack);
    assert_true(m1 - m0 <= (c1 - c0) + 0.05 + slack);
    assert_true(fabs(m1 - c1) < 0.5); /* the same clock, not some other measure */
}

static void
test_memory_follows_the_process(void **state)
{
    const size_t mb64 = 64u << 20, mb512 = 512u << 20;
    double rss0 = sample("process_resident_memory_bytes");
    double vsz0 = sample("process_virtual_memory_bytes");
    /* Address space reserved but not touched: virtual only. */
    void *reserved = mmap(NULL, mb512, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(reserved != MAP_FAILED);
    double vsz1 = sample("process_virtual_memory_bytes");
    assert_true(vsz1 - vsz0 >= (double)mb512);
    assert_true(sample("process_resident_memory_bytes") - rss0 < (double)mb64);
    /* Touched: resident too. */
    char *touched = mmap(NULL, mb64, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(touched != MAP_FAILED);
    memset(touched, 1, mb64);
    double rss1 = sample("process_resident_memory_bytes");
    assert_true(rss1 - rss0 >= 0.9 * (double)mb64);
    munmap(touched, mb64);
    munmap(reserved, mb512);
    assert_true(sample("process_virtual_memory_bytes") < vsz1 - (double)mb512 + (double)mb64);
}

static void
test_start_time_is_stable_and_past(void **state)
{
    double a = sample("process_start_time_seconds");
    usleep(20000);
    double b = sample("process_start_time_seconds");
    assert_true(a == b); /* a fact about the process, not a clock reading */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    /* This process: started before now, and not long ago. */
    assert_true(a <= (double)now.tv_sec + 1);
    assert_true(a >= (double)now.tv_sec - 600);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_help_and_types),
        cmocka_unit_test(test_open_fds_follow_the_process),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_cpu_seconds_follow_the_clock),
        cmocka_unit_test(test_memory_follows_the_process),
        cmocka_unit_test(test_start_time_is_stable_and_past),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
