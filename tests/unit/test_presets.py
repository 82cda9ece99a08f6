"""Presets: the published numbers, consistent curves, and the shared cost model."""

import pytest

from bas import InvalidURLError
from bas.braid.presets import GB, PRESETS, Curve, get_preset, interference_from, overlapped_seconds

REQUIRED = {"optane-1dimm", "optane-6dimm", "nvme", "sata-ssd", "cxl-ssd", "dram"}


def test_the_required_presets_exist():
    assert REQUIRED <= set(PRESETS)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(InvalidURLError, match="known: cxl-ssd, dram"):
        get_preset("optane-7dimm")


def test_optane_numbers_are_the_papers():
    one, six = get_preset("optane-1dimm"), get_preset("optane-6dimm")
    assert (one.seq_read.peak, one.seq_write.peak) == (6.6 * GB, 2.3 * GB)
    assert (six.seq_read.peak, six.seq_write.peak) == (39.4 * GB, 13.9 * GB)
    assert one.read_latency == six.read_latency == 305e-9
    assert one.granularity == six.granularity == 256
    assert six.seq_read.peak_threads == 17 and six.seq_write.peak_threads == 4
    # write bandwidth drops past its peak; the interference is heavy (BRAID's I)
    assert six.seq_write.at(16) < six.seq_write.at(4)
    assert six.interference < 0.5


def test_datasheet_ssds():
    nvme, sata = get_preset("nvme"), get_preset("sata-ssd")
    assert (nvme.seq_read.peak, nvme.seq_write.peak) == (7.0 * GB, 5.0 * GB)
    assert (sata.seq_read.peak, sata.seq_write.peak) == (0.56 * GB, 0.53 * GB)
    assert nvme.granularity == sata.granularity == 4096
    assert not nvme.byte_addressable and not sata.byte_addressable


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_curves_rise_to_their_peak_and_never_pass_it(name):
    p = get_preset(name)
    assert p.read_latency > 0 and p.write_latency > 0 and 0 < p.interference <= 1
    for kind in ("read", "write"):
        for pattern in ("sequential", "random"):
            c = p.curve(kind, pattern)
            values = [c.at(t) for t in range(1, 4 * c.peak_threads + 1)]
            rise = values[:c.peak_threads]
            assert rise == sorted(rise) and max(values) == pytest.approx(c.peak)
            assert min(values[c.peak_threads - 1:]) >= c.peak * c.floor * (1 - 1e-12)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_reads_beat_writes_and_sequential_beats_random(name):
    p = get_preset(name)
    assert p.seq_read.peak >= p.seq_write.peak
    assert p.rand_read.peak <= p.seq_read.peak and p.rand_write.peak <= p.seq_write.peak


def test_batch_seconds_sequential_and_random():
    p = get_preset("nvme")
    assert p.batch_seconds("read", True, 0, 0, 4) == 0
    # a small isolated read costs the latency, a big sequential one its bandwidth
    assert p.batch_seconds("read", True, 1, 4096, 1) == p.read_latency
    assert p.batch_seconds("read", True, 8, 8 << 20, 4) == (8 << 20) / p.seq_read.at(4)
    # 100 random reads on one thread: latency-bound, one at a time
    assert p.batch_seconds("read", False, 100, 100 * 4096, 1) == pytest.approx(
        100 * p.read_latency)
    # more threads than requests do not help
    assert p.batch_seconds("read", False, 2, 8192, 64) == p.batch_seconds("read", False, 2,
                                                                          8192, 2)


def test_media_bytes_round_up_to_granules():
    p = get_preset("optane-1dimm")
    assert [p.media_bytes(n) for n in (1, 100, 256, 257)] == [256, 256, 256, 512]


def test_overlap_model_extremes():
    assert overlapped_seconds(2.0, 3.0, 1.0) == 3.0  # no interference: full overlap
    assert overlapped_seconds(2.0, 2.0, 0.5) == 4.0  # half speed: no better than serial
    assert interference_from(2.0, 3.0, 3.0) == 1.0
    assert interference_from(0.0, 3.0, 3.0) == 1.0


def test_inconsistent_curves_are_refused():
    with pytest.raises(ValueError, match="inconsistent"):
        Curve(peak=1.0, peak_threads=2, single=2.0)
    with pytest.raises(ValueError, match="kind must be"):
        get_preset("dram").curve("erase", "random")
