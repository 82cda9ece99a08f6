"""python -m bas.sort.gensort / valsort end to end: files, output lines, exit codes, summaries."""

import subprocess
import sys

import numpy as np
import pytest

from bas.sort.gensort import RECORD_SIZE, generate
from bas.sort.valsort import checksum


def _run(tool: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"bas.sort.{tool}", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def _sorted(data: np.ndarray) -> bytes:
    recs = data.reshape(-1, RECORD_SIZE)
    order = np.argsort([r[:10].tobytes() for r in recs], kind="stable")
    return recs[order].tobytes()


def test_gensort_writes_the_records_and_no_temporary(tmp_path):
    out = tmp_path / "recs.dat"
    res = _run("gensort", "-a", "-s", "-b5", "-t2", 1000, out)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == generate(1000, 5, ascii=True, skew=True).tobytes()
    assert [p.name for p in tmp_path.iterdir()] == ["recs.dat"]


def test_gensort_c_prints_the_checksum_to_stderr(tmp_path):
    res = _run("gensort", "-c", 1000, tmp_path / "recs.dat")
    assert res.returncode == 0 and res.stdout == ""
    assert res.stderr.splitlines() == ["Records: 1000", "Checksum: 1ea6370b955"]


def test_gensort_bad_arguments_exit_non_zero(tmp_path):
    assert _run("gensort", "-t0", 10, tmp_path / "x").returncode != 0
    assert _run("gensort", "ten", tmp_path / "x").returncode != 0
    assert _run("gensort", 10, tmp_path / "no" / "such" / "dir").returncode == 1


def test_valsort_success_on_sorted_records(tmp_path):
    path = tmp_path / "sorted.dat"
    path.write_bytes(_sorted(generate(1000)))
    res = _run("valsort", "-t2", path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["Records: 1000", "Checksum: 1ea6370b955",
                                       "Duplicate keys: 0", "SUCCESS - all records are in order"]


def test_valsort_error_on_gensort_output(tmp_path):
    path = tmp_path / "recs.dat"
    assert _run("gensort", 1000, path).returncode == 0
    res = _run("valsort", path)
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines[0] == "First unordered record is record 2"
    assert lines[1:4] == ["Records: 1000", "Checksum: 1ea6370b955", "Duplicate keys: 0"]
    assert lines[4].startswith("ERROR - there are ") and lines[4].endswith(" unordered records")


def test_valsort_quiet_prints_nothing(tmp_path):
    path = tmp_path / "sorted.dat"
    path.write_bytes(_sorted(generate(100)))
    res = _run("valsort", "-q", path)
    assert (res.returncode, res.stdout) == (0, "")


def test_valsort_rejects_trailing_partial_record(tmp_path):
    path = tmp_path / "partial.dat"
    path.write_bytes(_sorted(generate(100)) + b"tail")
    res = _run("valsort", path)
    assert res.returncode == 1 and "partial record" in res.stderr


@pytest.mark.parametrize("swap, want", [(False, 0), (True, 1)])
def test_valsort_summaries_of_partitions(tmp_path, swap, want):
    data = _sorted(generate(3000))
    parts = [data[i:i + 1000 * RECORD_SIZE] for i in range(0, len(data), 1000 * RECORD_SIZE)]
    if swap:
        parts[1], parts[2] = parts[2], parts[1]
    summaries = b""
    for i, part in enumerate(parts):
        (tmp_path / f"p{i}.dat").write_bytes(part)
        res = _run("valsort", "-q", "-o", tmp_path / f"p{i}.sum", tmp_path / f"p{i}.dat")
        assert res.returncode == 0, res.stderr
        summaries += (tmp_path / f"p{i}.sum").read_bytes()
    (tmp_path / "all.sum").write_bytes(summaries)
    res = _run("valsort", "-s", tmp_path / "all.sum")
    assert res.returncode == want
    lines = res.stdout.splitlines()
    assert f"Checksum: {checksum(generate(3000)):x}" in lines and "Records: 3000" in lines
    if swap:
        assert lines[0] == "First unordered record is record 2000"
        assert lines[-1] == "ERROR - there are 1 unordered records"
    else:
        assert lines[-1] == "SUCCESS - all records are in order"


def test_valsort_rejects_a_torn_summary_file(tmp_path):
    (tmp_path / "bad.sum").write_bytes(b"\0" * 17)
    assert _run("valsort", "-s", tmp_path / "bad.sum").returncode == 1
