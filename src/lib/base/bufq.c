#include "base/bufq.h"
#include "base/util.h"

#include <stdlib.h>
#include <string.h>

/* The first block is small (most streams queue a request or a few frames at a time); later ones
 * are as large as one read from a socket, so a bulk stream takes one allocation per read. */
#define BUFQ_FIRST (4u << 10)
#define BUFQ_BLOCK (64u << 10)

struct bufq_block {
    struct bufq_block *next;
    size_t start, end, cap; /* queued bytes are data[start, end) */
    char data[];
};

void
bufq_init(struct bufq *q)
{
    q->head = q->tail = NULL;
    q->len = 0;
}

void
bufq_fini(struct bufq *q)
{
    while (q->head) {
        struct bufq_block *b = q->head;
        q->head = b->next;
        free(b);
    }
    bufq_init(q);
}

void
bufq_append(struct bufq *q, const void *data, size_t n)
{
    const char *p = data;
    q->len += n;
    if (q->tail && q->tail->end < q->tail->cap) {
        struct bufq_block *b = q->tail;
        size_t k = b->cap - b->end < n ? b->cap - b->end : n;
        memcpy(b->data + b->end, p, k);
        b->end += k;
        p += k;
        n -= k;
    }
    if (n == 0)
        return;
    size_t cap = q->tail ? BUFQ_BLOCK : BUFQ_FIRST;
    if (cap < n)
        cap = n;
    struct bufq_block *b = xmalloc(sizeof(*b) + cap);
    b->next = NULL;
    b->start = 0;
    b->end = n;
    b->cap = cap;
    memcpy(b->data, p, n);
    if (q->tail)
        q->tail->next = b;
    else
        q->head = b;
    q->tail = b;
}

void
bufq_take(struct bufq *q, struct buf *out, size_t n)
{
    if (n > q->len)
        n = q->len;
    buf_reserve(out, n);
    q->len -= n;
    while (n > 0) {
        struct bufq_block *b = q->head;
        size_t k = b->end - b->start < n ? b->end - b->start : n;
        buf_append(out, b->data + b->start, k);
        b->start += k;
        n -= k;
        if (b->start == b->end) {
            q->head = b->next;
            if (q->head == NULL)
                q->tail = NULL;
            free(b);
        }
    }
}
