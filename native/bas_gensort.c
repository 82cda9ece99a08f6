/* SPDX-License-Identifier: Apache-2.0 */
/* bas_gensort.c -- gensort 1.5 records from the 128-bit LCG, and valsort's checks, on threads */

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "bas_gensort.h"
#include "bas_threads.h"

#define REC 100
#define KEY 10
#define BLOCK 256		/* records made per refill of the random-number window */
#define SKEW_KEYS 129		/* skew_index(r) is the bit length of r: 0 .. 128 */

typedef unsigned __int128 u128;

#define U128(hi, lo) (((u128)(hi) << 64) | (u128)(lo))

static const u128 LCG_A = U128(0x2360ed051fc65da4ULL, 0x4385df649fccf645ULL);
static const u128 LCG_C = U128(0x4a696d4772617952ULL, 0x4950202020202001ULL);

/* value group i (1..9) is top10(X XOR K[i]) */
static const u128 K[10] = {
	0,
	U128(0xF0E8E4E2E1D8D4D2ULL, 0xD1CC000000000000ULL),
	U128(0xCAC9C6C5C3B8B4B2ULL, 0xB1AC000000000000ULL),
	U128(0xAAA9A6A5A39C9A99ULL, 0x9695000000000000ULL),
	U128(0x938E8D8B87787472ULL, 0x716C000000000000ULL),
	U128(0x6A696665635C5A59ULL, 0x5655000000000000ULL),
	U128(0x534E4D4B473C3A39ULL, 0x3635000000000000ULL),
	U128(0x332E2D2B271E1D1BULL, 0x170F000000000000ULL),
	U128(0xC8C4C2C198949291ULL, 0x8CE0000000000000ULL),
	U128(0x170F332E2D2B271EULL, 0x1D1B000000000000ULL),
};

static const char HEX[16] = "0123456789ABCDEF";

/* lcg_jumps -- the maps f^(2^i), f(x) = A x + C, as (a[i], c[i]) for i < 128 */
struct lcg_jumps {
	u128 a[128];
	u128 c[128];
};

/* gen_job -- what every generating thread shares */
struct gen_job {
	struct lcg_jumps jumps;
	uint8_t skew_keys[SKEW_KEYS][KEY];	/* unskewed key of record k, for skew mode */
	uint8_t *buf;
	int ascii;
	int skew;
	int want_sum;
};

/* gen_slice -- one thread's records [first, first + n), written at out */
struct gen_slice {
	const struct gen_job *job;
	uint8_t *out;
	u128 first;
	uint64_t n;
	u128 sum;
};

/* scan_slice -- one thread's run of records to validate */
struct scan_slice {
	const uint8_t *buf;
	uint64_t n;
	struct bas_valsort_part part;
};

/* lcg_jumps_init -- square the map 127 times: f^(2^(i+1)) = f^(2^i) composed with itself */
static void
lcg_jumps_init(struct lcg_jumps *j)
{
	j->a[0] = LCG_A;
	j->c[0] = LCG_C;
	for (int i = 1; i < 128; i++) {
		j->a[i] = j->a[i - 1] * j->a[i - 1];
		j->c[i] = j->a[i - 1] * j->c[i - 1] + j->c[i - 1];
	}
}

/* lcg_at -- X_n, reached from X_0 = 0 by the jumps for the set bits of n */
static u128
lcg_at(const struct lcg_jumps *j, u128 n)
{
	u128 x = 0;
	for (int i = 0; n != 0; i++, n >>= 1)
		if (n & 1)
			x = j->a[i] * x + j->c[i];
	return x;
}

/* put_be64 -- store v big-endian */
static inline void
put_be64(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	memcpy(p, &v, 8);
}

/* put_top10 -- the 10 most significant bytes of x, big-endian */
static inline void
put_top10(uint8_t *p, u128 x)
{
	uint64_t hi = (uint64_t)(x >> 64);
	uint64_t lo = (uint64_t)x;
	put_be64(p, hi);
	p[8] = (uint8_t)(lo >> 56);
	p[9] = (uint8_t)(lo >> 48);
}

/* put_ascii_key -- hi as 8 and lo as 2 base-95 digits, least significant first, from ' ' */
static inline void
put_ascii_key(uint8_t *p, u128 x)
{
	uint64_t hi = (uint64_t)(x >> 64);
	uint64_t lo = (uint64_t)x;
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(' ' + hi % 95);
		hi /= 95;
	}
	p[8] = (uint8_t)(' ' + lo % 95);
	p[9] = (uint8_t)(' ' + (lo / 95) % 95);
}

/* put_key -- the unskewed key that the random number x gives */
static inline void
put_key(uint8_t *p, u128 x, int ascii)
{
	if (ascii)
		put_ascii_key(p, x);
	else
		put_top10(p, x);
}

/* skew_key -- overwrite the head of key p with the head of record skew_index(r)'s key */
static inline void
skew_key(uint8_t *p, const struct gen_job *job, u128 r, uint64_t lo)
{
	int k = 0;
	if (r >> 64)
		k = 128 - __builtin_clzll((uint64_t)(r >> 64));
	else if (r)
		k = 64 - __builtin_clzll((uint64_t)r);
	const uint8_t *s = job->skew_keys[k];

	if (job->ascii) {
		unsigned chars = (unsigned)(lo >> 32) & 7;
		if (chars > 6)
			chars = 0;
		memcpy(p, s, chars);
		return;
	}
	unsigned bits = (unsigned)(lo >> 32) & 63;
	if (bits > 48)
		bits = 0;
	memcpy(p, s, bits / 8);
	if (bits % 8) {
		uint8_t mask = (uint8_t)(0xFF << (8 - bits % 8));
		p[bits / 8] = (uint8_t)((s[bits / 8] & mask) | (p[bits / 8] & ~mask));
	}
}

/* put_ascii_value -- bytes 10..99 of an ASCII record: number r in hex, nibbles of lo, CR LF */
static inline void
put_ascii_value(uint8_t *p, u128 r, uint64_t lo)
{
	p[10] = p[11] = ' ';
	for (int i = 0; i < 32; i++)
		p[12 + i] = (uint8_t)HEX[(unsigned)(r >> (124 - 4 * i)) & 0xF];
	p[44] = p[45] = ' ';
	for (int i = 0; i < 13; i++)
		memset(p + 46 + 4 * i, HEX[(lo >> (48 - 4 * i)) & 0xF], 4);
	p[98] = '\r';
	p[99] = '\n';
}

/* make_record -- record r from its ten random numbers x[0..9] = X_{r+1} .. X_{r+10} */
static inline void
make_record(uint8_t *p, const struct gen_job *job, u128 r, const u128 *x)
{
	uint64_t lo = (uint64_t)x[0];
	put_key(p, x[0], job->ascii);
	if (job->skew)
		skew_key(p, job, r, lo);
	if (job->ascii) {
		put_ascii_value(p, r, lo);
		return;
	}
	for (int i = 1; i < 10; i++)
		put_top10(p + KEY * i, x[i] ^ K[i]);
}

/* run_gen -- task body: slice t of records, refilling the window BLOCK records at a time */
static int
run_gen(void *ctx, int t)
{
	struct gen_slice *s = (struct gen_slice *)ctx + t;
	const struct gen_job *job = s->job;
	u128 x[BLOCK + 9];
	u128 sum = 0;
	uint8_t *p = s->out;
	u128 r = s->first;
	uint64_t left = s->n;

	x[0] = lcg_at(&job->jumps, r + 1);
	for (int i = 1; i < 9; i++)
		x[i] = LCG_A * x[i - 1] + LCG_C;
	while (left > 0) {
		uint64_t m = left < BLOCK ? left : BLOCK;
		for (uint64_t i = 9; i < m + 9; i++)
			x[i] = LCG_A * x[i - 1] + LCG_C;
		for (uint64_t i = 0; i < m; i++, r++, p += REC) {
			make_record(p, job, r, x + i);
			if (job->want_sum)
				sum += (uint32_t)crc32(0, p, REC);
		}
		memmove(x, x + m, 9 * sizeof(x[0]));
		left -= m;
	}
	s->sum = sum;
	return 0;
}

/* clamp_threads -- 1 .. min(BAS_MAX_THREADS, n) */
static int
clamp_threads(int threads, uint64_t n)
{
	if (threads > BAS_MAX_THREADS)
		threads = BAS_MAX_THREADS;
	if ((uint64_t)threads > n)
		threads = (int)n;
	return threads < 1 ? 1 : threads;
}

/* bas_gensort_record_size -- bytes in one record */
int
bas_gensort_record_size(void)
{
	return REC;
}

/* bas_gensort_generate -- split records [start, start + n) over threads and make them */
int
bas_gensort_generate(uint8_t *buf, uint64_t start_hi, uint64_t start_lo, uint64_t n,
		int ascii, int skew, int threads, uint64_t *sum_hi, uint64_t *sum_lo)
{
	u128 start = U128(start_hi, start_lo);
	if ((sum_hi == NULL) != (sum_lo == NULL) || (n && !buf))
		return -EINVAL;
	if (start != 0 && (u128)n > -start)
		return -EINVAL;	/* record numbers would pass 2^128 */

	struct gen_job job;
	memset(&job, 0, sizeof(job));
	lcg_jumps_init(&job.jumps);
	job.buf = buf;
	job.ascii = ascii != 0;
	job.skew = skew != 0;
	job.want_sum = sum_hi != NULL;
	if (job.skew) {
		u128 x = 0;
		for (int k = 0; k < SKEW_KEYS; k++) {
			x = LCG_A * x + LCG_C;
			put_key(job.skew_keys[k], x, job.ascii);
		}
	}

	threads = clamp_threads(threads, n);
	struct gen_slice slices[BAS_MAX_THREADS];
	for (int t = 0; t < threads; t++) {
		uint64_t lo = (uint64_t)((u128)n * (uint64_t)t / (uint64_t)threads);
		uint64_t hi = (uint64_t)((u128)n * (uint64_t)(t + 1) / (uint64_t)threads);
		slices[t] = (struct gen_slice){ &job, buf + lo * REC, start + lo, hi - lo, 0 };
	}
	(void)bas_fanout(threads, run_gen, slices);	/* the tasks cannot fail */

	u128 sum = 0;
	for (int t = 0; t < threads; t++)
		sum += slices[t].sum;
	if (sum_hi) {
		*sum_hi = (uint64_t)(sum >> 64);
		*sum_lo = (uint64_t)sum;
	}
	return 0;
}

/* run_scan -- task body: count, checksum and compare the keys of run t */
static int
run_scan(void *ctx, int t)
{
	struct scan_slice *s = (struct scan_slice *)ctx + t;
	struct bas_valsort_part *part = &s->part;
	const uint8_t *p = s->buf;
	u128 sum = 0;

	memset(part, 0, sizeof(*part));
	for (uint64_t i = 0; i < s->n; i++, p += REC) {
		sum += (uint32_t)crc32(0, p, REC);
		if (i == 0)
			continue;
		int cmp = memcmp(p - REC, p, KEY);
		if (cmp == 0) {
			part->duplicates++;
		} else if (cmp > 0) {
			if (part->unordered++ == 0)
				part->first_unordered = i;
		}
	}
	part->records = s->n;
	part->checksum_hi = (uint64_t)(sum >> 64);
	part->checksum_lo = (uint64_t)sum;
	if (s->n) {
		memcpy(part->first, s->buf, REC);
		memcpy(part->last, p - REC, REC);
	}
	return 0;
}

/* bas_valsort_scan -- validate runs of buf on threads, then join their parts in order */
int
bas_valsort_scan(const uint8_t *buf, uint64_t n, int threads, struct bas_valsort_part *out)
{
	if (!out || (n && !buf))
		return -EINVAL;
	threads = clamp_threads(threads, n);
	struct scan_slice slices[BAS_MAX_THREADS];
	for (int t = 0; t < threads; t++) {
		uint64_t lo = (uint64_t)((u128)n * (uint64_t)t / (uint64_t)threads);
		uint64_t hi = (uint64_t)((u128)n * (uint64_t)(t + 1) / (uint64_t)threads);
		slices[t].buf = buf + lo * REC;
		slices[t].n = hi - lo;
	}
	(void)bas_fanout(threads, run_scan, slices);	/* the tasks cannot fail */

	*out = slices[0].part;
	for (int t = 1; t < threads; t++)
		bas_valsort_combine(out, &slices[t].part);
	return 0;
}

/* bas_valsort_combine -- fold run next, which follows run acc, into acc */
int
bas_valsort_combine(struct bas_valsort_part *acc, const struct bas_valsort_part *next)
{
	if (!acc || !next)
		return -EINVAL;
	if (next->records == 0)
		return 0;
	if (acc->records == 0) {
		*acc = *next;
		return 0;
	}
	if (acc->records + next->records < acc->records)
		return -EOVERFLOW;
	int cmp = memcmp(acc->last, next->first, KEY);
	if (cmp == 0)
		acc->duplicates++;
	if (cmp > 0 && acc->unordered++ == 0)
		acc->first_unordered = acc->records;
	if (next->unordered && acc->unordered == 0)
		acc->first_unordered = acc->records + next->first_unordered;
	acc->unordered += next->unordered;
	acc->duplicates += next->duplicates;

	u128 sum = U128(acc->checksum_hi, acc->checksum_lo)
		+ U128(next->checksum_hi, next->checksum_lo);
	acc->checksum_hi = (uint64_t)(sum >> 64);
	acc->checksum_lo = (uint64_t)sum;
	acc->records += next->records;
	memcpy(acc->last, next->last, REC);
	return 0;
}
