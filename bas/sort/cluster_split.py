"""Range partitioning for the cluster sort: sample positions, splitters, and cuts of sorted chunks.

Every record has a unique *rank key*: its key bytes, then its node's ordinal (2 bytes) and its
index among that node's records (8 bytes), both big-endian, so rank keys compare with memcmp.
Splitters are rank keys, and partition p holds the records whose rank key lies in
[splitter p-1, splitter p). Ordering by rank key orders by key first, so the partitions in
order form one sorted sequence; and because no two records share a rank key, a run of equal
keys can be split between partitions, which keeps duplicate-heavy inputs balanced.

The balance bound. When the inputs hold at most SAMPLES_PER_PARTITION * P records every rank
key is sampled and the partitions differ by at most one record. Otherwise each node samples
its share of SAMPLES_PER_PARTITION * P records uniformly without replacement, and a partition
exceeds (1 + BALANCE_SLACK) * N / P records only when some window of that many consecutive rank
keys holds fewer than SAMPLES_PER_PARTITION samples: by a Chernoff bound and a union over the
N windows, with probability below N * exp(-slack^2 * a / (2 (1 + slack))) = N * e^-51 (a = 2048,
slack = 0.25), under 1e-10 for any N below 10^12. Skew changes nothing: the bound is on ranks,
not on key values.
"""

from __future__ import annotations

import bisect

import numpy as np

from bas._native import sort as native

__all__ = ["BALANCE_SLACK", "NODE_BYTES", "RANK_INDEX_BYTES", "SAMPLES_PER_PARTITION",
           "choose_splitters", "cut_points", "rank_key", "sample_indexes"]

SAMPLES_PER_PARTITION = 2048
#: a partition holds at most (1 + BALANCE_SLACK) * N / P records (see the module doc)
BALANCE_SLACK = 0.25
NODE_BYTES = 2
RANK_INDEX_BYTES = 8
MAX_NODES = 1 << (8 * NODE_BYTES)


def rank_key(key: bytes, node: int, index: int) -> bytes:
    """The rank key of record `index` of node `node` whose key is `key`."""
    return bytes(key) + node.to_bytes(NODE_BYTES, "big") + index.to_bytes(RANK_INDEX_BYTES, "big")


def sample_indexes(node_records: int, total_records: int, parts: int, node: int,
                   seed: int = 0) -> np.ndarray:
    """Sorted indexes (uint64) of the node's records to sample: all of them when the inputs
    are small, else the node's share of SAMPLES_PER_PARTITION * parts, drawn without
    replacement by a generator seeded with (seed, node)."""
    want = SAMPLES_PER_PARTITION * parts
    if total_records <= want:
        return np.arange(node_records, dtype=np.uint64)
    share = min(node_records, -(-node_records * want // total_records))
    rng = np.random.default_rng([seed, node])
    return np.sort(rng.choice(node_records, size=share, replace=False)).astype(np.uint64)


def choose_splitters(samples: list[bytes], parts: int) -> list[bytes]:
    """parts - 1 rank keys cutting the sorted samples into parts equal shares."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    ordered = sorted(samples)
    if not ordered:
        return []
    return [ordered[k * len(ordered) // parts] for k in range(1, parts)]


def cut_points(entries: np.ndarray, n: int, key_size: int, node: int,
               splitters: list[bytes]) -> list[int]:
    """[0, c_1, ..., c_{P-1}, n]: entries [c_p, c_{p+1}) of n sorted (key, index) entries
    (bas._native.sort layout, the index being the node's record index) go to partition p."""
    es = native.entry_size(key_size)
    node_bytes = node.to_bytes(NODE_BYTES, "big")
    pad = bytes(RANK_INDEX_BYTES - native.INDEX_BYTES)
    view = memoryview(entries)

    def rank(j: int) -> bytes:
        e = view[j * es:(j + 1) * es]
        return bytes(e[:key_size]) + node_bytes + pad + bytes(e[key_size:])

    cuts = [0]
    for s in splitters:
        cuts.append(bisect.bisect_left(range(n), s, lo=cuts[-1], key=rank))
    cuts.append(n)
    return cuts
