"""pmem:// end to end: create/open rules, hostile and damaged pools, misuse, write_atomic."""

import os
import random
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

pmem = pytest.importorskip("bas.backends.pmem", exc_type=ImportError)

from bas import (  # noqa: E402
    CorruptionError,
    DeviceBusyError,
    DeviceClosedError,
    InvalidURLError,
    LayoutError,
    OutOfBoundsError,
    PoolTooSmallError,
    ReadOnlyError,
    open_device,
)
from bas._native import pmem as pmemobj  # noqa: E402

SIZE = 1 << 20
MARKER = random.Random(5).randbytes(4096)


def _url(tmp_path, query=f"size={SIZE}", name="dev.pool"):
    return f"pmem://{tmp_path}/{name}" + (f"?{query}" if query else "")


def _made(tmp_path, name="dev.pool"):
    """A closed pool whose chunk 1 holds MARKER at region offset 70_000."""
    with open_device(_url(tmp_path, name=name)) as dev:
        dev.write(70_000, MARKER)
        dev.persist()
    return tmp_path / name


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


# -- create and open --------------------------------------------------------------------------

def test_create_leaves_only_the_pool_and_reports_capabilities(tmp_path):
    stale = tmp_path / ".dev.pool.bas-creating.999999999.0badc0de"  # no such pid
    stale.write_bytes(b"half made")
    with open_device(_url(tmp_path)) as dev:
        assert (dev.size, dev.persistent, dev.byte_addressable, dev.is_pmem) == (SIZE, 1, 1, 1)
        assert dev.granularity == 256 and type(dev.media_is_pmem) is bool
        media_is_pmem = dev.media_is_pmem
    assert os.listdir(tmp_path) == ["dev.pool"]
    assert os.path.getsize(tmp_path / "dev.pool") >= 16 << 20
    # the same pool mapped again without the device: libpmem's pmem_is_pmem must agree
    pool = pmemobj.Pool.open(str(tmp_path / "dev.pool"), pmem.LAYOUT)
    try:
        pool.attach()
        assert media_is_pmem is pool.is_pmem
    finally:
        pool.close()


def _on_dax(path) -> bool:
    """Whether path lies on a file system mounted with DAX (where PMem may really be)."""
    path, best, options = os.path.realpath(path), "", []
    with open("/proc/self/mounts") as f:
        for line in f:
            point, opts = line.split()[1].replace("\\040", " "), line.split()[3].split(",")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best):
                best, options = point, opts
    return any(o == "dax" or (o.startswith("dax=") and o != "dax=never") for o in options)


MEDIA = textwrap.dedent("""
    import sys
    from bas import open_device
    with open_device(f"pmem://{sys.argv[1]}/forced.pool?size=1M") as dev:
        print(dev.media_is_pmem)
""")


def test_pool_on_an_ordinary_file_reports_media_is_pmem_false(tmp_path):
    """Regression: media_is_pmem was only checked to be False or True, so any value passed."""
    if os.environ.get("PMEM_IS_PMEM_FORCE") == "1" or _on_dax(tmp_path):
        pytest.skip("the pool may really be on persistent memory here")
    with open_device(_url(tmp_path)) as dev:
        assert dev.media_is_pmem is False
    # and the capability follows libpmem: forced to pmem (a fresh process reads the variable)
    env = dict(os.environ, PMEM_IS_PMEM_FORCE="1")
    proc = subprocess.run([sys.executable, "-c", MEDIA, str(tmp_path)], capture_output=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.strip() == b"True"


def test_open_needs_size_only_to_create_and_it_must_match(tmp_path):
    with pytest.raises(InvalidURLError, match="size="):
        open_device(_url(tmp_path, query=""))
    _made(tmp_path)
    with pytest.raises(InvalidURLError, match="not size=2097152"):
        open_device(_url(tmp_path, query="size=2M"))
    with pytest.raises(InvalidURLError, match="chunk"):
        open_device(_url(tmp_path, query="chunk=4K"))
    with pytest.raises(InvalidURLError, match="unknown option"):
        open_device(_url(tmp_path, query="sise=1M"))
    with open_device(_url(tmp_path)) as dev:
        assert dev.read(70_000, len(MARKER)) == MARKER


@pytest.mark.parametrize("query", ["size=1M&pool_size=4M", "size=7M&pool_size=8M",
                                   "size=64K&pool_size=8M"])
def test_pool_too_small_is_refused_and_leaves_nothing(tmp_path, query):
    with pytest.raises(PoolTooSmallError):
        open_device(_url(tmp_path, query=query))
    assert os.listdir(tmp_path) == []


def test_second_open_of_an_open_pool_is_busy(tmp_path):
    with open_device(_url(tmp_path)):
        with pytest.raises(DeviceBusyError, match="already open"):
            open_device(_url(tmp_path, query=""))
    open_device(_url(tmp_path, query="")).close()


def test_read_only_refuses_writes_and_creation(tmp_path):
    with pytest.raises(InvalidURLError):
        open_device(_url(tmp_path, query=f"size={SIZE}&read_only=1"))
    _made(tmp_path)
    with open_device(_url(tmp_path, query="read_only=1")) as dev:
        with pytest.raises(ReadOnlyError):
            dev.write_atomic(0, b"x")


# -- foreign and damaged files ----------------------------------------------------------------

def test_pool_of_another_layout_is_a_layout_error(tmp_path):
    pmemobj.Pool.create(str(tmp_path / "dev.pool"), "someone-else", 16 << 20).close()
    with pytest.raises(LayoutError, match="wrong layout"):
        open_device(_url(tmp_path, query=""))


def test_pool_without_a_bas_root_is_a_layout_error(tmp_path):
    pmemobj.Pool.create(str(tmp_path / "dev.pool"), pmem.LAYOUT, 16 << 20).close()
    with pytest.raises(LayoutError, match="not a bas pool"):
        open_device(_url(tmp_path, query=""))


@pytest.mark.parametrize("content", [b"", b"tiny", bytes(8 << 20), b"PMEMPOOLSET\n8M /x\n",
                                     random.Random(1).randbytes(8 << 20)])
def test_non_pool_files_are_refused(tmp_path, content):
    (tmp_path / "dev.pool").write_bytes(content)
    with pytest.raises((LayoutError, CorruptionError)):
        open_device(_url(tmp_path, query=""))


@pytest.mark.parametrize("offset", [9, 40, 200, 1500, 4090, 4200])
def test_flipped_pool_header_byte_is_corruption(tmp_path, offset):
    # [8, 2048) and the checksum are covered by PMDK's header checksum, 4096+ by the descriptor's
    path = _made(tmp_path)
    _flip(path, offset)
    with pytest.raises(CorruptionError):
        open_device(_url(tmp_path, query=""))


def test_flipped_pool_signature_is_a_layout_error(tmp_path):
    _flip(_made(tmp_path), 0)
    with pytest.raises(LayoutError):
        open_device(_url(tmp_path, query=""))


@pytest.mark.parametrize("length", [4096, 12 << 20, 0])
def test_truncated_pool_is_corruption(tmp_path, length):
    os.truncate(_made(tmp_path), length)
    with pytest.raises(CorruptionError):
        open_device(_url(tmp_path, query=""))


def test_flipped_user_byte_is_caught_by_its_chunk_checksum(tmp_path):
    path = _made(tmp_path)
    image = path.read_bytes()
    at = image.find(MARKER)
    assert at > 0 and image.find(MARKER, at + 1) < 0
    _flip(path, at + 10)
    with pytest.raises(CorruptionError, match="chunk 1 "):
        open_device(_url(tmp_path, query=""))
    with open_device(_url(tmp_path, query="verify=0")) as dev:  # opt out, read the damage
        assert dev.read(70_010, 1) != MARKER[10:11]


@pytest.mark.parametrize("field,error", [(0, LayoutError), (16, CorruptionError),
                                         (48, CorruptionError)])
def test_damaged_root_object_is_refused(tmp_path, field, error):
    path = _made(tmp_path)
    at = path.read_bytes().find(b"BASPMEM1")  # the root's magic
    assert at > 0
    _flip(path, at + field)
    with pytest.raises(error):
        open_device(_url(tmp_path, query=""))


def test_root_pointing_outside_the_pool_is_refused_not_followed(tmp_path):
    path = _made(tmp_path)
    image = bytearray(path.read_bytes())
    at = image.find(b"BASPMEM1")
    image[at + 48:at + 56] = (1 << 40).to_bytes(8, "little")  # region OID offset: far away
    check = 0xCBF29CE484222325  # FNV-1a 64 of the fields before `check`, as bas_pmem.c does
    for byte in image[at:at + 120]:
        check = ((check ^ byte) * 0x100000001B3) & (1 << 64) - 1
    image[at + 120:at + 128] = check.to_bytes(8, "little")
    path.write_bytes(bytes(image))
    with pytest.raises(CorruptionError, match="root object is damaged"):
        open_device(_url(tmp_path, query=""))


# -- misuse of the device ---------------------------------------------------------------------

def test_misuse_of_the_device_raises_typed_errors(tmp_path):
    dev = open_device(_url(tmp_path))
    with pytest.raises(OutOfBoundsError):
        dev.write_atomic(SIZE - 1, b"xy")
    with pytest.raises(OutOfBoundsError):
        dev.write_atomic(-1, b"x")
    dev.close()
    for call in (lambda: dev.write_atomic(0, b"x"), lambda: dev.read(0, 1), dev.persist,
                 dev.close):
        with pytest.raises(DeviceClosedError):
            call()


MISUSE = textwrap.dedent("""
    import sys, threading
    from bas._native import pmem as P
    from bas.errors import DeviceClosedError, LayoutError

    def refused(call, exc=P.TransactionError):
        try:
            call()
        except exc:
            return
        raise AssertionError(f"{call} was not refused")

    pool = P.Pool.create(sys.argv[1] + "/a.pool", "misuse", 16 << 20)
    other = P.Pool.create(sys.argv[1] + "/b.pool", "misuse", 16 << 20)
    refused(lambda: pool.copy_in(0, b"x"), LayoutError)  # no region attached yet
    for call in (pool.tx_commit, pool.tx_abort, pool.tx_end, lambda: pool.tx_add_region(0, 1)):
        refused(call)
    with pool.transaction():
        pool.tx_format(1 << 20, 65536, 0, 0)
    pool.attach()
    pool.tx_begin()
    refused(pool.tx_begin)  # nesting
    refused(other.tx_begin)  # this thread is in a transaction of another pool
    refused(pool.tx_end)  # still working
    refused(pool.close)
    refused(lambda: pool.tx_add_region(1 << 20, 1))  # outside the region
    errors = []
    worker = threading.Thread(target=lambda: refused(pool.tx_commit) or errors.append(0))
    worker.start(); worker.join()
    assert errors == [0]
    pool.tx_add_region(0, 4)
    pool.copy_in(0, b"new!")
    pool.tx_abort()
    refused(pool.tx_commit); refused(pool.tx_abort); refused(lambda: pool.tx_set_pending([0], 1))
    assert pool.tx_end() != 0  # the abort's errno
    refused(pool.tx_end)
    assert bytes(pool.region()[:4]) == bytes(4)
    # the C helpers refuse by themselves too (second line of defence)
    out = P.ffi.new("int *")
    assert P.lib.bas_pmem_tx_commit() < 0 and P.lib.bas_pmem_tx_abort(0) < 0
    assert P.lib.bas_pmem_tx_end(out) < 0
    pool.close()
    other.close()
    for call in (pool.close, pool.tx_begin, pool.region, pool.read_table):
        refused(call, DeviceClosedError)
    print("survived")
""")


def test_misuse_of_pools_and_transactions_never_kills_the_interpreter(tmp_path):
    proc = subprocess.run([sys.executable, "-c", MISUSE, str(tmp_path)], capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.strip() == b"survived"


# -- write_atomic and concurrency -------------------------------------------------------------

def test_write_atomic_passes_every_step_and_is_durable(tmp_path):
    seen = []
    with open_device(_url(tmp_path)) as dev:
        dev.write_atomic(65_000, b"\x77" * 2000, hook=seen.append)
    assert tuple(seen) == pmem.STEPS
    with open_device(_url(tmp_path, query="")) as dev:
        assert dev.read(65_000, 2000) == b"\x77" * 2000


def test_write_atomic_that_fails_midway_changes_nothing(tmp_path):
    def hook(step):
        if step == "half_copy":
            raise KeyboardInterrupt

    with open_device(_url(tmp_path)) as dev:
        dev.write_atomic(100, b"old" * 1000)
        with pytest.raises(KeyboardInterrupt):
            dev.write_atomic(100, b"new" * 1000, hook=hook)
        assert dev.read(100, 3000) == b"old" * 1000
        dev.write_atomic(200, b"ok")
        model = bytearray(b"old" * 1000)
        model[100:102] = b"ok"
        assert dev.read(100, 3000) == model


def test_write_atomic_bigger_than_the_free_log_space_is_refused(tmp_path):
    # a pool made tight on purpose: the region leaves PMDK almost no heap for the undo log
    with open_device(_url(tmp_path, query="size=3M&pool_size=8M")) as dev:
        dev.write(0, b"\x01" * 65536)
        dev.persist()
        with pytest.raises(PoolTooSmallError, match="pool_size"):
            dev.write_atomic(0, b"\x02" * 65536)
        assert dev.read(0, 65536) == b"\x01" * 65536
        dev.write_atomic(10, b"\x03" * 100)  # small snapshots fit in the lane's own log
    with open_device(_url(tmp_path, query="")) as dev:
        assert dev.read(0, 200) == b"\x01" * 10 + b"\x03" * 100 + b"\x01" * 90


def test_writes_racing_persists_never_leave_bad_checksums(tmp_path):
    with open_device(_url(tmp_path, query=f"size={SIZE}&chunk=4K")) as dev:
        def writer(seed):
            rng = np.random.default_rng(seed)
            for _ in range(40):
                offs = np.sort(rng.choice(SIZE // 512, 8, replace=False)) * 512
                dev.write_many(offs, 512, rng.integers(0, 256, 4096, dtype=np.uint8), threads=2)

        def persister():
            for _ in range(20):
                dev.persist()

        workers = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
        workers.append(threading.Thread(target=persister))
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        dev.persist()
        image = dev.read(0, SIZE)
    with open_device(_url(tmp_path, query="")) as dev:
        assert dev.read(0, SIZE) == image
