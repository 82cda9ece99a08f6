"""Hypothesis round trips: any dtype, shape, view, layout and aliasing saves and loads exactly."""

import math
import tempfile

import torch
from hypothesis import given
from hypothesis import strategies as st

import ckpt
from ckpt.format import DTYPES
from ckpt.testing import same

DTYPE_NAMES = sorted(n for n in DTYPES if isinstance(getattr(torch, n, None), torch.dtype))


@st.composite
def base_tensors(draw):
    dt = getattr(torch, draw(st.sampled_from(DTYPE_NAMES)))
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    n = math.prod(shape) * dt.itemsize
    raw = draw(st.binary(min_size=n, max_size=n))  # any bit pattern: NaNs, odd bools
    return torch.tensor(list(raw), dtype=torch.uint8).view(dt).reshape(shape)


@st.composite
def tensors(draw):
    t = draw(base_tensors())
    how = draw(st.sampled_from(["plain", "transpose", "narrow", "step", "expand", "conj"]))
    if how == "transpose" and t.dim() >= 2:
        return t.transpose(0, 1)
    if how == "narrow" and t.dim() >= 1 and t.shape[0] >= 1:
        start = draw(st.integers(0, t.shape[0] - 1))
        return t.narrow(0, start, draw(st.integers(0, t.shape[0] - start)))
    if how == "step" and t.dim() >= 1:
        return t[::2]
    if how == "expand" and t.dim() >= 1 and t.shape[-1] == 1:
        return t.expand(*t.shape[:-1], 3)
    if how == "conj" and t.is_complex() and t.dtype != torch.complex32:
        return t.conj()
    return t


@st.composite
def state_dicts(draw):
    names = draw(st.lists(st.text(min_size=1, max_size=12), max_size=6, unique=True))
    sd = {}
    for name in names:
        if sd and draw(st.booleans()) and draw(st.booleans()):
            sd[name] = sd[draw(st.sampled_from(sorted(sd)))]  # tied: the same tensor object
        else:
            sd[name] = draw(tensors())
    return sd


options = st.fixed_dictionaries({
    "alignment": st.sampled_from([256, 1024, 4096]),
    "chunk_size": st.sampled_from([4096, 8192, 16 << 20]),
    "partition_size": st.sampled_from([4096, 12288, 2 << 30]),
})


@given(sd=state_dicts(), opts=options, threads=st.integers(1, 3), mmap=st.booleans())
def test_save_load_round_trip(sd, opts, threads, mmap):
    with tempfile.TemporaryDirectory() as tmp:
        index = ckpt.save(sd, f"{tmp}/m", **opts)
        out = ckpt.load(f"{tmp}/m", threads=threads, mmap=mmap)
    assert list(out) == index.names()
    assert set(out) == set(sd)
    for name, t in sd.items():
        assert same(out[name], t), name
    storages = {t.untyped_storage().data_ptr() for t in out.values()}
    # read: one buffer, one storage; mapped: one mapping per partition
    assert len(storages) <= (len(index.partitions) if mmap else 1)
    for name, target in index.aliases.items():
        assert out[name] is out[target]
        assert sd[name] is sd[target] or same(sd[name], sd[target])


@given(t=tensors())
def test_a_view_is_stored_as_its_own_elements(t):
    with tempfile.TemporaryDirectory() as tmp:
        index = ckpt.save({"v": t}, f"{tmp}/m")
    assert index.tensors[0].length == t.numel() * t.element_size()


@given(sd=state_dicts())
def test_stream_form_round_trip(sd):
    import io

    with tempfile.TemporaryDirectory() as tmp:
        ckpt.save(sd, f"{tmp}/m", alignment=256, chunk_size=4096)
        buf = io.BytesIO()
        size = ckpt.pack(f"{tmp}/m", buf)
    assert size == len(buf.getvalue()) and size % 4096 == 0
    buf.seek(0)
    out = ckpt.load_stream(buf)
    for name, t in sd.items():
        assert same(out[name], t), name
