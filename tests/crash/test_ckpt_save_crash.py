"""Kill a save at every namespace operation: afterwards the old or the new checkpoint loads,
whole.

A forked child runs ckpt.save through a namespace that dies (os._exit, no clean-up) at its
k-th operation (create, mkdir, rename, exchange, sync, ...), for k = 1, 2, ... until a save
completes: between two operations no name changes, so these are all the states a kill can
leave. After each death the parent loads the path (which must give exactly the old or exactly
the new tensors, never a mix and never an error other than "no checkpoint" for a first save),
then runs the recovery a next save runs and checks the same checkpoint is still there, with
no leftovers beside it. test_ckpt_power_loss.py adds what a kill cannot show: unsynced names
that a power loss drops.
"""

import os
import shutil

import pytest
import torch

import ckpt
from bas.namespace import NamespaceWrapper
from bas.testing import FaultNamespace
from ckpt import atomic
from ckpt.source import index_ok

OPTIONS = {"chunk_size": 4096, "partition_size": 8192, "alignment": 256}
OLD = {"a": torch.arange(3000, dtype=torch.int32), "b": torch.ones(5)}
NEW = {"c": torch.full((2500,), 7, dtype=torch.int64), "a": torch.zeros(10), "d": torch.eye(3)}


class _Dying(FaultNamespace):
    """Exits the process at its k-th operation, before doing it."""

    def __init__(self, k: int, exchange: bool):
        super().__init__(exchange=exchange)
        self.k = k

    def _check(self, kind, path):
        if sum(self.calls.values()) + 1 == self.k:
            os._exit(77)
        super()._check(kind, path)


def _save_dying_at(k: int, sd, path: str, exchange: bool) -> int:
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            ckpt.save(sd, path, ns=_Dying(k, exchange), **OPTIONS)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _state(path: str):
    try:
        out = ckpt.load(path, threads=1)
    except ckpt.NotACheckpointError:
        return "absent"
    for name, sd in (("old", OLD), ("new", NEW)):
        if list(out) == list(sd) and all(torch.equal(out[k], sd[k]) for k in sd):
            return name
    raise AssertionError(f"a mix of old and new: {sorted(out)}")


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "rename-aside"])
@pytest.mark.parametrize("first", [False, True], ids=["replace", "first-save"])
def test_a_crash_at_any_call_leaves_old_or_new(tmp_path, exchange, first):
    path = str(tmp_path / "m")
    seen = set()
    for k in range(1, 400):
        if os.path.lexists(path):
            shutil.rmtree(path)
        if not first:
            ckpt.save(OLD, path, **OPTIONS)
        code = _save_dying_at(k, NEW, path, exchange)
        state = _state(path)
        seen.add(state)
        assert state in (("absent", "new") if first else ("old", "new")), (k, state)
        assert atomic.try_recover(path, index_ok)  # as the next save does, under the lock
        assert _state(path) == state, k
        assert os.listdir(tmp_path) == ([] if state == "absent" else ["m"]), k
        if code == 0:
            assert state == "new"
            break
        assert code == 77, f"the child failed at call {k} without being killed"
    else:
        pytest.fail("the save never completed")
    assert seen == ({"absent", "new"} if first else {"old", "new"})
    shutil.rmtree(path)
    if not first:
        ckpt.save(OLD, path, **OPTIONS)
    clean = FaultNamespace(exchange=exchange)
    ckpt.save(NEW, path, ns=clean, **OPTIONS)
    assert k == sum(clean.calls.values()) + 1 > 10  # every operation was a crash point


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "rename-aside"])
@pytest.mark.parametrize("first", [False, True], ids=["replace", "first-save"])
def test_a_save_fsyncs_files_and_directories_in_commit_order(tmp_path, exchange, first):
    """The page cache hides missing fsyncs from the crash test above; the call trace does not."""
    path = str(tmp_path / "m")
    if not first:
        ckpt.save(OLD, path, **OPTIONS)
    trace = []

    class Tracing(NamespaceWrapper):
        def _sync(self, fd):
            trace.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            super()._sync(fd)

        def _sync_dir(self, p):
            trace.append(("fsync", p))
            super()._sync_dir(p)

        def _rename(self, a, b):
            trace.append(("rename", a, b))
            super()._rename(a, b)

        def _exchange(self, a, b):
            super()._exchange(a, b)
            trace.append(("rename", a, b))

    ckpt.save(NEW, path, ns=Tracing(FaultNamespace(exchange=exchange)), **OPTIONS)
    commit = next(i for i, e in enumerate(trace)
                  if e[0] == "rename" and ".tmp-" in e[1] and e[2] == path)
    tmp = trace[commit][1]
    synced = [e[1] for e in trace[:commit] if e[0] == "fsync"]
    files = ["index.ckpt"] + [p.file for p in ckpt.read_index(path).partitions]
    for name in files:
        assert os.path.join(tmp, name) in synced, f"{name} not fsynced before the commit"
    assert tmp in synced, "the temporary directory is not fsynced before the commit"
    last_file = max(synced.index(os.path.join(tmp, n)) for n in files)
    assert synced.index(tmp) > last_file, "the directory is fsynced before its files"
    after = [e[1] for e in trace[commit + 1:] if e[0] == "fsync"]
    assert str(tmp_path) in after, "the parent directory is not fsynced after the commit"
