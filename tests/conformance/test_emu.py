"""emu:// passes the device conformance suite, charges its model, and drives the phase runner."""

import time
from urllib.parse import quote

import numpy as np
import pytest

from bas import InvalidURLError, open_device
from bas.backends.file import FileDevice
from bas.braid.phase import Phase, random_phase, run_mixed, run_phase, sequential_phase
from bas.braid.presets import get_preset, overlapped_seconds
from bas.testing import DeviceConformance, FileMedium
from bas.wrappers.emu import EmuDevice


class TestEmuOverDram(DeviceConformance):
    def make_device(self, tmp_path, size):
        return open_device(f"emu://optane-1dimm?inner=dram&size={size}&mode=account")


class TestEmuOverFile(DeviceConformance):
    def _url(self, tmp_path, options=""):
        inner = f"file://{tmp_path}/dev.bin{options}"
        return f"emu://nvme?mode=account&inner={quote(inner, safe='')}"

    def make_device(self, tmp_path, size):
        return open_device(self._url(tmp_path, f"?size={size}"))

    def open_existing(self, tmp_path, read_only=False):
        return open_device(self._url(tmp_path, f"?read_only={int(read_only)}"))

    def make_medium(self, tmp_path):
        return FileMedium(tmp_path / "dev.bin")


class TestEmuConstructorThrottled(DeviceConformance):
    """The Python constructor, pacing real time (the dram preset keeps the sleeps tiny)."""

    def make_device(self, tmp_path, size):
        return EmuDevice(open_device(f"dram://?size={size}"), "dram", mode="throttle")


@pytest.mark.parametrize("layer", [EmuDevice, FileDevice])
def test_noop_persist_fails_conformance(tmp_path, monkeypatch, layer):
    """Regression: the kit passed a device whose persist() did nothing (it only read back)."""
    monkeypatch.setattr(layer, "_persist", lambda self: None)
    with pytest.raises(AssertionError, match="lost"):
        TestEmuOverFile().run_check("test_persisted_data_survives_power_cut", tmp_path)


# -- capabilities and URLs ----------------------------------------------------------------


def test_capabilities_come_from_the_preset_but_persistence_needs_both(tmp_path):
    with open_device("emu://optane-6dimm?inner=dram&size=1M") as dev:
        assert dev.byte_addressable and dev.granularity == 256
        assert not dev.persistent  # an Optane model cannot make DRAM survive a crash
    with open_device(f"emu://sata-ssd?inner={quote(f'file://{tmp_path}/d?size=1M', safe='')}"
                     ) as dev:
        assert dev.persistent and not dev.byte_addressable and dev.granularity == 4096
    with open_device(f"emu://dram?inner={quote(f'file://{tmp_path}/d', safe='')}") as dev:
        assert not dev.persistent  # a volatile model of a persistent file stays volatile


@pytest.mark.parametrize("url,match", [
    ("emu://nosuch?inner=dram&size=1M", "known: cxl-ssd"),
    ("emu://nvme?inner=dram&size=1M&mode=fast", "mode"),
    ("emu://nvme?inner=dram&size=1M&speed=2", "unknown option"),
    ("emu://nvme?size=1M", "needs inner="),
])
def test_bad_urls_are_refused(url, match):
    with pytest.raises(InvalidURLError, match=match):
        open_device(url)


def test_clock_is_none_on_real_devices_and_in_throttle_mode():
    with open_device("dram://?size=4096") as dev:
        assert dev.clock is None
        with dev.overlap() as same:
            assert same is dev
    with EmuDevice(open_device("dram://?size=4096"), "dram", mode="throttle") as dev:
        assert dev.clock is None


# -- the cost model -------------------------------------------------------------------------


def test_small_random_accesses_are_amplified_to_granules():
    with open_device("emu://nvme?inner=dram&size=1M") as dev:
        dev.read_many([0, 8192, 40960], 100)
        stats = dev.stats
        assert stats.bytes_read == 300 and stats.media_read == 3 * 4096
        dev.write(4090, b"x" * 10)  # straddles two blocks
        assert dev.stats.media_written == 8192


def test_a_contiguous_batch_is_sequential_and_moves_its_extent_once():
    p = get_preset("optane-1dimm")
    with open_device("emu://optane-1dimm?inner=dram&size=1M") as dev:
        dev.read_many(np.arange(0, 65536, 64), 64, threads=2)
        assert dev.stats.media_read == 65536
        assert dev.clock == pytest.approx(p.batch_seconds("read", True, 1024, 65536, 2))


def test_overlap_section_charges_the_interference_model():
    p = get_preset("optane-1dimm")
    with open_device("emu://optane-1dimm?inner=dram&size=4M") as dev:
        dev.read_many([0], 1 << 20)
        r = dev.clock
        dev.write_many([2 << 20], 1 << 19, bytes(1 << 19))
        w = dev.clock - r
        start = dev.clock
        with dev.overlap():
            dev.read_many([0], 1 << 20)
            dev.write_many([2 << 20], 1 << 19, bytes(1 << 19))
            assert dev.clock == start  # settled when the section ends
        assert dev.clock - start == pytest.approx(overlapped_seconds(r, w, p.interference))


def test_throttle_mode_takes_at_least_the_modelled_time():
    p = get_preset("sata-ssd")
    with EmuDevice(open_device("dram://?size=2M"), p, mode="throttle") as dev:
        start = time.perf_counter()
        dev.write(0, bytes(1 << 20))
        assert time.perf_counter() - start >= p.batch_seconds("write", True, 1, 1 << 20, 1)


# -- the phase runner ------------------------------------------------------------------------


def test_sequential_phase_in_batches_matches_the_model():
    p = get_preset("nvme")
    with open_device("emu://nvme?inner=dram&size=8M") as dev:
        phase = sequential_phase("write", 0, 8 << 20, threads=2, batch_requests=4)
        res = run_phase(dev, phase)
        assert (res.kind, res.pattern, res.requests, res.bytes) == ("write", "sequential", 8,
                                                                    8 << 20)
        assert res.virtual_seconds == pytest.approx(2 * (4 << 20) / p.seq_write.at(2))
        assert res.bandwidth == pytest.approx(p.seq_write.at(2))
        back = bytearray()
        run_phase(dev, sequential_phase("read", 0, 8 << 20, chunk=3 << 20,
                                        sink=lambda o, n, v: back.extend(v)))
        assert bytes(back) == bytes(np.resize(np.arange(251, dtype=np.uint8), 4 << 20)) * 2


def test_random_phase_reads_the_data_written_there():
    with open_device("emu://cxl-ssd?inner=dram&size=1M") as dev:
        data = np.random.default_rng(1).integers(0, 256, 300 * 100, dtype=np.uint8)
        # random slots may repeat: one writer thread keeps the order, so the last write wins
        write = random_phase("write", dev.size, 100, 300, seed=3, data=data, threads=1)
        assert run_phase(dev, write).pattern == "random"
        got = bytearray()
        run_phase(dev, Phase("read", write.offsets, 100, threads=3,
                             sink=lambda o, n, v: got.extend(v)))
        last = {int(o): i for i, o in enumerate(write.offsets)}
        for i, off in enumerate(write.offsets.tolist()):
            j = last[off]
            assert got[i * 100:(i + 1) * 100] == data[j * 100:(j + 1) * 100].tobytes()


def test_max_seconds_stops_a_real_phase_early():
    with open_device("dram://?size=64M") as dev:
        phase = sequential_phase("read", 0, 64 << 20, chunk=4096, batch_requests=8,
                                 max_seconds=0)
        res = run_phase(dev, phase)
        assert res.requests == 8 and res.virtual_seconds is None and res.seconds > 0


def test_mixed_phases_overlap_on_the_virtual_clock():
    p = get_preset("optane-6dimm")
    with open_device("emu://optane-6dimm?inner=dram&size=16M") as dev:
        read = sequential_phase("read", 0, 4 << 20, threads=4, batch_requests=4)
        write = sequential_phase("write", 8 << 20, 2 << 20, threads=4, batch_requests=2)
        r, w = run_phase(dev, read).elapsed, run_phase(dev, write).elapsed
        mixed = run_mixed(dev, read, write)
        assert mixed.read.bytes == 4 << 20 and mixed.write.bytes == 2 << 20
        assert mixed.elapsed == pytest.approx(overlapped_seconds(r, w, p.interference))
    with pytest.raises(ValueError, match="read phase and a write phase"):
        run_mixed(dev, write, read)
