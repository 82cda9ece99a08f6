"""Properties of the emulated cost model: deterministic, monotone, amplifying, concurrency-aware."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from bas import open_device
from bas.braid.presets import PRESETS, get_preset, interference_from, overlapped_seconds
from bas.wrappers.emu import batch_shape

SIZE = 1 << 20
presets = st.sampled_from(sorted(PRESETS))


@st.composite
def operations(draw):
    """A list of (kind, offsets, length, threads) batches inside a SIZE-byte device."""
    ops = []
    for _ in range(draw(st.integers(1, 8))):
        length = draw(st.integers(0, 4096))
        count = draw(st.integers(1, 16))
        offsets = draw(st.lists(st.integers(0, SIZE - length), min_size=count, max_size=count))
        if draw(st.booleans()):  # a contiguous run, from the first offset
            start = min(offsets[0], SIZE - length * count)
            offsets = [start + i * length for i in range(count)]
        ops.append((draw(st.sampled_from(["read", "write"])), offsets, length,
                    draw(st.integers(1, 64))))
    return ops


def _replay(name, ops):
    clocks = []
    with open_device(f"emu://{name}?inner=dram&size={SIZE}") as dev:
        for kind, offsets, length, threads in ops:
            if kind == "read":
                dev.read_many(offsets, length, threads=threads)
            else:
                dev.write_many(offsets, length, bytes(length * len(offsets)), threads=threads)
            clocks.append(dev.clock)
        return clocks, dev.stats


@given(presets, operations())
def test_account_clock_is_deterministic_and_monotone(name, ops):
    clocks, stats = _replay(name, ops)
    again, stats_again = _replay(name, ops)
    assert clocks == again and stats == stats_again
    assert all(b >= a for a, b in zip([0.0, *clocks], clocks, strict=False))


@given(presets, st.sampled_from(["read", "write"]), st.booleans(), st.integers(1, 4096),
       st.integers(1, 1 << 22), st.data())
def test_more_threads_up_to_the_peak_are_never_slower(name, kind, sequential, n, media, data):
    p = get_preset(name)
    peak = p.curve(kind, "sequential" if sequential else "random").peak_threads
    fewer = data.draw(st.integers(1, peak))
    more = data.draw(st.integers(fewer, peak))
    assert (p.batch_seconds(kind, sequential, n, media, more)
            <= p.batch_seconds(kind, sequential, n, media, fewer))


@given(presets, st.integers(1, 1 << 16), st.integers(0, SIZE // 2))
def test_small_accesses_are_amplified_to_whole_granules(name, length, offset):
    g = get_preset(name).granularity
    n, sequential, media, nbytes = batch_shape(np.array([offset]), np.array([length]), g)
    assert (n, sequential, nbytes) == (1, True, length)
    assert media % g == 0 and media >= length
    assert media == ((offset + length - 1) // g - offset // g + 1) * g
    # random pieces are rounded out one by one, never merged
    n, sequential, media, _ = batch_shape(np.array([offset, offset]), np.array([length] * 2), g)
    assert not sequential and media == 2 * (((offset + length - 1) // g - offset // g + 1) * g)


@given(st.floats(1e-6, 10), st.floats(1e-6, 10), st.floats(0.05, 1.0))
def test_interference_from_inverts_overlapped_seconds(r, w, f):
    together = overlapped_seconds(r, w, f)
    assert max(r, w) <= together <= max(r, w) + min(r, w) / f
    assert abs(interference_from(r, w, together) - f) <= 1e-6 * max(1.0, 1 / f)
