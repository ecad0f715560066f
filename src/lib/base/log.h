/* Operator logs, in up to three sinks at once as Coder's --log-human, --log-json and
 * --log-stackdriver: human lines (the default, on stderr)
 *   2024-05-01 12:00:00.000 [info]  wsproxy: registered  region=newyork
 * JSON lines {"ts","level","msg"}, and Google Cloud Logging lines {"severity","message",
 * "timestamp"}. Secrets never go into a log line. */
#ifndef BASE_LOG_H
#define BASE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_HUMAN, LOG_JSON, LOG_STACKDRIVER };

/* Sets the minimum level and makes path ("" or "/dev/stderr" for stderr) the only sink, in
 * the human format. Returns 0 or -errno. */
int log_setup(enum log_level min, const char *path);
/* Sets the minimum level and one sink per non-empty path, in the three formats ("/dev/stderr"
 * and "/dev/stdout" are the process's own streams); all empty means human lines on stderr.
 * Returns 0, or -errno with *failed the path that could not be opened (logs then go to stderr). */
int log_setup_sinks(enum log_level min, const char *human, const char *json,
                    const char *stackdriver, const char **failed);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
