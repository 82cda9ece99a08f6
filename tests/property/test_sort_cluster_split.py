"""The cluster sort's range partitioning against a model: cutting each node's sorted chunks at
splitters chosen from the samples must give every record to the partition its rank key says,
keep the partitions in key order, and keep them even when every rank key is sampled."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bas._native import sort as native
from bas.sort.cluster_split import (
    SAMPLES_PER_PARTITION,
    choose_splitters,
    cut_points,
    rank_key,
    sample_indexes,
)

KEY = 3


def _entries(keys: list[bytes], first_index: int) -> np.ndarray:
    """Sorted (key, index) entries of the keys, numbered from first_index."""
    n = len(keys)
    entries = np.empty(n * native.entry_size(KEY), np.uint8)
    packed = np.frombuffer(b"".join(keys), np.uint8) if n else np.empty(0, np.uint8)
    native.entries_from_keys(packed, n, KEY, first_index, entries)
    native.sort_entries(entries, n, KEY, np.empty_like(entries))
    return entries


nodes_keys = st.lists(st.lists(st.binary(min_size=KEY, max_size=KEY).map(
    lambda b: bytes(x % 3 for x in b)), max_size=40), min_size=1, max_size=4)


@settings(max_examples=60)
@given(nodes_keys, st.integers(1, 5), st.integers(1, 20))
def test_cuts_match_the_rank_key_model(nodes, parts, chunk):
    total = sum(len(k) for k in nodes)
    samples = []
    for node, keys in enumerate(nodes):
        for i in sample_indexes(len(keys), total, parts, node).tolist():
            samples.append(rank_key(keys[i], node, i))
    splitters = choose_splitters(samples, parts)
    assert len(splitters) == max(0, parts - 1) or not samples
    got: list[list[bytes]] = [[] for _ in range(parts)]
    for node, keys in enumerate(nodes):
        for first in range(0, len(keys), chunk):
            part_keys = keys[first:first + chunk]
            entries = _entries(part_keys, first)
            cuts = cut_points(entries, len(part_keys), KEY, node, splitters)
            order = sorted(range(len(part_keys)), key=lambda j: (part_keys[j], j))
            for p in range(parts):
                got[p] += [rank_key(part_keys[j], node, first + j)
                           for j in order[cuts[p]:cuts[p + 1]]]
    everything = sorted(rank_key(k, n, i) for n, keys in enumerate(nodes)
                        for i, k in enumerate(keys))
    assert sorted(r for p in got for r in p) == everything
    joined = [r for p in got for r in sorted(p)]
    assert joined == everything  # the partitions in order are one sorted sequence
    if total <= SAMPLES_PER_PARTITION * parts:  # every rank key sampled: even to one record
        sizes = [len(p) for p in got]
        assert max(sizes) - min(sizes) <= 1


@given(st.integers(0, 10**9), st.integers(1, 10**9), st.integers(1, 8), st.integers(0, 7))
def test_sample_indexes_are_a_sorted_share(node_records, others, parts, node):
    total = node_records + others
    got = sample_indexes(node_records, total, parts, node)
    assert np.all(np.diff(got.astype(np.int64)) > 0)
    assert got.size == 0 or int(got[-1]) < node_records
    if total <= SAMPLES_PER_PARTITION * parts:
        assert got.size == node_records
    else:
        assert got.size <= node_records * SAMPLES_PER_PARTITION * parts // total + 1


def test_equal_keys_split_across_partitions():
    """A single key repeated: the tie-break by (node, index) still cuts it into even parts."""
    keys = [b"aaa"] * 90
    samples = [rank_key(k, 0, i) for i, k in enumerate(keys)]
    splitters = choose_splitters(samples, 3)
    cuts = cut_points(_entries(keys, 0), 90, KEY, 0, splitters)
    assert cuts == [0, 30, 60, 90]
