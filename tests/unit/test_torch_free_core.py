"""The storage core works without torch: bas, and ckpt's format, writer, reader, disk and
remote tiers (a subprocess in which importing torch fails, as in a venv without it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
sys.meta_path.insert(0, _NoTorch())
"""


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    script = BLOCK_TORCH + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


def test_core_saves_and_loads_raw_bytes_without_torch(tmp_path):
    proc = _run("""
        import numpy as np
        import bas, ckpt
        from ckpt.host import read_host
        data = np.arange(10_000, dtype=np.float32)
        with ckpt.Writer("m.ckpt", metadata={"who": "core"}) as w:
            w.add("x", "float32", data.shape, data)
            w.alias("y", "x")
        ckpt.verify("m.ckpt")
        with ckpt.open_source("m.ckpt") as src:
            buf = read_host(src)
            t = src.index.tensors[0]
            got = buf[t.offset:t.offset + t.length].view(np.float32)
        assert np.array_equal(got, data) and src.index.aliases == {"y": "x"}
        from ckpt.unpack import copy_dir
        disk = ckpt.DiskTier("tier", 64 << 20)
        copy_dir("m.ckpt", disk.path("m"))  # a disk tier's copy, every chunk verified
        disk.adopt("m")
        assert disk.holds("m") and ckpt.DiskTier("tier", 64 << 20).names() == ["m"]
        assert "torch" not in sys.modules
        try:
            ckpt.load
        except ModuleNotFoundError as exc:
            assert exc.name == "torch"
        else:
            raise SystemExit("ckpt.load imported without torch")
        print("ok")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_bas_sort_runs_without_torch(tmp_path):
    proc = _run("""
        import bas.sort, bas.sort.gensort, bas.sort.valsort
        assert "torch" not in sys.modules
        print("ok")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_core_runs_in_a_venv_that_has_only_numpy_and_cffi(tmp_path):
    """A real virtual environment with no torch, hypothesis or fsspec in it: only numpy and
    cffi (linked in from this interpreter, no download) and the repository on the path."""
    import os
    import venv

    import cffi
    import numpy
    import pycparser

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([python, "-c", where], capture_output=True, text=True,
                          check=True).stdout.strip()
    shelf = tmp_path / "shelf"  # only the packages the core needs, nothing else
    shelf.mkdir()
    for module in (numpy, cffi, pycparser):
        src = os.path.dirname(module.__file__)
        os.symlink(src, shelf / os.path.basename(src))
    lib_dir = os.path.dirname(os.path.dirname(numpy.__file__))
    for name in os.listdir(lib_dir):
        if name.startswith("_cffi_backend") or name == "numpy.libs":
            os.symlink(os.path.join(lib_dir, name), shelf / name)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(site, "core.pth"), "w") as f:
        f.write(f"{shelf}\n{repo}\n")
    code = textwrap.dedent("""
        import numpy as np
        import bas, ckpt
        from ckpt.host import read_host
        for absent in ("torch", "hypothesis", "fsspec"):
            try:
                __import__(absent)
            except ModuleNotFoundError:
                pass
            else:
                raise SystemExit(f"{absent} is importable in the bare venv")
        data = np.arange(4096, dtype=np.int32)
        with ckpt.Writer("m.ckpt") as w:
            w.add("x", "int32", data.shape, data)
        ckpt.verify("m.ckpt")
        with ckpt.open_source("m.ckpt") as src:
            buf = read_host(src)
        assert np.array_equal(buf[:data.nbytes].view(np.int32), data)
        print("ok")
    """)
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
