/* A byte queue of heap blocks: appends go at the tail, takes from the head, and queued bytes are
 * never moved (a single growable buffer consumed from the front must compact, which moved about
 * one byte per byte relayed on a busy tunnel stream). An empty queue holds no memory. */
#ifndef BASE_BUFQ_H
#define BASE_BUFQ_H

#include "base/buf.h"

#include <stddef.h>

struct bufq_block;

struct bufq {
    struct bufq_block *head, *tail;
    size_t len; /* bytes queued */
};

void bufq_init(struct bufq *q);
void bufq_fini(struct bufq *q);
void bufq_append(struct bufq *q, const void *data, size_t n);
/* Moves the first n bytes (at most len) to the end of out. */
void bufq_take(struct bufq *q, struct buf *out, size_t n);

#endif
