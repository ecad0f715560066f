#include "base/log.h"
#include "base/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum log_level log_min = LOG_INFO;
static FILE *log_out;

int
log_setup(enum log_level min, const char *path)
{
    log_min = min;
    if (path == NULL || path[0] == '\0' || strcmp(path, "/dev/stderr") == 0) {
        log_out = NULL;
        return 0;
    }
    FILE *f = fopen(path, "ae");
    if (f == NULL)
        return -errno;
    setvbuf(f, NULL, _IOLBF, 0);
    log_out = f;
    return 0;
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (lvl < log_min)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);

    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    FILE *out = log_out ? log_out : stderr;
    fprintf(out, "%s.%03d [%s] %s\n", ts, (int)(tv.tv_usec / 1000), names[lvl], msg);
    free(msg);
}
