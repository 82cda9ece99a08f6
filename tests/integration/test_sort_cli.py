"""gensort -> python -m bas.sort -> valsort from the command line, and the CLI's errors."""

import json
import subprocess
import sys

import pytest

from tests.sortcheck import assert_valsorted


def _run(*args, check=True):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("flags,memory,algorithm", [
    ([], "1G", "auto"), (["-s"], "1M", "kv-external"), (["-a"], "1M", "mergesort"),
    ([], "2M", "kv")])
def test_gensort_sort_valsort(tmp_path, flags, memory, algorithm):
    src, out = tmp_path / "in", tmp_path / "out"
    _run("-m", "bas.sort.gensort", *flags, "-t2", "20000", str(src))
    proc = _run("-m", "bas.sort", str(src), str(out), "--memory", memory, "--algorithm",
                algorithm, "--json", "--quiet")
    report = json.loads(proc.stdout)
    assert report["records"] == 20000
    assert {p["name"] for p in report["phases"]} >= {"write-output"}
    assert_valsorted(src, out)
    check = _run("-m", "bas.sort.valsort", str(out))
    assert "SUCCESS" in check.stdout


def test_progress_and_summary_go_to_stderr(tmp_path):
    _run("-m", "bas.sort.gensort", "5000", str(tmp_path / "in"))
    proc = _run("-m", "bas.sort", str(tmp_path / "in"), str(tmp_path / "out"))
    assert proc.stdout == ""
    assert "records of 100 B" in proc.stderr and "gather" in proc.stderr


@pytest.mark.parametrize("setup,args,message", [
    ("partial", [], "not a whole number of 100-byte records"),
    ("same", [], "is the input file"),
    ("ok", ["--memory", "100", "--algorithm", "kv-external"], "too small"),
    ("ok", ["--memory", "1K", "--algorithm", "kv"], "needs"),
    ("missing", [], "does not exist"),
    ("ok", ["--key-size", "200"], "does not fit"),
])
def test_bad_input_gets_a_clear_error(tmp_path, setup, args, message):
    src = tmp_path / "in"
    if setup == "partial":
        src.write_bytes(b"x" * 250)
    elif setup in ("ok", "same"):
        _run("-m", "bas.sort.gensort", "100", str(src))
    out = src if setup == "same" else tmp_path / "out"
    before = src.read_bytes() if src.exists() else None
    proc = _run("-m", "bas.sort", str(src), str(out), *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert (src.read_bytes() if src.exists() else None) == before
    assert not (tmp_path / "out").exists()
