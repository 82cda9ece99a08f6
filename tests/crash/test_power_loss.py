"""Fail the Nth namespace operation, then lose power: the old state or the whole new one, always.

For every N over all the namespace operations of a publication (a ckpt save, a disk-tier copy,
a sort's output, gensort's file), the operation fails (only it, or it and every later one: a
dead disk), the caller cleans up as it does on errors, and FaultNamespace.crash() drops every
name and byte not yet synced. What is left must be exactly the previous state or exactly the
new one, and the next run's recovery must keep it, leaving nothing else behind.
"""

import errno
import os
import shutil

import numpy as np
import pytest
import torch

import ckpt
from bas.sort import sort
from bas.sort.gensort import generate, write_file
from bas.testing import FaultNamespace
from ckpt import atomic
from ckpt.source import index_ok
from tests.sortcheck import random_records, stable_model

OPTIONS = {"chunk_size": 4096, "partition_size": 8192, "alignment": 256}
OLD = {"a": torch.arange(3000, dtype=torch.int32), "b": torch.ones(5)}
NEW = {"c": torch.full((2500,), 7, dtype=torch.int64), "a": torch.zeros(10), "d": torch.eye(3)}
DEAD = {"once": 1, "dead-disk": 0}  # fail_count


def _each_failure(run, exchange: bool = True, fail_count: int = 1):
    """run(ns) for N = 1, 2, ... failing the Nth operation, crash() after each; yields
    (N, whether run succeeded). Stops after the first run in which nothing failed."""
    for n in range(1, 1000):
        ns = FaultNamespace(fail_after=n, fail_count=fail_count, fail_errno=errno.EIO,
                            exchange=exchange)
        try:
            run(ns)
            ok = True
        except OSError as exc:  # CheckpointIOError and DeviceIOError are OSErrors too
            assert exc.errno == errno.EIO, exc
            ok = False
        assert ok or ns.operations >= n, "the fault did not fire"
        ns.crash()
        yield n, ok
        if ok:
            return
    pytest.fail("the run never completed")


def _ckpt_state(path: str) -> str:
    try:
        out = ckpt.load(path, threads=1)
    except ckpt.NotACheckpointError:
        return "absent"
    for name, sd in (("old", OLD), ("new", NEW)):
        if list(out) == list(sd) and all(torch.equal(out[k], sd[k]) for k in sd):
            return name
    raise AssertionError(f"a mix of old and new: {sorted(out)}")


@pytest.mark.parametrize("fail_count", DEAD.values(), ids=DEAD.keys())
@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "rename-aside"])
@pytest.mark.parametrize("first", [False, True], ids=["replace", "first-save"])
def test_a_save_failing_at_any_operation_then_losing_power_leaves_old_or_new(
        tmp_path, first, exchange, fail_count):
    path = str(tmp_path / "m")
    if not first:
        ckpt.save(OLD, path, **OPTIONS)
    seen = set()
    for n, ok in _each_failure(lambda ns: ckpt.save(NEW, path, ns=ns, **OPTIONS),
                               exchange, fail_count):
        state = _ckpt_state(path)
        seen.add(state)
        assert state in (("absent", "new") if first else ("old", "new")), (n, state)
        assert not ok or state == "new", f"a save that returned was lost ({n})"
        assert atomic.try_recover(path, index_ok)  # as the next save does, under the lock
        assert _ckpt_state(path) == state, n
        assert os.listdir(tmp_path) == ([] if state == "absent" else ["m"]), n
        if os.path.lexists(path):  # back to the starting point for the next N
            shutil.rmtree(path)
        if not first:
            ckpt.save(OLD, path, **OPTIONS)
    assert n > 10
    assert seen == ({"absent", "new"} if first else {"old", "new"})


def test_a_disk_tier_copy_failing_at_any_operation_keeps_the_tier_consistent(tmp_path):
    src = str(tmp_path / "src")
    ckpt.save(NEW, src, **OPTIONS)
    root = tmp_path / "ssd"
    for n, ok in _each_failure(lambda ns: ckpt.DiskTier(root, 1 << 20, ns=ns).put("m", src)):
        tier = ckpt.DiskTier(root, 1 << 20)  # reopened after the power loss: reconciled
        names = tier.names()
        assert names in ([], ["m"]), (n, names)
        assert not ok or names == ["m"], f"a put that returned was lost ({n})"
        if names:
            assert _ckpt_state(tier.path("m")) == "new", n
        kept = [b for b in os.listdir(root) if not b.endswith(atomic.LOCK_SUFFIX)]  # harmless
        assert sorted(kept) == sorted(["store.json"] + names), n
        shutil.rmtree(root)


@pytest.mark.parametrize("fail_count", DEAD.values(), ids=DEAD.keys())
@pytest.mark.parametrize("previous", [False, True], ids=["new-output", "replace-output"])
def test_a_sort_output_failing_at_any_operation_then_losing_power_is_old_or_whole(
        tmp_path, previous, fail_count):
    data = random_records(500, 100, 10, seed=5)
    (tmp_path / "in").write_bytes(data)
    out, old, new = tmp_path / "out", b"previous output", stable_model(data, 100, 0, 10)
    if previous:
        out.write_bytes(old)
    seen = set()
    for n, ok in _each_failure(lambda ns: sort(tmp_path / "in", out, memory_budget="64K",
                                               ns=ns), fail_count=fail_count):
        got = out.read_bytes() if out.exists() else None
        assert got in ((old if previous else None), new), n
        assert not ok or got == new, f"a sort that returned lost its output ({n})"
        seen.add(got)
        leftovers = sorted(set(os.listdir(tmp_path)) - {"in", "out"})
        assert all(name.startswith(".out.sorting-") for name in leftovers), leftovers
        for name in leftovers:  # a dead disk's or a lost rename's temporary: never the output
            os.unlink(tmp_path / name)
        if previous:
            out.write_bytes(old)
        elif out.exists():
            out.unlink()
    assert seen == {old if previous else None, new}


@pytest.mark.parametrize("fail_count", DEAD.values(), ids=DEAD.keys())
def test_gensort_failing_at_any_operation_then_losing_power_is_old_or_whole(tmp_path,
                                                                            fail_count):
    path, old = tmp_path / "recs", b"previous records"
    new = generate(300).tobytes()
    path.write_bytes(old)
    seen = set()
    for n, ok in _each_failure(lambda ns: write_file(path, 300, ns=ns), fail_count=fail_count):
        got = path.read_bytes()
        assert got in (old, new), n
        assert not ok or got == new, n
        seen.add(got)
        leftovers = sorted(set(os.listdir(tmp_path)) - {"recs"})
        assert fail_count == 0 or leftovers == [], (n, leftovers)
        for name in leftovers:
            os.unlink(tmp_path / name)
        path.write_bytes(old)
    assert seen == {old, new}
    assert np.frombuffer(new, np.uint8).size == 300 * 100
