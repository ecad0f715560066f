#include "worker.h"
#include "base/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

struct job {
    worker_job_fn fn;
    worker_done_fn done;
    void *arg;
    struct job *next;
};

struct worker {
    struct store *st;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail;           /* waiting to run */
    struct job *done_head, *done_tail; /* ran, waiting for their done callback */
    bool stopping;
    uv_async_t async;
};

static void
queue_push(struct job **head, struct job **tail, struct job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->head == NULL && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->head == NULL && w->stopping)
            break;
        struct job *j = w->head;
        w->head = j->next;
        if (w->head == NULL)
            w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        j->fn(w->st, j->arg);
        pthread_mutex_lock(&w->mu);
        queue_push(&w->done_head, &w->done_tail, j);
        uv_async_send(&w->async);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void
run_done(struct worker *w)
{
    pthread_mutex_lock(&w->mu);
    struct job *j = w->done_head;
    w->done_head = w->done_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    while (j) {
        struct job *next = j->next;
        if (j->done)
            j->done(j->arg);
        free(j);
        j = next;
    }
}

static void
on_async(uv_async_t *a)
{
    run_done(a->data);
}

struct worker *
worker_start(uv_loop_t *loop, struct store *st)
{
    struct worker *w = xcalloc(1, sizeof(*w));
    w->st = st;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    uv_async_init(loop, &w->async, on_async);
    w->async.data = w;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        fprintf(stderr, "fatal: cannot start the store thread\n");
        abort();
    }
    return w;
}

void
worker_submit(struct worker *w, worker_job_fn job, worker_done_fn done, void *arg)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->fn = job;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&w->mu);
    queue_push(&w->head, &w->tail, j);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void
on_closed(uv_handle_t *h)
{
    struct worker *w = h->data;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void
worker_stop(struct worker *w)
{
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    run_done(w);
    store_close(w->st);
    w->st = NULL;
    uv_close((uv_handle_t *)&w->async, on_closed);
}
