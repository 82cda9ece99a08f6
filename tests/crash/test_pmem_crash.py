"""pmem:// crash consistency: a child process SIGKILLs itself mid-operation, the parent reopens.

The child runs without PMEM_IS_PMEM_FORCE, so every persist is a real msync. A kill leaves the
page cache (so unpersisted stores often survive); power loss is not simulated here. What must
hold after any kill: the pool opens without CorruptionError (checksums verified), write_atomic
is all old or all new (all new once committed), persisted writes are there.
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pmem = pytest.importorskip("bas.backends.pmem", exc_type=ImportError)

from bas import open_device  # noqa: E402

SIZE = 1 << 20
# spans chunks 0..2 of 64 KiB, with unaligned ends
OFF, LEN = 60_000, 90_000
OLD = bytes(i % 251 for i in range(LEN))
NEW = bytes((i * 7 + 3) % 253 for i in range(LEN))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = textwrap.dedent("""
    import os, signal, sys
    from bas import open_device
    path, mode, step = sys.argv[1:4]
    OFF, LEN = int(sys.argv[4]), int(sys.argv[5])
    NEW = bytes((i * 7 + 3) % 253 for i in range(LEN))
    assert "PMEM_IS_PMEM_FORCE" not in os.environ
    dev = open_device(f"pmem://{path}")

    def die(name=None):
        if name is None or name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    if mode == "atomic":
        dev.write_atomic(OFF, NEW, hook=die)
    elif mode == "dirty-atomic":
        dev.write(OFF + LEN // 3, b"plain, never persisted")
        dev.write_atomic(OFF, NEW, hook=die)
    elif mode == "persisted":
        dev.write(OFF, NEW)
        dev.persist()
        die()
    elif mode in ("mid-persist", "mid-mark"):
        # kill between persist's flush and its checksum tx, or inside a write's pending-mark tx
        from bas.backends import pmem
        from bas._native import pmem as _pmemobj
        cls, name = (pmem.PmemDevice, "_flush") if mode == "mid-persist" else (
            _pmemobj.Pool, "tx_set_pending")
        original = getattr(cls, name)

        def then_die(*args):
            original(*args)
            die()

        setattr(cls, name, then_die)
        dev.write(OFF, NEW)
        dev.persist()
    elif mode == "unpersisted":
        dev.write(OFF, NEW)
        dev.write_many([0, 700_000], 5, b"abcdefghij")
        die()
    sys.exit(3)
""")


@pytest.fixture
def pool(tmp_path):
    path = str(tmp_path / "crash.pool")
    with open_device(f"pmem://{path}?size={SIZE}") as dev:
        dev.write(OFF, OLD)
        dev.persist()
    return path


def _run_child(path: str, mode: str, step: str = "") -> None:
    env = {k: v for k, v in os.environ.items() if k != "PMEM_IS_PMEM_FORCE"}
    proc = subprocess.run([sys.executable, "-c", CHILD, path, mode, step, str(OFF), str(LEN)],
                          env=env, cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")


def _region(path: str) -> bytes:
    with open_device(f"pmem://{path}") as dev:  # verify=1: every settled chunk's CRC checks
        return dev.read(OFF, LEN)


def test_durability_tests_do_not_force_pmem():
    assert "PMEM_IS_PMEM_FORCE" not in os.environ


@pytest.mark.parametrize("step", pmem.STEPS)
def test_write_atomic_killed_at_each_step_is_all_old_or_all_new(pool, step):
    _run_child(pool, "atomic", step)
    after = _region(pool)
    assert after in (OLD, NEW), f"torn write_atomic after a kill at {step!r}"
    committed = pmem.STEPS.index(step) >= pmem.STEPS.index("commit")
    assert after == (NEW if committed else OLD)


@pytest.mark.parametrize("step", ["add_range", "half_copy", "commit"])
def test_write_atomic_over_unpersisted_writes_reopens_cleanly(pool, step):
    _run_child(pool, "dirty-atomic", step)
    after = _region(pool)
    if step == "commit":
        assert after == NEW
    else:
        plain = LEN // 3
        assert after[:plain] == OLD[:plain]


def test_killed_after_persist_keeps_the_new_data(pool):
    _run_child(pool, "persisted")
    assert _region(pool) == NEW


def test_killed_between_flush_and_checksum_update_keeps_the_new_data(pool):
    _run_child(pool, "mid-persist")
    assert _region(pool) == NEW


def test_killed_inside_the_pending_mark_transaction_keeps_the_old_data(pool):
    _run_child(pool, "mid-mark")
    assert _region(pool) == OLD


def test_killed_before_persist_reopens_without_corruption(pool):
    _run_child(pool, "unpersisted")
    with open_device(f"pmem://{pool}") as dev:
        # the stores were not persisted: any mix of old and new bytes is allowed, but the
        # pending chunks were re-checksummed, so a verified reopen works
        after = dev.read(OFF, LEN)
        assert all(a in (o, n) for a, o, n in zip(after, OLD, NEW, strict=True))
    with open_device(f"pmem://{pool}") as dev:
        assert dev.read(OFF, LEN) == after
