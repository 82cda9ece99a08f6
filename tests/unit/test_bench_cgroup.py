"""tools/cgroup.py: memory cgroups for benchmark children (skipped where none can be made)."""

import os
import subprocess
import sys

import pytest

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")
sys.path.insert(0, os.path.abspath(TOOLS))

import cgroup  # noqa: E402
from benchkit import Context, run_child  # noqa: E402

LIMIT = 64 << 20

# the child finds its own memory cgroup in /proc/self/cgroup and reads the limit set there
CHILD = r"""
import os, sys
version, mount, root = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for line in open("/proc/self/cgroup").read().splitlines():
    num, controllers, path = line.split(":", 2)
    if (version == 2 and num == "0") or (version == 1 and "memory" in controllers.split(",")):
        name = "memory.max" if version == 2 else "memory.limit_in_bytes"
        with open(os.path.join(mount, os.path.relpath(path, root), name)) as f:
            print(path, f.read().strip())
"""


@pytest.fixture
def memcg():
    try:
        cg = cgroup.MemoryCgroup.create(LIMIT)
    except cgroup.CgroupError as exc:
        pytest.skip(f"no memory cgroup can be made here: {exc}")
    yield cg
    cg.remove()


def _argv(cg):
    h = cg.hierarchy
    return [sys.executable, "-c", CHILD, str(h.version), h.mount, h.root]


def test_a_child_in_a_64_mib_cgroup_sees_its_limit_through_proc_self_cgroup(memcg):
    proc = subprocess.run(memcg.wrap(_argv(memcg)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    path, limit = proc.stdout.split()
    assert path.endswith("/" + os.path.basename(memcg.path))
    assert int(limit) == LIMIT
    assert memcg.usage()["cgroup_memory_limit"] == LIMIT


def test_the_cgroup_is_gone_after_remove(memcg):
    subprocess.run(memcg.wrap(["true"]), check=True, timeout=60)
    memcg.remove()
    assert not os.path.exists(memcg.path)
    memcg.remove()  # twice is harmless


def test_run_child_puts_the_child_in_a_fresh_cgroup_and_removes_it(memcg, tmp_path):
    ctx = Context(device="", size=0, threads=1, workdir=str(tmp_path), cold=False,
                  cgroup_memory=LIMIT, timeout=60)
    h = memcg.hierarchy
    before = set(os.listdir(h.mount))
    child = run_child(_argv(memcg), ctx)
    assert child.status == "ok", child.stderr
    path, limit = child.stdout.split()
    assert int(limit) == LIMIT and os.path.basename(path).startswith("bas-bench-")
    assert child.cgroup["cgroup_memory_limit"] == LIMIT
    assert set(os.listdir(h.mount)) == before  # its cgroup was removed


V2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
HYBRID = ("30 25 0:26 / /sys/fs/cgroup/unified rw shared:4 - cgroup2 cgroup2 rw\n"
          "31 25 0:27 / /sys/fs/cgroup/memory rw shared:5 - cgroup cgroup rw,memory\n")
NONE = "20 1 0:3 / /proc rw - proc proc rw\n"


def test_find_hierarchy_prefers_v2_when_it_has_the_memory_controller():
    h = cgroup.find_hierarchy(V2, read=lambda path: "cpu io memory pids\n")
    assert (h.version, h.mount, h.limit_file) == (2, "/sys/fs/cgroup", "memory.max")


def test_find_hierarchy_uses_the_v1_memory_hierarchy_on_a_hybrid_system():
    h = cgroup.find_hierarchy(HYBRID, read=lambda path: "\n")  # v2 offers no controller
    assert (h.version, h.mount, h.limit_file) == (1, "/sys/fs/cgroup/memory",
                                                  "memory.limit_in_bytes")


def test_no_memory_controller_is_a_clear_error():
    with pytest.raises(cgroup.CgroupError, match="no memory cgroup controller"):
        cgroup.find_hierarchy(NONE)
    with pytest.raises(cgroup.CgroupError, match=r"offers \['cpu'\]"):
        cgroup.find_hierarchy(V2, read=lambda path: "cpu\n")


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(cgroup.CgroupError, match="needs root"):
        cgroup.MemoryCgroup.create(LIMIT, hierarchy=cgroup.Hierarchy(2, "/nonexistent"))
