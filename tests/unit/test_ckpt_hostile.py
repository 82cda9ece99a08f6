"""Every hostile file is rejected with the typed error that names its problem, cheaply."""

import os
import shutil
import stat

import pytest

import ckpt
from ckpt.testing import hostile_cases
from tests.workmeter import metered

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "data", "golden", "tiny.ckpt")
CASES = hostile_cases()


def _on_disk(directory) -> tuple[int, int]:
    """(regular files, their bytes) in directory: all that a reader has to read."""
    sizes = [os.lstat(e.path).st_size for e in os.scandir(directory)
             if stat.S_ISREG(os.lstat(e.path).st_mode)]
    return len(sizes), sum(sizes)


@pytest.fixture(scope="module")
def warm():
    """One good load and verify first: lazy imports must not count as a case's work."""
    ckpt.load(GOLDEN, threads=2)
    ckpt.verify(GOLDEN)


@pytest.mark.parametrize("name, error, mutate", CASES, ids=[c[0] for c in CASES])
def test_hostile_file_is_rejected(tmp_path, warm, name, error, mutate):
    target = tmp_path / name
    shutil.copytree(GOLDEN, target)
    mutate(str(target))
    files, disk = _on_disk(target)
    with metered() as work:
        with pytest.raises(error) as info:
            ckpt.load(target, threads=2)
        assert isinstance(info.value, ckpt.CheckpointError)
        assert str(info.value)
        with pytest.raises(error):
            ckpt.verify(target)
    # bounded by the bytes on disk, never by what the hostile index claims (1 TiB, 2**120
    # elements): load and verify each read every file at most twice and map its size once
    assert work.bytes_read <= 4 * disk + 4096, work
    assert work.read_calls <= 4 * (files + disk // 4096) + 8, work
    assert work.mapped <= 2 * disk + 4096, work
    assert work.heap_peak <= 8 * disk + (256 << 10), work


def test_every_error_class_is_covered():
    covered = {error for _, error, _ in CASES}
    # not about hostile files: a busy save lock, a bad model name (tests of their own)
    for name in ckpt.errors.__all__:
        cls = getattr(ckpt.errors, name)
        if cls not in (ckpt.CheckpointError, ckpt.FormatError, ckpt.CheckpointIOError,
                       ckpt.ConvertError, ckpt.SaveInProgressError, ckpt.ModelNameError):
            assert cls in covered, name


def test_checksums_can_be_skipped(tmp_path):
    target = tmp_path / "c"
    shutil.copytree(GOLDEN, target)
    with open(target / "part-00000.bin", "r+b") as f:
        f.write(b"\x00\x00\x00\x00")  # the first float32 of "float32" becomes 0.0
    with pytest.raises(ckpt.ChecksumError):
        ckpt.load(target)
    assert float(ckpt.load(target, verify=False)["float32"][0, 0]) == 0.0


def test_hostile_cases_can_be_written_out(tmp_path):
    from ckpt.testing import main

    assert main(["hostile", str(tmp_path / "h")]) == 0
    assert len(os.listdir(tmp_path / "h")) == len(CASES) + 1
