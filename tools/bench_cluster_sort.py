"""Cluster sort workloads: our Ray sort, Ray Data's Dataset.sort and single-node bas.sort, side
by side on the same gensort records spread over three loopback Ray nodes.

    tools/bench compare cluster-sort ray-data-sort single-sort --size 1G --rounds 3 \\
        --device /var/tmp/bas-bench-cluster

Each run is a fresh process (this file run as a script) that starts its own Ray cluster of a
head and three nodes on 127.0.0.1 (bas.testing.raycluster; one CPU each, object stores sized
to the data), outside the timed region (`setup_seconds`). The input (binary gensort records,
made once per invocation, or once for good under $BAS_BENCH_DATA) is one file per node,
records [i N/3, (i+1) N/3) on node i, and their concatenation for the single-node row, the
same bytes. Timed (`seconds`): from the first read to the last output synced or closed.
  cluster-sort    bas.sort.cluster.sort_cluster over the three nodes, defaults;
  ray-data-sort   the three files read as 64 MB blocks (ray.data.from_items of byte ranges,
                  map_batches reading each: Ray Data's way to a format it has no reader
                  for), split into fixed-size rows (a 10-byte key column and the 100-byte
                  record, Arrow fixed-size binary),
                  Dataset.sort("key"), written as raw record files by a file datasink;
  single-sort     bas.sort.sort(all records, output) on one node, defaults.
Every output is checked outside the timed region with our valsort: each file in order, the
files (ours: in partition order; Ray Data's: by their first record) in order across, and the
record count and checksum equal to the input's. Ours also reports the bytes its shuffle moved
and the bytes it wrote per input byte (`shuffled_per_input_byte`, `written_per_input_byte`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

RECORD = 100
NODES = [f"bas_sort_node_{i}" for i in range(3)]
#: bytes per Ray Data input block: many blocks, so that its sort's map and reduce phases run
#: in parallel over the nodes (read_binary_files would make one block of each 333 MB file)
READ_BLOCK = 64 << 20
ROLES = {"cluster-sort": "ours", "ray-data-sort": "peer", "single-sort": "ours"}


def _data(root: str, size: int, threads: int) -> dict:
    """The per-node inputs and their concatenation under root, made once; their facts."""
    from bas.sort import gensort, valsort

    base = os.path.join(root, f"cluster-sort-{size}")
    marker = os.path.join(base, "input.json")
    if not os.path.exists(marker):
        n = size // RECORD
        bounds = [i * n // len(NODES) for i in range(len(NODES) + 1)]
        for i in range(len(NODES)):
            d = os.path.join(base, f"node{i}")
            os.makedirs(d, exist_ok=True)
            gensort.write_file(os.path.join(d, "input.dat"), bounds[i + 1] - bounds[i],
                               start=bounds[i], threads=threads)
        gensort.write_file(os.path.join(base, "all.dat"), n, threads=threads)
        got = valsort.validate(os.path.join(base, "all.dat"), threads=threads)
        with open(marker, "w") as f:
            json.dump({"records": got.records, "checksum": got.checksum}, f)
    with open(marker) as f:
        facts = json.load(f)
    facts["inputs"] = [os.path.join(base, f"node{i}", "input.dat") for i in range(len(NODES))]
    facts["all"] = os.path.join(base, "all.dat")
    return facts


def _check(files: list[str], want: dict, threads: int, by_first_record: bool) -> bool:
    """Each file sorted, the files sorted across, count and checksum equal to the input's."""
    from bas.sort import valsort

    parts = [valsort.validate(f, threads) for f in files]
    if by_first_record:
        parts = sorted((p for p in parts if p.records), key=lambda p: p.first_record)
    total = valsort.Summary.empty()
    for p in parts:
        total = total.then(p)
    return total.ok and (total.records, total.checksum) == (want["records"], want["checksum"])


# -- the harness side ------------------------------------------------------------------------

def _runs(name: str, ctx):
    from benchkit import prepare_cache, run_child

    facts = _data(os.environ.get("BAS_BENCH_DATA") or ctx.workdir, ctx.size, ctx.threads)
    files = facts["all"] if name == "single-sort" else facts["inputs"]
    files = files if isinstance(files, list) else [files]
    for _ in range(ctx.repeat):
        cache = prepare_cache(files, ctx)
        child = run_child([sys.executable, os.path.abspath(__file__), name, ctx.workdir,
                           str(ctx.size), str(ctx.threads)], ctx)
        yield dict(workload=name, role=ROLES[name], device=f"file://{ctx.workdir}",
                   is_pmem=False, size=ctx.size, records=ctx.size // RECORD,
                   nodes=1 if name == "single-sort" else len(NODES), threads=ctx.threads,
                   cache=cache, cold=ctx.cold, bytes=ctx.size, bytes_read=ctx.size,
                   **{"seconds": None, "valid": False, **child.fields(), **child.result()})


def _register() -> None:
    from benchkit import workload

    for name, doc in [
        ("cluster-sort", "ours: bas.sort.cluster.sort_cluster on 3 loopback Ray nodes"),
        ("ray-data-sort", "peer: Ray Data Dataset.sort of fixed-size rows, 3 loopback nodes"),
        ("single-sort", "ours: single-node bas.sort.sort of the same bytes"),
    ]:
        def fn(ctx, _name=name):
            yield from _runs(_name, ctx)

        fn.__doc__ = doc
        workload(name, "cluster", process=True)(fn)


# -- the child side ----------------------------------------------------------------------------

def _cluster(size: int):
    from bas.testing.raycluster import LoopbackCluster

    # each node's store holds its share of the blocks, twice over for Ray Data's copies
    store = max(256 << 20, min(8 << 30, size))
    return LoopbackCluster([{n: 1} for n in NODES], object_store_bytes=store)


def _chunks(paths: list[str], block: int) -> list[dict]:
    """Whole-record byte ranges of at most block bytes covering the files, as Ray Data items."""
    block -= block % RECORD
    out = []
    for path in paths:
        size = os.path.getsize(path)
        out += [{"path": path, "offset": o, "length": min(block, size - o)}
                for o in range(0, size, block)]
    return out


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _ours(facts: dict, work: str, size: int, threads: int) -> dict:
    from bas.sort.cluster import sort_cluster

    outs = {n: _fresh(os.path.join(work, f"cluster-out-{i}")) for i, n in enumerate(NODES)}
    setup = time.perf_counter()
    with _cluster(size):
        setup = time.perf_counter() - setup
        start = time.perf_counter()
        report = sort_cluster({n: [facts["inputs"][i]] for i, n in enumerate(NODES)}, outs)
        seconds = time.perf_counter() - start
    files = [p["path"] for p in report.partitions]
    valid = _check(files, facts, threads, by_first_record=False)
    for d in outs.values():
        shutil.rmtree(d)
    n = max(1, report.bytes_input)
    return {"seconds": seconds, "setup_seconds": setup, "valid": valid,
            "bytes_written": report.bytes_written, "bytes_shuffled": report.bytes_shuffled,
            "bytes_crossed": report.bytes_crossed, "bytes_spilled": report.bytes_spilled,
            "shuffled_per_input_byte": report.bytes_shuffled / n,
            "written_per_input_byte": report.bytes_written / n, "phases": report.phases,
            "balance": report.balance,
            "algorithms": sorted({p["algorithm"] for p in report.partitions})}


def _ray_data(facts: dict, work: str, size: int, threads: int) -> dict:
    import numpy as np
    import pyarrow as pa

    out = _fresh(os.path.join(work, "ray-data-out"))
    setup = time.perf_counter()
    with _cluster(size):
        import ray.data
        from ray.data.datasource import BlockBasedFileDatasink

        class RecordSink(BlockBasedFileDatasink):
            """Raw records, one file per block, synced."""

            def write_block_to_file(self, block, file) -> None:
                col = block.to_arrow().column("record").combine_chunks()
                buf = col.buffers()[1]
                file.write(buf[col.offset * RECORD:(col.offset + len(col)) * RECORD])

        def rows(batch: dict) -> pa.Table:
            data = bytearray()
            for path, offset, length in zip(batch["path"], batch["offset"], batch["length"],
                                            strict=True):
                with open(path, "rb") as f:
                    f.seek(int(offset))
                    data += f.read(int(length))
            recs = np.frombuffer(data, np.uint8).reshape(-1, RECORD)
            n = recs.shape[0]
            keys = np.ascontiguousarray(recs[:, :10])
            return pa.table({
                "key": pa.FixedSizeBinaryArray.from_buffers(pa.binary(10), n,
                                                            [None, pa.py_buffer(keys)]),
                "record": pa.FixedSizeBinaryArray.from_buffers(pa.binary(RECORD), n,
                                                               [None, pa.py_buffer(recs)])})

        ray.data.DataContext.get_current().enable_progress_bars = False
        setup = time.perf_counter() - setup
        start = time.perf_counter()
        ds = ray.data.from_items(_chunks(facts["inputs"], READ_BLOCK))
        ds = ds.map_batches(rows, batch_size=1, batch_format="numpy")
        ds.sort("key").write_datasink(RecordSink(out, file_format="dat"))
        seconds = time.perf_counter() - start
    files = [os.path.join(out, f) for f in sorted(os.listdir(out))]
    written = sum(os.path.getsize(f) for f in files)
    valid = _check(files, facts, threads, by_first_record=True)
    shutil.rmtree(out)
    return {"seconds": seconds, "setup_seconds": setup, "valid": valid,
            "bytes_written": written, "output_files": len(files)}


def _single(facts: dict, work: str, size: int, threads: int) -> dict:
    from bas.sort import sort

    out = os.path.join(work, "single-sorted.dat")
    start = time.perf_counter()
    report = sort(facts["all"], out)
    seconds = time.perf_counter() - start
    valid = _check([out], facts, threads, by_first_record=False)
    os.unlink(out)
    return {"seconds": seconds, "setup_seconds": 0.0, "valid": valid,
            "bytes_written": sum(report.bytes_written.values()), "algorithms": [report.algorithm]}


def child_main(argv: list[str]) -> int:
    name, work, size, threads = argv[0], argv[1], int(argv[2]), int(argv[3])
    facts = _data(os.environ.get("BAS_BENCH_DATA") or work, size, threads)
    run = {"cluster-sort": _ours, "ray-data-sort": _ray_data, "single-sort": _single}[name]
    print(json.dumps(run(facts, work, size, threads)))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
else:
    _register()
