/* SPDX-License-Identifier: Apache-2.0 */
/* bas_sort.h -- cdef-clean declarations of the sort kernels (key/index entries, radix, merge) */

/*
 * An entry is key_size key bytes followed by BAS_INDEX_BYTES (6) bytes of record index,
 * big-endian, so comparing whole entries with memcmp orders by key and then by input
 * position (a stable sort). Every function returns 0 or a negative errno.
 */

/* bas_index_bytes -- bytes of record index in an entry (6: up to 2^48 records) */
int bas_index_bytes(void);

/* bas_max_entry_size -- the largest entry (key + index) the sort and merge kernels take */
int bas_max_entry_size(void);

/* bas_extract_entries -- build n entries from n whole records laid out back to back */
int bas_extract_entries(const uint8_t *records, uint64_t n, uint64_t record_size,
		uint64_t key_offset, uint64_t key_size, uint64_t first_index,
		uint8_t *entries, int threads);

/* bas_entries_from_keys -- build n entries from n packed keys of key_size bytes */
int bas_entries_from_keys(const uint8_t *keys, uint64_t n, uint64_t key_size,
		uint64_t first_index, uint8_t *entries, int threads);

/* bas_sort_entries -- sort n entries of entry_size bytes ascending (memcmp order);
 * tmp must hold n * entry_size bytes; the result is left in entries */
int bas_sort_entries(uint8_t *entries, uint64_t n, uint64_t entry_size, uint8_t *tmp,
		int threads);

/* bas_entry_offsets -- offsets[i] = index(entries[i]) * record_size + base */
int bas_entry_offsets(const uint8_t *entries, uint64_t n, uint64_t entry_size,
		uint64_t record_size, uint64_t base, uint64_t *offsets);

/*
 * bas_merge -- k-way merge with a loser tree of k sorted runs of item_size-byte items,
 * ordered by memcmp of bytes [cmp_offset, cmp_offset + cmp_len), ties broken by run number.
 * bufs[r] holds counts[r] items of run r; pos[r] (in/out) is the next unread item.
 * exhausted[r] is 1 when run r has no items beyond its buffer.
 * Items go to out until out_cap items are written or a run that is not exhausted
 * empties its buffer; *out_n gets the count and *refill the run to refill (or -1).
 */
int bas_merge(int k, const uint8_t **bufs, const uint64_t *counts, uint64_t *pos,
		const uint8_t *exhausted, uint64_t item_size, uint64_t cmp_offset,
		uint64_t cmp_len, uint8_t *out, uint64_t out_cap, uint64_t *out_n,
		int *refill);
