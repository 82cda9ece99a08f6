"""Hypothesis strategies for device tests: configurations, I/O sequences and crash points."""

from __future__ import annotations

import os
from urllib.parse import quote

from hypothesis import strategies as st

__all__ = ["crash_points", "device_urls", "io_sequences"]

#: backends every strategy can draw from; pmem needs its native extension (see available())
_KINDS = ("dram", "file", "file-direct", "pmem", "emu-dram", "emu-file")


def available_kinds() -> tuple[str, ...]:
    """The configuration kinds this installation can open (pmem only where PMDK is built)."""
    try:
        import bas.backends.pmem  # noqa: F401
    except ImportError:
        return tuple(k for k in _KINDS if k != "pmem")
    return _KINDS


def device_url(kind: str, directory: str, size: int, name: str = "dev") -> str:
    """The URL of a device configuration kind, with storage under `directory`."""
    path = os.path.join(directory, f"{name}.{kind}")
    return {
        "dram": f"dram://?size={size}",
        "file": f"file://{path}?size={size}",
        "file-direct": f"file://{path}?size={size}&direct=1",
        "pmem": f"pmem://{path}?size={max(size, 8 << 20)}",
        "emu-dram": f"emu://optane-1dimm?inner=dram&size={size}&mode=account",
        "emu-file": "emu://nvme?mode=account&inner=" + quote(f"file://{path}?size={size}", safe=""),
    }[kind]


_SIZES = st.sampled_from([64 << 10, 1 << 20])


def device_urls(directory: str, sizes=_SIZES, kinds=None) -> st.SearchStrategy[str]:
    """URLs of fresh device configurations under `directory` (each draw a new name)."""
    kinds = st.sampled_from(kinds or available_kinds())
    names = st.integers(0, 2**32).map(lambda i: f"dev{i}")
    return st.builds(lambda k, s, n: device_url(k, directory, s, n), kinds, sizes, names)


def io_sequences(size: int, max_len: int = 512, crashes: bool = True):
    """Lists of operations on a device of `size` bytes.

    Each item is ("write", offset, data), ("read", offset, length), ("persist",),
    ("write_many", offsets, lengths, data) or, with crashes, ("crash", "drop"|"tear").
    """
    offset = st.integers(0, size - 1)

    @st.composite
    def write(draw):
        off = draw(offset)
        data = draw(st.binary(min_size=0, max_size=min(max_len, size - off)))
        return ("write", off, data)

    @st.composite
    def read(draw):
        off = draw(offset)
        return ("read", off, draw(st.integers(0, min(max_len, size - off))))

    @st.composite
    def write_many(draw):
        n = draw(st.integers(0, 8))
        stride = size // 8
        offs = [i * stride + draw(st.integers(0, stride // 2)) for i in range(n)]
        lens = [draw(st.integers(0, min(max_len, stride // 2))) for _ in range(n)]
        data = draw(st.binary(min_size=sum(lens), max_size=sum(lens)))
        return ("write_many", offs, lens, data)

    ops = [write(), read(), write_many(), st.just(("persist",))]
    if crashes:
        ops.append(st.sampled_from([("crash", "drop"), ("crash", "tear")]))
    return st.lists(st.one_of(ops), max_size=30)


def crash_points(max_ops: int = 50) -> st.SearchStrategy[int]:
    """1-based operation numbers at which to inject a fault (fail_after=)."""
    return st.integers(1, max_ops)
