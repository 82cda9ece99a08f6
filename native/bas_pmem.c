/* SPDX-License-Identifier: Apache-2.0 */
/* bas_pmem.c -- libpmemobj pool, transaction and region helpers behind pmem:// */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libpmem.h>
#include <libpmemobj.h>

#include "bas_pmem.h"

#define BAS_PMEM_MAGIC 0x314d454d50534142ULL	/* "BASPMEM1" little-endian */
#define BAS_PMEM_VERSION 1
#define BAS_PMEM_TYPE_REGION 1
#define BAS_PMEM_TYPE_TABLE 2

/* error codes for misuse and foreign pools (see bas_pmem_consts) */
#define BAS_ERR_IN_TX EINPROGRESS
#define BAS_ERR_NO_TX ENOTCONN
#define BAS_ERR_NOT_BAS EMEDIUMTYPE

/* the root object: the only fixed place in the pool; everything else hangs off it */
struct bas_pmem_root {
	uint64_t magic;
	uint64_t version;
	uint64_t region_size;
	uint64_t chunk_size;
	uint64_t nchunks;
	PMEMoid region;		/* one allocation of region_size bytes */
	PMEMoid table;		/* nchunks struct bas_pmem_chunk */
	uint64_t reserved[6];
	uint64_t check;		/* FNV-1a of everything above */
};

struct bas_pmem_pool {
	PMEMobjpool *pop;
	PMEMoid root_oid;
	struct bas_pmem_root *root;
	PMEMoid region_oid;
	PMEMoid table_oid;
	uint8_t *region;	/* NULL until bas_pmem_attach succeeds */
	struct bas_pmem_chunk *table;
	uint64_t region_size;
	uint64_t chunk_size;
	uint64_t nchunks;
	int is_pmem;
};

/* neg_errno -- the current errno as a negative status (never 0) */
static int
neg_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

/* root_check -- FNV-1a 64 of the root's fields before `check` */
static uint64_t
root_check(const struct bas_pmem_root *root)
{
	const uint8_t *p = (const uint8_t *)root;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < offsetof(struct bas_pmem_root, check); i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

/* in_work -- whether this thread has a transaction in the WORK stage */
static int
in_work(void)
{
	return pmemobj_tx_stage() == TX_STAGE_WORK;
}

/* range_ok -- whether [off, off + len) lies inside [0, size) without overflow */
static int
range_ok(uint64_t off, uint64_t len, uint64_t size)
{
	return off <= size && len <= size - off;
}

/* bas_pmem_consts -- fill *out with PMDK's and the format's constants */
int
bas_pmem_consts(struct bas_pmem_consts *out)
{
	out->min_pool = PMEMOBJ_MIN_POOL;
	out->max_alloc = PMEMOBJ_MAX_ALLOC_SIZE;
	out->magic = BAS_PMEM_MAGIC;
	out->version = BAS_PMEM_VERSION;
	out->root_size = sizeof(struct bas_pmem_root);
	out->chunk_entry_size = sizeof(struct bas_pmem_chunk);
	out->stage_none = TX_STAGE_NONE;
	out->stage_work = TX_STAGE_WORK;
	out->stage_oncommit = TX_STAGE_ONCOMMIT;
	out->stage_onabort = TX_STAGE_ONABORT;
	out->stage_finally = TX_STAGE_FINALLY;
	out->err_in_tx = BAS_ERR_IN_TX;
	out->err_no_tx = BAS_ERR_NO_TX;
	out->err_not_bas = BAS_ERR_NOT_BAS;
	return 0;
}

/* bas_pmem_errormsg -- the last libpmemobj error message of this thread */
const char *
bas_pmem_errormsg(void)
{
	return pmemobj_errormsg();
}

/* bas_pmem_check -- run pmemobj_check on a closed pool file */
int
bas_pmem_check(const char *path, const char *layout, int *consistent)
{
	errno = 0;
	int rc = pmemobj_check(path, layout);
	if (rc < 0)
		return neg_errno();
	*consistent = rc;
	return 0;
}

/* new_handle -- wrap an open PMEMobjpool in a fresh handle, or close it on failure */
static int
new_handle(PMEMobjpool *pop, struct bas_pmem_pool **out)
{
	struct bas_pmem_pool *pool = calloc(1, sizeof(*pool));
	if (pool == NULL) {
		pmemobj_close(pop);
		return -ENOMEM;
	}
	pool->pop = pop;
	*out = pool;
	return 0;
}

/* bas_pmem_create -- create a pool file and its zeroed bas root object */
int
bas_pmem_create(const char *path, const char *layout, uint64_t pool_size, unsigned mode,
		struct bas_pmem_pool **out)
{
	if (pool_size < PMEMOBJ_MIN_POOL)
		return -EINVAL;
	PMEMobjpool *pop = pmemobj_create(path, layout, (size_t)pool_size, (mode_t)mode);
	if (pop == NULL)
		return neg_errno();
	/* outside a tx pmemobj_root allocates atomically: the root is all zeroes or absent */
	PMEMoid root = pmemobj_root(pop, sizeof(struct bas_pmem_root));
	if (OID_IS_NULL(root)) {
		int rc = neg_errno();
		pmemobj_close(pop);
		return rc;
	}
	int rc = new_handle(pop, out);
	if (rc == 0) {
		(*out)->root_oid = root;
		(*out)->root = pmemobj_direct(root);
	}
	return rc;
}

/* bas_pmem_open -- open a pool file; PMDK replays or rolls back unfinished transactions */
int
bas_pmem_open(const char *path, const char *layout, struct bas_pmem_pool **out)
{
	PMEMobjpool *pop = pmemobj_open(path, layout);
	if (pop == NULL)
		return neg_errno();
	return new_handle(pop, out);
}

/* bas_pmem_close -- close the pool and free the handle */
int
bas_pmem_close(struct bas_pmem_pool *pool)
{
	if (pmemobj_tx_stage() != TX_STAGE_NONE)
		return -BAS_ERR_IN_TX;
	pmemobj_close(pool->pop);
	memset(pool, 0, sizeof(*pool));
	free(pool);
	return 0;
}

/* inside_pool -- whether [p, p + len) lies in this pool's mapping */
static int
inside_pool(PMEMobjpool *pop, const void *p, uint64_t len)
{
	if (p == NULL || len == 0)
		return 0;
	return pmemobj_pool_by_ptr(p) == pop &&
		pmemobj_pool_by_ptr((const uint8_t *)p + len - 1) == pop;
}

/* bas_pmem_attach -- validate the bas root and point the handle at region and table */
int
bas_pmem_attach(struct bas_pmem_pool *pool, struct bas_pmem_info *out)
{
	memset(out, 0, sizeof(*out));
	if (pmemobj_root_size(pool->pop) < sizeof(struct bas_pmem_root))
		return -BAS_ERR_NOT_BAS;
	/* the root exists and is large enough, so this allocates nothing */
	PMEMoid root_oid = pmemobj_root(pool->pop, sizeof(struct bas_pmem_root));
	struct bas_pmem_root *root = pmemobj_direct(root_oid);
	if (root == NULL)
		return -BAS_ERR_NOT_BAS;
	out->magic = root->magic;
	out->version = root->version;
	if (root->magic != BAS_PMEM_MAGIC)
		return -BAS_ERR_NOT_BAS;
	if (root->check != root_check(root))
		return -EBADMSG;
	out->region_size = root->region_size;
	out->chunk_size = root->chunk_size;
	out->nchunks = root->nchunks;
	if (root->version != BAS_PMEM_VERSION)
		return 0;	/* the caller refuses the version; nothing else is read */
	uint64_t cs = root->chunk_size;
	if (cs == 0 || root->region_size == 0 ||
			root->nchunks != root->region_size / cs + !!(root->region_size % cs) ||
			root->nchunks > UINT64_MAX / sizeof(struct bas_pmem_chunk))
		return -EBADMSG;
	/* an OID of another pool or past the mapping would make the reads below fault */
	uint8_t *region = pmemobj_direct(root->region);
	struct bas_pmem_chunk *table = pmemobj_direct(root->table);
	uint64_t table_bytes = root->nchunks * sizeof(struct bas_pmem_chunk);
	if (!inside_pool(pool->pop, region, root->region_size) ||
			!inside_pool(pool->pop, table, table_bytes))
		return -EBADMSG;
	out->region_usable = pmemobj_alloc_usable_size(root->region);
	out->table_usable = pmemobj_alloc_usable_size(root->table);
	if (out->region_usable < root->region_size || out->table_usable < table_bytes)
		return -EBADMSG;
	pool->root_oid = root_oid;
	pool->root = root;
	pool->region_oid = root->region;
	pool->table_oid = root->table;
	pool->region = region;
	pool->table = table;
	pool->region_size = root->region_size;
	pool->chunk_size = cs;
	pool->nchunks = root->nchunks;
	pool->is_pmem = pmem_is_pmem(region, (size_t)root->region_size);
	return 0;
}

/* bas_pmem_region -- the region's address and size, and whether it is real PMem */
int
bas_pmem_region(struct bas_pmem_pool *pool, uint64_t *addr, uint64_t *size, int *is_pmem)
{
	*addr = (uint64_t)(uintptr_t)pool->region;
	*size = pool->region ? pool->region_size : 0;
	*is_pmem = pool->is_pmem;
	return 0;
}

/* bas_pmem_read_table -- copy chunk table entries out of the pool */
int
bas_pmem_read_table(struct bas_pmem_pool *pool, uint64_t first, uint64_t n,
		struct bas_pmem_chunk *out)
{
	if (pool->table == NULL)
		return -ENODEV;
	if (!range_ok(first, n, pool->nchunks))
		return -ERANGE;
	memcpy(out, pool->table + first, n * sizeof(*out));
	return 0;
}

/* bas_pmem_copy_in -- store bytes into the region (durable only after a persist) */
int
bas_pmem_copy_in(struct bas_pmem_pool *pool, uint64_t off, const uint8_t *src, uint64_t len)
{
	if (pool->region == NULL)
		return -ENODEV;
	if (!range_ok(off, len, pool->region_size))
		return -ERANGE;
	memcpy(pool->region + off, src, len);
	return 0;
}

/* bas_pmem_persist -- flush region ranges to the media */
int
bas_pmem_persist(struct bas_pmem_pool *pool, const uint64_t *offsets,
		const uint64_t *lengths, uint64_t n)
{
	if (pool->region == NULL)
		return -ENODEV;
	for (uint64_t i = 0; i < n; i++)
		if (!range_ok(offsets[i], lengths[i], pool->region_size))
			return -ERANGE;
	for (uint64_t i = 0; i < n; i++) {
		if (lengths[i] == 0)
			continue;
		uint8_t *p = pool->region + offsets[i];
		if (pool->is_pmem)
			pmemobj_persist(pool->pop, p, (size_t)lengths[i]);
		else if (pmem_msync(p, (size_t)lengths[i]) != 0)
			return neg_errno();
	}
	return 0;
}

/* bas_pmem_tx_stage -- this thread's transaction stage */
int
bas_pmem_tx_stage(int *stage)
{
	*stage = (int)pmemobj_tx_stage();
	return 0;
}

/* bas_pmem_tx_begin -- begin an outermost transaction without a jmp_buf */
int
bas_pmem_tx_begin(struct bas_pmem_pool *pool)
{
	/* begin in WORK would nest; in ONCOMMIT/ONABORT/FINALLY PMDK calls FATAL() */
	if (pmemobj_tx_stage() != TX_STAGE_NONE)
		return -BAS_ERR_IN_TX;
	int err = pmemobj_tx_begin(pool->pop, NULL, TX_PARAM_NONE);
	if (err) {
		/* a failed begin leaves the stage ONABORT: end it so no tx is left behind */
		if (pmemobj_tx_stage() != TX_STAGE_NONE)
			pmemobj_tx_end();
		return -err;
	}
	return 0;
}

/* bas_pmem_tx_add_region -- snapshot region bytes before they are overwritten */
int
bas_pmem_tx_add_region(struct bas_pmem_pool *pool, uint64_t off, uint64_t len)
{
	if (!in_work())
		return -BAS_ERR_NO_TX;
	if (pool->region == NULL)
		return -ENODEV;
	if (len == 0 || !range_ok(off, len, pool->region_size))
		return -ERANGE;
	/* on failure PMDK aborts the transaction (stage ONABORT) and returns the error */
	int err = pmemobj_tx_add_range(pool->region_oid, off, (size_t)len);
	return -err;
}

/* bas_pmem_tx_format -- allocate and initialise region, table and root in one tx */
int
bas_pmem_tx_format(struct bas_pmem_pool *pool, uint64_t region_size, uint64_t chunk_size,
		uint32_t crc_full, uint32_t crc_tail)
{
	if (!in_work())
		return -BAS_ERR_NO_TX;
	if (pool->root == NULL || pool->root->magic != 0)
		return -EEXIST;
	if (region_size == 0 || chunk_size == 0 || region_size > PMEMOBJ_MAX_ALLOC_SIZE)
		return -EINVAL;
	uint64_t nchunks = region_size / chunk_size + !!(region_size % chunk_size);
	int err = pmemobj_tx_add_range(pool->root_oid, 0, sizeof(struct bas_pmem_root));
	if (err)
		return -err;
	PMEMoid region = pmemobj_tx_zalloc((size_t)region_size, BAS_PMEM_TYPE_REGION);
	if (OID_IS_NULL(region))
		return neg_errno();
	size_t table_bytes = (size_t)nchunks * sizeof(struct bas_pmem_chunk);
	PMEMoid table = pmemobj_tx_zalloc(table_bytes, BAS_PMEM_TYPE_TABLE);
	if (OID_IS_NULL(table))
		return neg_errno();
	/* objects allocated in this tx need no snapshot: an abort frees them */
	struct bas_pmem_chunk *t = pmemobj_direct(table);
	for (uint64_t i = 0; i < nchunks; i++)
		t[i].crc = crc_full;
	if (region_size % chunk_size)
		t[nchunks - 1].crc = crc_tail;
	struct bas_pmem_root *root = pool->root;
	root->version = BAS_PMEM_VERSION;
	root->region_size = region_size;
	root->chunk_size = chunk_size;
	root->nchunks = nchunks;
	root->region = region;
	root->table = table;
	root->magic = BAS_PMEM_MAGIC;
	root->check = root_check(root);
	return 0;
}

/*
 * tx_set_entries -- snapshot table entries idx[0..n) (one add_range per run of
 * consecutive indexes) and store crcs[i] (when crcs is not NULL) or the pending value
 */
static int
tx_set_entries(struct bas_pmem_pool *pool, const uint64_t *idx, const uint32_t *crcs,
		uint64_t n, uint32_t pending)
{
	if (!in_work())
		return -BAS_ERR_NO_TX;
	if (pool->table == NULL)
		return -ENODEV;
	for (uint64_t i = 0; i < n; i++)
		if (idx[i] >= pool->nchunks || (i > 0 && idx[i] <= idx[i - 1]))
			return -EINVAL;
	const uint64_t entry = sizeof(struct bas_pmem_chunk);
	for (uint64_t i = 0; i < n; ) {
		uint64_t j = i + 1;
		while (j < n && idx[j] == idx[j - 1] + 1)
			j++;
		int err = pmemobj_tx_add_range(pool->table_oid, idx[i] * entry,
				(size_t)((j - i) * entry));
		if (err)
			return -err;
		for (uint64_t k = i; k < j; k++) {
			if (crcs != NULL)
				pool->table[idx[k]].crc = crcs[k];
			else
				pool->table[idx[k]].pending = pending;
		}
		i = j;
	}
	return 0;
}

/* bas_pmem_tx_set_crcs -- transactionally set chunk checksums */
int
bas_pmem_tx_set_crcs(struct bas_pmem_pool *pool, const uint64_t *idx, const uint32_t *crcs,
		uint64_t n)
{
	return tx_set_entries(pool, idx, crcs, n, 0);
}

/* bas_pmem_tx_set_pending -- transactionally mark chunks pending (or clear the mark) */
int
bas_pmem_tx_set_pending(struct bas_pmem_pool *pool, const uint64_t *idx, uint64_t n,
		uint32_t value)
{
	return tx_set_entries(pool, idx, NULL, n, value);
}

/* bas_pmem_tx_commit -- commit this thread's working transaction */
int
bas_pmem_tx_commit(void)
{
	if (!in_work())
		return -BAS_ERR_NO_TX;
	pmemobj_tx_commit();
	return 0;
}

/* bas_pmem_tx_abort -- abort this thread's working transaction */
int
bas_pmem_tx_abort(int errnum)
{
	if (!in_work())
		return -BAS_ERR_NO_TX;
	pmemobj_tx_abort(errnum > 0 ? errnum : ECANCELED);
	return 0;
}

/* bas_pmem_tx_end -- end a committed or aborted transaction */
int
bas_pmem_tx_end(int *tx_errno)
{
	int stage = (int)pmemobj_tx_stage();
	if (stage == TX_STAGE_WORK)
		return -BAS_ERR_IN_TX;
	if (stage == TX_STAGE_NONE)
		return -BAS_ERR_NO_TX;
	*tx_errno = pmemobj_tx_end();
	return 0;
}
