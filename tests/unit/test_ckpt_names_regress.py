"""Regressions: a model name can never break a tier (issue H, item 4).

A model named `store.json.tmp` was accepted and turned the disk tier's state file temporary
into a directory: every later put, load and reopen failed. `a-/b` was accepted and lost on
reopen (its directory `a---b` reads back as `a/-b`). Now one validator (ckpt.tiers.disk.check_name)
guards every verb of every tier and of the Store.
"""

import os
import tempfile

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ckpt
import ckpt.tiers.tier
from ckpt.tiers.disk import STATE_FILE, check_name

SD = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
RESERVED = ["store.json.tmp", "store.json", "Store.JSON.tmp", "store.lock", "store.json/x",
            "x.tmp-1", "x.TMP-1", "m.old-0badc0de", "m.del-0badc0de", "org/m.tmp-1"]
UNSAFE = ["", ".", "..", "a/", "/", "a//b", "a/b/c", ".hidden", "-rf", "a b", "a\x00b", "a\nb",
          "a\tb", "a\x7fb", "a\\b", "a:b", "é", "a\u202eb", "a--b", "a-/b", "x" * 101,
          f"{'x' * 100}/{'y' * 101}"]


def _same(tensors, sd) -> bool:
    return tensors.keys() == sd.keys() and all(torch.equal(tensors[k], sd[k]) for k in sd)


def _store(root, dram: bool = True) -> ckpt.Store:
    tiers = [ckpt.DramTier(1 << 20)] if dram else []
    return ckpt.Store(tiers + [ckpt.DiskTier(root, 1 << 20)])


def _healthy(root) -> None:
    """put, load and reopen all work on the tier at root."""
    store = _store(root)
    store.put("probe", SD)
    assert _same(store.load("probe").tensors, SD)
    again = _store(root, dram=False)
    assert "probe" in again.tier("local").names()
    assert _same(again.load("probe").tensors, SD)


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_names_are_refused_and_the_disk_tier_keeps_working(name, tmp_path):
    store = _store(tmp_path / "ssd")
    with pytest.raises(ckpt.ModelNameError, match="bad model name"):
        store.put(name, SD)
    assert sorted(os.listdir(tmp_path / "ssd")) == [STATE_FILE]
    _healthy(tmp_path / "ssd")


def test_a_model_named_store_json_tmp_no_longer_breaks_the_disk_tier(tmp_path):
    store = _store(tmp_path / "ssd")
    store.put("before", SD)
    with pytest.raises(ckpt.ModelNameError, match="store.json.tmp"):
        store.put("store.json.tmp", SD)
    store.put("after", SD)
    assert _same(_store(tmp_path / "ssd").load("before").tensors, SD)
    assert _store(tmp_path / "ssd").tier("local").names() == ["after", "before"]  # LRU first


def test_a_name_whose_directory_reads_back_as_another_name_is_refused(tmp_path):
    with pytest.raises(ckpt.ModelNameError, match="read back"):
        _store(tmp_path / "ssd").put("a-/b", SD)
    _healthy(tmp_path / "ssd")


def test_name_errors_are_typed_and_say_why():
    for name, why in [("a\x00b", "not allowed"), ("x" * 101, "more than"), ("", "empty"),
                      ("a/b/c", "more than one '/'"), ("..", "letter or digit"),
                      ("store.json.tmp", "own files"), ("x.tmp-1", "temporary"),
                      ("url-abc", "reserved")]:
        with pytest.raises(ckpt.ModelNameError, match=why) as info:
            check_name(name, reserved=("url-",))
        assert isinstance(info.value, ckpt.CheckpointError) and isinstance(info.value,
                                                                           ValueError)
        assert repr(name) in str(info.value)
    with pytest.raises(ckpt.ModelNameError):
        check_name(b"bytes")
    assert check_name("org/model") == "org/model"


def _verbs(tmp_path):
    """Every verb of the Store and of the tiers that takes a model name."""
    disk = ckpt.DiskTier(tmp_path / "ssd", 1 << 20)
    dram = ckpt.DramTier(1 << 20)
    store = ckpt.Store([dram, disk])
    return {
        "store.put": lambda n: store.put(n, SD),
        "store.load": lambda n: store.load(n),
        "store.evict": lambda n: store.evict(n),
        "store.evict(local)": lambda n: store.evict(n, tier="local"),
        "store.locate": lambda n: store.locate(n),
        "store.estimate_load_time": lambda n: store.estimate_load_time(n),
        "disk.holds": disk.holds, "disk.path": disk.path, "disk.index": disk.index,
        "disk.remove": disk.remove,
        "disk.put": lambda n: disk.put(n, lambda path: None),
        "disk.adopt": disk.adopt,
        "disk.sink": lambda n: disk.sink(n, droppable=lambda _: True),
        "disk.open": lambda n: disk.open(n).__enter__(),
        "dram.holds": dram.holds, "dram.open": lambda n: dram.open(n).__enter__(),
        "dram.remove": dram.remove, "dram.pins": dram.pins, "dram.index": dram.index,
        "dram.keep": lambda n: dram.keep(n, ckpt.tiers.tier.Held(ckpt.Index(), b"", bytearray(0)),
                                          droppable=lambda _: True),
    }


@pytest.mark.parametrize("name", ["store.json.tmp", "a-/b", "a/b/c", "a\x00b", "x.tmp-1", "",
                                  "x" * 300])
def test_every_verb_refuses_a_bad_name_with_a_typed_error(name, tmp_path):
    for verb, call in _verbs(tmp_path).items():
        with pytest.raises(ckpt.ModelNameError):
            call(name)
            pytest.fail(f"{verb}({name!r}) accepted it")
    assert sorted(os.listdir(tmp_path / "ssd")) == [STATE_FILE]


_TOKENS = ["store.json", "store", ".json", ".tmp", ".tmp-", ".old-", ".del-", ".lock", "--", "-",
           "/", ".", "..", "a", "B", "7", "url-", "\x00", "\n", " ", "é", ":", "\\", "x" * 60]


@st.composite
def _names(draw):
    return draw(st.one_of(
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}(/[A-Za-z0-9][A-Za-z0-9._-]{0,30})?",
                      fullmatch=True),  # mostly valid
        st.lists(st.sampled_from(_TOKENS), max_size=6).map("".join),
        st.text(max_size=40),
        st.text(st.sampled_from("aZ9._-/"), max_size=210),
    ))


@given(name=_names())
def test_any_name_is_refused_or_put_load_and_reopen_keep_working(name):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "ssd")
        store = _store(root)
        try:
            store.put(name, SD)
        except ckpt.ModelNameError:
            _healthy(root)
            return
        assert _same(store.load(name).tensors, SD)
        store.put("probe", SD)
        again = _store(root)
        assert sorted(again.tier("local").names()) == sorted([name, "probe"])
        assert _same(again.load(name).tensors, SD) and again.locate(name) == ["dram", "local"]
        again.evict(name, tier="local")
        assert _store(root).tier("local").names() == ["probe"]
        assert sorted(os.listdir(root)) == sorted([STATE_FILE, "probe"])
