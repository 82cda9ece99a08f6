/* SPDX-License-Identifier: Apache-2.0 */
/* bas_gensort.h -- cdef-clean declarations of the gensort 1.5 generator and valsort checks */

/*
 * A record is 100 bytes: a 10-byte key and a 90-byte value (docs/gensort.md has the format).
 * Record numbers are 128-bit and travel as (hi, lo) halves; so do checksums, the sum of the
 * records' zlib CRC-32 values. Every function returns 0 on success or a negative errno.
 * threads is the number of worker threads (1 = the calling thread only); it is capped at the
 * record count and at 256 (bas_max_threads()). The caller (bas/_native/gensort.py) checks
 * buffer sizes.
 */

/* bas_valsort_part -- what valsort knows of a run of consecutive records */
struct bas_valsort_part {
	uint64_t records;		/* records in the run */
	uint64_t duplicates;		/* records whose key equals the previous record's key */
	uint64_t unordered;		/* records whose key is below the previous record's key */
	uint64_t first_unordered;	/* index in the run of the first unordered record, 0 if none */
	uint64_t checksum_hi;		/* sum of the records' CRC-32, high 64 bits */
	uint64_t checksum_lo;		/* ... low 64 bits */
	uint8_t first[100];		/* the run's first record (zeros when records is 0) */
	uint8_t last[100];		/* the run's last record (zeros when records is 0) */
};

/* bas_gensort_record_size -- bytes in one record (100) */
int bas_gensort_record_size(void);

/*
 * bas_gensort_generate -- write records [start, start + n) into buf, which holds n * 100
 * bytes. ascii selects the printable format (-a), skew the skewed keys (-s). When sum_hi and
 * sum_lo are not NULL they receive the checksum of the records written. REQUIRES: start + n
 * does not pass 2^128. Threads each skip ahead to their first record, so the output does not
 * depend on threads, and generating [a, b) then [b, c) equals generating [a, c).
 */
int bas_gensort_generate(uint8_t *buf, uint64_t start_hi, uint64_t start_lo, uint64_t n,
		int ascii, int skew, int threads, uint64_t *sum_hi, uint64_t *sum_lo);

/*
 * bas_valsort_scan -- validate the n records in buf: fill *out with their count, checksum,
 * duplicate and unordered keys (compared within buf only) and first and last records.
 */
int bas_valsort_scan(const uint8_t *buf, uint64_t n, int threads, struct bas_valsort_part *out);

/*
 * bas_valsort_combine -- fold next, the run that directly follows acc, into acc: counts and
 * checksums add, and next's first key is compared with acc's last key. acc may be empty.
 */
int bas_valsort_combine(struct bas_valsort_part *acc, const struct bas_valsort_part *next);
