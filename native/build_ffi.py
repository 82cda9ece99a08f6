# SPDX-License-Identifier: Apache-2.0
"""cffi builders for the native kernels (out-of-line API mode).

`ffibuilder` is the core extension `bas._bas_native`: the io, sort and gensort areas (I/O
gather/scatter and checksums, sort kernels, gensort/valsort) on one shared thread fan-out
(bas_threads.c); bas/_native/ imports it once and binds each area in its own module.
`pmem_ffibuilder` is `bas._bas_pmem` (bound by bas/_native/pmem.py), linked against PMDK's
libpmemobj and kept separate so that the rest of bas works where PMDK is not installed.
Build switches are environment variables read here and nowhere else:
  BAS_NO_PMEM=1       skip the libpmemobj extension
  BAS_CFLAGS          compiler flags instead of the default (-O3 -march=x86-64-v2 where x86)
  BAS_NATIVE_DEBUG=1  AddressSanitizer build (-O1 -g -fsanitize=address); run Python with
                      libasan preloaded (make test-asan does)
"""

import os
import pathlib
import platform

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CORE_SOURCES = ["bas_threads.c", "bas_io.c", "bas_gensort.c", "bas_sort.c"]
CORE_HEADERS = ["bas_io.h", "bas_gensort.h", "bas_sort.h"]  # the cdef: bas_threads.h is internal


DEBUG = os.environ.get("BAS_NATIVE_DEBUG", "") in ("1", "true", "yes")
_ASAN = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address"]


def _cflags() -> list[str]:
    extra = os.environ.get("BAS_CFLAGS")
    if extra is not None:
        return extra.split() + (_ASAN if DEBUG else [])
    if DEBUG:
        return ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"] + _ASAN
    flags = ["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=x86-64-v2")
    return flags


def _cdef(headers: list[str]) -> str:
    return "\n".join((HERE / h).read_text() for h in headers)


def _builder(module: str, headers: list[str], sources: list[str], libraries: list[str]) -> FFI:
    ffi = FFI()
    ffi.cdef(_cdef(headers))
    includes = "".join(f'#include "{h}"\n' for h in headers)
    ffi.set_source(
        module,
        "#include <stdint.h>\n" + includes,
        sources=[os.path.relpath(HERE / s) for s in sources],
        include_dirs=[os.path.relpath(HERE)],
        libraries=libraries,
        extra_compile_args=_cflags(),
        extra_link_args=["-pthread"] + (["-fsanitize=address"] if DEBUG else []),
    )
    return ffi


ffibuilder = _builder("bas._bas_native", CORE_HEADERS, CORE_SOURCES, ["z", "pthread"])

PMEM_ENABLED = os.environ.get("BAS_NO_PMEM", "") not in ("1", "true", "yes")
pmem_ffibuilder = _builder("bas._bas_pmem", ["bas_pmem.h"], ["bas_pmem.c"], ["pmemobj", "pmem"])

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)
    if PMEM_ENABLED:
        pmem_ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)
