"""serving.registry: deploy tiny Hugging Face and ckpt directories, load them as a worker does."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import ckpt
from serving.demo import make_demo
from serving.protocol import (
    META_CONFIG,
    META_GENERATION_CONFIG,
    META_TOKENIZER,
    META_TOKENIZER_CONFIG,
)
from serving.registry import FILES, DeployError, Registry, prepare

TINY = {"vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}
SIDE = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny Hugging Face model directory (single model.safetensors)."""
    return make_demo(tmp_path_factory.mktemp("hf") / "tiny", config_overrides=TINY,
                     text_bytes=64 << 10)


def _copy_side(src, dst, files=SIDE):
    os.makedirs(dst, exist_ok=True)
    for f in files:
        shutil.copy(os.path.join(src, f), dst)
    return str(dst)


def _weights(hf) -> dict:
    return load_file(os.path.join(hf, "model.safetensors"))


def _sharded(hf, dst) -> str:
    _copy_side(hf, dst)
    sd = _weights(hf)
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in shards.items():
        save_file({n: sd[n] for n in part}, os.path.join(dst, file))
    weight_map = {n: f for f, part in shards.items() for n in part}
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return str(dst)


def _bin(hf, dst, scale=1.0) -> str:
    _copy_side(hf, dst)
    torch.save({n: t * scale for n, t in _weights(hf).items()},
               os.path.join(dst, "pytorch_model.bin"))
    return str(dst)


def _load(registry, tmp_path, name) -> ckpt.Loaded:
    disk = tmp_path / f"disk-{len(os.listdir(tmp_path))}"  # a fresh worker each time
    store = ckpt.Store([ckpt.DiskTier(disk, 1 << 30), registry.tier()])
    return store.load(name)


def _same(tensors, expected):
    assert sorted(tensors) == sorted(expected)
    for n, t in expected.items():
        assert torch.equal(tensors[n], t), n


def _meta_files(hf) -> dict:
    with open(os.path.join(hf, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(hf, "tokenizer_config.json")) as f:
        tok_config = json.load(f)
    return {"config": config, "tokenizer_config": tok_config}


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin"])
def test_a_deployed_hugging_face_directory_loads_through_a_workers_store(tiny, tmp_path,
                                                                          layout):
    src = {"safetensors": lambda: tiny, "sharded": lambda: _sharded(tiny, tmp_path / "s"),
           "bin": lambda: _bin(tiny, tmp_path / "b")}[layout]()
    reg = Registry(tmp_path / "registry")
    info = reg.deploy("tiny", src)
    assert reg.names() == ["tiny"]
    assert os.path.isfile(tmp_path / "registry" / "tiny.ckpt.pack")
    assert info["source_format"] == ("torch" if layout == "bin" else "safetensors")
    assert info["architecture"] == "LlamaForCausalLM" and info["model_type"] == "llama"
    assert info["tensors"] == len(_weights(tiny)) and info["chat_template"]
    assert info["parameters"] == sum(t.numel() for t in _weights(tiny).values())

    loaded = _load(reg, tmp_path, "tiny")
    assert loaded.tier == "registry"
    _same(loaded.tensors, _weights(tiny))
    meta = reg.tier().index("tiny").metadata
    assert set(FILES) <= set(meta)
    expected = _meta_files(tiny)
    assert json.loads(meta[META_CONFIG]) == expected["config"]
    assert json.loads(meta[META_TOKENIZER_CONFIG]) == expected["tokenizer_config"]
    assert json.loads(meta[META_GENERATION_CONFIG])["eos_token_id"] == [1, 3]
    with open(os.path.join(tiny, "tokenizer.json")) as f:
        assert json.loads(meta[META_TOKENIZER]) == json.load(f)


def test_a_ckpt_directory_with_metadata_deploys_as_it_is(tiny, tmp_path):
    prepare(tiny, tmp_path / "c")
    for f in SIDE:  # prepare keeps the files beside the checkpoint too
        assert os.path.isfile(tmp_path / "c" / f)
    os.remove(tmp_path / "c" / "tokenizer.json")  # the metadata is enough
    reg = Registry(f"file://{tmp_path}/registry")
    reg.deploy("org/tiny", tmp_path / "c")
    assert reg.names() == ["org/tiny"]
    _same(_load(reg, tmp_path, "org/tiny").tensors, _weights(tiny))
    reg.remove("org/tiny")
    assert reg.names() == [] and not os.path.exists(tmp_path / "registry" / "org")


def test_a_plain_ckpt_directory_takes_its_files_from_beside_it(tiny, tmp_path):
    ckpt.convert(os.path.join(tiny, "model.safetensors"), tmp_path / "plain")
    reg = Registry(tmp_path / "registry")
    with pytest.raises(DeployError, match="config.json: missing"):
        reg.deploy("tiny", tmp_path / "plain")
    _copy_side(tiny, tmp_path / "plain", ("config.json",))
    with pytest.raises(DeployError, match="tokenizer.json: missing"):
        reg.deploy("tiny", tmp_path / "plain")
    assert reg.names() == []
    _copy_side(tiny, tmp_path / "plain", ("tokenizer.json",))
    info = reg.deploy("tiny", tmp_path / "plain")
    assert info["source_format"] == "safetensors"
    meta = reg.tier().index("tiny").metadata
    assert {META_CONFIG, META_TOKENIZER} <= set(meta) and META_TOKENIZER_CONFIG not in meta
    _same(_load(reg, tmp_path, "tiny").tensors, _weights(tiny))


def test_redeploy_replaces_and_a_failed_deploy_keeps_the_previous_version(tiny, tmp_path):
    reg = Registry(tmp_path / "registry")
    reg.deploy("m", tiny)
    doubled = _bin(tiny, tmp_path / "v2", scale=2.0)
    reg.deploy("m", doubled)
    v2 = {n: t * 2.0 for n, t in _weights(tiny).items()}
    _same(_load(reg, tmp_path, "m").tensors, v2)

    garbage = _copy_side(tiny, tmp_path / "garbage")
    with open(os.path.join(garbage, "model.safetensors"), "wb") as f:
        f.write(b"\x00garbage" * 100)
    with pytest.raises(ckpt.ConvertError, match="model.safetensors: not a recognised format"):
        reg.deploy("m", garbage)
    no_tokenizer = _copy_side(tiny, tmp_path / "no-tok", ("config.json",))
    shutil.copy(os.path.join(tiny, "model.safetensors"), no_tokenizer)
    with pytest.raises(DeployError, match="tokenizer.json: missing"):
        reg.deploy("m", no_tokenizer)
    assert reg.names() == ["m"]
    assert sorted(os.listdir(tmp_path / "registry")) == ["m.ckpt.pack"]
    _same(_load(reg, tmp_path, "m").tensors, v2)


def test_chat_template_jinja_is_folded_into_the_tokenizer_config(tiny, tmp_path):
    src = _copy_side(tiny, tmp_path / "hf")
    shutil.copy(os.path.join(tiny, "model.safetensors"), src)
    tok_config = _meta_files(tiny)["tokenizer_config"]
    template = tok_config.pop("chat_template")
    with open(os.path.join(src, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f)
    with open(os.path.join(src, "chat_template.jinja"), "w") as f:
        f.write(template)
    reg = Registry(tmp_path / "registry")
    reg.deploy("m", src)
    meta = reg.tier().index("m").metadata
    assert json.loads(meta[META_TOKENIZER_CONFIG])["chat_template"] == template


def _broken(tiny, dst, file, content):
    src = _copy_side(tiny, dst)
    shutil.copy(os.path.join(tiny, "model.safetensors"), src)
    with open(os.path.join(src, file), "wb") as f:
        f.write(content)
    return src


@pytest.mark.parametrize(("file", "content", "message"), [
    ("config.json", b"{not json", "config.json: not valid JSON"),
    ("config.json", b"[1]", "config.json: not a JSON object"),
    ("config.json", b" " * (2 << 20), r"config.json: 2097152 bytes, more than"),
    ("config.json", json.dumps({"model_type": "llama", "architectures": ["EvilForCausalLM"],
                                "vocab_size": 320}).encode(), "unsupported architecture"),
    ("config.json", json.dumps({"model_type": "no-such-model", "vocab_size": 320}).encode(),
     "model_type 'no-such-model' is no causal language model"),
    ("config.json", json.dumps({"model_type": "llama", "vocab_size": 100}).encode(),
     "more than the model's vocab_size 100"),
    ("tokenizer.json", b'{"model": 3}', "tokenizer.json: not a tokenizer"),
    ("tokenizer_config.json", b"\xff\xfe", "tokenizer_config.json: not valid JSON"),
])
def test_bad_input_is_refused_naming_the_file(tiny, tmp_path, file, content, message):
    src = _broken(tiny, tmp_path / "hf", file, content)
    reg = Registry(tmp_path / "registry")
    with pytest.raises(DeployError, match=message):
        reg.deploy("m", src)
    assert reg.names() == []


def test_not_a_model_directory(tmp_path):
    reg = Registry(tmp_path / "registry")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError, match="not a model directory"):
        reg.deploy("m", tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DeployError, match="not a directory"):
        reg.deploy("m", tmp_path / "file")
    with pytest.raises(DeployError, match="not a directory"):
        reg.deploy("m", tmp_path / "absent")


def test_names_remove_and_info(tiny, tmp_path):
    reg = Registry(tmp_path / "registry")
    assert reg.names() == []
    with pytest.raises(ckpt.ModelNameError):
        reg.deploy("../escape", tiny)
    with pytest.raises(ckpt.ModelNameError):
        reg.info("a/b/c")
    reg.deploy("b", tiny)
    reg.deploy("a", tiny)
    (tmp_path / "registry" / "stray.txt").write_text("not a model")
    assert reg.names() == ["a", "b"]
    info = reg.info("a")
    assert info["bytes"] == os.path.getsize(tmp_path / "registry" / "a.ckpt.pack")
    assert info["dtypes"] == ["float32"] and info["url"].endswith("/a.ckpt.pack")
    reg.remove("a")
    assert reg.names() == ["b"]
    with pytest.raises(ckpt.NotACheckpointError):
        reg.remove("a")
    with pytest.raises(ckpt.NotACheckpointError):
        reg.info("a")
    _same(_load(reg, tmp_path, "b").tensors, _weights(tiny))


def test_an_upload_that_fails_midway_keeps_the_previous_version(tiny, tmp_path, monkeypatch):
    import ckpt.tiers.remote

    reg = Registry(tmp_path / "registry")
    reg.deploy("m", tiny)

    def broken_pack(path, out):
        out.write(b"\x00" * 5000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.tiers.remote, "pack", broken_pack)
    with pytest.raises(ckpt.CheckpointIOError, match="upload failed"):
        reg.deploy("m", _bin(tiny, tmp_path / "v2", scale=2.0))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "registry")) == ["m.ckpt.pack"]
    _same(_load(reg, tmp_path, "m").tensors, _weights(tiny))


def test_a_tokenizer_too_big_for_the_checkpoint_index_is_refused(tiny, tmp_path, monkeypatch):
    import serving.registry

    monkeypatch.setattr(serving.registry, "_MAX_METADATA", 1000)
    with pytest.raises(DeployError, match=r"take \d+ bytes in the checkpoint index"):
        Registry(tmp_path / "registry").deploy("m", tiny)
