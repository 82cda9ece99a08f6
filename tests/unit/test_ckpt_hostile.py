"""Every hostile file is rejected with the typed error that names its problem, quickly."""

import os
import shutil
import time

import pytest

import ckpt
from ckpt.testing import hostile_cases

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "data", "golden", "tiny.ckpt")
CASES = hostile_cases()


@pytest.mark.parametrize("name, error, mutate", CASES, ids=[c[0] for c in CASES])
def test_hostile_file_is_rejected(tmp_path, name, error, mutate):
    target = tmp_path / name
    shutil.copytree(GOLDEN, target)
    mutate(str(target))
    start = time.perf_counter()
    with pytest.raises(error) as info:
        ckpt.load(target, threads=2)
    assert isinstance(info.value, ckpt.CheckpointError)
    assert str(info.value)
    with pytest.raises(error):
        ckpt.verify(target)
    assert time.perf_counter() - start < 5


def test_every_error_class_is_covered():
    covered = {error for _, error, _ in CASES}
    for name in ckpt.errors.__all__:
        cls = getattr(ckpt.errors, name)
        if cls not in (ckpt.CheckpointError, ckpt.FormatError, ckpt.CheckpointIOError,
                       ckpt.ConvertError):
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
