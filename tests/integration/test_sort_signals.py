"""python -m bas.sort killed mid-way by SIGTERM or SIGHUP cleans up like SIGINT."""

import os
import signal
import subprocess
import sys
import time

import pytest


def _wait_for(proc: subprocess.Popen, text: bytes, timeout: float = 60.0) -> bytes:
    """Read the child's stderr until `text` appears (progress lines end in \\r, not \\n)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"no {text!r} in {seen!r}"
        chunk = os.read(proc.stderr.fileno(), 4096)
        assert chunk, f"the sort ended before {text!r}: {seen!r}"
        seen += chunk
    return seen


@pytest.mark.parametrize("signum,code,algorithm,schedule", [
    (signal.SIGTERM, 143, "mergesort", "staged"), (signal.SIGHUP, 129, "mergesort", "staged"),
    (signal.SIGINT, 130, "mergesort", "staged"), (signal.SIGTERM, 143, "kv-external", "piped"),
    (signal.SIGHUP, 129, "kv-external", "rsw")])
def test_signal_mid_sort_leaves_no_temporary_files(tmp_path, signum, code, algorithm, schedule):
    """Regression: SIGTERM left the input-sized temporary output and the runs directory."""
    subprocess.run([sys.executable, "-m", "bas.sort.gensort", "60000", str(tmp_path / "in")],
                   check=True, timeout=120)
    # a tiny budget makes many runs, so the sort is forming them when the signal comes
    proc = subprocess.Popen([sys.executable, "-m", "bas.sort", str(tmp_path / "in"),
                             str(tmp_path / "out"), "--memory", "64K", "--threads", "1",
                             "--algorithm", algorithm, "--schedule", schedule],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(proc, b"form-runs")
        proc.send_signal(signal.SIGSTOP)  # hold it mid-way while we look
        names = sorted(p.name for p in tmp_path.iterdir())
        assert proc.poll() is None, "the sort finished before it could be interrupted"
        assert any(n.startswith(".out.sorting-") for n in names), names
        assert any(n.startswith(".bas-sort-runs-") for n in names), names
        proc.send_signal(signum)
        proc.send_signal(signal.SIGCONT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == code, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert b"no output was written" in rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"], "temporary files left"
