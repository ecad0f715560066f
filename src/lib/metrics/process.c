/* The process_* metrics of client_golang's process collector, with its names and help texts, so
 * dashboards built for Coder's Go binaries work unchanged. Values are read from /proc/self at
 * each scrape; a value that cannot be read is left out of that scrape (NaN), as Go does. */
#include "metrics/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/util.h"

struct proc_stat {
    unsigned long long starttime; /* clock ticks after boot */
    unsigned long vsize;          /* bytes */
    long rss;                     /* pages */
};

static int
proc_stat_read(struct proc_stat *st)
{
    char *text = NULL;
    size_t len;
    int rc = file_read_all("/proc/self/stat", 4096, &text, &len);
    if (rc < 0)
        return rc;
    /* The command name may hold spaces and parentheses; the fields start after the last ')'. */
    const char *p = strrchr(text, ')');
    rc = -EINVAL;
    if (p != NULL && sscanf(p + 1,
                            " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                            "%*d %*d %llu %lu %ld",
                            &st->starttime, &st->vsize, &st->rss) == 3)
        rc = 0;
    free(text);
    return rc;
}

static double
ticks_per_second(void)
{
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double)hz : 100.0;
}

/* From getrusage, to the microsecond: /proc's clock ticks are 10 ms, and a young, idle proxy
 * had used less than one (a counter stuck at 0). */
static double
process_cpu_seconds(void *arg)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return NAN;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double
process_resident_memory(void *arg)
{
    struct proc_stat st;
    if (proc_stat_read(&st) < 0)
        return NAN;
    return (double)st.rss * (double)sysconf(_SC_PAGESIZE);
}

static double
process_virtual_memory(void *arg)
{
    struct proc_stat st;
    if (proc_stat_read(&st) < 0)
        return NAN;
    return (double)st.vsize;
}

static double
boot_time(void)
{
    char *text = NULL;
    size_t len;
    double t = NAN;
    if (file_read_all("/proc/stat", 1 << 20, &text, &len) < 0)
        return NAN;
    const char *p = strstr(text, "\nbtime ");
    unsigned long long v;
    if (p != NULL && sscanf(p + 7, "%llu", &v) == 1)
        t = (double)v;
    free(text);
    return t;
}

static double
process_start_time(void *arg)
{
    struct proc_stat st;
    if (proc_stat_read(&st) < 0)
        return NAN;
    return boot_time() + (double)st.starttime / ticks_per_second();
}

static double
process_open_fds(void *arg)
{
    DIR *d = opendir("/proc/self/fd");
    double n = 0;
    struct dirent *e;
    if (d == NULL)
        return NAN;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n - 1; /* not counting the descriptor used to read the directory */
}

/* client_golang reads /proc/self/limits, where "unlimited" becomes 2^64-1. */
static double
rlimit_value(int resource)
{
    struct rlimit rl;
    if (getrlimit(resource, &rl) < 0)
        return NAN;
    return rl.rlim_cur == RLIM_INFINITY ? 18446744073709551615.0 : (double)rl.rlim_cur;
}

static double
process_max_fds(void *arg)
{
    return rlimit_value(RLIMIT_NOFILE);
}

static double
process_virtual_memory_max(void *arg)
{
    return rlimit_value(RLIMIT_AS);
}

int
metrics_process_register(struct metrics_registry *reg)
{
    static const struct {
        const char *name, *help;
        metrics_value_fn fn;
        bool counter;
    } defs[] = {
        {"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
         process_cpu_seconds, true},
        {"process_open_fds", "Number of open file descriptors.", process_open_fds, false},
        {"process_max_fds", "Maximum number of open file descriptors.", process_max_fds, false},
        {"process_virtual_memory_bytes", "Virtual memory size in bytes.", process_virtual_memory,
         false},
        {"process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes.",
         process_virtual_memory_max, false},
        {"process_resident_memory_bytes", "Resident memory size in bytes.", process_resident_memory,
         false},
        {"process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
         process_start_time, false},
    };
    int rc = 0;
    for (size_t i = 0; i < ARRAY_LEN(defs); i++) {
        struct metrics_family *f =
            defs[i].counter
                ? metrics_counter_func_new(reg, defs[i].name, defs[i].help, defs[i].fn, NULL)
                : metrics_gauge_func_new(reg, defs[i].name, defs[i].help, defs[i].fn, NULL);
        if (f == NULL)
            rc = -EEXIST;
    }
    return rc;
}
