"""Command line: convert, inspect and verify checkpoints.

    python -m ckpt convert SRC DST [--alignment N] [--chunk-size N] [--partition-size N]
    python -m ckpt inspect PATH [--json] [--limit N]
    python -m ckpt verify PATH [--threads N]

SRC: a .safetensors file, a shard index (model.safetensors.index.json or
pytorch_model.bin.index.json), a torch .pt/.bin file, or a Hugging Face model directory.
Exit status: 0 on success, 1 when the checkpoint or source is bad (the error is printed).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

from bas.registry import parse_size
from ckpt.errors import CheckpointError
from ckpt.format import HEADER_SIZE, VERSION, Index


def _size(text: str) -> int:
    return parse_size(text)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def describe(index: Index, limit: int = 20) -> str:
    """A human summary of an index: layout, dtypes, the first tensors."""
    dtypes = collections.Counter(t.dtype for t in index.tensors)
    lines = [
        f"format {VERSION[0]}.{VERSION[1]}, alignment {index.alignment}, "
        f"chunk {_human(index.chunk_size)}",
        f"{len(index.tensors)} tensors + {len(index.aliases)} aliases, "
        f"{_human(index.total_bytes)} in {len(index.partitions)} partitions",
        "dtypes: " + ", ".join(f"{d} x{n}" for d, n in dtypes.most_common()),
    ]
    for p in index.partitions:
        lines.append(f"  {p.file}  {_human(p.size)}  {len(p.crc32)} chunks")
    for t in index.tensors[:limit]:
        lines.append(f"  {t.name}  {t.dtype}{list(t.shape)}  part {t.partition} "
                     f"@{t.offset} +{t.length}")
    if len(index.tensors) > limit:
        lines.append(f"  ... {len(index.tensors) - limit} more")
    for alias, target in list(index.aliases.items())[:limit]:
        lines.append(f"  {alias} -> {target}")
    for key in sorted(index.metadata):
        value = index.metadata[key]
        lines.append(f"  meta {key} = {value[:60]}{'...' if len(value) > 60 else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckpt", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert SRC into a checkpoint at DST")
    conv.add_argument("src")
    conv.add_argument("dst")
    conv.add_argument("--alignment", type=_size)
    conv.add_argument("--chunk-size", type=_size)
    conv.add_argument("--partition-size", type=_size)
    ins = sub.add_parser("inspect", help="print a checkpoint's index")
    ins.add_argument("path")
    ins.add_argument("--json", action="store_true", help="the whole index as JSON")
    ins.add_argument("--limit", type=int, default=20)
    ver = sub.add_parser("verify", help="check every chunk's CRC-32")
    ver.add_argument("path")
    ver.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args) -> int:
    from ckpt.source import read_index, resolve_dir

    if args.command == "convert":
        from ckpt.convert import convert

        options = {k: v for k, v in (("alignment", args.alignment),
                                      ("chunk_size", args.chunk_size),
                                      ("partition_size", args.partition_size)) if v}
        start = time.perf_counter()
        index = convert(args.src, args.dst, **options)
        print(f"{args.dst}: {len(index.tensors)} tensors, {_human(index.total_bytes)} in "
              f"{time.perf_counter() - start:.2f} s")
        return 0
    if args.command == "inspect":
        index = read_index(resolve_dir(args.path))
        if args.json:
            data = index.encode()
            json.dump(json.loads(data[HEADER_SIZE:]), sys.stdout, indent=1)
            print()
        else:
            print(describe(index, args.limit))
        return 0
    from ckpt.host import verify  # no torch needed to check a checkpoint
    from ckpt.reader import LoadStats

    stats = LoadStats()
    index = verify(args.path, threads=args.threads, stats=stats)
    print(f"{args.path}: OK, {len(index.tensors)} tensors, {_human(stats.bytes_read)} checked "
          f"in {stats.read_seconds:.2f} s ({_human(stats.bandwidth)}/s, {stats.threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
