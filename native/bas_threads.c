/* SPDX-License-Identifier: Apache-2.0 */
/* bas_threads.c -- the one thread fan-out the kernels share (bas_io, bas_sort, bas_gensort) */

#include <pthread.h>

#include "bas_threads.h"

/* fanout_slot -- one slot of a fan-out: what a started thread runs, and its status */
struct fanout_slot {
	bas_task_fn *fn;
	void *ctx;
	int t;
	int rc;
};

/* fanout_run -- thread body: run one slot and keep its status */
static void *
fanout_run(void *arg)
{
	struct fanout_slot *s = arg;
	s->rc = s->fn(s->ctx, s->t);
	return NULL;
}

/* bas_fanout -- run fn(ctx, t) for t in [0, threads) on threads, slot 0 here (bas_threads.h) */
int
bas_fanout(int threads, bas_task_fn *fn, void *ctx)
{
	struct fanout_slot slots[BAS_MAX_THREADS];
	pthread_t tids[BAS_MAX_THREADS];
	int started[BAS_MAX_THREADS];
	int rc = 0;

	if (threads < 1)
		threads = 1;
	if (threads > BAS_MAX_THREADS)
		threads = BAS_MAX_THREADS;
	for (int t = 0; t < threads; t++)
		slots[t] = (struct fanout_slot){ fn, ctx, t, 0 };
	for (int t = 1; t < threads; t++)
		started[t] = pthread_create(&tids[t], NULL, fanout_run, &slots[t]) == 0;
	fanout_run(&slots[0]);
	for (int t = 1; t < threads; t++) {
		if (started[t])
			pthread_join(tids[t], NULL);
		else
			fanout_run(&slots[t]);	/* no thread to spare: run this slot here */
	}
	for (int t = 0; t < threads; t++)
		if (slots[t].rc && !rc)
			rc = slots[t].rc;
	return rc;
}
