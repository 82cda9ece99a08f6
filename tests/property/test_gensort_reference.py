"""The native gensort / valsort kernels against the pure-Python reference, on random cases."""

from itertools import pairwise

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from bas.sort import _reference as ref
from bas.sort.gensort import RECORD_SIZE, generate, generate_into
from bas.sort.valsort import Summary, validate

LAST = 2**128


@st.composite
def runs(draw, most: int = 40):
    """(start, n) with start near 0, 2**40, 2**64, 2**127 or the last record number."""
    n = draw(st.integers(0, most))
    base = draw(st.sampled_from([0, 2**40, 2**64, 2**127, LAST - most]))
    start = draw(st.integers(max(0, base - 300), min(LAST - most, base + 300)))
    return start, n


@given(runs(), st.booleans(), st.booleans(), st.integers(1, 4))
def test_records_match_reference(run, ascii, skew, threads):
    start, n = run
    data = generate(n, start, ascii=ascii, skew=skew, threads=threads).tobytes()
    assert data == ref.generate(n, start, ascii, skew)


@given(runs(), st.booleans(), st.booleans(), st.integers(1, 4))
def test_checksum_matches_reference(run, ascii, skew, threads):
    start, n = run
    buf = np.empty(n * RECORD_SIZE, dtype=np.uint8)
    got = generate_into(buf, start, ascii=ascii, skew=skew, threads=threads, checksum=True)
    assert got == ref.validate(ref.generate(n, start, ascii, skew))["checksum"]


@given(runs(), st.integers(0, 40), st.booleans(), st.booleans())
def test_consecutive_runs_join_up(run, extra, ascii, skew):
    start, n = run
    extra = min(extra, LAST - start - n)
    whole = generate(n + extra, start, ascii=ascii, skew=skew)
    head = generate(n, start, ascii=ascii, skew=skew)
    tail = generate(extra, start + n, ascii=ascii, skew=skew)
    assert np.array_equal(np.concatenate([head, tail]), whole)


@st.composite
def record_sets(draw):
    """Records that are partly sorted, with keys repeated and records moved about."""
    n = draw(st.integers(0, 60))
    recs = generate(n, draw(st.integers(0, 2**64)), skew=draw(st.booleans()))
    recs = recs.reshape(n, RECORD_SIZE).copy()
    if n and draw(st.booleans()):
        recs = recs[np.argsort([r[:10].tobytes() for r in recs], kind="stable")]
    for _ in range(draw(st.integers(0, 5)) if n > 1 else 0):
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if draw(st.booleans()):
            recs[j, :10] = recs[i, :10]
        else:
            recs[[i, j]] = recs[[j, i]]
    return np.ascontiguousarray(recs).reshape(-1)


@given(record_sets(), st.integers(1, 5))
def test_validation_matches_reference(data, threads):
    assert validate(data, threads) == Summary(**ref.validate(data.tobytes()))


@given(record_sets(), st.lists(st.integers(0, 60), max_size=4))
def test_summaries_of_parts_combine_to_the_whole(data, cuts):
    n = data.size // RECORD_SIZE
    edges = sorted({0, n, *(min(c, n) for c in cuts)})
    total = Summary.empty()
    for lo, hi in pairwise(edges):
        part = validate(data[lo * RECORD_SIZE:hi * RECORD_SIZE])
        total = total.then(Summary.from_bytes(part.to_bytes()))
    assert total == validate(data)
