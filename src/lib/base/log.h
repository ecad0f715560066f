/* Operator logs on stderr (or a file), in Coder's human format:
 *   2024-05-01 12:00:00.000 [info]  wsproxy: registered  region=newyork
 * Secrets never go into a log line. */
#ifndef BASE_LOG_H
#define BASE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the minimum level and the destination ("" or "/dev/stderr" for stderr). Returns 0 or -errno.
 */
int log_setup(enum log_level min, const char *path);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
