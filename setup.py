"""setuptools hook for the cffi extensions; metadata lives in pyproject.toml."""
import sys

from setuptools import setup

sys.path.insert(0, "native")
from build_ffi import PMEM_ENABLED  # noqa: E402  (build switches live in one place)

modules = ["native/build_ffi.py:ffibuilder"]
if PMEM_ENABLED:
    modules.append("native/build_ffi.py:pmem_ffibuilder")
setup(cffi_modules=modules)
