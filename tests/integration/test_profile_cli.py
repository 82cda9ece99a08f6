"""`python -m bas.profile` end to end: the table, the saved JSON and the plot."""

import subprocess
import sys

from bas.braid.profile import Profile


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bas.braid.profile", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=True)


def test_quick_profile_of_dram_prints_the_braid_table(tmp_path):
    out = _run("dram://?size=8M", "--quick", "--save", str(tmp_path), "--plot",
               str(tmp_path / "braid.png"), cwd=tmp_path).stdout
    assert "dram://?size=8M  [measured, quick; reads: memory]" in out
    for column in ("B granularity", "R random/seq read", "A read/write", "I interference",
                   "D best threads", "latency"):
        assert column in out
    assert "read  sequ   1 MiB" in out and "write rand  64 KiB" in out
    header = next(line for line in out.splitlines() if line.startswith("device "))
    assert header.split()[1:6] == ["B", "R", "A", "I", "D"]
    saved = list(tmp_path.glob("profile-*.json"))
    assert len(saved) == 1
    prof = Profile.load(str(saved[0]))
    assert prof.device == "dram://?size=8M" and prof.quick
    assert sorted({t for pts in prof.series.values() for t, _ in pts}) == [1, 2, 4]
    assert (tmp_path / "braid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_presets_alone_and_custom_threads(tmp_path):
    out = _run("--preset", "optane-1dimm", "--threads", "1,3", cwd=tmp_path).stdout
    assert "preset:optane-1dimm  [preset; reads: preset model]" in out
    assert "D best threads read 3, write 1" in out


def test_no_device_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bas.braid.profile"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "at least one device URL" in proc.stderr
