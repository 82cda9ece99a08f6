"""Shared checks for sort tests: valsort-style order + count + checksum, and a stable model."""

from __future__ import annotations

import numpy as np

from bas.sort import valsort


def assert_valsorted(input_path, output_path) -> None:
    """Our valsort on the output: in order, same record count and checksum as the input."""
    before = valsort.validate(str(input_path))
    after = valsort.validate(str(output_path))
    assert after.unordered == 0, f"first unordered record {after.first_unordered}"
    assert (after.records, after.checksum) == (before.records, before.checksum)


def stable_model(data: bytes, record_size: int, key_offset: int, key_size: int) -> bytes:
    """The records sorted by key bytes (memcmp order), equal keys in input order."""
    n = len(data) // record_size
    recs = [data[i * record_size:(i + 1) * record_size] for i in range(n)]
    order = sorted(range(n), key=lambda i: (recs[i][key_offset:key_offset + key_size], i))
    return b"".join(recs[i] for i in order)


def random_records(n: int, record_size: int, key_size: int, key_offset: int = 0,
                   distinct_keys: int | None = None, seed: int = 0) -> bytes:
    """n random records; keys drawn from `distinct_keys` values to force duplicates."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, record_size), dtype=np.uint8)
    if distinct_keys is not None and n:
        pool = rng.integers(0, 256, (distinct_keys, key_size), dtype=np.uint8)
        data[:, key_offset:key_offset + key_size] = pool[rng.integers(0, distinct_keys, n)]
    return data.tobytes()
