"""Sort workloads: our WiscSort and its peers on the same gensort -a file, side by side.

Each run is a fresh process (tools/sortpeer.py) so peak RSS is its own; the input is made
once per invocation, every output is checked with our valsort (order, count, checksum) outside
the timed region, and the page cache is dropped for the input with --cold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchkit import Context, evict, workload

from bas.sort import gensort, valsort

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = 100


def _input(ctx: Context) -> str:
    path = os.path.join(ctx.workdir, f"sort-input-{ctx.size}.dat")
    if not os.path.exists(path):
        gensort.write_file(path, ctx.size // RECORD, ascii=True, threads=ctx.threads)
    return path


def _budget(ctx: Context) -> int:
    return ctx.memory or min(ctx.size + ctx.size // 2, 1 << 30)


def _runs(name: str, ctx: Context):
    inp = _input(ctx)
    want = valsort.validate(inp, threads=ctx.threads)
    out = os.path.join(ctx.workdir, f"sorted-{name}.dat")
    for _ in range(ctx.repeat):
        if ctx.cold:
            evict(inp)
        proc = subprocess.run([sys.executable, os.path.join(HERE, "sortpeer.py"), name, inp,
                               out, str(_budget(ctx)), str(ctx.threads), ctx.workdir],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{name} failed: {proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        got = valsort.validate(out, threads=ctx.threads)
        ok = got.unordered == 0 and (got.records, got.checksum) == (want.records, want.checksum)
        if name == "floor":  # copies without sorting: only count and checksum can match
            ok = (got.records, got.checksum) == (want.records, want.checksum)
        written = result.pop("bytes_written_total", os.path.getsize(out))
        yield dict(workload=f"sort-{name}", device=f"file://{inp}", is_pmem=False,
                   size=ctx.size, records=ctx.size // RECORD, threads=ctx.threads,
                   memory_budget=_budget(ctx), cold=ctx.cold, bytes=ctx.size,
                   bytes_read=ctx.size, bytes_written=written, valid=ok, **result)
        os.unlink(out)


def _register(name: str, doc: str) -> None:
    def fn(ctx: Context):
        yield from _runs(name, ctx)

    fn.__doc__ = doc
    workload(f"sort-{name}", "sort")(fn)


for _name, _doc in [
    ("wiscsort", "ours: bas.sort, auto algorithm, staged schedule"),
    ("wiscsort-piped", "ours: bas.sort with the piped schedule"),
    ("wiscsort-mergesort", "ours: bas.sort forced to classic external merge sort"),
    ("gnu-sort", "peer: LC_ALL=C sort --parallel=THREADS -S BUDGET (ASCII records)"),
    ("duckdb", "peer: DuckDB ORDER BY over an Arrow table of the records"),
    ("polars", "peer: Polars sort of a Binary column"),
    ("numpy", "peer: numpy argsort of S10 keys + gather"),
    ("floor", "limit: read the input once, write it once, fdatasync"),
]:
    _register(_name, _doc)
