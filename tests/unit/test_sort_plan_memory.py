"""The sort plans within real memory: cgroup limits and page-cache residency choose the plan.

Plans only: these tests never sort gigabytes and never assert on speed.
"""

import json
import subprocess
import sys

import pytest

from bas import open_device
from bas.braid.profile import Profile
from bas.memory import MemoryInfo
from bas.sort import sort
from bas.sort.plan import make_plan
from tests.sortcheck import random_records, stable_model

GIB = 1 << 30
N_4GB = 40_000_000  # 4 GB of 100-byte records
N_1GB = 10_000_000
#: the issue's case: a 1.5 GiB memory cgroup, most of it free
LIMITED_COLD = MemoryInfo(3 * GIB // 2, 14 * GIB // 10, 0.0, "cgroup v2 memory.max of /job")
LIMITED_WARM = MemoryInfo(3 * GIB // 2, 14 * GIB // 10, 1.0, "cgroup v2 memory.max of /job")
UNLIMITED_WARM = MemoryInfo(None, 20 * GIB, 1.0)
UNLIMITED_COLD = MemoryInfo(None, 20 * GIB, 0.0)


@pytest.fixture
def file_input(tmp_path):
    """A buffered file device: its reads go through the page cache (n is given apart)."""
    (tmp_path / "in").write_bytes(b"x" * 100)
    with open_device(str(tmp_path / "in"), read_only=True) as dev:
        yield dev


def _plan(device, n, memory, budget=GIB, algorithm="auto", profile=None):
    return make_plan(device, n, 100, 10, budget, None, algorithm, profile, memory=memory)


def test_limited_memory_and_uncached_input_gets_a_sequential_plan(file_input):
    """Regression: a 4 GB uncached input under a 1.5 GiB cgroup got kv-external, whose
    random gathers missed the page cache (did not finish in 400 s; mergesort took 20 s)."""
    plan = _plan(file_input, N_4GB, LIMITED_COLD)
    assert plan.algorithm == "mergesort"
    assert not plan.random_reads_cheap
    assert plan.memory == LIMITED_COLD
    assert "1.5 GiB cgroup v2 memory.max of /job" in plan.reason
    assert "input 0% in the page cache" in plan.reason
    assert "holds 5% of the 3.7 GiB input" in plan.reason


def test_limited_memory_with_a_device_profile_stays_sequential(file_input):
    plan = _plan(file_input, N_4GB, LIMITED_COLD, profile=Profile.from_preset("nvme"))
    assert plan.algorithm == "mergesort"
    assert "preset:nvme" in plan.reason and "1.5 GiB" in plan.reason


def test_a_cached_input_that_cannot_stay_cached_is_no_better(file_input):
    """Cached now, but beside a 1 GiB budget a 1.5 GiB cgroup keeps only part of it."""
    assert _plan(file_input, N_4GB, LIMITED_WARM).algorithm == "mergesort"


@pytest.mark.parametrize("memory", [UNLIMITED_WARM, UNLIMITED_COLD])
def test_ample_memory_keeps_key_value_separation(file_input, memory):
    """Reading the keys brings a cold input into the page cache when it fits, so kv still
    gathers from memory: kv in memory for 1 GB, entry runs for 4 GB, as before."""
    assert _plan(file_input, N_1GB, memory).algorithm == "kv"
    assert _plan(file_input, N_4GB, memory).algorithm == "kv-external"
    assert _plan(file_input, N_4GB, memory).random_reads_cheap


def test_byte_addressable_input_ignores_the_page_cache():
    with open_device("dram://?size=4096") as dev:
        plan = _plan(dev, N_1GB, LIMITED_COLD)
    assert plan.algorithm == "kv" and "byte-addressable" in plan.reason


def test_direct_io_input_stays_sequential_with_ample_memory(tmp_path):
    (tmp_path / "in").write_bytes(b"x" * 4096)
    with open_device(f"file://{tmp_path / 'in'}?direct=1", read_only=True) as dev:
        assert _plan(dev, N_1GB, UNLIMITED_WARM).algorithm == "mergesort"


def test_budget_past_available_memory_is_cut(file_input):
    memory = MemoryInfo(GIB, GIB // 2, 1.0, "cgroup v1 memory.limit_in_bytes of /job")
    plan = _plan(file_input, 1_000_000, memory, budget=GIB, algorithm="mergesort")
    assert plan.budget == int(0.9 * (GIB // 2))
    assert plan.reason.startswith("the 1.0 GiB budget exceeds 90% of the 512.0 MiB available")
    assert "algorithm=mergesort was asked for" in plan.reason
    starved = MemoryInfo(GIB, 1 << 20, 1.0)  # a reading that low: keep a workable floor
    assert _plan(file_input, 1_000_000, starved, algorithm="mergesort").budget == 64 << 20
    assert _plan(file_input, 1_000_000, starved, budget=1 << 20).budget == 1 << 20


def test_asked_for_kv_that_memory_cannot_hold_is_refused(file_input):
    with pytest.raises(ValueError, match="algorithm=kv needs"):
        _plan(file_input, N_4GB, MemoryInfo(GIB, GIB // 2, 1.0), algorithm="kv")


def test_plan_reads_this_process_memory_by_default(file_input):
    plan = make_plan(file_input, 1, 100, 10, 1 << 20, None, "auto", None)
    assert isinstance(plan.memory, MemoryInfo) and plan.memory.available > 0
    assert plan.memory.input_cached_fraction == 1.0  # the fixture just wrote it
    assert "available" in plan.reason


def test_sort_with_given_memory_facts(tmp_path):
    """The engine plans with the MemoryInfo it is given and reports it."""
    data = random_records(2000, 100, 10, seed=3)
    (tmp_path / "in").write_bytes(data)
    tight = MemoryInfo(300 << 10, 200 << 10, 0.0, "cgroup v2 memory.max of /t")
    report = sort(tmp_path / "in", tmp_path / "out", memory_budget="64K", memory=tight)
    assert report.algorithm == "mergesort"
    assert report.memory == tight.to_dict()
    assert (tmp_path / "out").read_bytes() == stable_model(data, 100, 0, 10)
    report = sort(tmp_path / "in", tmp_path / "out2", memory_budget="64K",
                  memory=UNLIMITED_COLD)
    assert report.algorithm == "kv-external"
    assert (tmp_path / "out2").read_bytes() == stable_model(data, 100, 0, 10)


def test_cli_reports_the_memory_facts(tmp_path):
    (tmp_path / "in").write_bytes(random_records(500, 100, 10, seed=1))
    proc = subprocess.run([sys.executable, "-m", "bas.sort", str(tmp_path / "in"),
                           str(tmp_path / "out"), "--json", "--quiet"],
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(proc.stdout)
    assert report["memory"]["available"] > 0
    assert report["memory"]["input_cached_fraction"] == 1.0
    assert "available" in report["reason"]
    helptext = subprocess.run([sys.executable, "-m", "bas.sort", "--help"], capture_output=True,
                              text=True, timeout=60, check=True).stdout
    assert "page cache" in " ".join(helptext.split())


@pytest.mark.parametrize("schedule", ["staged", "piped"])
def test_dear_random_reads_keep_kv_external_within_the_budget(tmp_path, schedule):
    """Regression: the final merge did not reserve the buffer that stages address-ordered
    reads when random reads are dear (O_DIRECT, or a cold input beyond the page cache)."""
    data = random_records(20000, 100, 10, seed=8)
    (tmp_path / "in").write_bytes(data)
    report = sort(f"file://{tmp_path / 'in'}?direct=1", tmp_path / "out", memory_budget="1M",
                  algorithm="kv-external", schedule=schedule, threads=2)
    assert report.peak_memory <= 1 << 20
    assert (tmp_path / "out").read_bytes() == stable_model(data, 100, 0, 10)
