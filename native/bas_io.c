/* SPDX-License-Identifier: Apache-2.0 */
/* bas_io.c -- multi-threaded gather/scatter over mapped memory and file descriptors */

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "bas_io.h"
#include "bas_threads.h"

#define BAS_BOUNCE_BYTES (1u << 20)
#define BAS_PREFETCH_AHEAD 8

enum bas_kind { MEM_GATHER, MEM_SCATTER, FD_GATHER, FD_SCATTER };

struct bas_job {
	enum bas_kind kind;
	uint8_t *base;
	int fd_buffered;
	int fd_direct;
	uint64_t align;
	uint64_t direct_limit;
	const uint64_t *offsets;
	const uint64_t *lengths;
	uint64_t uniform_len;
	uint8_t *buf;
	int cache_first;	/* gathers: take what the page cache holds before O_DIRECT */
};

struct bas_slice {
	const struct bas_job *job;
	uint64_t lo, hi;	/* request indexes [lo, hi) */
	uint64_t pos;		/* where request lo starts in buf */
	uint64_t cached;	/* bytes served from the page cache (cache_first) */
	int rc;
};

/*
 * SIGBUS guard. A mapping of a file that someone else truncates faults with SIGBUS on the
 * pages past the new end; without a guard that kills the interpreter. While a worker copies
 * to or from a mapping, guard_jmp points at its jump buffer and the handler jumps back into
 * guarded_slice, which fails the request with -EIO. A SIGBUS outside a guarded copy goes once to
 * the handler that was there before (Python's faulthandler, or the default: a core dump);
 * should that handler hand it back (faulthandler, enabled after us, saved us as its own
 * "previous"), the second one dies the default way instead of ping-ponging forever.
 * guard_jmp is initial-exec TLS: reading it in the handler never allocates.
 */
static __thread __attribute__((tls_model("initial-exec"))) sigjmp_buf *guard_jmp;
static struct sigaction prev_bus;
static volatile sig_atomic_t bus_forwarded;
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;

/* die_of -- reset sig to its default action and raise it (delivered when the handler returns) */
static void
die_of(int sig)
{
	signal(sig, SIG_DFL);
	raise(sig);
}

/* bus_handler -- jump back into a guarded copy, or pass the signal on once */
static void
bus_handler(int sig, siginfo_t *info, void *ctx)
{
	sigjmp_buf *jb = guard_jmp;
	if (jb != NULL)
		siglongjmp(*jb, 1);
	if (bus_forwarded || prev_bus.sa_handler == SIG_DFL) {
		die_of(sig);
		return;
	}
	bus_forwarded = 1;
	if (prev_bus.sa_flags & SA_SIGINFO) {
		if (prev_bus.sa_sigaction != NULL)
			prev_bus.sa_sigaction(sig, info, ctx);
		return;
	}
	if (prev_bus.sa_handler == SIG_IGN)
		return;
	prev_bus.sa_handler(sig);
}

/* install_bus_guard -- make bus_handler the SIGBUS handler (again, if someone replaced it) */
static int
install_bus_guard(void)
{
	struct sigaction cur, act;
	int rc = 0;
	pthread_mutex_lock(&guard_lock);
	if (sigaction(SIGBUS, NULL, &cur) == 0 && (!(cur.sa_flags & SA_SIGINFO) ||
						   cur.sa_sigaction != bus_handler)) {
		memset(&act, 0, sizeof(act));
		act.sa_sigaction = bus_handler;
		act.sa_flags = SA_SIGINFO | SA_ONSTACK;
		sigemptyset(&act.sa_mask);
		if (sigaction(SIGBUS, &act, &prev_bus))
			rc = -errno;
	}
	pthread_mutex_unlock(&guard_lock);
	return rc;
}

/* piece_len -- length of request i */
static inline uint64_t
piece_len(const struct bas_job *job, uint64_t i)
{
	return job->uniform_len ? job->uniform_len : job->lengths[i];
}

/* full_pread -- read exactly len bytes or fail; EOF before len is EIO */
static int
full_pread(int fd, uint8_t *buf, uint64_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t got = pread(fd, buf, len, (off_t)off);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (got == 0)
			return -EIO;
		buf += got;
		off += (uint64_t)got;
		len -= (uint64_t)got;
	}
	return 0;
}

/* full_pwrite -- write exactly len bytes or fail */
static int
full_pwrite(int fd, const uint8_t *buf, uint64_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t put = pwrite(fd, buf, len, (off_t)off);
		if (put < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (put == 0)
			return -EIO;
		buf += put;
		off += (uint64_t)put;
		len -= (uint64_t)put;
	}
	return 0;
}

/* partial_pread -- read up to len bytes of an aligned block; the part past EOF is zeroed */
static int
partial_pread(int fd, uint8_t *buf, uint64_t len, uint64_t off)
{
	uint64_t done = 0;
	while (done < len) {
		ssize_t got = pread(fd, buf + done, len - done, (off_t)(off + done));
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (got == 0)
			break;
		done += (uint64_t)got;
	}
	memset(buf + done, 0, len - done);
	return 0;
}

/* is_aligned -- whether v is a multiple of align (a power of two) */
static inline int
is_aligned(uint64_t v, uint64_t align)
{
	return (v & (align - 1)) == 0;
}

/* direct_read -- read [off, off+len) below direct_limit through the O_DIRECT fd */
static int
direct_read(const struct bas_job *job, uint8_t *bounce, uint8_t *dst, uint64_t off,
		uint64_t len)
{
	uint64_t a = job->align;
	if (is_aligned(off, a) && is_aligned(len, a) && is_aligned((uintptr_t)dst, a))
		return full_pread(job->fd_direct, dst, len, off);
	uint64_t end = off + len;
	while (off < end) {
		uint64_t a0 = off & ~(a - 1);
		uint64_t a1 = (end + a - 1) & ~(a - 1);
		if (a1 - a0 > BAS_BOUNCE_BYTES)
			a1 = a0 + BAS_BOUNCE_BYTES;
		int rc = full_pread(job->fd_direct, bounce, a1 - a0, a0);
		if (rc)
			return rc;
		uint64_t stop = end < a1 ? end : a1;
		memcpy(dst, bounce + (off - a0), stop - off);
		dst += stop - off;
		off = stop;
	}
	return 0;
}

/* direct_write -- write [off, off+len) below direct_limit; unaligned edges are read-modify-write */
static int
direct_write(const struct bas_job *job, uint8_t *bounce, const uint8_t *src, uint64_t off,
		uint64_t len)
{
	uint64_t a = job->align;
	if (is_aligned(off, a) && is_aligned(len, a) && is_aligned((uintptr_t)src, a))
		return full_pwrite(job->fd_direct, src, len, off);
	uint64_t end = off + len;
	while (off < end) {
		uint64_t a0 = off & ~(a - 1);
		uint64_t a1 = (end + a - 1) & ~(a - 1);
		if (a1 - a0 > BAS_BOUNCE_BYTES)
			a1 = a0 + BAS_BOUNCE_BYTES;
		uint64_t stop = end < a1 ? end : a1;
		int rc;
		if (off > a0 && (rc = partial_pread(job->fd_direct, bounce, a, a0)))
			return rc;
		if (stop < a1 && (rc = partial_pread(job->fd_direct, bounce + (a1 - a0) - a, a,
						a1 - a)))
			return rc;
		memcpy(bounce + (off - a0), src, stop - off);
		if ((rc = full_pwrite(job->fd_direct, bounce, a1 - a0, a0)))
			return rc;
		src += stop - off;
		off = stop;
	}
	return 0;
}

/* mincore_trusted -- whether mincore tells this process the truth about fd: since Linux
 * 5.0 it reports every page resident for a file the caller neither owns nor may write */
static int
mincore_trusted(int fd)
{
	struct stat st;
	char path[64];
	if (geteuid() == 0)
		return 1;
	if (fstat(fd, &st) != 0)
		return 0;
	if (st.st_uid == geteuid())
		return 1;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return access(path, W_OK) == 0;
}

/* resident_prefix -- bytes from off on, up to len, whose pages the page cache holds now.
 * Asked with mincore on a throw-away mapping: unlike a RWF_NOWAIT read, asking starts no
 * readahead, so an uncached range is not read twice (by readahead and by O_DIRECT). */
static uint64_t
resident_prefix(int fd, uint64_t off, uint64_t len)
{
	if (!mincore_trusted(fd))
		return 0;	/* unknown: O_DIRECT reads it all, the safe cold path */
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t start = off & ~(page - 1);
	uint64_t span = off + len - start;
	uint64_t pages = (span + page - 1) / page;
	unsigned char small[256];
	unsigned char *vec = pages <= sizeof(small) ? small : malloc(pages);
	uint64_t done = 0;
	if (vec == NULL)
		return 0;
	void *map = mmap(NULL, span, PROT_READ, MAP_SHARED, fd, (off_t)start);
	if (map != MAP_FAILED) {
		if (mincore(map, span, vec) == 0) {
			uint64_t k = 0;
			while (k < pages && (vec[k] & 1))
				k++;
			done = k == pages ? len : (start + k * page > off ? start + k * page - off : 0);
		}
		munmap(map, span);
	}
	if (vec != small)
		free(vec);
	return done;
}

/* cached_prefix -- read the part of [off, off+len) that the page cache holds: its length */
static uint64_t
cached_prefix(int fd, uint8_t *buf, uint64_t len, uint64_t off)
{
	uint64_t want = resident_prefix(fd, off, len);
	if (want == 0 || full_pread(fd, buf, want, off))
		return 0;	/* evicted meanwhile, or an error: O_DIRECT reads it all */
	return want;
}

/* fd_piece -- move one request, splitting it at direct_limit */
static int
fd_piece(const struct bas_job *job, struct bas_slice *s, uint8_t *bounce, uint8_t *buf,
		uint64_t off, uint64_t len)
{
	uint64_t head = 0;
	int rc = 0;
	if (job->cache_first && job->fd_direct >= 0 && off < job->direct_limit) {
		uint64_t hit = cached_prefix(job->fd_buffered, buf, len, off);
		s->cached += hit;
		buf += hit;
		off += hit;
		len -= hit;
		if (len == 0)
			return 0;
	}
	if (job->fd_direct >= 0 && off < job->direct_limit) {
		head = job->direct_limit - off;
		if (head > len)
			head = len;
		rc = job->kind == FD_GATHER ? direct_read(job, bounce, buf, off, head)
					    : direct_write(job, bounce, buf, off, head);
		if (rc)
			return rc;
	}
	if (head == len)
		return 0;
	return job->kind == FD_GATHER
		? full_pread(job->fd_buffered, buf + head, len - head, off + head)
		: full_pwrite(job->fd_buffered, buf + head, len - head, off + head);
}

/* copy_slice -- move requests [lo, hi) of a memory job (may fault: see guarded_slice) */
static __attribute__((noinline)) void
copy_slice(const struct bas_slice *s)
{
	const struct bas_job *job = s->job;
	uint64_t pos = s->pos;
	for (uint64_t i = s->lo; i < s->hi; i++) {
		uint64_t len = piece_len(job, i);
		uint64_t off = job->offsets[i];
		if (job->kind == MEM_GATHER) {
			if (i + BAS_PREFETCH_AHEAD < s->hi)
				__builtin_prefetch(job->base + job->offsets[i + BAS_PREFETCH_AHEAD]);
			memcpy(job->buf + pos, job->base + off, len);
		} else {
			memcpy(job->base + off, job->buf + pos, len);
		}
		pos += len;
	}
}

/* guarded_slice -- copy_slice under the SIGBUS guard: a fault fails the slice with -EIO */
static void
guarded_slice(struct bas_slice *s)
{
	sigjmp_buf jb;
	if (sigsetjmp(jb, 1)) {
		/* a SIGBUS in copy_slice: the mapped file shrank under us */
		guard_jmp = NULL;
		s->rc = -EIO;
		return;
	}
	guard_jmp = &jb;
	copy_slice(s);
	guard_jmp = NULL;
}

/* run_slice -- task body: move requests [lo, hi) of slice t of the slices at ctx */
static int
run_slice(void *ctx, int t)
{
	struct bas_slice *s = (struct bas_slice *)ctx + t;
	const struct bas_job *job = s->job;
	uint8_t *bounce = NULL;
	uint64_t pos = s->pos;
	s->rc = 0;
	s->cached = 0;

	if (job->kind == MEM_GATHER || job->kind == MEM_SCATTER) {
		guarded_slice(s);
		return s->rc;
	}
	if (job->fd_direct >= 0) {
		if (posix_memalign((void **)&bounce, job->align, BAS_BOUNCE_BYTES)) {
			s->rc = -ENOMEM;
			return s->rc;
		}
	}
	for (uint64_t i = s->lo; i < s->hi; i++) {
		uint64_t len = piece_len(job, i);
		s->rc = fd_piece(job, s, bounce, job->buf + pos, job->offsets[i], len);
		if (s->rc)
			break;
		pos += len;
	}
	free(bounce);
	return s->rc;
}

/* run_job -- split the requests into byte-balanced slices and run them with bas_fanout */
static int
run_job(const struct bas_job *job, uint64_t n, int threads, uint64_t *cached)
{
	if (threads < 1)
		threads = 1;
	if (threads > BAS_MAX_THREADS)
		threads = BAS_MAX_THREADS;
	if ((uint64_t)threads > n)
		threads = n ? (int)n : 1;

	uint64_t total = 0;
	if (job->uniform_len)
		total = job->uniform_len * n;
	else
		for (uint64_t i = 0; i < n; i++)
			total += job->lengths[i];

	struct bas_slice slices[BAS_MAX_THREADS];
	uint64_t i = 0, pos = 0;
	for (int t = 0; t < threads; t++) {
		/* slice t ends where the bytes moved reach total * (t + 1) / threads */
		uint64_t goal = (uint64_t)((__uint128_t)total * (uint64_t)(t + 1) / (uint64_t)threads);
		slices[t].job = job;
		slices[t].lo = i;
		slices[t].pos = pos;
		while (i < n && (pos < goal || t == threads - 1)) {
			pos += piece_len(job, i);
			i++;
		}
		slices[t].hi = i;
	}

	int rc = bas_fanout(threads, run_slice, slices);
	if (cached != NULL)
		for (int t = 0; t < threads; t++)
			*cached += slices[t].cached;
	return rc;
}

/* bas_mem_gather -- copy pieces of a mapped region into one packed buffer (bas_io.h) */
int
bas_mem_gather(const uint8_t *base, const uint64_t *offsets, const uint64_t *lengths,
		uint64_t uniform_len, uint64_t n, uint8_t *out, int threads)
{
	struct bas_job job = { MEM_GATHER, (uint8_t *)base, -1, -1, 1, 0, offsets, lengths,
		uniform_len, out, 0 };
	int rc = install_bus_guard();
	return rc ? rc : run_job(&job, n, threads, NULL);
}

/* bas_mem_scatter -- copy the pieces of a packed buffer into a mapped region (bas_io.h) */
int
bas_mem_scatter(uint8_t *base, const uint64_t *offsets, const uint64_t *lengths,
		uint64_t uniform_len, uint64_t n, const uint8_t *src, int threads)
{
	struct bas_job job = { MEM_SCATTER, base, -1, -1, 1, 0, offsets, lengths, uniform_len,
		(uint8_t *)src, 0 };
	int rc = install_bus_guard();
	return rc ? rc : run_job(&job, n, threads, NULL);
}

/* bas_fd_gather -- pread pieces of a file into one packed buffer (bas_io.h) */
int
bas_fd_gather(int fd_buffered, int fd_direct, uint64_t align, uint64_t direct_limit,
		const uint64_t *offsets, const uint64_t *lengths, uint64_t uniform_len,
		uint64_t n, uint8_t *out, int threads)
{
	struct bas_job job = { FD_GATHER, NULL, fd_buffered, fd_direct, align, direct_limit,
		offsets, lengths, uniform_len, out, 0 };
	return run_job(&job, n, threads, NULL);
}

/* bas_fd_gather_cached -- bas_fd_gather taking what the page cache holds first (bas_io.h) */
int
bas_fd_gather_cached(int fd_buffered, int fd_direct, uint64_t align, uint64_t direct_limit,
		const uint64_t *offsets, const uint64_t *lengths, uint64_t uniform_len,
		uint64_t n, uint8_t *out, int threads, uint64_t *cached)
{
	struct bas_job job = { FD_GATHER, NULL, fd_buffered, fd_direct, align, direct_limit,
		offsets, lengths, uniform_len, out, 1 };
	*cached = 0;
	return run_job(&job, n, threads, cached);
}

/* bas_fd_scatter -- pwrite the pieces of a packed buffer into a file (bas_io.h) */
int
bas_fd_scatter(int fd_buffered, int fd_direct, uint64_t align, uint64_t direct_limit,
		const uint64_t *offsets, const uint64_t *lengths, uint64_t uniform_len,
		uint64_t n, const uint8_t *src, int threads)
{
	struct bas_job job = { FD_SCATTER, NULL, fd_buffered, fd_direct, align, direct_limit,
		offsets, lengths, uniform_len, (uint8_t *)src, 0 };
	return run_job(&job, n, threads, NULL);
}

/* bas_max_threads -- the most worker threads one call may start */
int
bas_max_threads(void)
{
	return BAS_MAX_THREADS;
}

/* bas_crc32 -- zlib CRC-32 of len bytes, continuing from crc */
uint32_t
bas_crc32(uint32_t crc, const uint8_t *buf, uint64_t len)
{
	/* zlib takes uInt lengths: feed it 1 GiB at a time */
	while (len > 0) {
		uInt step = len > (1u << 30) ? (1u << 30) : (uInt)len;
		crc = (uint32_t)crc32((uLong)crc, buf, step);
		buf += step;
		len -= step;
	}
	return crc;
}
