/* SPDX-License-Identifier: Apache-2.0 */
/* bas_sort.c -- key/index entries, a parallel MSD radix sort and a loser-tree merge */

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bas_sort.h"
#include "bas_threads.h"

#define INDEX_BYTES 6
#define SORT_MAX_THREADS 64	/* below BAS_MAX_THREADS: each thread has a 512 KiB histogram */
#define INSERTION_CUTOFF 32
#define TOP_BUCKETS 65536
#define MAX_ENTRY 512

/* bas_index_bytes -- bytes of record index in an entry */
int
bas_index_bytes(void)
{
	return INDEX_BYTES;
}

/* bas_max_entry_size -- the largest entry (key + index) the sort and merge kernels take */
int
bas_max_entry_size(void)
{
	return MAX_ENTRY;
}

/* put_index -- store a record index big-endian in INDEX_BYTES bytes */
static inline void
put_index(uint8_t *dst, uint64_t idx)
{
	for (int b = INDEX_BYTES - 1; b >= 0; b--) {
		dst[b] = (uint8_t)idx;
		idx >>= 8;
	}
}

/* get_index -- read a big-endian record index */
static inline uint64_t
get_index(const uint8_t *src)
{
	uint64_t idx = 0;
	for (int b = 0; b < INDEX_BYTES; b++)
		idx = (idx << 8) | src[b];
	return idx;
}

/* -- a parallel for on bas_fanout: run fn over [0, n) split in contiguous slices --------- */

struct pfor {
	void (*fn)(void *ctx, uint64_t lo, uint64_t hi, int t);
	void *ctx;
	uint64_t n;
	int threads;
};

/* pfor_task -- bas_fanout task: run slice t of the parallel for */
static int
pfor_task(void *arg, int t)
{
	const struct pfor *p = arg;
	uint64_t lo = p->n * (uint64_t)t / (uint64_t)p->threads;
	uint64_t hi = p->n * (uint64_t)(t + 1) / (uint64_t)p->threads;
	p->fn(p->ctx, lo, hi, t);
	return 0;
}

/* parallel_for -- split [0, n) into `threads` slices; slice t runs as bas_fanout slot t */
static void
parallel_for(uint64_t n, int threads, void (*fn)(void *, uint64_t, uint64_t, int), void *ctx)
{
	struct pfor p = { fn, ctx, n, threads };
	(void)bas_fanout(threads, pfor_task, &p);	/* the tasks cannot fail */
}

/* clamp_threads -- threads worth starting for n items (1..SORT_MAX_THREADS, 1 for small n) */
static int
clamp_threads(int threads, uint64_t n)
{
	if (threads < 1)
		threads = 1;
	if (threads > SORT_MAX_THREADS)
		threads = SORT_MAX_THREADS;
	if (n < 4096)
		threads = 1;	/* not worth a thread */
	return threads;
}

/* -- entry building ------------------------------------------------------------------- */

struct extract_ctx {
	const uint8_t *src;
	uint64_t stride, key_offset, key_size, first_index, entry_size;
	uint8_t *entries;
};

/* extract_slice -- build entries [lo, hi) from their records (key bytes, then the index) */
static void
extract_slice(void *arg, uint64_t lo, uint64_t hi, int t)
{
	struct extract_ctx *c = arg;
	(void)t;
	for (uint64_t i = lo; i < hi; i++) {
		uint8_t *e = c->entries + i * c->entry_size;
		memcpy(e, c->src + i * c->stride + c->key_offset, c->key_size);
		put_index(e + c->key_size, c->first_index + i);
	}
}

/* bas_extract_entries -- build n entries from n whole records (bas_sort.h) */
int
bas_extract_entries(const uint8_t *records, uint64_t n, uint64_t record_size,
		uint64_t key_offset, uint64_t key_size, uint64_t first_index,
		uint8_t *entries, int threads)
{
	struct extract_ctx c = { records, record_size, key_offset, key_size, first_index,
		key_size + INDEX_BYTES, entries };
	parallel_for(n, clamp_threads(threads, n), extract_slice, &c);
	return 0;
}

/* bas_entries_from_keys -- build n entries from n packed keys (bas_sort.h) */
int
bas_entries_from_keys(const uint8_t *keys, uint64_t n, uint64_t key_size,
		uint64_t first_index, uint8_t *entries, int threads)
{
	return bas_extract_entries(keys, n, key_size, 0, key_size, first_index, entries,
			threads);
}

/* bas_entry_offsets -- the record offsets of n entries (bas_sort.h) */
int
bas_entry_offsets(const uint8_t *entries, uint64_t n, uint64_t entry_size,
		uint64_t record_size, uint64_t base, uint64_t *offsets)
{
	const uint8_t *idx = entries + entry_size - INDEX_BYTES;
	for (uint64_t i = 0; i < n; i++)
		offsets[i] = get_index(idx + i * entry_size) * record_size + base;
	return 0;
}

/* -- radix sort ----------------------------------------------------------------------- */

/* insertion_sort -- for small buckets; compares from byte `depth` on (earlier bytes equal) */
static void
insertion_sort(uint8_t *a, uint64_t n, uint64_t es, uint64_t depth)
{
	uint8_t tmp[MAX_ENTRY];
	for (uint64_t i = 1; i < n; i++) {
		uint8_t *cur = a + i * es;
		if (memcmp(cur - es + depth, cur + depth, es - depth) <= 0)
			continue;
		memcpy(tmp, cur, es);
		uint64_t j = i;
		while (j > 0 && memcmp(a + (j - 1) * es + depth, tmp + depth, es - depth) > 0) {
			memcpy(a + j * es, a + (j - 1) * es, es);
			j--;
		}
		memcpy(a + j * es, tmp, es);
	}
}

/* flag_sort -- in-place MSD radix (American flag) sort of n entries on byte `depth` on;
 * scratch holds 2 * es bytes (kept off the stack: recursion can go es levels deep) */
static void
flag_sort(uint8_t *a, uint64_t n, uint64_t es, uint64_t depth, uint8_t *scratch)
{
	while (n > INSERTION_CUTOFF && depth < es) {
		uint64_t count[256] = {0}, start[256], next[256];
		for (uint64_t i = 0; i < n; i++)
			count[a[i * es + depth]]++;
		if (count[a[depth]] == n) {	/* every entry shares this byte: go deeper */
			depth++;
			continue;
		}
		uint64_t sum = 0;
		for (int b = 0; b < 256; b++) {
			start[b] = next[b] = sum;
			sum += count[b];
		}
		uint8_t *tmp = scratch, *swap = scratch + es;
		for (int b = 0; b < 256; b++) {
			uint64_t end = start[b] + count[b];
			while (next[b] < end) {
				uint8_t *slot = a + next[b] * es;
				uint8_t v = slot[depth];
				if (v == b) {
					next[b]++;
					continue;
				}
				/* carry the misplaced entry along its cycle until it lands here */
				memcpy(tmp, slot, es);
				while (v != b) {
					uint8_t *dst = a + next[v]++ * es;
					memcpy(swap, dst, es);
					memcpy(dst, tmp, es);
					memcpy(tmp, swap, es);
					v = tmp[depth];
				}
				memcpy(slot, tmp, es);
				next[b]++;
			}
		}
		for (int b = 0; b < 256; b++)
			if (count[b] > 1)
				flag_sort(a + start[b] * es, count[b], es, depth + 1, scratch);
		return;
	}
	if (n > 1 && depth < es)
		insertion_sort(a, n, es, depth);
}

struct radix_ctx {
	uint8_t *src, *dst;
	uint64_t n, es;
	int threads;
	uint64_t (*hist)[TOP_BUCKETS];	/* per-thread counts, then per-thread write cursors */
	uint64_t bucket_start[TOP_BUCKETS + 1];
	uint64_t next_bucket;		/* shared work cursor for the second pass */
	pthread_mutex_t lock;
};

/* top16 -- the entry's first two bytes as one bucket number (one byte: shifted up) */
static inline unsigned
top16(const uint8_t *e, uint64_t es)
{
	return es >= 2 ? ((unsigned)e[0] << 8) | e[1] : (unsigned)e[0] << 8;
}

/* count_slice -- histogram of the top 16 key bits of entries [lo, hi), in thread t's row */
static void
count_slice(void *arg, uint64_t lo, uint64_t hi, int t)
{
	struct radix_ctx *c = arg;
	uint64_t *h = c->hist[t];
	memset(h, 0, sizeof(c->hist[t]));
	for (uint64_t i = lo; i < hi; i++)
		h[top16(c->src + i * c->es, c->es)]++;
}

/* scatter_slice -- move entries [lo, hi) to their buckets at thread t's cursors */
static void
scatter_slice(void *arg, uint64_t lo, uint64_t hi, int t)
{
	struct radix_ctx *c = arg;
	uint64_t *cursor = c->hist[t];
	for (uint64_t i = lo; i < hi; i++) {
		const uint8_t *e = c->src + i * c->es;
		memcpy(c->dst + cursor[top16(e, c->es)]++ * c->es, e, c->es);
	}
}

/* bucket_worker -- sort whole top-level buckets taken from a shared cursor */
static void
bucket_worker(void *arg, uint64_t lo, uint64_t hi, int t)
{
	struct radix_ctx *c = arg;
	uint8_t scratch[2 * MAX_ENTRY];
	(void)lo, (void)hi, (void)t;
	for (;;) {
		pthread_mutex_lock(&c->lock);
		uint64_t b = c->next_bucket;
		c->next_bucket += 64;
		pthread_mutex_unlock(&c->lock);
		if (b >= TOP_BUCKETS)
			return;
		for (uint64_t k = b; k < b + 64; k++) {
			uint64_t s = c->bucket_start[k], e = c->bucket_start[k + 1];
			if (e - s > 1)
				flag_sort(c->dst + s * c->es, e - s, c->es, 2, scratch);
		}
	}
}

/* bas_sort_entries -- radix-sort n entries in place (bas_sort.h) */
int
bas_sort_entries(uint8_t *entries, uint64_t n, uint64_t entry_size, uint8_t *tmp,
		int threads)
{
	if (entry_size < 1 || entry_size > MAX_ENTRY)
		return -EINVAL;
	if (n < 2)
		return 0;
	if (entry_size < 2 || n <= INSERTION_CUTOFF * 4) {
		uint8_t scratch[2 * MAX_ENTRY];
		flag_sort(entries, n, entry_size, 0, scratch);
		return 0;
	}
	threads = clamp_threads(threads, n);
	struct radix_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->hist = calloc((size_t)threads, sizeof(*c->hist));
	if (!c->hist) {
		free(c);
		return -ENOMEM;
	}
	c->src = entries;
	c->dst = tmp;
	c->n = n;
	c->es = entry_size;
	c->threads = threads;
	pthread_mutex_init(&c->lock, NULL);

	/* pass 1: stable out-of-place scatter on the top 16 bits, in parallel */
	parallel_for(n, threads, count_slice, c);
	uint64_t sum = 0;
	for (unsigned b = 0; b < TOP_BUCKETS; b++) {
		c->bucket_start[b] = sum;
		for (int t = 0; t < threads; t++) {
			uint64_t cnt = c->hist[t][b];
			c->hist[t][b] = sum;
			sum += cnt;
		}
	}
	c->bucket_start[TOP_BUCKETS] = sum;
	parallel_for(n, threads, scatter_slice, c);

	/* pass 2: each bucket sorted in place on the remaining bytes, buckets shared out */
	c->next_bucket = 0;
	parallel_for((uint64_t)threads, threads, bucket_worker, c);
	memcpy(entries, tmp, n * entry_size);

	pthread_mutex_destroy(&c->lock);
	free(c->hist);
	free(c);
	return 0;
}

/* -- loser-tree merge ----------------------------------------------------------------- */

struct merge_src {
	const uint8_t *const *bufs;
	const uint64_t *counts;
	uint64_t *pos;
	uint64_t item, off, len;
};

/* beats -- run a's head orders before run b's head; an empty run (-1 head) never wins */
static inline int
beats(const struct merge_src *m, int a, int b)
{
	int a_live = m->pos[a] < m->counts[a], b_live = m->pos[b] < m->counts[b];
	if (!a_live || !b_live)
		return a_live;
	int c = memcmp(m->bufs[a] + m->pos[a] * m->item + m->off,
			m->bufs[b] + m->pos[b] * m->item + m->off, m->len);
	return c < 0 || (c == 0 && a < b);
}

/* bas_merge -- k-way loser-tree merge into out, until full or a run needs a refill */
int
bas_merge(int k, const uint8_t **bufs, const uint64_t *counts, uint64_t *pos,
		const uint8_t *exhausted, uint64_t item_size, uint64_t cmp_offset,
		uint64_t cmp_len, uint8_t *out, uint64_t out_cap, uint64_t *out_n,
		int *refill)
{
	*out_n = 0;
	*refill = -1;
	if (k < 1 || cmp_offset + cmp_len > item_size)
		return -EINVAL;
	struct merge_src m = { bufs, counts, pos, item_size, cmp_offset, cmp_len };
	for (int r = 0; r < k; r++)
		if (pos[r] >= counts[r] && !exhausted[r]) {
			*refill = r;
			return 0;
		}

	/* tree[1..k-1] hold losers, tree[0] the winner; leaves are k..2k-1 */
	int *tree = malloc(sizeof(int) * (size_t)(2 * k));
	int *win = malloc(sizeof(int) * (size_t)(2 * k));
	if (!tree || !win) {
		free(tree);
		free(win);
		return -ENOMEM;
	}
	for (int r = 0; r < k; r++)
		win[k + r] = r;
	for (int node = k - 1; node >= 1; node--) {
		int a = win[2 * node], b = win[2 * node + 1];
		if (beats(&m, a, b)) {
			win[node] = a;
			tree[node] = b;
		} else {
			win[node] = b;
			tree[node] = a;
		}
	}
	tree[0] = k > 1 ? win[1] : 0;

	uint64_t n = 0;
	while (n < out_cap) {
		int w = tree[0];
		if (pos[w] >= counts[w])
			break;		/* the winner is empty: every run is drained */
		memcpy(out + n * item_size, bufs[w] + pos[w] * item_size, item_size);
		n++;
		pos[w]++;
		if (pos[w] >= counts[w] && !exhausted[w]) {
			*refill = w;
			break;
		}
		/* replay the winner's path to the root */
		for (int node = (w + k) / 2; node >= 1; node /= 2) {
			if (beats(&m, tree[node], w)) {
				int t = tree[node];
				tree[node] = w;
				w = t;
			}
		}
		tree[0] = w;
	}
	*out_n = n;
	free(tree);
	free(win);
	return 0;
}
