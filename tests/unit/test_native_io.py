"""The native gather/scatter kernels against a numpy reference, and their argument checks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bas._native import io as native

REGION = 1 << 14


@st.composite
def requests(draw):
    n = draw(st.integers(0, 40))
    lens = draw(st.lists(st.integers(0, 200), min_size=n, max_size=n))
    offs = [draw(st.integers(0, REGION - length)) for length in lens]
    uniform = draw(st.booleans())
    if uniform:
        length = draw(st.integers(0, 200))
        offs = [min(o, REGION - length) for o in offs]
        return offs, length
    return offs, lens


@given(requests(), st.integers(1, 8))
def test_mem_gather_matches_reference(req, threads):
    region = np.random.default_rng(1).integers(0, 256, REGION, dtype=np.uint8)
    offs, lens, uniform, total = native.as_requests(*req)
    out = np.zeros(total, dtype=np.uint8)
    native.mem_gather(region, REGION, offs, lens, uniform, total, out, threads)
    lengths = [uniform] * len(offs) if lens is None else lens.tolist()
    want = b"".join(region[o:o + n].tobytes() for o, n in zip(offs.tolist(), lengths, strict=False))
    assert out.tobytes() == want


@given(requests(), st.integers(1, 8))
def test_mem_scatter_matches_reference(req, threads):
    offs, lens, uniform, total = native.as_requests(*req)
    lengths = [uniform] * len(offs) if lens is None else lens.tolist()
    # disjoint targets so the result does not depend on thread order
    offs = np.arange(len(offs), dtype=np.uint64) * 200
    region = np.zeros(REGION, dtype=np.uint8)
    src = np.arange(total, dtype=np.uint64).astype(np.uint8)
    native.mem_scatter(region, REGION, offs, lens, uniform, total, src, threads)
    want = np.zeros(REGION, dtype=np.uint8)
    pos = 0
    for o, n in zip(offs.tolist(), lengths, strict=False):
        want[o:o + n] = src[pos:pos + n]
        pos += n
    assert region.tobytes() == want.tobytes()


def test_region_and_buffer_bounds_are_checked_before_c():
    region = bytearray(100)
    offs, lens, uniform, total = native.as_requests([90], 20)
    with pytest.raises(ValueError, match="past the region"):
        native.mem_gather(region, 100, offs, lens, uniform, total, bytearray(20))
    offs, lens, uniform, total = native.as_requests([0], 20)
    with pytest.raises(ValueError, match="holds 10 bytes"):
        native.mem_gather(region, 100, offs, lens, uniform, total, bytearray(10))
    with pytest.raises(ValueError, match="threads"):
        native.mem_gather(region, 100, offs, lens, uniform, total, bytearray(20), 0)


@pytest.mark.parametrize("offsets,lengths", [([[1]], 1), ([-1], 1), ([1.5], 1), ([1], [-1]),
                                             ([1, 2], [1])])
def test_as_requests_rejects(offsets, lengths):
    with pytest.raises(ValueError):
        native.as_requests(offsets, lengths)


def test_crc32_matches_zlib():
    import zlib

    data = bytes(range(256)) * 100
    assert native.crc32(data) == zlib.crc32(data)
    assert native.crc32(data[100:], native.crc32(data[:100])) == zlib.crc32(data)


def test_a_wrong_total_is_refused_before_c():
    """Regression: the wrappers trusted the caller's total; a small out buffer crashed."""
    offs, lens, uniform, _ = native.as_requests([0], 1 << 20)
    with pytest.raises(ValueError, match="not the 0 given"):
        native.mem_gather(bytearray(1 << 20), 1 << 20, offs, lens, uniform, 0,
                          np.empty(8, np.uint8))


def test_lengths_summing_past_64_bits_are_refused():
    """Regression: the uint64 sum wrapped and a huge gather passed a 4 KiB buffer check."""
    with pytest.raises(ValueError, match="more than"):
        native.as_requests(np.zeros(2**14 + 1, np.int64), [2**50] * 2**14 + [4096])
