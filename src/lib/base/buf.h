/* A growable byte buffer. Always NUL-terminated after its data so text can be used as a C
 * string; the terminator is not counted in len. */
#ifndef BASE_BUF_H
#define BASE_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
void buf_fini(struct buf *b);
void buf_reset(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends each string in turn, up to a NULL: for the hot paths' header lines, no format. */
void buf_cat(struct buf *b, ...) __attribute__((sentinel));
/* Removes the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* Appends s as a JSON string (also a valid YAML double-quoted scalar) (\" \\ \n \r \t, other
 * control characters and DEL as \u00XX). */
void buf_put_json_string(struct buf *b, const char *s);
/* Hands the data to the caller (who frees it) and leaves b empty. */
char *buf_steal(struct buf *b);

#endif
