"""The cluster sort on a real Ray cluster of three loopback nodes (bas.testing.raycluster),
each node with its own input, output and scratch directories: hypothesis record sets against a
stable single-machine sort, other record shapes, balance under skew and duplicates, valsort -o
and -s over the partitions, the command line, a worker killed mid-shuffle, a node lost.

One cluster serves the module; the node-loss test removes a node and runs last.
"""

import os
import shutil
import tempfile
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

from bas.sort import gensort, valsort  # noqa: E402
from bas.sort.cluster import ClusterSortError, sort_cluster  # noqa: E402
from bas.sort.cluster_split import BALANCE_SLACK, SAMPLES_PER_PARTITION  # noqa: E402
from bas.testing.raycluster import LoopbackCluster  # noqa: E402
from tests.sortcheck import stable_model  # noqa: E402

NODES = [f"bas_sort_node_{i}" for i in range(3)]
EXAMPLES = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def cluster():
    with LoopbackCluster([{n: 1} for n in NODES]) as c:
        yield c


class Layout:
    """Per node: an input, an output and a scratch directory under one root."""

    def __init__(self, root: str):
        self.root = root
        self.dirs = {}
        for i, n in enumerate(NODES):
            d = {k: os.path.join(root, f"node{i}", k) for k in ("in", "out", "scratch")}
            for path in d.values():
                os.makedirs(path)
            self.dirs[n] = d
        self.inputs: dict[str, list[str]] = {n: [] for n in NODES}

    def add(self, node: str, data: bytes) -> None:
        path = os.path.join(self.dirs[node]["in"], f"input-{len(self.inputs[node])}")
        with open(path, "wb") as f:
            f.write(data)
        self.inputs[node].append(path)

    def sort(self, **kw):
        return sort_cluster(self.inputs, {n: d["out"] for n, d in self.dirs.items()},
                            scratch={n: d["scratch"] for n, d in self.dirs.items()}, **kw)

    def concatenated(self) -> bytes:
        return b"".join(_read(p) for n in NODES for p in self.inputs[n])

    def output(self, report) -> bytes:
        return b"".join(_read(p["path"]) for p in report.partitions)

    def leftovers(self) -> list[str]:
        """Hidden staging or scratch entries left in any output or scratch directory."""
        return [os.path.join(d[k], e) for d in self.dirs.values() for k in ("out", "scratch")
                for e in os.listdir(d[k]) if e.startswith(".")]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def layout(tmp_path):
    return Layout(str(tmp_path))


def _records(n: int, record_size: int, key_size: int, pool: np.ndarray | None,
             rng: np.random.Generator) -> bytes:
    data = rng.integers(0, 256, (n, record_size), dtype=np.uint8)
    if pool is not None and n:
        data[:, :key_size] = pool[rng.integers(0, len(pool), n)]
    return data.tobytes()


def _check(layout: Layout, report, record_size: int, key_size: int) -> None:
    data = layout.concatenated()
    assert layout.output(report) == stable_model(data, record_size, 0, key_size)
    assert report.records == len(data) // record_size
    assert [p["node"] for p in report.partitions] == NODES
    assert layout.leftovers() == []


shapes = st.sampled_from([(100, 10), (100, 10), (16, 4), (7, 7), (33, 12)])
files = st.lists(st.lists(st.integers(0, 40), max_size=2), min_size=3, max_size=3)


@EXAMPLES
@example(shape=(100, 10), sizes=[[], [1], []], distinct=None, seed=0, budget="1G")
@example(shape=(16, 4), sizes=[[0], [], [0, 0]], distinct=None, seed=0, budget="2K")
@given(shape=shapes, sizes=files, distinct=st.sampled_from([1, 2, 7, None]),
       seed=st.integers(0, 2**32 - 1), budget=st.sampled_from(["1G", "2K"]))
def test_matches_a_stable_single_machine_sort(cluster, tmp_path, shape, sizes, distinct, seed,
                                              budget):
    """Duplicates, one-record and empty nodes, other shapes, in memory or spilled: the
    partitions in order are the stable sort of the inputs taken node by node."""
    record_size, key_size = shape
    rng = np.random.default_rng(seed)
    pool = None if distinct is None else rng.integers(0, 256, (distinct, key_size), np.uint8)
    layout = Layout(tempfile.mkdtemp(dir=tmp_path))
    for node, counts in zip(NODES, sizes, strict=True):
        for n in counts:
            layout.add(node, _records(n, record_size, key_size, pool, rng))
    report = layout.sort(key_size=key_size, record_size=record_size, memory_budget=budget,
                         block_bytes=max(record_size, 9 * record_size))
    _check(layout, report, record_size, key_size)
    counts = [p["records"] for p in report.partitions]
    assert max(counts) - min(counts) <= 1  # every rank key sampled: even to one record
    for p in report.partitions:  # over the budget: spilled to scratch and sorted there
        assert p["algorithm"].startswith("spill") == (budget == "2K" and p["bytes"] > 2048)
    shutil.rmtree(layout.root)


@pytest.mark.parametrize("keys", ["skewed", "one-key"])
def test_skewed_and_duplicate_keys_give_balanced_partitions(cluster, layout, keys):
    """More records than the sample: partitions within the stated bound of N / P."""
    n = 3 * SAMPLES_PER_PARTITION * 2
    for i, node in enumerate(NODES):
        data = gensort.generate(n // 3, start=i * n, skew=True)
        if keys == "one-key":
            rows = np.frombuffer(data, np.uint8).reshape(-1, 100).copy()
            rows[:, :10] = 7
            data = rows.tobytes()
        layout.add(node, bytes(data))
    report = layout.sort()
    _check(layout, report, 100, 10)
    assert max(p["records"] for p in report.partitions) <= (1 + BALANCE_SLACK) * n / 3
    assert report.balance <= 1 + BALANCE_SLACK


def test_valsort_summaries_prove_order_count_and_checksum(cluster, layout, tmp_path):
    """valsort -o on each published partition and -s over their summaries, as the sort
    benchmark checks a distributed sort; the summaries the sort published agree."""
    for i, node in enumerate(NODES):
        path = os.path.join(layout.dirs[node]["in"], "gensort")
        gensort.write_file(path, 3000 + 1000 * i, start=10_000 * i)
        layout.inputs[node].append(path)
    report = layout.sort(block_bytes="64K")
    want = sum(valsort.validate(p).checksum for n in NODES for p in layout.inputs[n])
    assert report.checksum == want and "SUCCESS" in report.valsort
    cat = os.path.join(str(tmp_path), "all.sum")
    with open(cat, "wb") as out:
        for p in report.partitions:
            mine = p["path"][:-4] + ".sum"
            assert valsort.main(["-q", "-o", mine + ".check", p["path"]]) == 0
            with open(mine, "rb") as f:
                published = f.read()
            assert published == _read(mine + ".check")
            out.write(published)
    assert valsort.main(["-q", "-s", cat]) == 0
    total = valsort.Summary.empty()
    for s in valsort.read_summaries(cat):
        total = total.then(s)
    assert (total.records, total.checksum) == (report.records, want)


def test_command_line(cluster, layout, capsys):
    from bas.sort.__main__ import main

    gensort.write_file(os.path.join(layout.dirs[NODES[0]]["in"], "a"), 2000, skew=True)
    gensort.write_file(os.path.join(layout.dirs[NODES[2]]["in"], "b"), 500, start=9000)
    out = os.path.join(layout.root, "out")
    os.makedirs(out)
    argv = ["--ray", cluster.address, f"{NODES[0]}:{layout.dirs[NODES[0]]['in']}/a",
            f"{NODES[1]}:", f"{NODES[2]}:{layout.dirs[NODES[2]]['in']}/b",
            "--output-dir", out, "--json"]
    assert main(argv) == 0
    got = capsys.readouterr().out
    assert '"records": 2500' in got
    assert sorted(os.listdir(out)) == [f"part-0000{p}.{e}" for p in range(3)
                                        for e in ("dat", "sum")]
    assert main(["--ray", cluster.address, f"{NODES[0]}:/nonexistent/x", "--output-dir",
                 out]) == 2
    assert "nonexistent" in capsys.readouterr().err


def test_unknown_node_is_a_clear_error(cluster, layout):
    with pytest.raises(ClusterSortError, match="bas_sort_node_9 is not in the cluster"):
        sort_cluster({"bas_sort_node_9": []}, layout.root)


@pytest.mark.parametrize("point", ["map", "reduce"])
def test_worker_killed_mid_shuffle_is_retried(cluster, layout, tmp_path, point):
    """The first map (or reduce, after it fetched blocks) kills its own worker process; Ray
    runs the task again and the sort is still complete and valid."""
    for i, node in enumerate(NODES):
        layout.add(node, bytes(gensort.generate(4000, start=i * 4000)))
    marker = os.path.join(str(tmp_path), f"killed-{point}")
    report = layout.sort(block_bytes="100K", memory_budget="1G" if point == "map" else "150K",
                         _faults={point: marker})
    assert os.path.exists(marker)  # the kill happened
    _check(layout, report, 100, 10)
    assert "SUCCESS" in report.valsort


def _node_with(resource: str) -> str:
    return next(n["NodeID"] for n in ray.nodes()
                if n["Alive"] and resource in n.get("Resources", {}))


def test_node_lost_publishes_nothing(cluster, layout, tmp_path):
    """A node lost for good while the others have staged their partitions: a clear error
    naming it, and not one partition published; the survivors' staging is gone. Runs last:
    the cluster keeps one node fewer."""
    for i, node in enumerate(NODES):
        layout.add(node, bytes(gensort.generate(3000, start=i * 3000)))
    gate = os.path.join(str(tmp_path), "gate")
    victim = NODES[2]
    outcome: dict = {}

    def run():
        try:
            outcome["report"] = layout.sort(_faults={"hold-2": gate})
        except BaseException as exc:  # noqa: BLE001 -- handed to the test thread
            outcome["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 60
    while not os.path.exists(gate + ".started") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the other reduces stage their partitions meanwhile
    cluster.remove(cluster.node_of(_node_with(victim)))
    t.join(120)
    assert not t.is_alive()
    assert isinstance(outcome.get("error"), ClusterSortError), outcome
    assert victim in str(outcome["error"])
    published = [e for d in layout.dirs.values() for e in os.listdir(d["out"])
                 if e.startswith("part-")]
    assert published == []
    survivors = [layout.dirs[n][k] for n in NODES[:2] for k in ("out", "scratch")]
    assert [e for d in survivors for e in os.listdir(d)] == []
