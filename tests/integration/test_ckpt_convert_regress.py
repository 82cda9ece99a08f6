"""Regression: the converter reads every safetensors dtype torch can hold (fp8 and fp4 included)
and recognises its sources by content, refusing anything else as "not a recognised format"."""

import json
import pickle
import random
import struct
import zipfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ckpt
from ckpt.testing import same
from ckpt.torch.tensors import tensor_bytes

FP8 = torch.tensor([0.5, -1.0, 2.0, 0.0, -0.25, 3.0])


def _header(path) -> tuple[dict, bytes]:
    """(the JSON header, the data region) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _handmade(path, entries: dict[str, tuple[str, list[int], bytes]]) -> None:
    """A safetensors file written byte by byte: name -> (dtype tag, header shape, data)."""
    header, data = {}, b""
    for name, (tag, shape, raw) in entries.items():
        header[name] = {"dtype": tag, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _low_precision() -> dict[str, tuple[str, torch.Tensor]]:
    """name -> (safetensors tag, tensor) for every 8- and 4-bit float dtype."""
    f4 = torch.tensor([0x12, 0xF0, 0x7A, 0x00, 0x81, 0xFF], dtype=torch.uint8)
    return {
        "e4m3fn": ("F8_E4M3", FP8.to(torch.float8_e4m3fn)),
        "e5m2": ("F8_E5M2", FP8.to(torch.float8_e5m2)),
        "e4m3fnuz": ("F8_E4M3FNUZ", FP8.to(torch.float8_e4m3fnuz).reshape(2, 3)),
        "e5m2fnuz": ("F8_E5M2FNUZ", FP8.to(torch.float8_e5m2fnuz)),
        "e8m0": ("F8_E8M0", FP8.abs().clamp(min=0.25).to(torch.float8_e8m0fnu)),
        "f4": ("F4", f4.view(torch.float4_e2m1fn_x2).reshape(2, 3)),  # header shape [2, 6]
        "f4_3d": ("F4", f4.clone().view(torch.float4_e2m1fn_x2).reshape(3, 1, 2)),
        "f4_empty": ("F4", torch.zeros(0, 4, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)),
    }


def test_fp8_and_fp4_safetensors_convert_and_load_bit_exact(tmp_path):
    cases = _low_precision()
    src = tmp_path / "lowp.safetensors"
    save_file({name: t for name, (_, t) in cases.items()}, src)  # the library's own writer
    header, data = _header(src)
    assert {name: header[name]["dtype"] for name in cases} == {n: c[0] for n, c in cases.items()}
    assert header["f4"]["shape"] == [2, 6]  # safetensors counts F4 values, torch packed bytes
    ckpt.convert(src, tmp_path / "m")
    out = ckpt.load(tmp_path / "m")
    with safe_open(src, "pt") as f:
        for name, (_, t) in cases.items():
            assert same(out[name], t), name
            assert same(out[name], f.get_tensor(name)), name
            begin, end = header[name]["data_offsets"]
            assert bytes(tensor_bytes(out[name])) == data[begin:end], name


def test_handmade_fp8_and_fp4_headers_convert(tmp_path):
    raw = bytes(range(0, 240, 20))  # 12 bytes
    _handmade(tmp_path / "h.safetensors", {
        "a": ("F8_E4M3FNUZ", [3, 4], raw),
        "b": ("F8_E5M2FNUZ", [12], raw),
        "c": ("F4", [4, 6], raw),  # 24 values, two per byte
    })
    ckpt.convert(tmp_path / "h.safetensors", tmp_path / "m")
    out = ckpt.load(tmp_path / "m")
    expect = {"a": (torch.float8_e4m3fnuz, (3, 4)), "b": (torch.float8_e5m2fnuz, (12,)),
              "c": (torch.float4_e2m1fn_x2, (4, 3))}
    for name, (dtype, shape) in expect.items():
        assert (out[name].dtype, tuple(out[name].shape)) == (dtype, shape), name
        assert bytes(tensor_bytes(out[name])) == raw, name


@pytest.mark.parametrize("tag, shape, nbytes", [
    ("F6_E2M3", [4], 3),  # in the safetensors spec, but torch has no 6-bit float
    ("F6_E3M2", [4], 3),
    ("Q4_K", [8], 4),
    ("F4", [3], 2),  # an odd number of values cannot be packed two per byte
    ("F4", [], 1),
])
def test_unsupported_safetensors_dtypes_are_refused_by_name(tmp_path, tag, shape, nbytes):
    _handmade(tmp_path / "x.safetensors", {"w": (tag, shape, bytes(nbytes))})
    with pytest.raises(ckpt.ConvertError, match=tag):
        ckpt.convert(tmp_path / "x.safetensors", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def _not_torch_zip(path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")


def _noise(path) -> None:
    data = bytearray(random.Random(7).randbytes(4096))
    data[0] = 0x42  # not a pickle, a zip or a brace
    path.write_bytes(bytes(data))


GARBAGE = {
    "empty.safetensors": lambda p: p.write_bytes(b""),
    "notes.txt": lambda p: p.write_text("these are not the weights you are looking for\n"),
    "model.safetensors": lambda p: p.write_text("hello, world: definitely not a header\n"),
    "model.bin": _noise,
    "noise": _noise,
    "zeros.pt": lambda p: p.write_bytes(bytes(64)),
    "tiny": lambda p: p.write_bytes(b"\x01\x02"),
    "archive.pt": _not_torch_zip,
    "weights.json": lambda p: p.write_text("not json at all"),
    "config.json": lambda p: p.write_text('{"hidden_size": 32}'),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_unknown_files_are_not_a_recognised_format(tmp_path, name):
    path = tmp_path / name
    GARBAGE[name](path)
    with pytest.raises(ckpt.ConvertError, match="not a recognised format") as e:
        ckpt.convert(path, tmp_path / "m")
    assert str(path) in str(e.value)
    assert not (tmp_path / "m").exists()


def test_directories_without_weights_are_not_a_recognised_format(tmp_path):
    (tmp_path / "hf").mkdir()
    with pytest.raises(ckpt.ConvertError, match="not a recognised format"):
        ckpt.convert(tmp_path / "hf", tmp_path / "m")
    (tmp_path / "hf" / "config.json").write_text('{"hidden_size": 32}')
    (tmp_path / "hf" / "README.md").write_text("# a model card without a model")
    with pytest.raises(ckpt.ConvertError, match="not a recognised format"):
        ckpt.convert(tmp_path / "hf", tmp_path / "m")


def test_formats_are_recognised_by_content_not_by_name(tmp_path):
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3)}
    save_file(sd, tmp_path / "model.bin")  # safetensors bytes under a torch name
    torch.save(sd, tmp_path / "weights.safetensors")  # a torch zip under a safetensors name
    torch.save(sd, tmp_path / "legacy.data", _use_new_zipfile_serialization=False)
    for src, kind in [("model.bin", "safetensors"), ("weights.safetensors", "torch"),
                      ("legacy.data", "torch")]:
        index = ckpt.convert(tmp_path / src, tmp_path / f"{src}.ckpt")
        assert index.metadata["source_format"] == kind, src
        out = ckpt.load(tmp_path / f"{src}.ckpt")
        assert all(same(out[k], sd[k]) for k in sd), src


def test_model_directory_with_one_unusually_named_safetensors_file(tmp_path):
    (tmp_path / "hf").mkdir()
    sd = {"w": torch.randn(4, 4, generator=torch.Generator().manual_seed(0))}
    save_file(sd, tmp_path / "hf" / "consolidated.safetensors")
    (tmp_path / "hf" / "config.json").write_text('{"hidden_size": 4}')
    ckpt.convert(tmp_path / "hf", tmp_path / "m")
    assert same(ckpt.load(tmp_path / "m")["w"], sd["w"])
    save_file(sd, tmp_path / "hf" / "other.safetensors")
    with pytest.raises(ckpt.ConvertError, match="several weight files"):
        ckpt.convert(tmp_path / "hf", tmp_path / "m2")


def test_a_plain_pickle_is_refused_not_loaded(tmp_path):
    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"w": [1, 2, 3]}, protocol=4))
    with pytest.raises(ckpt.ConvertError, match="torch"):
        ckpt.convert(tmp_path / "x.pkl", tmp_path / "m")
