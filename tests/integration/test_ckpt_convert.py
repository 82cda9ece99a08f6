"""Interop: files written by the safetensors library, torch .pt/.bin, a tiny transformers model."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

import ckpt
from ckpt.__main__ import main
from ckpt.testing import same


def _tensors():
    g = torch.Generator().manual_seed(1)
    sd = {
        "f32": torch.randn(5, 7, generator=g),
        "bf16": torch.randn(33, generator=g).bfloat16(),
        "f16": torch.randn(2, 2, generator=g).half(),
        "f64": torch.randn(3, generator=g, dtype=torch.float64),
        "i64": torch.arange(-5, 5),
        "u8": torch.arange(200, dtype=torch.uint8),
        "u16": torch.tensor([0, 65535], dtype=torch.uint16),
        "u32": torch.tensor([7, 2 ** 32 - 1], dtype=torch.uint32),
        "u64": torch.tensor([2 ** 64 - 1], dtype=torch.uint64),
        "bool": torch.tensor([True, False]),
        "fp8": torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn),
        "fp8e5": torch.tensor([0.5, -2.0]).to(torch.float8_e5m2),
        "c64": torch.tensor([1 - 1j], dtype=torch.complex64),
        "scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 4),
    }
    return sd


def test_convert_a_file_written_by_the_safetensors_library(tmp_path, capsys):
    sd = _tensors()
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert main(["convert", str(tmp_path / "model.safetensors"), str(tmp_path / "m")]) == 0
    assert "15 tensors" in capsys.readouterr().out
    expected = load_file(tmp_path / "model.safetensors")
    out = ckpt.load(tmp_path / "m")
    assert set(out) == set(expected)
    for name, t in expected.items():
        assert same(out[name], t), name
    assert main(["verify", str(tmp_path / "m")]) == 0
    assert main(["inspect", str(tmp_path / "m")]) == 0
    assert "bfloat16" in capsys.readouterr().out
    assert main(["inspect", "--json", str(tmp_path / "m")]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["source_format"] == "safetensors"


def test_convert_a_sharded_safetensors_set(tmp_path):
    sd = _tensors()
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[:7],
              "model-00002-of-00002.safetensors": names[7:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: sd[k] for k in keys}, tmp_path / shard)
        weight_map.update({k: shard for k in keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": weight_map}))
    ckpt.convert(tmp_path / "model.safetensors.index.json", tmp_path / "m", partition_size=4096)
    out = ckpt.load(tmp_path / "m")
    for name, t in sd.items():
        assert same(out[name], t), name


def test_unsafe_shard_names_are_refused(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "../../etc/passwd"}}))
    with pytest.raises(ckpt.ConvertError, match="unsafe"):
        ckpt.convert(tmp_path / "model.safetensors.index.json", tmp_path / "m")
    assert main(["convert", str(tmp_path / "model.safetensors.index.json"),
                 str(tmp_path / "m")]) == 1


def test_bad_safetensors_headers_are_refused(tmp_path):
    save_file({"a": torch.zeros(4)}, tmp_path / "ok.safetensors")
    data = (tmp_path / "ok.safetensors").read_bytes()
    cases = {
        "huge": (1 << 60).to_bytes(8, "little") + data[8:],
        "overlap": data.replace(b'"data_offsets":[0,16]', b'"data_offsets":[0,99]'),
        "json": data[:8] + b"{" * (len(data) - 8),
        "short": data[:5],
    }
    for name, raw in cases.items():
        (tmp_path / f"{name}.safetensors").write_bytes(raw)
        with pytest.raises(ckpt.ConvertError):
            ckpt.convert(tmp_path / f"{name}.safetensors", tmp_path / name)
    assert not any(p.name in cases for p in tmp_path.iterdir())


def test_convert_torch_files_with_shared_tensors(tmp_path):
    sd = _tensors()
    sd["tied"] = sd["f32"]
    sd["part_view"] = sd["f32"][1]
    torch.save(sd, tmp_path / "model.pt")
    ckpt.convert(tmp_path / "model.pt", tmp_path / "m")
    out = ckpt.load(tmp_path / "m")
    assert out["tied"] is out["f32"]
    for name, t in sd.items():
        assert same(out[name], t), name
    classic = {k: sd[k] for k in ("f32", "bf16", "i64", "tied")}
    torch.save({"state_dict": classic}, tmp_path / "legacy.bin",
               _use_new_zipfile_serialization=False)
    ckpt.convert(tmp_path / "legacy.bin", tmp_path / "legacy")
    out = ckpt.load(tmp_path / "legacy")
    assert same(out["bf16"], sd["bf16"]) and out["tied"] is out["f32"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_torch_files_never_execute_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.zeros(2), "x": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(ckpt.ConvertError):
        ckpt.convert(tmp_path / "evil.pt", tmp_path / "m")
    assert not (tmp_path / "pwned").exists()
    torch.save({"w": torch.zeros(2), "n": 3}, tmp_path / "odd.pt")
    with pytest.raises(ckpt.ConvertError, match="not named tensors"):
        ckpt.convert(tmp_path / "odd.pt", tmp_path / "m")


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return config, LlamaForCausalLM(config).eval()


def test_tiny_transformers_model_from_config_and_checkpoint(tmp_path):
    config, model = _tiny_llama()
    model.save_pretrained(tmp_path / "hf")  # model.safetensors + config.json, no hub
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "m")]) == 0
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        expected = model(ids).logits
        for cfg in (config, None):  # None: the config saved in the checkpoint's metadata
            loaded = ckpt.load_transformers(cfg, tmp_path / "m")
            assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
            assert not loaded.training
            assert torch.equal(loaded(ids).logits, expected)


def test_transformers_state_dict_saved_directly(tmp_path):
    config, model = _tiny_llama()
    ckpt.save(model.state_dict(), tmp_path / "m")
    index = ckpt.read_index(tmp_path / "m")
    assert index.aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    loaded = ckpt.load_transformers(config, tmp_path / "m")
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_transformers_model_built_on_meta_gets_its_rotary_buffers_back(tmp_path):
    config, model = _tiny_llama()
    ckpt.save(model.state_dict(), tmp_path / "m")
    with torch.device("meta"):
        from transformers import LlamaForCausalLM

        empty = LlamaForCausalLM(config)
    ckpt.load_into(empty, tmp_path / "m")
    assert torch.equal(empty.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq)
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(empty.eval()(ids).logits, model(ids).logits)
