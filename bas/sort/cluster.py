"""bas.sort.cluster: sort records spread over the nodes of a Ray cluster, WiscSort on each node.

    report = sort_cluster({"bas_sort_node_0": ["/data/in-0"], "bas_sort_node_1": ["/data/in-1"],
                           "bas_sort_node_2": []}, "/data/sorted", address="10.0.0.1:6379")
    report.partitions[1]["path"]  # /data/sorted/part-00001.dat on bas_sort_node_1

A node is named by a Ray custom resource that exactly one live node has (start it with
`ray start --resources='{"bas_sort_node_0": 1}'`). Input paths are absolute paths on their
node's own storage; a node reads only its own. Every node named (one with no inputs too)
receives one partition, in the order the nodes are given: partition p is written on node p as
OUTPUT_DIR/part-000pp.dat with its valsort summary beside it (part-000pp.sum), and the
partitions in order form one sorted sequence.

Phases, as the sort benchmark's cloud record holders (Exoshuffle-CloudSort) run on Ray:
  survey   each node counts its records and checks its directories;
  sample   each node reads the keys of a uniform sample of its records (bas.sort.cluster_split);
           the driver picks P - 1 splitters, ties between equal keys broken by (node, index);
  map      one task per chunk of at most block_bytes (and a share of the memory budget) reads
           the chunk, sorts its (key, index) entries with the native radix sort, gathers the
           records in memory and cuts them at the splitters: P sorted blocks into Ray's object
           store (which spills to disk on its own when full);
  reduce   each destination merges its blocks (native loser-tree merge) into its staged
           output when they fit the budget; otherwise it fetches at most a budget's worth at a
           time, appends them to its scratch directory and sorts that with WiscSort, whose plan
           picks key/value separation or merge sort from the node's device profile;
  check    the partitions' valsort summaries, combined in order (valsort -s), must be in order
           and match the inputs' record count and checksum (gensort records only);
  publish  only then is every staged partition renamed to its final name.

Failures. Map and reduce tasks are retried by Ray when their worker process dies
(max_retries). A node that is lost for good stops the sort with ClusterSortError naming it;
the staged outputs and scratch of the other nodes are removed and nothing is published.
Publication starts only once every partition is staged and the check passed; a failure during
it removes what was already published.

Memory per node: map tasks hold about 2 * chunk * (record + entry) / record bytes of buffers
and a reduce at most memory_budget of fetched blocks plus a 4 MiB output buffer; blocks wait in
the object store, whose size is Ray's setting. Ray is imported only when sort_cluster runs.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from bas.registry import parse_size
from bas.sort import cluster_node as node_work
from bas.sort.cluster_node import Shape, output_names
from bas.sort.cluster_split import MAX_NODES, choose_splitters, sample_indexes
from bas.sort.valsort import Summary

__all__ = ["ClusterSortError", "ClusterSortReport", "sort_cluster"]

#: seconds between checks that every node of the sort is still alive
POLL_SECONDS = 0.5
#: seconds the clean-up after a failure may take before it is left to the nodes
CLEANUP_SECONDS = 30.0
#: share of a node's custom resource one task asks for (so that many can run on it at once)
PIN = 0.001


class ClusterSortError(RuntimeError):
    """The cluster sort failed (a node lost, a task failed, a check failed); nothing was
    published."""


@dataclass
class ClusterSortReport:
    """What a cluster sort did. Byte counts are totals over the nodes."""

    nodes: list[str]
    partitions: list[dict]  # per partition: node, path, records, bytes, algorithm, spilled
    records: int
    record_size: int
    key_size: int
    seconds: float
    phases: dict = field(default_factory=dict)  # phase -> seconds
    bytes_input: int = 0
    bytes_shuffled: int = 0  # block bytes through the object store
    bytes_crossed: int = 0  # of those, the bytes whose destination is another node
    bytes_spilled: int = 0  # blocks a reduce wrote to its scratch
    bytes_written: int = 0  # outputs + spills + WiscSort's runs
    checksum: int | None = None  # the inputs' valsort checksum (gensort records only)
    valsort: str | None = None  # valsort -s over the partitions' summaries
    balance: float = 1.0  # largest partition over the mean (1.0: perfectly even)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["checksum"] = None if self.checksum is None else f"{self.checksum:x}"
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def summary(self) -> str:
        n = max(1, self.bytes_input)
        lines = [f"cluster sort: {self.records:,} records on {len(self.nodes)} nodes in "
                 f"{self.seconds:.2f} s (" + ", ".join(f"{k} {v:.2f} s"
                                                      for k, v in self.phases.items()) + ")",
                 f"  shuffled {self.bytes_shuffled / n:.2f} and written "
                 f"{self.bytes_written / n:.2f} bytes per input byte; largest partition "
                 f"{self.balance:.3f} x the mean"]
        for p in self.partitions:
            lines.append(f"  {p['node']}: {p['path']} {p['records']:,} records ({p['algorithm']})")
        if self.valsort:
            lines.append(self.valsort)
        return "\n".join(lines)


def sort_cluster(inputs, output_dir, key_size: int = 10, record_size: int = 100,
                 address: str | None = None, *, key_offset: int = 0, scratch=None,
                 memory_budget: int | str = "1G", block_bytes: int | str = "64M",
                 threads: int = 1, profiles=None, seed: int = 0, max_retries: int = 3,
                 _faults: dict | None = None) -> ClusterSortReport:
    """Sort the records of every node's inputs into one range-partitioned sorted sequence.

    inputs: {node: [absolute paths on that node]} (a node may have none), or a list of
      (node, path) pairs; nodes are Ray custom resource names, in partition order.
    output_dir: a directory path that exists on every node, or {node: directory}.
    address: the Ray cluster (as ray.init takes it); ignored when this process is connected.
    scratch: where a reduce spills (a path or {node: path}); default: the node's output_dir.
    memory_budget: bytes (or "1G") of buffers one task may hold on a node.
    block_bytes: the most bytes one map task reads, and so one block it sends.
    threads: threads of each task's native kernels.
    profiles: a device profile JSON path on every node, or {node: path}, for WiscSort's plan.
    seed: of the key sample. max_retries: Ray retries of a map or reduce task.
    Raises ValueError for bad arguments, ClusterSortError when the sort fails.
    """
    nodes = _nodes(inputs)
    shape = Shape(record_size, key_size, key_offset, threads, parse_size(memory_budget))
    _check_shape(shape, threads)
    chunk = _chunk_records(shape, parse_size(block_bytes))
    outs = _per_node(output_dir, nodes, "output_dir")
    scratches = _per_node(scratch, nodes, "scratch") if scratch is not None else outs
    profs = _per_node(profiles, nodes, "profiles") if profiles is not None else {}
    import ray

    own = not ray.is_initialized()
    if own:
        ray.init(address=address, log_to_driver=False)
    try:
        return _Sort(ray, nodes, outs, scratches, profs, shape, chunk, seed, max_retries,
                     _faults).run()
    finally:
        if own:
            ray.shutdown()


def _nodes(inputs) -> dict[str, list[str]]:
    pairs = inputs.items() if isinstance(inputs, dict) else None
    nodes: dict[str, list[str]] = {}
    if pairs is not None:
        for name, paths in pairs:
            paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
            nodes[str(name)] = [os.fspath(p) for p in paths]
    else:
        for name, path in inputs:
            nodes.setdefault(str(name), []).append(os.fspath(path))
    if not nodes:
        raise ValueError("inputs name no node")
    if len(nodes) > MAX_NODES:
        raise ValueError(f"at most {MAX_NODES} nodes, got {len(nodes)}")
    for name, paths in nodes.items():
        for p in paths:
            if not os.path.isabs(p):
                raise ValueError(f"input {p!r} of node {name} is not an absolute path")
    return nodes


def _per_node(value, nodes: dict, what: str) -> dict[str, str]:
    if isinstance(value, dict):
        missing = [n for n in nodes if n not in value]
        if missing:
            raise ValueError(f"{what} names no directory for node(s) {missing}")
        value = {n: os.fspath(value[n]) for n in nodes}
    else:
        value = {n: os.fspath(value) for n in nodes}
    for n, p in value.items():
        if not os.path.isabs(p):
            raise ValueError(f"{what} {p!r} of node {n} is not an absolute path")
    return value


def _check_shape(shape: Shape, threads: int) -> None:
    from bas.sort.engine import _check_shape as check

    check(shape.record_size, shape.key_size, shape.key_offset)
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")


def _chunk_records(shape: Shape, block_bytes: int) -> int:
    """Records one map task sorts: its records twice (read, gathered) and its entries twice
    (sorted, radix scratch) must fit the budget, its records the block size."""
    from bas._native.sort import entry_size

    per_record = 2 * shape.record_size + 2 * entry_size(shape.key_size)
    chunk = min(block_bytes // shape.record_size, shape.budget // per_record)
    if chunk < 1:
        raise ValueError(f"memory_budget {shape.budget} and block_bytes {block_bytes} leave no "
                         f"room for one {shape.record_size}-byte record")
    return chunk


class _Sort:
    """One run of the cluster sort, driven from this process."""

    def __init__(self, ray, nodes, outs, scratches, profiles, shape, chunk, seed, max_retries,
                 faults):
        self.ray, self.shape, self.chunk, self.seed = ray, shape, chunk, seed
        self.names = list(nodes)
        self.inputs = [nodes[n] for n in self.names]
        self.outs = [outs[n] for n in self.names]
        self.scratches = [scratches[n] for n in self.names]
        self.profiles = [profiles.get(n) for n in self.names]
        self.max_retries, self.faults = max_retries, faults
        self.job = secrets.token_hex(4)
        self.phases: dict[str, float] = {}
        self.pending: list = []  # refs of tasks to cancel when the sort fails
        self.published: list = []  # per partition: the names its publication made
        self.publishing = False  # publication has started: a failure must undo it

    # -- driving ------------------------------------------------------------------------

    def run(self) -> ClusterSortReport:
        started = time.perf_counter()
        self._check_nodes()
        try:
            with self._phase("survey"):
                counts = self._each("survey", lambda i: (node_work.survey, self.inputs[i],
                                                         self.shape, self.outs[i],
                                                         self.scratches[i]))
            total = sum(sum(c) for c in counts)
            with self._phase("sample"):
                splitters = self._splitters(counts, total)
            with self._phase("map"):
                stats, blocks = self._map(counts, splitters)
            with self._phase("reduce"):
                results = self._reduce(stats, blocks)
            del blocks
            with self._phase("check"):
                checksum, text = self._check(stats, results, total)
            with self._phase("publish"):
                self._publish()
        except BaseException:
            self._abort()
            raise
        return self._report(counts, stats, results, total, checksum, text,
                            time.perf_counter() - started)

    @contextmanager
    def _phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = time.perf_counter() - start

    def _options(self, i: int, cpus: float, retries: int = 0) -> dict:
        return {"resources": {self.names[i]: PIN}, "num_cpus": cpus, "max_retries": retries}

    def _submit(self, i: int, fn, *args, cpus: float = 0, retries: int = 0, returns: int = 1):
        remote = self.ray.remote(fn).options(num_returns=returns, **self._options(i, cpus,
                                                                                  retries))
        refs = remote.remote(*args)
        self.pending.append(refs[0] if returns > 1 else refs)
        return refs

    def _each(self, phase: str, make) -> list:
        """Run make(i) -> (fn, *args) as a small task on every node; the results in order."""
        refs = [self._submit(i, *make(i)) for i in range(len(self.names))]
        return self._wait(phase, [(r, i) for i, r in enumerate(refs)])

    def _wait(self, phase: str, refs: list[tuple]) -> list:
        """ray.get of (ref, node index) pairs, checking every POLL_SECONDS that each node of
        the sort is alive (a task pinned to a lost node would wait for it for ever)."""
        ray = self.ray
        index = {r: k for k, (r, _) in enumerate(refs)}
        results: list = [None] * len(refs)
        pending = [r for r, _ in refs]
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_SECONDS,
                                      fetch_local=False)
            for r in ready:
                k = index[r]
                try:
                    results[k] = ray.get(r)
                except ray.exceptions.RayError as exc:
                    self._check_nodes(phase)
                    cause = getattr(exc, "cause", None) or exc
                    raise ClusterSortError(
                        f"{phase} on node {self.names[refs[k][1]]} failed: "
                        f"{type(cause).__name__}: {cause}") from exc
            if pending:
                self._check_nodes(phase)
        return results

    def _check_nodes(self, phase: str | None = None) -> None:
        """ClusterSortError unless every node of the sort is alive and unique."""
        alive: dict[str, int] = {}
        for n in self.ray.nodes():
            if n.get("Alive"):
                for r in n.get("Resources", {}):
                    alive[r] = alive.get(r, 0) + 1
        for name in self.names:
            if not alive.get(name) and phase is None:
                raise ClusterSortError(f"node {name} is not in the cluster: no live Ray node "
                                       f"has the resource {name!r}")
            if not alive.get(name):
                raise ClusterSortError(f"node {name} was lost during the {phase}: no live Ray "
                                       f"node has the resource {name!r}; nothing was published")
            if alive[name] > 1:
                raise ValueError(f"{alive[name]} live nodes have the resource {name!r}: a node "
                                 "of the sort must be named by a resource only it has")

    # -- phases -------------------------------------------------------------------------

    def _splitters(self, counts: list[list[int]], total: int) -> list[bytes]:
        parts = len(self.names)
        samples = self._each("sample", lambda i: (
            node_work.sample, self.inputs[i], counts[i],
            sample_indexes(sum(counts[i]), total, parts, i, self.seed), i, self.shape))
        return choose_splitters([s for node in samples for s in node], parts)

    def _map(self, counts, splitters):
        """A task per chunk: (stats per task, blocks[task][partition], with source nodes)."""
        parts = len(self.names)
        tasks = []
        for i, files in enumerate(self.inputs):
            index = 0
            for path, n in zip(files, counts[i], strict=True):
                for first in range(0, n, self.chunk):
                    m = min(self.chunk, n - first)
                    refs = self._submit(i, node_work.map_chunk, path, first, m, index + first,
                                        i, splitters, self.shape, self.faults, cpus=1,
                                        retries=self.max_retries, returns=parts + 1)
                    tasks.append((i, refs))
                index += n
        stats = self._wait("map", [(refs[0], i) for i, refs in tasks])
        for s, (i, _) in zip(stats, tasks, strict=True):
            s["node"] = i
        return stats, [refs[1:] for _, refs in tasks]

    def _reduce(self, stats, blocks) -> list[dict]:
        refs = []
        for p in range(len(self.names)):
            sizes = [s["parts"][p] * self.shape.record_size for s in stats]
            refs.append(self._submit(p, node_work.reduce_partition, p,
                                     [b[p] for b in blocks], sizes, self.outs[p],
                                     self.scratches[p], self.job, self.shape, self.profiles[p],
                                     self.faults, cpus=1, retries=self.max_retries))
        return self._wait("reduce", [(r, p) for p, r in enumerate(refs)])

    def _check(self, stats, results, total) -> tuple[int | None, str | None]:
        """valsort -s over the partitions' summaries against the inputs' count and checksum."""
        got = sum(r["records"] for r in results)
        if got != total:
            raise ClusterSortError(f"the partitions hold {got} records, the inputs {total}")
        if not self.shape.valsortable:
            return None, None
        want = sum(s["checksum"] for s in stats)
        combined = Summary.empty()
        for r in results:
            combined = combined.then(Summary.from_bytes(r["summary"]))
        if not combined.ok or combined.checksum != want:
            raise ClusterSortError("valsort of the partitions failed: " + combined.report()
                                   + f" (inputs' checksum {want:x})")
        return want, combined.report()

    def _publish(self) -> None:
        self.publishing = True
        refs = [self._submit(p, node_work.publish_partition, p, self.outs[p], self.job)
                for p in range(len(self.names))]
        for p, r in enumerate(refs):
            self.published.append(self._wait("publish", [(r, p)])[0])

    def _abort(self) -> None:
        """Stop what still runs, then remove staged outputs, scratch, and anything published,
        on every node still alive (bounded by CLEANUP_SECONDS)."""
        ray = self.ray
        for r in self.pending:
            try:
                ray.cancel(r, force=True)
            except Exception:  # noqa: BLE001 -- finished, or its node is gone: nothing to stop
                pass
        alive = {r for n in ray.nodes() if n.get("Alive") for r in n.get("Resources", {})}
        published = self.published
        refs = []
        for p, name in enumerate(self.names):
            if name in alive:
                if p < len(published):
                    done = published[p]
                else:  # its publication may have run without our hearing: undo it blind
                    done = list(output_names(self.outs[p], p)) if self.publishing else None
                refs.append(ray.remote(node_work.discard).options(**self._options(p, 0)).remote(
                    p, self.outs[p], self.scratches[p], self.job, done))
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=CLEANUP_SECONDS, fetch_local=False)

    def _report(self, counts, stats, results, total, checksum, text, seconds):
        R = self.shape.record_size
        parts = len(self.names)
        shuffled = sum(sum(s["parts"]) for s in stats) * R
        crossed = sum(s["parts"][p] for s in stats for p in range(parts) if p != s["node"]) * R
        partitions = [{"node": self.names[r["part"]],
                       "path": output_names(self.outs[r["part"]], r["part"])[0],
                       "records": r["records"], "bytes": r["bytes"],
                       "algorithm": r["algorithm"], "spilled": r["spilled"],
                       "seconds": r["seconds"]} for r in results]
        written = sum(r["bytes"] + r["spilled"] + r["sort_written"] for r in results)
        biggest = max(r["records"] for r in results)
        return ClusterSortReport(
            self.names, partitions, total, R, self.shape.key_size, seconds, dict(self.phases),
            bytes_input=total * R, bytes_shuffled=shuffled, bytes_crossed=crossed,
            bytes_spilled=sum(r["spilled"] for r in results), bytes_written=written,
            checksum=checksum, valsort=text,
            balance=biggest * parts / total if total else 1.0)
