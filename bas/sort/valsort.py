"""valsort: check that sort-benchmark records are in key order, count and checksum them.

    python -m bas.sort.valsort [-o SUMMARY] [-q] [-t<threads>] FILE
    python -m bas.sort.valsort -s [-q] SUMMARIES

The first form validates FILE and prints `Records: N`, `Checksum: <hex>`, `Duplicate keys: D`
and `SUCCESS - all records are in order` (exit 0), or the first unordered record's index and
`ERROR - there are U unordered records` (exit 1); -o also writes FILE's summary to SUMMARY.
The second form reads the summaries of consecutive partitions, concatenated (cat part*.sum), and
reports on the records of all of them as if they were one file. -q prints nothing.

A summary is SUMMARY_SIZE bytes: five 128-bit unsigned integers, each stored as its high then
its low 64 bits, little-endian (first unordered index, 0 when none; unordered count; record
count; duplicate count; checksum), then the first and the last record. The layout is ours; the
spec (docs/gensort.md) does not fix valsort 1.5's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import struct
import sys
from dataclasses import dataclass

import numpy as np

from bas._native import gensort as native

__all__ = [
    "CHUNK_BYTES",
    "SUMMARY_SIZE",
    "PartialRecordError",
    "Summary",
    "checksum",
    "main",
    "read_summaries",
    "validate",
]

RECORD_SIZE: int = native.GENSORT_RECORD
CHUNK_BYTES = 64 << 20  # memory one validate call holds for records, whatever the file size
_LAYOUT = struct.Struct(f"<10Q{RECORD_SIZE}s{RECORD_SIZE}s")
SUMMARY_SIZE = _LAYOUT.size
_U64 = (1 << 64) - 1


class PartialRecordError(ValueError):
    """The data ends inside a record: its size is not a multiple of the record size."""


@dataclass(frozen=True)
class Summary:
    """What valsort knows of a run of consecutive records."""

    records: int
    checksum: int  # sum of the records' CRC-32, a 128-bit integer
    duplicates: int  # records whose key equals the previous record's key
    unordered: int  # records whose key is below the previous record's key
    first_unordered: int | None  # index of the first unordered record
    first_record: bytes  # RECORD_SIZE zero bytes when records is 0
    last_record: bytes

    @classmethod
    def empty(cls) -> Summary:
        zeros = bytes(RECORD_SIZE)
        return cls(0, 0, 0, 0, None, zeros, zeros)

    @property
    def ok(self) -> bool:
        """True when every record's key is at least the previous one's."""
        return self.unordered == 0

    def then(self, nxt: Summary) -> Summary:
        """The summary of this run directly followed by run nxt."""
        return Summary(**native.valsort_combine(dataclasses.asdict(self),
                                                dataclasses.asdict(nxt)))

    def to_bytes(self) -> bytes:
        """This summary in the -o layout (see the module doc)."""
        fields = (self.first_unordered or 0, self.unordered, self.records, self.duplicates,
                  self.checksum)
        halves = [h for v in fields for h in (v >> 64, v & _U64)]
        return _LAYOUT.pack(*halves, self.first_record, self.last_record)

    @classmethod
    def from_bytes(cls, data: bytes) -> Summary:
        """A summary from its -o layout; ValueError when it is malformed."""
        if len(data) != SUMMARY_SIZE:
            raise ValueError(f"a summary is {SUMMARY_SIZE} bytes, got {len(data)}")
        *halves, first, last = _LAYOUT.unpack(data)
        first_unordered, unordered, records, duplicates, total = (
            halves[i] << 64 | halves[i + 1] for i in range(0, 10, 2))
        if (unordered >= max(records, 1) or duplicates >= max(records, 1)
                or (unordered and not 0 < first_unordered < records)):
            raise ValueError("a summary's counts do not add up")
        return cls(records, total, duplicates, unordered,
                   first_unordered if unordered else None, first, last)

    def report(self) -> str:
        """valsort's lines for these records."""
        lines = []
        if self.unordered:
            lines.append(f"First unordered record is record {self.first_unordered}")
        lines += [f"Records: {self.records}", f"Checksum: {self.checksum:x}",
                  f"Duplicate keys: {self.duplicates}"]
        if self.ok:
            lines.append("SUCCESS - all records are in order")
        else:
            lines.append(f"ERROR - there are {self.unordered} unordered records")
        return "\n".join(lines)


def validate(source, threads: int = 1, chunk_bytes: int = CHUNK_BYTES) -> Summary:
    """Validate the records of source: a buffer, or a path read chunk_bytes at a time.

    Raises PartialRecordError when source does not hold a whole number of records.
    """
    if isinstance(source, (str, os.PathLike)):
        return _validate_file(os.fspath(source), threads, chunk_bytes)
    nbytes = memoryview(source).nbytes
    if nbytes % RECORD_SIZE:
        raise PartialRecordError(_partial_message("the buffer", nbytes))
    return Summary(**native.valsort_scan(source, threads))


def checksum(source, threads: int = 1) -> int:
    """The checksum (sum of the records' CRC-32) of a buffer or a file of records."""
    return validate(source, threads).checksum


def read_summaries(path: str | os.PathLike) -> list[Summary]:
    """The summaries concatenated in a file; ValueError when its size does not fit."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) % SUMMARY_SIZE:
        raise ValueError(f"{os.fspath(path)}: {len(data)} bytes is not a whole number of "
                         f"{SUMMARY_SIZE}-byte summaries")
    return [Summary.from_bytes(data[i:i + SUMMARY_SIZE])
            for i in range(0, len(data), SUMMARY_SIZE)]


def _partial_message(what: str, nbytes: int) -> str:
    return (f"{what} ends in a partial record: {nbytes} bytes is {nbytes // RECORD_SIZE} "
            f"records and {nbytes % RECORD_SIZE} bytes")


def _validate_file(path: str, threads: int, chunk_bytes: int) -> Summary:
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size % RECORD_SIZE:
            raise PartialRecordError(_partial_message(path, size))
        chunk = max(1, min(size, chunk_bytes) // RECORD_SIZE) * RECORD_SIZE
        buf = np.empty(chunk, dtype=np.uint8)
        total = Summary.empty()
        done = 0
        while done < size:
            want = min(chunk, size - done)
            view = memoryview(buf)[:want]
            got = 0
            while got < want:
                step = f.readinto(view[got:])
                if not step:
                    raise OSError(f"{path}: the file shrank while it was read")
                got += step
            total = total.then(validate(view, threads))
            done += want
    return total


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="valsort", description="Check the order, count and "
                                "checksum of sort-benchmark records (as valsort 1.5).")
    p.add_argument("-o", metavar="SUMMARY", help="also write FILE's summary to SUMMARY")
    p.add_argument("-s", action="store_true",
                   help="FILE holds the concatenated summaries of consecutive partitions")
    p.add_argument("-q", action="store_true", help="print nothing; the exit status tells")
    p.add_argument("-t", type=int, default=1, metavar="THREADS", help="worker threads")
    p.add_argument("file", metavar="FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    """The valsort command line; returns the exit status (0 in order, 1 otherwise)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.t < 1:
        parser.error("-t must be at least 1")
    if args.s and args.o:
        parser.error("-o and -s do not go together")
    try:
        if args.s:
            result = Summary.empty()
            for part in read_summaries(args.file):
                result = result.then(part)
        else:
            result = validate(args.file, args.t)
            if args.o:
                with open(args.o, "wb") as f:
                    f.write(result.to_bytes())
    except (OSError, ValueError) as exc:
        print(f"ERROR - {exc}", file=sys.stderr)
        return 1
    if not args.q:
        print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
