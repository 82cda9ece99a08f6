"""The native sort kernels (entries, radix sort, loser-tree merge) against numpy references."""

import heapq

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from bas._native import sort as native


@st.composite
def key_sets(draw):
    key_size = draw(st.sampled_from([1, 2, 4, 8, 10, 16, 40]))
    n = draw(st.integers(0, 3000))
    distinct = draw(st.sampled_from([1, 3, 50, None]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    keys = rng.integers(0, 256, (n, key_size), dtype=np.uint8)
    if distinct is not None and n:
        pool = rng.integers(0, 256, (distinct, key_size), dtype=np.uint8)
        keys = pool[rng.integers(0, distinct, n)]
    return np.ascontiguousarray(keys), key_size, draw(st.integers(1, 4))


def _reference_order(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of rows by memcmp order."""
    n, k = keys.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.lexsort([keys[:, i] for i in range(k - 1, -1, -1)])


@given(key_sets(), st.integers(0, 2**40))
def test_radix_sort_matches_stable_argsort(case, first_index):
    keys, key_size, threads = case
    n = len(keys)
    es = native.entry_size(key_size)
    entries = np.empty(n * es, dtype=np.uint8)
    native.entries_from_keys(keys, n, key_size, first_index, entries, threads)
    native.sort_entries(entries, n, key_size, np.empty_like(entries), threads)
    offsets = native.entry_offsets(entries, n, key_size, record_size=1, base=0)
    assert (offsets.astype(np.int64) - first_index).tolist() == _reference_order(keys).tolist()
    got_keys = entries.reshape(n, es)[:, :key_size] if n else keys
    assert np.array_equal(got_keys, keys[_reference_order(keys)])


@given(st.integers(1, 9), st.integers(0, 400), st.integers(1, 64), st.integers(1, 50),
       st.integers(0, 2**32 - 1))
def test_loser_tree_merge_matches_heapq(k, per_run, buffer_items, out_items, seed):
    rng = np.random.default_rng(seed)
    item, cmp_off, cmp_len = 12, 2, 4
    runs = []
    for _ in range(k):
        m = int(rng.integers(0, per_run + 1))
        data = rng.integers(0, 4, (m, item), dtype=np.uint8)  # few values: many ties
        order = _reference_order(data[:, cmp_off:cmp_off + cmp_len])
        runs.append(np.ascontiguousarray(data[order]))
    want = [row.tobytes() for _, _, _, row in heapq.merge(
        *[[(row[cmp_off:cmp_off + cmp_len].tobytes(), r, i, row) for i, row in enumerate(run)]
          for r, run in enumerate(runs)])]
    merger = native.Merger(k, item, cmp_off, cmp_len)
    pos = [0] * k

    def refill(r):
        chunk = runs[r][pos[r]:pos[r] + buffer_items]
        pos[r] += len(chunk)
        merger.set_run(r, np.ascontiguousarray(chunk).reshape(-1), len(chunk),
                       pos[r] >= len(runs[r]))

    for r in range(k):
        refill(r)
    got = []
    out = np.empty(out_items * item, dtype=np.uint8)
    while len(got) < len(want):
        n, need = merger.merge(out)
        got += [out[i * item:(i + 1) * item].tobytes() for i in range(n)]
        if need is not None:
            refill(need)
        elif n == 0:
            break
    assert got == want


def test_extract_entries_matches_reference():
    rng = np.random.default_rng(1)
    records = rng.integers(0, 256, (500, 30), dtype=np.uint8)
    entries = np.empty(500 * native.entry_size(7), dtype=np.uint8)
    native.extract_entries(records, 500, 30, 5, 7, 1000, entries, 2)
    rows = entries.reshape(500, 13)
    assert np.array_equal(rows[:, :7], records[:, 5:12])
    idx = rows[:, 7:].astype(np.uint64)
    assert (idx @ (256 ** np.arange(5, -1, -1, dtype=np.uint64))).tolist() == list(
        range(1000, 1500))


def test_parallel_radix_sort_of_many_entries_with_skew():
    """Large enough for the threaded top-16-bit pass; a shared prefix makes deep buckets."""
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 256, (200_000, 10), dtype=np.uint8)
    keys[:150_000, :6] = 0x41
    es = native.entry_size(10)
    entries = np.empty(len(keys) * es, dtype=np.uint8)
    native.entries_from_keys(keys, len(keys), 10, 0, entries, 2)
    native.sort_entries(entries, len(keys), 10, np.empty_like(entries), 4)
    offsets = native.entry_offsets(entries, len(keys), 10, 1)
    assert offsets.astype(np.int64).tolist() == _reference_order(keys).tolist()
