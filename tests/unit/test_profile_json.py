"""Profile: JSON round trip, schema check, and the queries engines size thread pools with."""

import json

import pytest

from bas.braid.presets import PRESETS, get_preset
from bas.braid.profile import SCHEMA, Profile, preset_threads, summary, table


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_through_json(tmp_path, name):
    prof = Profile.from_preset(name)
    path = tmp_path / "p.json"
    prof.save(str(path))
    assert json.loads(path.read_text())["schema"] == SCHEMA
    again = Profile.load(str(path))
    assert again == prof
    assert again.best_threads("read") == prof.best_threads("read")


def test_other_schema_is_refused(tmp_path):
    data = Profile.from_preset("nvme").to_dict()
    data["schema"] = SCHEMA + 1
    with pytest.raises(ValueError, match="schema"):
        Profile.from_dict(data)


def test_queries_follow_the_preset():
    p = get_preset("optane-6dimm")
    prof = Profile.from_preset("optane-6dimm")
    assert prof.best_threads("read") == 17 and prof.best_threads("write") == 4
    assert prof.peak("read") == pytest.approx(39.4e9)
    assert prof.bandwidth("write", threads=4) == pytest.approx(13.9e9)
    # between measured thread counts: linear; past the last one: held
    assert prof.bandwidth("read", threads=12) == pytest.approx(
        (p.seq_read.at(8) + p.seq_read.at(16)) / 2)
    assert prof.bandwidth("read", threads=500) == prof.bandwidth("read", threads=34)
    assert prof.seconds("write", 13_900_000_000, threads=4) == pytest.approx(1.0)
    assert prof.latency == pytest.approx(305e-9)


def test_access_sizes_interpolate_and_small_ones_cost_a_request():
    prof = Profile.from_preset("nvme")
    at_100 = prof.bandwidth("read", "random", 8, access_size=100)
    assert prof.bandwidth("read", "random", 8, access_size=50) == pytest.approx(at_100 / 2)
    mid = prof.bandwidth("read", "random", 8, access_size=1000)
    assert at_100 < mid < prof.bandwidth("read", "random", 8, access_size=4096)
    assert prof.bandwidth("read", "random", 8, access_size=1 << 30) == prof.bandwidth(
        "read", "random", 8, access_size=65536)


def test_braid_summary_and_table():
    prof = Profile.from_preset("sata-ssd", threads=[1, 2, 4])
    b = prof.braid()
    assert b["granularity"] == 4096 and b["read_threads"] == 1
    assert b["read_over_write"] == pytest.approx(0.56 / 0.53)
    text = table(prof)
    assert "B granularity 4096 B" in text and "I interference 0.50" in text
    assert "read  rand   100 B" in text
    assert "preset:sata-ssd" in summary([prof])


def test_preset_threads_cover_every_peak():
    threads = preset_threads("optane-6dimm")
    assert {1, 4, 17, 34} <= set(threads) and threads == sorted(threads)


def test_missing_series_is_a_clear_error():
    prof = Profile.from_preset("dram", threads=[1])
    prof.series = {k: v for k, v in prof.series.items() if "random" not in k}
    with pytest.raises(KeyError, match="no read random"):
        prof.bandwidth("read", "random", 1, 100)
