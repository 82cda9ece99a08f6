"""Several processes save one path at once: it always ends holding one whole version that
some saver wrote, and every saver that reported success had its version published."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

import ckpt
from ckpt.writer import Writer

OPTIONS = {"chunk_size": 4096, "partition_size": 8192, "alignment": 256}


def _payload(saver: int, round_: int) -> np.ndarray:
    return np.full(3000, saver * 1000 + round_, dtype=np.int32)


def _saver(path: str, saver: int, rounds: int, go) -> None:
    go.wait()
    for r in range(rounds):
        data = _payload(saver, r)
        with Writer(path, metadata={"who": f"{saver}:{r}"}, **OPTIONS) as w:
            w.add("a", "int32", data.shape, data)
            w.add("b", "int32", data.shape, data[::-1].copy())


def _check(path: str, savers: int, rounds: int) -> str:
    out = ckpt.load(path, verify=True)  # one load: every chunk matches its checksum
    saver, r = divmod(int(out["a"][0]), 1000)
    assert 0 <= saver < savers and 0 <= r < rounds
    assert np.array_equal(out["a"].numpy(), _payload(saver, r))
    assert np.array_equal(out["b"].numpy(), _payload(saver, r))
    return f"{saver}:{r}"


@pytest.mark.slow
def test_concurrent_saves_to_one_path_never_lose_both_versions(tmp_path):
    path = str(tmp_path / "m.ckpt")
    savers, rounds = 4, 12
    ctx = multiprocessing.get_context("fork")
    for loop in range(3):
        go = ctx.Event()
        procs = [ctx.Process(target=_saver, args=(path, s, rounds, go)) for s in range(savers)]
        for p in procs:
            p.start()
        go.set()
        seen = set()
        while any(p.is_alive() for p in procs):
            if os.path.exists(path):  # readers never lock: a load in the middle is whole
                try:
                    seen.add(_check(path, savers, rounds))
                except ckpt.NotACheckpointError:
                    pass
        for p in procs:
            p.join()
            assert p.exitcode == 0, f"loop {loop}: a saver failed"
        final = _check(path, savers, rounds)
        assert final.endswith(f":{rounds - 1}")  # the last published save is someone's last
        leftovers = sorted(set(os.listdir(tmp_path)) - {"m.ckpt"})
        assert leftovers == [], leftovers


def test_second_writer_without_waiting_gets_save_in_progress(tmp_path):
    path = tmp_path / "m.ckpt"
    first = Writer(path)
    try:
        errors = []

        def other_thread():
            try:
                Writer(path, wait=False)
            except ckpt.SaveInProgressError as exc:
                errors.append(str(exc))

        import threading

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert len(errors) == 1 and "another save" in errors[0]
        first.add("x", "uint8", (3,), b"abc")
        first.commit()
    finally:
        first.abort()
    second = Writer(path, wait=False)  # the lock was given back at commit
    second.abort()
    assert os.listdir(tmp_path) == ["m.ckpt"]


def test_abandoned_writer_does_not_hold_the_lock_forever(tmp_path):
    path = tmp_path / "m.ckpt"
    Writer(path)  # never committed nor aborted: collected at once
    w = Writer(path, wait=False)
    w.abort()


def test_users_own_name_lock_file_around_a_save_does_not_deadlock(tmp_path):
    """py-filelock's convention (flock on NAME.lock around the save) must not meet ours."""
    import fcntl

    path = tmp_path / "m.ckpt"
    with open(f"{path}.lock", "w") as user_lock:
        fcntl.flock(user_lock, fcntl.LOCK_EX)
        w = Writer(path, wait=False)  # before: SaveInProgressError, or a hang when waiting
        w.add("x", "uint8", (1,), b"x")
        w.commit()
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt", "m.ckpt.lock"]  # theirs stays


def test_a_save_nested_in_a_save_of_the_same_path_fails_instead_of_hanging(tmp_path):
    path = tmp_path / "m.ckpt"
    outer = Writer(path)
    try:
        with pytest.raises(ckpt.SaveInProgressError, match="already saving"):
            Writer(path)  # wait=True: flock would wait for ourselves forever
    finally:
        outer.abort()


def test_a_second_thread_waits_for_the_first_save(tmp_path):
    import threading

    path = tmp_path / "m.ckpt"
    first = Writer(path)
    done = []

    def second():
        with Writer(path) as w:
            w.add("y", "uint8", (1,), b"y")
        done.append(True)

    t = threading.Thread(target=second)
    t.start()
    t.join(0.5)
    assert not done  # still waiting for the lock
    first.add("x", "uint8", (1,), b"x")
    first.commit()
    t.join(30)
    assert done and list(ckpt.load(path)) == ["y"]
