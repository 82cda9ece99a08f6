"""Run one sort implementation once, in its own process, and print one JSON object.

    python tools/sortpeer.py NAME INPUT OUTPUT MEMORY THREADS TMPDIR

Every implementation reads INPUT (records of 100 bytes), writes OUTPUT sorted, and the output
is fdatasync'ed inside the timed region, so all of them pay the same durability. MEMORY is a
byte count or "default": ours then gets no memory_budget (its default), GNU sort -S 1G and
DuckDB a 1 GiB limit. Modules an implementation needs are imported before the clock
(`import_seconds`); the harness's process_seconds covers them too. Run in a fresh process so
peak RSS (ru_maxrss) belongs to this one run.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import threading
import time

RECORD = 100


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _write(path: str, data) -> None:
    with open(path, "wb") as f:
        f.write(data)


GNU_MEMORY = 1 << 30


def wiscsort(inp, out, budget, threads, tmp, **tuned):
    """Ours as a user calls it: sort(input, output) plus only what a tuned row names."""
    from bas.sort import sort

    if budget is not None:
        tuned["memory_budget"] = budget
    report = sort(inp, out, **tuned)
    return {"algorithm": report.algorithm, "bytes_written_total":
            sum(report.bytes_written.values()),
            "phases": {p.name: round(p.seconds, 4) for p in report.phases}}


def gnu_sort(inp, out, budget, threads, tmp):
    env = dict(os.environ, LC_ALL="C")
    memory = budget or GNU_MEMORY
    subprocess.run(["sort", f"--parallel={threads}", "-S", f"{memory // 1024}K", "-T", tmp,
                    "-o", out, inp], check=True, env=env)
    _sync(out)
    return {}


def _arrow_records(inp):
    import numpy as np
    import pyarrow as pa

    data = np.fromfile(inp, dtype=np.uint8)
    n = data.size // RECORD
    return pa.table({"r": pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(RECORD), n, [None, pa.py_buffer(data)])})


def _write_binary_column(column, out):
    """Write a binary column's values back to back, chunk by chunk (no 2 GiB concat limit)."""
    import numpy as np

    with open(out, "wb") as f:
        for chunk in column.chunks:
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if "large" in
                                    str(chunk.type) else np.int32)
            start = int(offsets[chunk.offset])
            end = int(offsets[chunk.offset + len(chunk)])
            f.write(memoryview(chunk.buffers()[2])[start:end])
    _sync(out)


def duckdb_sort(inp, out, budget, threads, tmp):
    import duckdb

    records = _arrow_records(inp)  # noqa: F841  (DuckDB scans the local Arrow table by name)
    # DuckDB's own floor is about 100 MB; below it, it cannot run at all
    limit = max(budget or GNU_MEMORY, 128 << 20) // 2**20
    con = duckdb.connect(config={"threads": threads, "memory_limit": f"{limit}MB",
                                 "temp_directory": tmp})
    result = con.sql("SELECT r FROM records ORDER BY r").to_arrow_table()
    _write_binary_column(result.column("r"), out)
    return {}


def polars_sort(inp, out, budget, threads, tmp):
    import polars as pl

    df = pl.from_arrow(_arrow_records(inp)).sort("r")
    _write_binary_column(df.to_arrow().column("r"), out)
    return {}


def numpy_sort(inp, out, budget, threads, tmp):
    import numpy as np

    data = np.fromfile(inp, dtype=np.uint8).reshape(-1, RECORD)
    keys = np.ascontiguousarray(data[:, :10]).view("S10").ravel()
    order = np.argsort(keys, kind="stable")
    _write(out, data[order])
    _sync(out)
    return {}


def floor(inp, out, budget, threads, tmp):
    """The lower bound: read the input once and write it once (no sorting)."""
    import numpy as np

    from bas import open_device

    with open_device(f"file://{inp}?read_only=1") as src, \
            open_device(f"file://{out}", size=src.size) as dst:
        chunk = 64 << 20
        buf = np.empty(chunk, dtype=np.uint8)
        for pos in range(0, src.size, chunk):
            m = min(chunk, src.size - pos)
            offs = np.arange(pos, pos + m, 1 << 20, dtype=np.uint64)
            lens = np.minimum(1 << 20, pos + m - offs)
            src.read_many(offs, lens, buf[:m], threads=threads)
            dst.write_many(offs, lens, buf[:m], threads=threads)
        dst.persist()
    return {}


IMPLS = {
    "wiscsort": wiscsort,
    "wiscsort-tuned-piped": lambda *a: wiscsort(*a, schedule="piped"),
    "wiscsort-tuned-mergesort": lambda *a: wiscsort(*a, algorithm="mergesort"),
    "gnu-sort": gnu_sort,
    "duckdb": duckdb_sort,
    "polars": polars_sort,
    "numpy": numpy_sort,
    "floor": floor,
}


#: modules each implementation imports, loaded before the clock starts (start-up is not sorting)
PRELOAD = {"wiscsort": ["bas.sort"], "wiscsort-tuned-piped": ["bas.sort"],
           "wiscsort-tuned-mergesort": ["bas.sort"], "duckdb": ["duckdb", "pyarrow", "numpy"],
           "polars": ["polars", "pyarrow", "numpy"], "numpy": ["numpy"],
           "floor": ["bas", "numpy"]}


def _rss_anon(pid: str) -> int:
    """Anonymous resident bytes of a process: what it allocated, not page cache it mapped."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _vm_hwm() -> int:
    """This process's own peak RSS (ru_maxrss can carry the spawning parent's across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _children(pid: str) -> list[str]:
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += f.read().split()
    except OSError:
        pass
    return kids


class AnonSampler:
    """Samples the anonymous RSS of this process and its children every 20 ms; keeps the peak."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        me = str(os.getpid())
        while not self._stop.wait(0.02):
            total = _rss_anon(me) + sum(_rss_anon(k) for k in _children(me))
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def main() -> int:
    name, inp, out, memory, threads, tmp = sys.argv[1:7]
    budget = None if memory == "default" else int(memory)
    if os.path.exists(out):
        os.unlink(out)
    t_import = time.perf_counter()
    for module in PRELOAD.get(name, []):
        importlib.import_module(module)
    sampler = AnonSampler()
    t0 = time.perf_counter()
    extra = IMPLS[name](inp, out, budget, int(threads), tmp)
    seconds = time.perf_counter() - t0
    peak_anon = sampler.stop()
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_oublock: 512-byte blocks this process and its children sent to file systems (temporary
    # files included), so a tool's run files count as well as its output
    io_written = (me.ru_oublock + kids.ru_oublock) * 512
    print(json.dumps(dict(seconds=seconds, setup_seconds=0.0, import_seconds=t0 - t_import,
                          peak_rss=max(_vm_hwm(), kids.ru_maxrss * 1024), peak_anon=peak_anon,
                          io_bytes_written=io_written, **extra)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
