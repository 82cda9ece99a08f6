"""DeviceConformance: the one test suite every Device backend and wrapper must pass.

Subclass it in a test module (pytest collects classes named Test*) and override make_device;
persistent backends also override open_existing and make_medium, the kit's back door to
their storage: durability is checked there, after a simulated power cut, never by reading
back through the device object. Like zarr's StoreTests: a new backend is its primitives, one
registry line and a few lines here.

    class TestMyDevice(DeviceConformance):
        def make_device(self, tmp_path, size):
            return open_device(f"my://{tmp_path}/dev?size={size}")

        def open_existing(self, tmp_path, read_only=False):
            return open_device(f"my://{tmp_path}/dev?read_only={int(read_only)}")

        def make_medium(self, tmp_path):
            return FileMedium(tmp_path / "dev")
"""

from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest

from bas.device import Device
from bas.errors import (
    DeviceClosedError,
    OutOfBoundsError,
    ReadOnlyError,
)
from bas.testing.medium import Medium

__all__ = ["DeviceConformance"]


class DeviceConformance:
    """Behaviour every device must show.

    Override make_device; persistent backends also override open_existing and make_medium.
    """

    #: device size the tests ask for (backends with a minimum may raise it)
    size: int = 1 << 20

    def make_device(self, tmp_path, size: int) -> Device:
        raise NotImplementedError

    def open_existing(self, tmp_path, read_only: bool = False) -> Device:
        """Open the storage make_device created (persistent backends).

        Raise NotImplementedError for read_only when the backend has no read-only open.
        """
        raise NotImplementedError

    def make_medium(self, tmp_path) -> Medium | None:
        """The backend's storage under tmp_path (see bas.testing.medium); None when volatile.

        Entered before make_device runs and left after the test.
        """
        return None

    def reopen(self, device: Device, tmp_path) -> Device:
        """Close `device` and open the same storage again."""
        device.close()
        return self.open_existing(tmp_path)

    def reopen_read_only(self, device: Device, tmp_path) -> Device:
        """Close `device` and open its storage read-only."""
        device.close()
        return self.open_existing(tmp_path, read_only=True)

    def run_check(self, name: str, tmp_path) -> None:
        """Run the kit's test `name` outside pytest, with fresh fixtures (tests of the kit)."""
        with self._medium_context(tmp_path) as medium:
            device = self.make_device(tmp_path, self.size)
            given = {"dev": device, "tmp_path": tmp_path, "medium": medium}
            method = getattr(self, name)
            try:
                method(**{k: given[k] for k in inspect.signature(method).parameters})
            finally:
                if not device.closed:
                    device.close()

    def _medium_context(self, tmp_path):
        medium = self.make_medium(tmp_path)
        return medium if medium is not None else _NoMedium()

    @pytest.fixture
    def medium(self, tmp_path):
        with self._medium_context(tmp_path) as medium:
            yield medium

    @pytest.fixture
    def dev(self, tmp_path, medium):
        device = self.make_device(tmp_path, self.size)
        yield device
        if not device.closed:
            device.close()

    def _durable_medium(self, dev: Device, medium: Medium | None) -> Medium:
        """The medium to check durability on; skips volatile devices."""
        if not dev.persistent:
            pytest.skip("volatile device: nothing survives a power cut")
        if medium is None:
            pytest.fail(f"{type(self).__name__}: a persistent device needs make_medium() so "
                        f"the kit can check durability on its storage")
        return medium

    # -- single reads and writes --------------------------------------------------------

    def test_size_is_what_was_asked(self, dev):
        assert dev.size >= self.size

    def test_write_then_read_round_trips(self, dev):
        dev.write(0, b"head")
        dev.write(dev.size - 4, b"tail")
        dev.write(12345, bytes(range(256)))
        assert dev.read(0, 4) == b"head"
        assert dev.read(dev.size - 4, 4) == b"tail"
        assert dev.read(12345, 256) == bytes(range(256))

    def test_read_into_numpy_buffer(self, dev):
        dev.write(100, b"\x01\x02\x03\x04" * 1000)
        out = np.zeros(4000, dtype=np.uint8)
        assert dev.read_into(100, out) == 4000
        assert out.tobytes() == b"\x01\x02\x03\x04" * 1000

    def test_zero_length_requests_are_allowed(self, dev):
        assert dev.read(dev.size, 0) == b""
        dev.write(0, b"")

    def test_later_write_wins(self, dev):
        dev.write(50, b"aaaaaaaaaa")
        dev.write(53, b"bb")
        assert dev.read(50, 10) == b"aaabbaaaaa"

    @pytest.mark.parametrize("offset,length", [(-1, 1), (0, -1), ("end", 1), ("past", 0)])
    def test_out_of_bounds_is_refused(self, dev, offset, length):
        offset = {"end": dev.size, "past": dev.size + 1}.get(offset, offset)
        with pytest.raises(OutOfBoundsError):
            dev.read(offset, length)
        if length >= 0:
            with pytest.raises(OutOfBoundsError):
                dev.write(offset, b"x" * max(length, 1))

    def test_non_int_offset_is_refused(self, dev):
        with pytest.raises(OutOfBoundsError):
            dev.read(1.5, 1)

    def test_read_into_read_only_buffer_is_refused(self, dev):
        with pytest.raises(TypeError):
            dev.read_into(0, b"immutable")

    # -- vectored -----------------------------------------------------------------------

    @pytest.mark.parametrize("threads", [1, 3])
    def test_write_many_read_many_match_a_model(self, dev, threads):
        rng = np.random.default_rng(7)
        n = 200
        lengths = rng.integers(0, 300, n)
        # disjoint pieces, so the model does not depend on write order
        offsets = (np.arange(n) * (dev.size // n)).astype(np.int64)
        data = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
        dev.write_many(offsets, lengths, data, threads=threads)
        model = bytearray(dev.size)
        pos = 0
        for off, length in zip(offsets.tolist(), lengths.tolist(), strict=True):
            model[off:off + length] = data[pos:pos + length].tobytes()
            pos += length
        out = dev.read_many(offsets, lengths, threads=threads)
        assert bytes(out) == data.tobytes()
        assert dev.read(0, dev.size) == bytes(model)

    def test_read_many_uniform_length_into_given_buffer(self, dev):
        records = np.arange(64, dtype=np.uint8).repeat(100)
        dev.write(0, records)
        order = np.arange(63, -1, -1) * 100
        out = np.zeros(6400, dtype=np.uint8)
        assert dev.read_many(order, 100, out, threads=2) is out
        assert out.reshape(64, 100)[:, 0].tolist() == list(range(63, -1, -1))

    def test_read_many_checks_every_request(self, dev):
        with pytest.raises(OutOfBoundsError):
            dev.read_many([0, dev.size - 1], 2)
        with pytest.raises(OutOfBoundsError):
            dev.read_many([0, -5], 2)
        with pytest.raises(OutOfBoundsError):
            dev.read_many([0, 1], [1, 2, 3])
        with pytest.raises(OutOfBoundsError):
            dev.read_many([0, 8], 4, bytearray(7))

    def test_empty_batches_are_no_ops(self, dev):
        assert len(dev.read_many([], 10)) == 0
        dev.write_many([], [], b"")

    def test_concurrent_disjoint_writes_and_reads(self, dev):
        stripe = dev.size // 4

        def work(i: int) -> None:
            for k in range(20):
                dev.write(i * stripe + k * 16, bytes([i + 1]) * 16)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for i in range(4):
            assert dev.read(i * stripe, 320) == bytes([i + 1]) * 320

    # -- life cycle ---------------------------------------------------------------------

    def test_persist_is_accepted(self, dev, medium):
        dev.write(0, b"x")
        dev.persist()
        assert dev.read(0, 1) == b"x"
        if dev.persistent:  # and made durable, on the backend's storage
            medium = self._durable_medium(dev, medium)
            dev.close()
            medium.power_cut()
            assert medium.raw_read(0, 1) == b"x", "persist() returned but the write is lost"

    def test_use_after_close_and_double_close_are_refused(self, dev):
        dev.close()
        assert dev.closed
        for call in (lambda: dev.read(0, 1), lambda: dev.write(0, b"x"), dev.persist,
                     lambda: dev.read_many([0], 1), dev.close):
            with pytest.raises(DeviceClosedError):
                call()

    def test_context_manager_closes(self, tmp_path):
        with self.make_device(tmp_path, self.size) as device:
            device.write(0, b"x")
        assert device.closed

    def test_capabilities_are_consistent(self, dev):
        assert isinstance(dev.persistent, bool) and isinstance(dev.byte_addressable, bool)
        assert dev.granularity >= 1 and dev.alignment >= 1
        if dev.is_pmem:
            assert dev.persistent and dev.byte_addressable
        assert dev.url and repr(dev)

    def test_persisted_data_survives_reopen(self, dev, tmp_path, medium):
        if not dev.persistent:
            pytest.skip("volatile device")
        dev.write(4096, b"durable bytes")
        dev.persist()
        again = self.reopen(dev, tmp_path)
        try:
            assert again.read(4096, 13) == b"durable bytes"
        finally:
            again.close()
        assert self._durable_medium(dev, medium).raw_read(4096, 13) == b"durable bytes"

    def test_persisted_data_survives_power_cut(self, dev, tmp_path, medium):
        """What persist() covered is on the storage after a power cut; later writes may not be.

        The unpersisted write must be lost, or the simulated power cut would pass any persist.
        """
        medium = self._durable_medium(dev, medium)
        durable = bytes(range(7, 207))
        dev.write(4096, durable)
        dev.write_many([8192, 12288], 100, durable)
        dev.persist()
        lost_at = dev.size // 2 + 4096
        dev.write(lost_at, b"\xa5" * 300)
        dev.close()
        medium.power_cut()
        assert medium.raw_read(4096, 200) == durable, "a persisted write is lost"
        assert medium.raw_read(8192, 100) + medium.raw_read(12288, 100) == durable, \
            "a persisted write_many is lost"
        assert medium.raw_read(lost_at, 300) != b"\xa5" * 300, \
            "the power cut kept an unpersisted write: it cannot tell persist() from a no-op"
        again = self.open_existing(tmp_path)
        try:
            assert again.read(4096, 200) == durable
            assert bytes(again.read_many([8192, 12288], 100)) == durable
        finally:
            again.close()

    def test_read_only_reopen_refuses_writes(self, dev, tmp_path):
        if not dev.persistent:
            pytest.skip("volatile device")
        dev.write(0, b"ro")
        dev.persist()
        try:
            again = self.reopen_read_only(dev, tmp_path)
        except NotImplementedError:
            pytest.skip("backend has no read-only open")
        try:
            assert again.read(0, 2) == b"ro"
            with pytest.raises(ReadOnlyError):
                again.write(0, b"x")
            with pytest.raises(ReadOnlyError):
                again.write_many([0], 1, b"x")
        finally:
            again.close()


class _NoMedium:
    """The medium of a volatile backend: none."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        pass
