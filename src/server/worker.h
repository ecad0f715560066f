/* The store thread: it alone owns the store connection and runs jobs from a queue, one at a
 * time, so writes are serialised and the event loop never waits on the database. Each job's
 * completion callback runs back on the loop. */
#ifndef SERVER_WORKER_H
#define SERVER_WORKER_H

#include "store/store.h"

#include <uv.h>

struct worker;

/* Runs on the store thread. */
typedef void (*worker_job_fn)(struct store *st, void *arg);
/* Runs on the loop thread after the job. */
typedef void (*worker_done_fn)(void *arg);

/* Starts the thread; the worker owns st from now on and closes it in worker_stop. */
struct worker *worker_start(uv_loop_t *loop, struct store *st);
/* Queues a job. done may be NULL. Jobs run in submission order. */
void worker_submit(struct worker *w, worker_job_fn job, worker_done_fn done, void *arg);
/* Finishes queued jobs, joins the thread, runs their done callbacks, closes the store, and
 * frees the worker once its handles are closed (the loop must keep running until then). */
void worker_stop(struct worker *w);

#endif
