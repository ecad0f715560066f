#include "tunnel/h2mem.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* nghttp2's frame buffer: a 9-byte frame header, 1 byte of padding length, 16384 of payload. */
#define FRAMEBUF_LEN (9 + 1 + 16384)
#define SLOT (5u * 4096u)    /* the frame buffer, rounded up to whole pages */
#define NSLOTS (64u * 1024u) /* 1.25 GiB of address space, reserved, never committed up front */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *base;         /* the reserved range, or NULL (not yet, or mmap refused: malloc) */
static bool tried;         /* the range was asked for once */
static size_t next_unused; /* slots below this have been handed out at least once */
static uint32_t *freed;    /* a stack of returned slot numbers */
static size_t nfreed;
static size_t in_use;

static bool
in_range(const void *p)
{
    return base && (const char *)p >= base && (const char *)p < base + (size_t)SLOT * NSLOTS;
}

static void *
slot_take(void)
{
    void *p = NULL;
    pthread_mutex_lock(&lock);
    if (!tried) {
        tried = true;
        void *m = mmap(NULL, (size_t)SLOT * NSLOTS, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        freed = malloc(NSLOTS * sizeof(*freed));
        if (m != MAP_FAILED && freed) {
            base = m;
        } else { /* no room for the range (a ulimit -v): every buffer from malloc */
            if (m != MAP_FAILED)
                munmap(m, (size_t)SLOT * NSLOTS);
            free(freed);
            freed = NULL;
        }
    }
    if (base && nfreed)
        p = base + (size_t)freed[--nfreed] * SLOT;
    else if (base && next_unused < NSLOTS)
        p = base + (size_t)next_unused++ * SLOT;
    if (p)
        in_use++;
    pthread_mutex_unlock(&lock);
    return p;
}

static void
slot_give_back(void *p)
{
    madvise(p, SLOT, MADV_DONTNEED); /* its pages are free memory again; zero when reused */
    pthread_mutex_lock(&lock);
    freed[nfreed++] = (uint32_t)(((char *)p - base) / SLOT);
    in_use--;
    pthread_mutex_unlock(&lock);
}

static void *
m_malloc(size_t n, void *arg)
{
    (void)arg;
    if (n == FRAMEBUF_LEN) {
        void *p = slot_take();
        if (p)
            return p;
    }
    return malloc(n);
}

static void
m_free(void *p, void *arg)
{
    (void)arg;
    if (p == NULL)
        return;
    if (in_range(p))
        slot_give_back(p);
    else
        free(p);
}

static void *
m_calloc(size_t nmemb, size_t size, void *arg)
{
    (void)arg;
    return calloc(nmemb, size);
}

static void *
m_realloc(void *p, size_t n, void *arg)
{
    if (p == NULL)
        return m_malloc(n, arg); /* how nghttp2 allocates the frame buffer */
    if (!in_range(p))
        return realloc(p, n);
    if (n <= SLOT)
        return p;
    void *q = malloc(n); /* grown past its slot: an ordinary allocation from here on */
    if (q == NULL)
        return NULL;
    memcpy(q, p, SLOT);
    slot_give_back(p);
    return q;
}

static nghttp2_mem mem = {NULL, m_malloc, m_free, m_calloc, m_realloc};

nghttp2_mem *
h2mem(void)
{
    return &mem;
}

size_t
h2mem_slots_in_use(void)
{
    pthread_mutex_lock(&lock);
    size_t n = in_use;
    pthread_mutex_unlock(&lock);
    return n;
}
