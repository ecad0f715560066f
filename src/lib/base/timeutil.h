/* Wall-clock and monotonic time, RFC 3339 text and Go-style durations ("1m0s", "5s"). */
#ifndef BASE_TIMEUTIL_H
#define BASE_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the Unix epoch. */
int64_t time_now_ms(void);
/* Milliseconds of a monotonic clock. */
int64_t time_mono_ms(void);
/* The same clock in microseconds (request latencies). */
int64_t time_mono_us(void);
/* Formats ms since the epoch as RFC 3339 UTC with milliseconds ("2024-05-01T12:00:00.123Z"). */
void time_format_rfc3339(int64_t ms, char *out, size_t cap);
/* The HTTP date (RFC 9110 §5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT") of a Unix time; cap >= 30. */
void time_format_http(int64_t unix_s, char *out, size_t cap);
/* Parses what time_format_rfc3339 writes (and offsets / fractions of other precisions).
 * Returns 0 or -1. */
int time_parse_rfc3339(const char *s, int64_t *ms);
/* Parses a Go duration ("90s", "1m0s", "1h30m", "250ms"). Returns 0 or -1. */
int duration_parse(const char *s, int64_t *ms);
/* Formats a duration as Go does ("1m0s", "5s", "24h0m0s", "250ms"). */
void duration_format(int64_t ms, char *out, size_t cap);

#endif
