"""CRC-32 (zlib polynomial) of chunks: zlib-ng's SIMD (PCLMUL) code when installed, else bas.

Every chunk of every load is checksummed, so the CRC must run far faster than the disk:
bas.crc32 calls the system zlib (about 3 GB/s per core on x86-64, which costs a
2-core machine over 10 % of a cold load), zlib-ng folds with carry-less multiplies (about
30 GB/s per core). Both release the GIL and give identical values; the format does not care
which one computed them.
"""

from __future__ import annotations

from bas import crc32 as _crc32

__all__ = ["IMPLEMENTATION", "crc32"]

try:
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # optional: pip install zlib-ng (pinned in requirements.lock)
    _zlib_ng = None


def crc32(data, crc: int = 0) -> int:
    """CRC-32 of a buffer (bytes, memoryview, numpy array), continuing from crc."""
    if _zlib_ng is not None:
        return _zlib_ng.crc32(data, crc & 0xFFFFFFFF)
    return _crc32(data, crc)


IMPLEMENTATION = "zlib-ng" if _zlib_ng is not None else "bas.crc32 (system zlib)"
