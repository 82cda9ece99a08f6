"""A tiny language model for serving tests, built in code (nothing is downloaded): a byte-level
BPE tokenizer trained on a few KB of generated text and a 2-layer Llama with random weights."""

from __future__ import annotations

import json
import random

BOS, EOS = "<s>", "</s>"
SPECIAL_TOKENS = (BOS, EOS, "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2, 3
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_WORDS = ("the quick brown fox jumps over a lazy dog while storage engines persist bytes "
          "to devices and models decode tokens one after another in batches of requests "
          "naïve café déjà vu Привет мир 日本語 テキスト").split()


def corpus(nbytes: int = 6000, seed: int = 0) -> str:
    """Deterministic text of about nbytes, with multi-byte characters."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < nbytes:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))) + ".\n"
        out.append(line)
        size += len(line.encode())
    return "".join(out)


def tokenizer_json(vocab_size: int = 400) -> str:
    """tokenizer.json text: byte-level BPE, BOS prepended by encode(add_special_tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([corpus()], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A",
                                                       special_tokens=[(BOS, 0)])
    return tok.to_str()


def metadata(*, chat_template: str | None = CHAT_TEMPLATE, arch: str = "llama",
             vocab_size: int = 400) -> dict[str, str]:
    """Serving metadata (serving.protocol META_* keys) of the tiny model."""
    from serving.protocol import (
        META_CONFIG,
        META_GENERATION_CONFIG,
        META_TOKENIZER,
        META_TOKENIZER_CONFIG,
    )

    tok_config = {"bos_token": BOS, "eos_token": {"content": EOS, "special": True},
                  "pad_token": EOS}
    if chat_template is not None:
        tok_config["chat_template"] = chat_template
    return {
        META_CONFIG: config(arch, vocab_size).to_json_string(),
        META_TOKENIZER: tokenizer_json(vocab_size),
        META_TOKENIZER_CONFIG: json.dumps(tok_config),
        META_GENERATION_CONFIG: json.dumps({"eos_token_id": [1, 3]}),
    }


def config(arch: str = "llama", vocab_size: int = 400):
    """A tiny transformers config; weights drawn with std 0.3 so greedy output varies."""
    import transformers

    if arch == "llama":
        return transformers.LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            initializer_range=0.3, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
            pad_token_id=1)
    if arch == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=128,
            initializer_range=0.3, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    raise ValueError(arch)


def state_dict(arch: str = "llama", vocab_size: int = 400, seed: int = 0) -> dict:
    """Random weights of config(arch) as a checkpoint would hold them."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config(arch, vocab_size))
    return {k: v.detach() for k, v in model.state_dict().items()}
