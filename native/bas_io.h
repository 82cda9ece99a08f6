/* SPDX-License-Identifier: Apache-2.0 */
/* bas_io.h -- cdef-clean declarations of the multi-threaded gather/scatter kernels */

/*
 * Every function returns 0 on success or a negative errno on failure.
 * Requests are (offset, length) pairs; piece i lands at (or is taken from)
 * buf + sum(length[0..i-1]): pieces are packed back to back.
 * When uniform_len is non-zero, lengths may be NULL and every piece has that length.
 * threads is the number of worker threads (1 = the calling thread only).
 * The caller (bas/_native/io.py) checks every bound before calling.
 */

/* bas_mem_gather -- copy pieces of a mapped region into one packed buffer */
int bas_mem_gather(const uint8_t *base, const uint64_t *offsets, const uint64_t *lengths,
		uint64_t uniform_len, uint64_t n, uint8_t *out, int threads);

/* bas_mem_scatter -- copy pieces of a packed buffer into a mapped region */
int bas_mem_scatter(uint8_t *base, const uint64_t *offsets, const uint64_t *lengths,
		uint64_t uniform_len, uint64_t n, const uint8_t *src, int threads);

/*
 * bas_fd_gather / bas_fd_scatter -- the same over file descriptors.
 * fd_direct is opened with O_DIRECT (or -1); align is its alignment. Bytes below
 * direct_limit go through fd_direct via aligned bounce buffers when a piece is not
 * aligned; bytes at or past direct_limit (the file's unaligned tail), and all bytes
 * when fd_direct is -1, go through fd_buffered with plain pread/pwrite.
 */
int bas_fd_gather(int fd_buffered, int fd_direct, uint64_t align, uint64_t direct_limit,
		const uint64_t *offsets, const uint64_t *lengths, uint64_t uniform_len,
		uint64_t n, uint8_t *out, int threads);
int bas_fd_scatter(int fd_buffered, int fd_direct, uint64_t align, uint64_t direct_limit,
		const uint64_t *offsets, const uint64_t *lengths, uint64_t uniform_len,
		uint64_t n, const uint8_t *src, int threads);

/*
 * bas_fd_gather_cached -- bas_fd_gather that first takes, per request, the prefix the page
 * cache holds (asked with mincore, read with pread on fd_buffered) and reads only the rest
 * through fd_direct; *cached receives the bytes served from the cache.
 */
int bas_fd_gather_cached(int fd_buffered, int fd_direct, uint64_t align, uint64_t direct_limit,
		const uint64_t *offsets, const uint64_t *lengths, uint64_t uniform_len,
		uint64_t n, uint8_t *out, int threads, uint64_t *cached);

/* bas_max_threads -- the most worker threads one call of any kernel may start (bas_threads.h) */
int bas_max_threads(void);

/* bas_crc32 -- zlib CRC-32 of len bytes, continuing from crc */
uint32_t bas_crc32(uint32_t crc, const uint8_t *buf, uint64_t len);
