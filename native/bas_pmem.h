/* SPDX-License-Identifier: Apache-2.0 */
/* bas_pmem.h -- cdef-clean declarations of the libpmemobj helpers behind pmem:// */

/*
 * A pool handle (struct bas_pmem_pool) is opaque: it holds the PMEMobjpool and the
 * direct pointers to the bas root, the data region and the chunk table.
 * Every function returns 0 on success or a negative errno; outputs go through
 * pointers. The functions never abort the process on misuse that they can see:
 * transaction calls check pmemobj_tx_stage() first and return -EINPROGRESS
 * (a transaction is working) or -ENOTCONN (wrong stage / none) instead of
 * reaching PMDK's FATAL(). The Python wrapper (bas/_native/pmem.py) tracks the same
 * state and refuses misuse before calling; this is the second line of defence.
 * Transactions are thread-local in PMDK: every tx call must come from the thread
 * that called bas_pmem_tx_begin.
 */

struct bas_pmem_pool;

/* one entry of the chunk table: CRC-32 of the chunk, non-zero pending while dirty */
struct bas_pmem_chunk {
	uint32_t crc;
	uint32_t pending;
};

/* what the root object says, as read by bas_pmem_attach */
struct bas_pmem_info {
	uint64_t magic;
	uint64_t version;
	uint64_t region_size;
	uint64_t chunk_size;
	uint64_t nchunks;
	uint64_t region_usable;	/* pmemobj_alloc_usable_size of the region */
	uint64_t table_usable;	/* pmemobj_alloc_usable_size of the table */
};

/* constants of PMDK and of the on-pool format, so Python cannot drift from C */
struct bas_pmem_consts {
	uint64_t min_pool;	/* PMEMOBJ_MIN_POOL */
	uint64_t max_alloc;	/* PMEMOBJ_MAX_ALLOC_SIZE */
	uint64_t magic;
	uint64_t version;
	uint64_t root_size;
	uint64_t chunk_entry_size;
	int stage_none, stage_work, stage_oncommit, stage_onabort, stage_finally;
	int err_in_tx;		/* returned when a transaction is working */
	int err_no_tx;		/* returned when no transaction (or the wrong stage) */
	int err_not_bas;	/* bas_pmem_attach: the pool has no bas root */
};

/* bas_pmem_consts -- fill *out with the constants above */
int bas_pmem_consts(struct bas_pmem_consts *out);

/* bas_pmem_errormsg -- pmemobj_errormsg() of this thread (may hold non-UTF-8 bytes) */
const char *bas_pmem_errormsg(void);

/* bas_pmem_check -- pmemobj_check: *consistent = 1 ok, 0 inconsistent; -errno on error */
int bas_pmem_check(const char *path, const char *layout, int *consistent);

/* bas_pmem_create -- pmemobj_create a new pool file and allocate the zeroed root */
int bas_pmem_create(const char *path, const char *layout, uint64_t pool_size,
		unsigned mode, struct bas_pmem_pool **out);

/* bas_pmem_open -- pmemobj_open an existing pool (PMDK recovers unfinished transactions) */
int bas_pmem_open(const char *path, const char *layout, struct bas_pmem_pool **out);

/* bas_pmem_close -- pmemobj_close and free the handle; refused while this thread is in a tx */
int bas_pmem_close(struct bas_pmem_pool *pool);

/* bas_pmem_attach -- read and validate the bas root; set the region and table pointers */
int bas_pmem_attach(struct bas_pmem_pool *pool, struct bas_pmem_info *out);

/* bas_pmem_region -- address and size of the data region (0, 0 before format/attach) */
int bas_pmem_region(struct bas_pmem_pool *pool, uint64_t *addr, uint64_t *size,
		int *is_pmem);

/* bas_pmem_read_table -- copy table entries [first, first + n) into out */
int bas_pmem_read_table(struct bas_pmem_pool *pool, uint64_t first, uint64_t n,
		struct bas_pmem_chunk *out);

/* bas_pmem_copy_in -- plain store of len bytes at region offset off (not yet durable) */
int bas_pmem_copy_in(struct bas_pmem_pool *pool, uint64_t off, const uint8_t *src,
		uint64_t len);

/*
 * bas_pmem_persist -- make region ranges durable: pmemobj_persist on real PMem,
 * pmem_msync otherwise (pmemobj_persist would FATAL() on an msync error; this
 * returns it instead).
 */
int bas_pmem_persist(struct bas_pmem_pool *pool, const uint64_t *offsets,
		const uint64_t *lengths, uint64_t n);

/* bas_pmem_tx_stage -- pmemobj_tx_stage() of this thread */
int bas_pmem_tx_stage(int *stage);

/* bas_pmem_tx_begin -- begin an outermost tx (NULL jmp_buf); a failed begin is ended */
int bas_pmem_tx_begin(struct bas_pmem_pool *pool);

/* bas_pmem_tx_add_region -- snapshot region bytes [off, off + len) into the undo log */
int bas_pmem_tx_add_region(struct bas_pmem_pool *pool, uint64_t off, uint64_t len);

/*
 * bas_pmem_tx_format -- in a tx: allocate the zeroed region and table, set every
 * chunk's CRC (crc_full for whole chunks, crc_tail for a shorter last one) and
 * fill the root. Needs a root from bas_pmem_create.
 */
int bas_pmem_tx_format(struct bas_pmem_pool *pool, uint64_t region_size,
		uint64_t chunk_size, uint32_t crc_full, uint32_t crc_tail);

/* bas_pmem_tx_set_crcs -- in a tx: table[idx[i]].crc = crcs[i] (idx sorted, unique) */
int bas_pmem_tx_set_crcs(struct bas_pmem_pool *pool, const uint64_t *idx,
		const uint32_t *crcs, uint64_t n);

/* bas_pmem_tx_set_pending -- in a tx: table[idx[i]].pending = value (idx sorted, unique) */
int bas_pmem_tx_set_pending(struct bas_pmem_pool *pool, const uint64_t *idx, uint64_t n,
		uint32_t value);

/* bas_pmem_tx_commit -- commit the working tx (flushes every snapshotted range) */
int bas_pmem_tx_commit(void);

/* bas_pmem_tx_abort -- abort the working tx (the undo log restores every snapshot) */
int bas_pmem_tx_abort(int errnum);

/* bas_pmem_tx_end -- end a committed or aborted tx; *tx_errno = its error (0 if committed) */
int bas_pmem_tx_end(int *tx_errno);
