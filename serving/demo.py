"""The demo model of `make run`: a ~98 M-parameter Llama with random weights, built in code.

    path = make_demo("/var/tmp/bas-demo")     # first call builds it (~20 s), later calls return
    python -m serving.demo DIR                # the same from a shell

The directory is a Hugging Face model directory (config.json, generation_config.json,
model.safetensors, tokenizer.json, tokenizer_config.json), so `serving.registry` deploys it
like any downloaded model. Nothing is downloaded: the weights are random (seeded, so the same
seed gives the same weights; the model talks nonsense) and the byte-level BPE tokenizer is
trained here on text every machine with Python has: /usr/share/common-licenses (if present)
and the standard library's .py sources, read in sorted order up to a fixed byte cap (the
tokenizer therefore depends on the Python version; the weights do not).

Size: DEMO_CONFIG (hidden 768, 12 layers of 12 heads, MLP 2048, vocabulary 8192, untied
output layer) has 97,536,768 parameters. They are stored in float32 (~390 MB): on CPUs
without bf16 arithmetic (AVX2-only machines, most laptops and CI runners) bf16 matrix
products are slower than fp32 ones, and fp32 keeps greedy decoding stable across batch
shapes (bf16 logits move by ~0.02 and flip argmaxes), which tests of batching and migration
compare; the price is twice the bytes of bf16 to load.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping

__all__ = ["BOS", "DEMO_CONFIG", "EOS", "FILES", "SPECIAL_TOKENS", "TEXT_BYTES", "make_demo"]

#: the LlamaConfig of the demo model (make_demo's config_overrides change any of it)
DEMO_CONFIG: dict = {
    "vocab_size": 8192,
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
#: ids 0.. in this order: bos, eos, then the chat markers (<|im_end|> ends a chat turn)
SPECIAL_TOKENS = (BOS, EOS, "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: bytes of text the tokenizer is trained on (a few MB: about a second or two of training)
TEXT_BYTES = 4 << 20
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json")
_LICENSES = "/usr/share/common-licenses"


def make_demo(directory: str | os.PathLike, *, seed: int = 0,
              config_overrides: Mapping | None = None, text_bytes: int = TEXT_BYTES,
              dtype: str = "float32") -> str:
    """The demo model directory at directory, built on the first call; its absolute path.

    Idempotent: a directory that already holds every file of FILES is returned as it is
    (whatever seed or overrides built it). The build happens in a temporary sibling that is
    renamed into place, so a crash leaves no half-built model and concurrent builders agree
    on one. config_overrides change DEMO_CONFIG (tests build tiny models with it); the
    tokenizer is trained up to its vocab_size on text_bytes of text. ValueError if directory
    exists and is neither the demo nor an empty directory.
    """
    path = os.path.abspath(os.fspath(directory))
    if _complete(path):
        return path
    if os.path.isdir(path) and os.listdir(path):
        raise ValueError(f"{path}: exists and is not a demo model directory (missing "
                         f"{[f for f in FILES if not os.path.isfile(os.path.join(path, f))]})")
    config = {**DEMO_CONFIG, **dict(config_overrides or {})}
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        _build(tmp, config, seed=seed, text_bytes=text_bytes, dtype=dtype)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the model from other users
        for name in FILES:
            os.chmod(os.path.join(tmp, name), 0o644)
        try:
            os.rename(tmp, path)  # replaces only an empty directory
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not _complete(path):
                raise
            # another builder won the race: keep its model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _complete(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in FILES)


def _build(out: str, config: dict, *, seed: int, text_bytes: int, dtype: str) -> None:
    tokenizer = _train_tokenizer(config["vocab_size"], text_bytes)
    if tokenizer.get_vocab_size() > config["vocab_size"]:
        raise ValueError(f"vocab_size {config['vocab_size']} is smaller than the "
                         f"{tokenizer.get_vocab_size()} tokens the tokenizer needs")
    tokenizer.save(os.path.join(out, "tokenizer.json"))
    _write_json(os.path.join(out, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    })
    _save_model(out, config, seed=seed, dtype=dtype)


def _save_model(out: str, config: dict, *, seed: int, dtype: str) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    cfg = LlamaConfig(**config, bos_token_id=ids[BOS], eos_token_id=ids[EOS],
                      pad_token_id=ids[EOS])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype)).eval()
    model.config.dtype = dtype
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=[ids[EOS], ids["<|im_end|>"]],
        pad_token_id=ids[EOS], do_sample=True, temperature=0.7, top_p=0.9)
    model.save_pretrained(out)


def _train_tokenizer(vocab_size: int, text_bytes: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_texts(text_bytes), trainer=trainer)
    # encode(..., add_special_tokens=True) starts with bos, as Llama tokenizers do
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)])
    return tok


def _texts(limit: int) -> Iterator[str]:
    """Up to limit bytes of UTF-8 text from this machine, in a fixed order."""
    left = limit
    for path in _text_files():
        if left <= 0:
            return
        try:
            with open(path, "rb") as f:
                data = f.read(left)
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):  # unreadable, or cut inside a character
            continue
        left -= len(data)
        yield text


def _text_files() -> Iterator[str]:
    for root in (_LICENSES, sysconfig.get_paths()["stdlib"]):
        for top, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages",
                                                          "__pycache__"))
            for name in sorted(files):
                if root == _LICENSES or name.endswith(".py"):
                    yield os.path.join(top, name)


def _write_json(path: str, doc: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.demo", description=__doc__.split(
        "\n", 1)[0])
    parser.add_argument("directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    existed = _complete(os.path.abspath(args.directory))
    path = make_demo(args.directory, seed=args.seed)
    what = "exists" if existed else f"built in {time.perf_counter() - start:.1f} s"
    print(f"demo model {path}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
