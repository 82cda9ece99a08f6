"""Profiling an emulated device in account mode reproduces its preset within 5 %."""

import pytest

from bas import open_device
from bas.braid.presets import PRESETS, get_preset
from bas.braid.profile import Profile, measure, preset_threads

TOLERANCE = 0.05


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_profile_of_emulated_device_matches_its_preset(name):
    p = get_preset(name)
    threads = preset_threads(name)
    with open_device(f"emu://{name}?inner=dram&size=32M&mode=account") as dev:
        measured = measure(dev, threads=threads)
    assert measured.cache == "virtual clock" and measured.granularity == p.granularity
    # the preset's own numbers
    assert measured.peak("read") == pytest.approx(p.seq_read.peak, rel=TOLERANCE)
    assert measured.peak("write") == pytest.approx(p.seq_write.peak, rel=TOLERANCE)
    assert measured.best_threads("read") == p.seq_read.peak_threads
    assert measured.best_threads("write") == p.seq_write.peak_threads
    assert measured.latency == pytest.approx(p.read_latency, rel=TOLERANCE)
    assert measured.interference == pytest.approx(p.interference, rel=TOLERANCE)
    # and every point of every curve, small random accesses included
    expected = Profile.from_preset(name, threads)
    assert measured.series.keys() == expected.series.keys()
    for key, points in expected.series.items():
        for (t, want), (t2, got) in zip(points, measured.series[key], strict=True):
            assert t == t2
            assert got == pytest.approx(want, rel=TOLERANCE), f"{name} {key} threads={t}"


def test_small_random_reads_show_block_amplification():
    """BRAID's B: a 100-byte random read costs a 4 KiB page on flash, 256 B on Optane."""
    with open_device("emu://nvme?inner=dram&size=8M") as dev:
        nvme = measure(dev, threads=[4])
    with open_device("emu://optane-1dimm?inner=dram&size=8M") as dev:
        optane = measure(dev, threads=[4])
    # useful bytes per media byte: 100/4096 on flash, 100/256 on Optane
    flash_small = nvme.bandwidth("read", "random", 4, 100)
    flash_page = nvme.bandwidth("read", "random", 4, 4096)
    assert flash_small < flash_page * 100 / 4096 * 1.05
    assert optane.bandwidth("read", "random", 4, 100) > 10 * flash_small
