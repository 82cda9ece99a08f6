"""URL parsing, sizes and backend lookup."""

import pytest

from bas import BackendUnavailableError, InvalidURLError, open_device, parse_size
from bas.registry import BACKENDS, DeviceURL, backend_class


@pytest.mark.parametrize("text,value", [("0", 0), ("4096", 4096), ("64K", 65536),
                                        ("1M", 1 << 20), ("2GiB", 2 << 30), ("3g", 3 << 30)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "10X", "G"])
def test_parse_size_rejects(text):
    with pytest.raises(InvalidURLError, match="not a size"):
        parse_size(text)


def test_backends_table_is_sorted_and_importable_by_name():
    assert list(BACKENDS) == sorted(BACKENDS)
    assert backend_class("dram").scheme == "dram"


def test_unknown_scheme_names_the_known_ones():
    with pytest.raises(InvalidURLError, match="known: dram"):
        open_device("nosuch://x")


def test_unknown_and_duplicate_options_are_refused():
    with pytest.raises(InvalidURLError, match="unknown option"):
        open_device("dram://?size=4096&sise=1")
    with pytest.raises(InvalidURLError, match="given twice"):
        DeviceURL.parse("dram://?size=1&size=2")
    with pytest.raises(InvalidURLError, match="as keyword"):
        open_device("dram://?size=4096", size=8192)


def test_keyword_options_and_paths(tmp_path):
    with open_device("dram://", size="64K") as dev:
        assert dev.size == 65536
    with open_device(tmp_path / "f.bin", size=100) as dev:
        assert dev.size == 100 and dev.url.startswith("file://")


def test_bad_bool_option():
    with pytest.raises(InvalidURLError, match="boolean"):
        open_device("dram://?size=4096&hugepages=maybe")


def test_missing_backend_module_gives_install_hint(monkeypatch):
    monkeypatch.setitem(BACKENDS, "pmem", ("bas.no_such_module:X", "install libpmemobj-dev"))
    with pytest.raises(BackendUnavailableError, match="install libpmemobj-dev"):
        backend_class("pmem")
