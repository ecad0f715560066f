/* Allocation that cannot fail, and the small string helpers every module uses. */
#ifndef BASE_UTIL_H
#define BASE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED(x) ((void)(x))

/* Allocation failure aborts with a message (tmux xmalloc): callers never check. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap);

/* ASCII case-insensitive equality; NULL equals only NULL. */
bool str_eq_ci(const char *a, const char *b);
bool str_eq(const char *a, const char *b);
bool str_has_prefix(const char *s, const char *prefix);
bool str_has_suffix(const char *s, const char *suffix);
/* Lower-cases ASCII letters in place and returns s. */
char *str_lower(char *s);
/* Returns a new string without leading and trailing whitespace. */
char *str_trim_dup(const char *s);
/* Frees *p and sets it to a copy of s (or NULL). */
void str_replace(char **p, const char *s);

/* Reads a whole file (at most max bytes) into a NUL-terminated buffer.
 * Returns 0 and sets *out and *len, or -errno (-EFBIG when larger than max). */
int file_read_all(const char *path, size_t max, char **out, size_t *len);
/* Writes data to path atomically (temp file + rename) with the given mode. Returns 0 or -errno. */
int file_write_atomic(const char *path, const void *data, size_t len, int mode);
/* mkdir -p with the given mode. Returns 0 or -errno. */
int dir_make_all(const char *path, int mode);

#endif
