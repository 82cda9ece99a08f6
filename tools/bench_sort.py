"""Sort workloads: our WiscSort and its peers on the same gensort -a file, side by side.

    tools/bench compare sort-wiscsort sort-gnu-sort sort-floor --size 1G --device /mnt/nvme
    tools/bench compare sort-wiscsort sort-gnu-sort sort-wiscsort-tuned-mergesort \\
        --size 4000000000 --cold --cgroup-memory 1536M --timeout 900 --device /mnt/nvme

Each run is a fresh process (tools/sortpeer.py) so peak RSS is its own; every output is
checked with our valsort (order, count, checksum) outside the timed region. The input is made
by our gensort (printable records, as `python -m bas.sort.gensort -a`) once per invocation in
the scratch directory, or once for good under $BAS_BENCH_DATA when that is set, with its
valsort summary beside it. Before each run the input is evicted from the page cache (--cold),
partly cached (--cached-fraction) or read whole. Our rows call bas.sort.sort(input, output)
with its defaults (the tuned rows change one argument each); GNU sort gets `-S 1G` (--memory).
"""

from __future__ import annotations

import json
import os
import sys

from benchkit import Context, prepare_cache, run_child, workload

from bas.sort import gensort, valsort

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = 100
GNU_MEMORY = 1 << 30  # GNU sort -S when --memory is not given


def _input(ctx: Context) -> tuple[str, dict]:
    """The input file and its valsort summary (records, checksum), made once."""
    root = os.environ.get("BAS_BENCH_DATA") or ctx.workdir
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, f"sort-input-{ctx.size}.dat")
    marker = path[:-4] + ".json"
    if not os.path.exists(marker):
        gensort.write_file(path, ctx.size // RECORD, ascii=True, threads=ctx.threads)
        got = valsort.validate(path, threads=ctx.threads)
        with open(marker, "w") as f:
            json.dump({"records": got.records, "checksum": got.checksum}, f)
    with open(marker) as f:
        return path, json.load(f)


def _runs(name: str, ctx: Context):
    inp, want = _input(ctx)
    out = os.path.join(ctx.workdir, f"sorted-{name}.dat")
    memory = "default" if ctx.memory is None else str(ctx.memory)
    tuned = TUNED.get(name)
    if ctx.memory is not None and name.startswith("wiscsort"):
        tuned = "; ".join(filter(None, [tuned, f"memory_budget={ctx.memory}"]))
    for _ in range(ctx.repeat):
        cache = prepare_cache([inp], ctx)
        child = run_child([sys.executable, os.path.join(HERE, "sortpeer.py"), name, inp, out,
                           memory, str(ctx.threads), ctx.workdir], ctx)
        result = child.result()
        valid = False
        if child.status == "ok":
            got = valsort.validate(out, threads=ctx.threads)
            same = (got.records, got.checksum) == (want["records"], want["checksum"])
            # the floor copies without sorting: only count and checksum can match
            valid = same and (name == "floor" or got.unordered == 0)
        written = result.pop("bytes_written_total", None)
        if written is None and os.path.exists(out):
            written = os.path.getsize(out)
        yield dict(workload=f"sort-{name}", role=ROLES[name], tuned=tuned,
                   device=f"file://{inp}", is_pmem=False, size=ctx.size,
                   records=ctx.size // RECORD, threads=ctx.threads, memory=ctx.memory,
                   gnu_sort_memory=ctx.memory or GNU_MEMORY, cache=cache, cold=ctx.cold,
                   bytes=ctx.size, bytes_read=ctx.size, bytes_written=written, valid=valid,
                   **{"seconds": None, **child.fields(), **result})
        if os.path.exists(out):
            os.unlink(out)


TUNED = {"wiscsort-tuned-piped": "schedule=piped (reader, sorter, writer run concurrently)",
         "wiscsort-tuned-mergesort": "algorithm=mergesort (classic external merge sort)"}
ROLES = {"wiscsort": "ours", "wiscsort-tuned-piped": "ours", "wiscsort-tuned-mergesort": "ours",
         "gnu-sort": "peer", "duckdb": "peer", "polars": "peer", "numpy": "peer",
         "floor": "limit"}


def _register(name: str, doc: str) -> None:
    def fn(ctx: Context):
        yield from _runs(name, ctx)

    fn.__doc__ = doc
    workload(f"sort-{name}", "sort", process=True)(fn)


for _name, _doc in [
    ("wiscsort", "ours: bas.sort.sort(input, output), defaults"),
    ("wiscsort-tuned-piped", "ours, tuned: bas.sort with schedule='piped'"),
    ("wiscsort-tuned-mergesort", "ours, tuned: bas.sort with algorithm='mergesort'"),
    ("gnu-sort", "peer: LC_ALL=C sort --parallel=THREADS -S 1G, then fdatasync"),
    ("duckdb", "peer: DuckDB ORDER BY over an Arrow table of the records"),
    ("polars", "peer: Polars sort of a Binary column"),
    ("numpy", "peer: numpy argsort of S10 keys + gather"),
    ("floor", "limit: read the input once, write it once, fdatasync"),
]:
    _register(_name, _doc)
