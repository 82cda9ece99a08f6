"""gensort: sort-benchmark records byte-identical to gensort 1.5, made by the native kernel.

    python -m bas.sort.gensort [-a] [-s] [-b<start>] [-c] [-t<threads>] NUM_RECS FILE

writes records [start, start + NUM_RECS) to FILE (docs/gensort.md has the format): -a printable
ASCII records, -s skewed keys, -c the checksum of the records to stderr, -t worker threads.
FILE appears complete or not at all: the records go to a temporary file in the same directory,
which is fsynced and renamed over FILE (a FILE that exists and is not a regular file, such as
/dev/null, is written in place).
"""

from __future__ import annotations

import argparse
import os
import stat
import sys

import numpy as np

from bas._native import gensort as native
from bas.namespace import Namespace, replace_file

__all__ = ["CHUNK_BYTES", "RECORD_SIZE", "generate", "generate_into", "main", "write_file"]

RECORD_SIZE: int = native.GENSORT_RECORD
CHUNK_BYTES = 64 << 20  # memory one write_file call holds for records, whatever NUM_RECS is


def generate_into(buf, start: int = 0, *, ascii: bool = False, skew: bool = False,
                  threads: int = 1, checksum: bool = False) -> int | None:
    """Fill buf (a writable buffer of whole records) with records start, start + 1, ...

    Returns the checksum of those records when checksum is true (CRC-32 costs more than
    making the records), else None. Raises ValueError for a partial record in buf, a
    negative start or record numbers past 2**128 - 1.
    """
    return native.gensort_generate(buf, start, ascii, skew, threads, checksum)


def generate(n: int, start: int = 0, *, ascii: bool = False, skew: bool = False,
             threads: int = 1) -> np.ndarray:
    """Records [start, start + n) as a flat uint8 array of n * RECORD_SIZE bytes."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    out = np.empty(int(n) * RECORD_SIZE, dtype=np.uint8)
    generate_into(out, start, ascii=ascii, skew=skew, threads=threads)
    return out


def write_file(path: str | os.PathLike, n: int, start: int = 0, *, ascii: bool = False,
               skew: bool = False, threads: int = 1, checksum: bool = False,
               chunk_bytes: int = CHUNK_BYTES, ns: Namespace | None = None) -> int | None:
    """Write records [start, start + n) to path, chunk_bytes at a time; see the module doc.

    Returns their checksum when checksum is true, else None. ns: the bas.namespace.Namespace
    the file is published through (the local file system by default).
    """
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    if start < 0 or start + n > 1 << 128:
        raise ValueError(f"records [{start}, {start + n}) are not all below 2**128")
    chunk = max(1, min(n, chunk_bytes // RECORD_SIZE))
    buf = np.empty(chunk * RECORD_SIZE, dtype=np.uint8)
    path = os.fspath(path)
    total = 0

    def fill(fd: int) -> None:
        nonlocal total
        for first in range(start, start + n, chunk):
            count = min(chunk, start + n - first)
            part = buf[:count * RECORD_SIZE]
            sum_ = generate_into(part, first, ascii=ascii, skew=skew, threads=threads,
                                 checksum=checksum)
            total += sum_ or 0
            _write_all(fd, part)

    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        fd = os.open(path, os.O_WRONLY)  # /dev/null and the like: no name changes
        try:
            fill(fd)
        finally:
            os.close(fd)
    else:
        replace_file(path, fill, ns=ns, mode=0o666)  # less the umask, as open(2) does
    return total if checksum else None


def _write_all(fd: int, data: np.ndarray) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _count(text: str) -> int:
    """A record count or number: decimal, or hex with 0x."""
    value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    if value < 0:
        raise ValueError(text)
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gensort", description="Make sort-benchmark records "
                                "(byte-identical to gensort 1.5).")
    p.add_argument("-a", action="store_true", help="printable ASCII records")
    p.add_argument("-s", action="store_true", help="skewed keys")
    p.add_argument("-b", type=_count, default=0, metavar="START",
                   help="number of the first record (default 0)")
    p.add_argument("-c", action="store_true", help="print the records' checksum to stderr")
    p.add_argument("-t", type=int, default=1, metavar="THREADS", help="worker threads")
    p.add_argument("num_recs", type=_count, metavar="NUM_RECS")
    p.add_argument("file", metavar="FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    """The gensort command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.t < 1:
        parser.error("-t must be at least 1")
    try:
        total = write_file(args.file, args.num_recs, args.b, ascii=args.a, skew=args.s,
                           threads=args.t, checksum=args.c)
    except (OSError, ValueError) as exc:
        print(f"gensort: {exc}", file=sys.stderr)
        return 1
    if args.c:
        print(f"Records: {args.num_recs}\nChecksum: {total:x}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
