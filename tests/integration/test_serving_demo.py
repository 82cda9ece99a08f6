"""serving.demo: the `make run` model directory, built in code (tiny here; full size once, slow)."""

import os

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from serving.demo import DEMO_CONFIG, FILES, main, make_demo
from serving.registry import Registry

TINY = {"vocab_size": 300, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}
TEXT = "Hello, wörld!\n\tdef f(x):  # ünïcode ✓ 😀\n        return x ** 2\n"


def _tiny(path, **kwargs) -> str:
    return make_demo(path, config_overrides=TINY, text_bytes=32 << 10, **kwargs)


def test_make_demo_is_idempotent_and_its_tokenizer_round_trips(tmp_path):
    path = _tiny(tmp_path / "demo")
    assert path == str(tmp_path / "demo")
    assert sorted(os.listdir(path)) == sorted(FILES)
    assert os.listdir(tmp_path) == ["demo"]  # no temporary left behind
    stamps = {f: os.stat(os.path.join(path, f)).st_mtime_ns for f in FILES}
    assert _tiny(tmp_path / "demo", seed=5) == path  # already there: untouched
    assert {f: os.stat(os.path.join(path, f)).st_mtime_ns for f in FILES} == stamps

    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    assert tok.get_vocab_size() == TINY["vocab_size"]
    ids = tok.encode(TEXT).ids
    assert ids[0] == 0 and tok.decode(ids) == TEXT  # bos first, then lossless bytes
    assert tok.token_to_id("<|im_end|>") == 3


def test_the_demo_loads_with_transformers_and_its_chat_template_renders(tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = _tiny(tmp_path / "demo")
    model = LlamaForCausalLM.from_pretrained(path)
    assert model.config.hidden_size == 16 and model.generation_config.eos_token_id == [1, 3]
    assert next(model.parameters()).dtype == torch.float32
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|begin_of_text|><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok(TEXT).input_ids, skip_special_tokens=True) == TEXT


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = load_file(os.path.join(_tiny(tmp_path / "a"), "model.safetensors"))
    b = load_file(os.path.join(_tiny(tmp_path / "b"), "model.safetensors"))
    c = load_file(os.path.join(_tiny(tmp_path / "c", seed=1), "model.safetensors"))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    with open(os.path.join(tmp_path, "a", "tokenizer.json"), "rb") as f, \
            open(os.path.join(tmp_path, "b", "tokenizer.json"), "rb") as g:
        assert f.read() == g.read()  # training is deterministic


def test_a_directory_that_is_not_the_demo_is_refused(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a demo model directory"):
        _tiny(tmp_path / "other")
    assert os.listdir(tmp_path / "other") == ["notes.txt"]


def test_the_demo_config_has_about_100m_parameters():
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**DEMO_CONFIG))
    assert sum(p.numel() for p in model.parameters()) == 97_536_768


@pytest.mark.slow
def test_the_full_demo_builds_and_deploys(tmp_path, capsys):
    assert main([str(tmp_path / "demo")]) == 0
    assert "built in" in capsys.readouterr().out
    info = Registry(tmp_path / "registry").deploy("demo", tmp_path / "demo")
    assert info["parameters"] == 97_536_768 and info["dtypes"] == ["float32"]
    assert main([str(tmp_path / "demo")]) == 0
    assert "exists" in capsys.readouterr().out
