"""The namespace contract (bas/namespace.py): LocalNamespace, and what FaultNamespace injects
and drops on crash()."""

import errno
import os

import pytest

from bas.namespace import (
    ExchangeUnsupportedError,
    LocalNamespace,
    Namespace,
    local,
    publish,
    replace_file,
)
from bas.testing import FaultNamespace


def _write(ns: Namespace, path, data: bytes, sync: bool = True) -> None:
    fd = ns.create(path)
    try:
        os.write(fd, data)
        if sync:
            ns.sync(fd)
    finally:
        os.close(fd)


# -- LocalNamespace ------------------------------------------------------------------------

def test_local_is_the_default_and_rejects_other_objects():
    assert isinstance(local(), LocalNamespace)
    ns = FaultNamespace()
    assert local(ns) is ns
    with pytest.raises(TypeError):
        local("/tmp")


def test_bad_arguments_are_refused_before_any_call(tmp_path):
    ns = local()
    with pytest.raises(ValueError):
        ns.create("")
    with pytest.raises(TypeError):
        ns.mkdir(os.fsencode(tmp_path / "d"))
    with pytest.raises(ValueError):
        ns.sync(-1)
    with pytest.raises(ValueError):
        ns.create(tmp_path / "f", mode=0o10000)
    assert os.listdir(tmp_path) == []


def test_create_never_replaces_and_never_follows_a_link(tmp_path):
    ns = local()
    _write(ns, tmp_path / "f", b"one")
    with pytest.raises(FileExistsError):
        ns.create(tmp_path / "f")
    os.symlink(tmp_path / "victim", tmp_path / "dangling")
    with pytest.raises(FileExistsError):
        ns.create(tmp_path / "dangling")
    assert not (tmp_path / "victim").exists()
    assert (tmp_path / "f").read_bytes() == b"one"


def test_rename_replaces_and_link_refuses_to(tmp_path):
    ns = local()
    (tmp_path / "a").write_bytes(b"new")
    (tmp_path / "b").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        ns.link(tmp_path / "a", tmp_path / "b")
    ns.rename(tmp_path / "a", tmp_path / "b")
    assert os.listdir(tmp_path) == ["b"] and (tmp_path / "b").read_bytes() == b"new"
    ns.link(tmp_path / "b", tmp_path / "c")
    assert os.path.samefile(tmp_path / "b", tmp_path / "c")


def test_exchange_swaps_or_says_it_cannot(tmp_path):
    ns = local()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").write_bytes(b"b")
    try:
        ns.exchange(tmp_path / "a", tmp_path / "b")
    except ExchangeUnsupportedError as exc:
        assert exc.errno == errno.EOPNOTSUPP
        pytest.skip("no RENAME_EXCHANGE here")
    assert (tmp_path / "a").read_bytes() == b"b" and (tmp_path / "b").is_dir()
    with pytest.raises(FileNotFoundError):
        ns.exchange(tmp_path / "a", tmp_path / "missing")


def test_remove_tree_never_follows_a_link(tmp_path):
    ns = local()
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "f").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "keep", tmp_path / "d" / "link")
    os.symlink(tmp_path / "keep", tmp_path / "top-link")
    ns.remove_tree(tmp_path / "d")
    ns.remove_tree(tmp_path / "top-link")
    assert sorted(os.listdir(tmp_path)) == ["keep"] and (tmp_path / "keep" / "f").exists()
    with pytest.raises(FileNotFoundError):
        ns.remove_tree(tmp_path / "d")


def test_two_locks_on_one_file_exclude_each_other_in_one_process(tmp_path):
    ns = local()
    fd = ns.lock(tmp_path / "l")
    with pytest.raises(BlockingIOError):
        ns.lock(tmp_path / "l", wait=False)
    os.close(fd)
    os.close(ns.lock(tmp_path / "l", wait=False))


def test_replace_file_publishes_all_or_nothing(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(b"old")
    replace_file(path, lambda fd: os.write(fd, b"new"))
    assert os.listdir(tmp_path) == ["out"] and path.read_bytes() == b"new"

    def fail(fd):
        os.write(fd, b"partial")
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError):
        replace_file(path, fail)
    assert os.listdir(tmp_path) == ["out"] and path.read_bytes() == b"new"


def test_replace_file_with_a_fixed_temporary_removes_a_planted_link(tmp_path):
    (tmp_path / "victim").write_bytes(b"keep me")
    os.symlink(tmp_path / "victim", tmp_path / ".tmp")
    replace_file(tmp_path / "out", lambda fd: os.write(fd, b"data"), tmp=str(tmp_path / ".tmp"))
    assert (tmp_path / "victim").read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["out", "victim"]


# -- FaultNamespace: injected failures ------------------------------------------------------

def test_the_nth_operation_fails_and_does_nothing(tmp_path):
    ns = FaultNamespace(fail_after=2, fail_errno=errno.ENOSPC)
    ns.mkdir(tmp_path / "a")
    with pytest.raises(OSError) as info:
        ns.mkdir(tmp_path / "b")
    assert info.value.errno == errno.ENOSPC and not (tmp_path / "b").exists()
    ns.mkdir(tmp_path / "c")  # fail_count=1: only the second
    assert ns.operations == 3 and ns.calls["mkdir"] == 3


def test_fail_op_counts_one_kind_and_fail_count_zero_kills_the_rest(tmp_path):
    ns = FaultNamespace(fail_after=1, fail_op="sync_dir", fail_count=0)
    ns.mkdir(tmp_path / "a")
    for _ in range(3):
        with pytest.raises(OSError):
            ns.sync_dir(tmp_path)
    assert ns.operations == 3 and ns.calls["mkdir"] == 1
    ns.arm(None)
    ns.sync_dir(tmp_path)
    with pytest.raises(ValueError):
        ns.arm(1, fail_op="write")


def test_exchange_can_be_turned_off(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ExchangeUnsupportedError):
        FaultNamespace(exchange=False).exchange(tmp_path / "a", tmp_path / "b")


# -- FaultNamespace: crash() ------------------------------------------------------------------

def test_crash_drops_names_created_since_the_last_directory_sync(tmp_path):
    ns = FaultNamespace()
    _write(ns, tmp_path / "kept", b"k")
    ns.sync_dir(tmp_path)
    _write(ns, tmp_path / "lost", b"l")
    ns.mkdir(tmp_path / "lost-dir")
    assert [k for k, *_ in ns.unsynced] == ["create", "mkdir"]
    ns.crash()
    assert os.listdir(tmp_path) == ["kept"] and ns.unsynced == []


def test_crash_truncates_bytes_written_after_the_last_file_sync(tmp_path):
    ns = FaultNamespace()
    fd = ns.create(tmp_path / "f")
    os.write(fd, b"synced")
    ns.sync(fd)
    os.write(fd, b" and not")
    os.close(fd)
    ns.sync_dir(tmp_path)
    ns.crash()
    assert (tmp_path / "f").read_bytes() == b"synced"


def test_crash_undoes_an_unsynced_rename_and_gives_back_the_replaced_file(tmp_path):
    (tmp_path / "path").write_bytes(b"old")
    ns = FaultNamespace()
    _write(ns, tmp_path / "tmp", b"new")
    ns.sync_dir(tmp_path)
    ns.rename(tmp_path / "tmp", tmp_path / "path")
    assert (tmp_path / "path").read_bytes() == b"new"
    ns.crash()
    assert (tmp_path / "path").read_bytes() == b"old"
    assert (tmp_path / "tmp").read_bytes() == b"new"


def test_a_synced_rename_survives_the_crash(tmp_path):
    (tmp_path / "path").write_bytes(b"old")
    ns = FaultNamespace()
    replace_file(tmp_path / "path", lambda fd: os.write(fd, b"new"), ns=ns)
    ns.crash()
    assert os.listdir(tmp_path) == ["path"] and (tmp_path / "path").read_bytes() == b"new"


def test_publish_without_a_synced_file_loses_its_bytes(tmp_path):
    """What a crash shows when the temporary file is never synced: an empty published file."""
    ns = FaultNamespace()
    _write(ns, tmp_path / "tmp", b"data", sync=False)
    publish(tmp_path / "tmp", tmp_path / "path", ns=ns)
    ns.crash()
    assert (tmp_path / "path").read_bytes() == b""


def test_crash_undoes_an_unsynced_exchange(tmp_path):
    ns = FaultNamespace()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "which").write_bytes(b"a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "which").write_bytes(b"b")
    try:
        ns.exchange(tmp_path / "a", tmp_path / "b")
    except ExchangeUnsupportedError:
        pytest.skip("no RENAME_EXCHANGE here")
    ns.crash()
    assert (tmp_path / "a" / "which").read_bytes() == b"a"


def test_a_directory_never_synced_into_its_parent_is_lost_with_its_synced_files(tmp_path):
    ns = FaultNamespace()
    ns.mkdir(tmp_path / "tmp")
    _write(ns, tmp_path / "tmp" / "f", b"x")
    ns.sync_dir(tmp_path / "tmp")
    ns.rename(tmp_path / "tmp", tmp_path / "path")
    ns.crash()
    assert os.listdir(tmp_path) == []


def test_a_file_never_synced_into_a_published_directory_is_lost(tmp_path):
    ns = FaultNamespace()
    ns.mkdir(tmp_path / "tmp")
    _write(ns, tmp_path / "tmp" / "f", b"x")
    ns.rename(tmp_path / "tmp", tmp_path / "path")  # tmp itself was never synced
    ns.sync_dir(tmp_path)
    ns.crash()
    assert os.listdir(tmp_path) == ["path"] and os.listdir(tmp_path / "path") == []


def test_a_removal_is_durable_and_forgets_what_it_removed(tmp_path):
    ns = FaultNamespace()
    ns.mkdir(tmp_path / "d")
    _write(ns, tmp_path / "d" / "f", b"x", sync=False)
    ns.remove_tree(tmp_path / "d")
    assert ns.unsynced == []
    ns.crash()
    assert os.listdir(tmp_path) == [] and ns.crashes == 1
