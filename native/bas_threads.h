/* SPDX-License-Identifier: Apache-2.0 */
/* bas_threads.h -- the one thread fan-out the kernels share (internal: not in the cdef) */

#ifndef BAS_THREADS_H
#define BAS_THREADS_H 1

/* the most worker threads one call may start (bas_max_threads() tells Python) */
#define BAS_MAX_THREADS 256

/* a task: the work of slot t (0 <= t < threads) of ctx; returns 0 or a negative errno */
typedef int bas_task_fn(void *ctx, int t);

/*
 * bas_fanout -- run fn(ctx, t) for every t in [0, threads): slot 0 on the calling thread,
 * the others on threads of their own (or on the calling thread, one after another, when no
 * thread can be started). threads is clamped to 1 .. BAS_MAX_THREADS. Returns once every
 * slot is done: 0, or the status of the lowest slot that failed.
 */
int bas_fanout(int threads, bas_task_fn *fn, void *ctx);

#endif /* BAS_THREADS_H */
