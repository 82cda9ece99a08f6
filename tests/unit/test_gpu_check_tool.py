"""tools/gpu-check on a machine without CUDA: it says so, runs nothing and exits 2."""

import os
import subprocess

import pytest

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "gpu-check")


@pytest.mark.timeout(120)
def test_gpu_check_without_a_cuda_device_skips_with_exit_status_2(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp_path))
    proc = subprocess.run([TOOL, "--size", "64M"], env=env, capture_output=True, text=True,
                          timeout=100)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith("SKIP: no CUDA device"), proc.stdout
    assert "pytest" not in proc.stdout and os.listdir(tmp_path) == []  # nothing was run


def test_gpu_check_is_an_executable_script_that_says_what_it_is():
    with open(TOOL) as f:
        head = f.read(300).splitlines()
    assert os.access(TOOL, os.X_OK) and head[0].startswith("#!")
    assert head[1].startswith("# tools/gpu-check -- ")
    proc = subprocess.run([TOOL, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--size" in proc.stdout
