#include "base/log.h"
#include "base/buf.h"
#include "base/util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define MAX_SINKS 3

struct sink {
    enum log_format fmt;
    FILE *f;
    bool owned; /* opened here: closed when replaced */
};

static enum log_level log_min = LOG_INFO;
static struct sink sinks[MAX_SINKS];
static int nsinks; /* 0: human on stderr */

static void
sinks_clear(void)
{
    for (int i = 0; i < nsinks; i++) {
        if (sinks[i].owned)
            fclose(sinks[i].f);
    }
    nsinks = 0;
}

static int
sink_add(enum log_format fmt, const char *path)
{
    struct sink s = {.fmt = fmt};
    if (path == NULL || path[0] == '\0' || strcmp(path, "/dev/stderr") == 0) {
        s.f = stderr;
    } else if (strcmp(path, "/dev/stdout") == 0) {
        s.f = stdout;
    } else {
        s.f = fopen(path, "ae");
        if (s.f == NULL)
            return -errno;
        setvbuf(s.f, NULL, _IOLBF, 0);
        s.owned = true;
    }
    sinks[nsinks++] = s;
    return 0;
}

int
log_setup_sinks(enum log_level min, const char *human, const char *json, const char *stackdriver,
                const char **failed)
{
    log_min = min;
    sinks_clear();
    const char *path[MAX_SINKS] = {human, json, stackdriver};
    const enum log_format fmt[MAX_SINKS] = {LOG_HUMAN, LOG_JSON, LOG_STACKDRIVER};
    for (int i = 0; i < MAX_SINKS; i++) {
        if (!path[i] || !*path[i])
            continue;
        int rc = sink_add(fmt[i], path[i]);
        if (rc < 0) {
            if (failed)
                *failed = path[i];
            sinks_clear();
            sink_add(LOG_HUMAN, NULL);
            return rc;
        }
    }
    if (nsinks == 0)
        sink_add(LOG_HUMAN, NULL); /* stderr */
    return 0;
}

int
log_setup(enum log_level min, const char *path)
{
    return log_setup_sinks(min, path, NULL, NULL, NULL);
}

/* msg as a JSON string body (without quotes). */
static void
json_escape(struct buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            buf_printf(b, "\\u%04x", c);
        else
            buf_append(b, s, 1);
    }
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
    static const char *human[] = {"debug", "info", "warn", "error"};
    static const char *upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    static const char *severity[] = {"DEBUG", "INFO", "WARNING", "ERROR"};
    if (lvl < log_min)
        return;
    if (nsinks == 0)
        sink_add(LOG_HUMAN, NULL); /* never set up: stderr */
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char day[16], clock[16];
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    strftime(clock, sizeof(clock), "%H:%M:%S", &tm);

    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    struct buf line;
    buf_init(&line);
    for (int i = 0; i < nsinks; i++) {
        buf_reset(&line);
        switch (sinks[i].fmt) {
        case LOG_HUMAN:
            buf_printf(&line, "%s %s.%03d [%s] %s\n", day, clock, (int)(tv.tv_usec / 1000),
                       human[lvl], msg);
            break;
        case LOG_JSON:
            buf_printf(&line, "{\"ts\":\"%sT%s.%06dZ\",\"level\":\"%s\",\"msg\":\"", day, clock,
                       (int)tv.tv_usec, upper[lvl]);
            json_escape(&line, msg);
            buf_puts(&line, "\"}\n");
            break;
        case LOG_STACKDRIVER:
            buf_printf(&line, "{\"severity\":\"%s\",\"message\":\"", severity[lvl]);
            json_escape(&line, msg);
            buf_printf(&line, "\",\"timestamp\":\"%sT%s.%06dZ\"}\n", day, clock, (int)tv.tv_usec);
            break;
        }
        fwrite(line.data, 1, line.len, sinks[i].f);
        if (!sinks[i].owned)
            fflush(sinks[i].f);
    }
    buf_fini(&line);
    free(msg);
}
