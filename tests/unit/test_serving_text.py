"""serving.text: encoding, chat templates, incremental detokenization, stop strings; and
serving.sampling's token picking (a tokenizer trained here, no model, no downloads)."""

from __future__ import annotations

import json

import pytest
import torch

from serving.protocol import META_TOKENIZER, META_TOKENIZER_CONFIG, SamplingParams, ServingError
from serving.sampling import check_params, new_generator, pick
from serving.text import StopStrings, Text
from tests import tinylm


@pytest.fixture(scope="module")
def metadata():
    return tinylm.metadata()


@pytest.fixture(scope="module")
def text(metadata):
    return Text.from_metadata(metadata)


@pytest.fixture(scope="module")
def plain(metadata):
    """The same tokenizer without a chat template or generation config."""
    return Text.from_metadata({META_TOKENIZER: metadata[META_TOKENIZER]})


def test_encode_adds_bos_and_decode_round_trips(text):
    ids = text.encode("the lazy dog naïve 日本語")
    assert ids[0] == 0 and 0 not in ids[1:]
    assert text.decode(ids) == "the lazy dog naïve 日本語"
    assert text.encode("dog", add_special_tokens=False)[0] != 0


def test_eos_ids_from_generation_and_tokenizer_config(text, plain):
    assert text.eos_ids == {1, 3}
    assert plain.eos_ids == frozenset()


def test_chat_renders_the_template_like_transformers(text):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    rendered = text.render(messages)
    assert rendered == ("<s><|im_start|>system\nbe brief<|im_end|>\n"
                        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    ids = text.chat(messages)
    assert ids == text.encode(rendered, add_special_tokens=False)
    assert ids[0] == 0 and ids.count(0) == 1  # the template's bos, not a second one
    assert ids.count(2) == 3 and ids.count(3) == 2  # chat markers are single special tokens


def test_chat_template_raise_exception_is_a_bad_request(text):
    with pytest.raises(ServingError) as info:
        text.chat([{"role": "robot", "content": "beep"}])
    assert info.value.status == 400 and "unknown role robot" in info.value.message


def test_chat_without_template_uses_role_lines(plain):
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}]
    assert plain.render(messages) == "user: hi\nassistant: yo\nassistant:"
    assert plain.chat(messages) == plain.encode("user: hi\nassistant: yo\nassistant:")


def test_named_templates_and_added_token_specials(metadata):
    config = {"chat_template": [{"name": "tool_use", "template": "T"},
                                {"name": "default", "template": "{{ eos_token }}D"}],
              "eos_token": {"content": "</s>"}}
    text = Text.from_metadata({META_TOKENIZER: metadata[META_TOKENIZER],
                               META_TOKENIZER_CONFIG: json.dumps(config)})
    assert text.render([]) == "</s>D"
    assert text.eos_ids == {1}


def test_detokenizer_gives_whole_utf8_characters(text):
    s = "naïve 日本語 テキスト Привет 🙂 déjà"
    ids = text.encode(s, add_special_tokens=False)
    # the test means something: some character is split over byte-level tokens
    assert any("\ufffd" in text.decode([i]) for i in ids)
    detok = text.detokenizer()
    deltas = [detok.feed(i) for i in ids]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) + detok.flush() == s


def test_detokenizer_after_a_prompt_matches_full_decode(text):
    prompt = text.encode("the quick brown")
    out = text.encode(" fox jumps over 日本語 café", add_special_tokens=False) + [1]
    detok = text.detokenizer(prompt)
    got = "".join(detok.feed(i) for i in out) + detok.flush()
    assert got == " fox jumps over 日本語 café"  # the end-of-sequence token adds no text


def test_detokenizer_flush_gives_incomplete_bytes_as_replacement(text):
    ids = text.encode("🙂", add_special_tokens=False)
    assert len(ids) > 1
    detok = text.detokenizer()
    assert detok.feed(ids[0]) == ""
    assert detok.flush() == text.decode(ids[:1])


def test_stop_string_across_pieces_is_cut_and_never_given_out():
    stops = StopStrings(["o W"])
    out = [stops.feed(p) for p in ["Hel", "lo", " ", "Wor", "ld"]]
    assert out == ["Hel", "l", "", "", ""]
    assert stops.hit == "o W" and stops.flush() == ""


def test_stop_strings_hold_back_only_what_may_start_one():
    stops = StopStrings(["END", "\n\n"])
    assert stops.feed("abcE") == "abc"
    assert stops.feed("Nx") == "ENx"  # "EN" then "x": not a stop after all
    assert stops.feed("y\n") == "y"
    assert stops.flush() == "\n" and stops.hit is None


def test_stop_strings_first_complete_match_wins_however_the_text_is_split():
    for pieces in (["abcdef"], ["abc", "def"], list("abcdef")):
        stops = StopStrings(["bcde", "cd"])
        assert "".join(stops.feed(p) for p in pieces) == "ab"
        assert stops.hit == "cd"
    assert StopStrings([]).feed("abc") == "abc"


def test_check_params_refuses_bad_values():
    assert check_params(SamplingParams()) is None
    for bad in (SamplingParams(max_tokens=0), SamplingParams(temperature=-1),
                SamplingParams(temperature=float("nan")), SamplingParams(top_p=0),
                SamplingParams(top_k=-1), SamplingParams(top_p=1.5)):
        assert check_params(bad) is not None


def test_pick_greedy_topk1_and_seeded_sampling():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    greedy = SamplingParams(temperature=0)
    top1 = SamplingParams(temperature=1.0, top_k=1, seed=1)
    tiny_p = SamplingParams(temperature=1.0, top_p=1e-6, seed=2)
    params = [greedy, top1, tiny_p]
    gens = [new_generator(p, torch.device("cpu")) for p in params]
    assert gens[0] is None
    assert pick(logits, params, gens) == logits.argmax(dim=-1).tolist()

    hot = SamplingParams(temperature=2.0, top_p=0.9, top_k=20, seed=5)

    def draws(seed_params, n=20):
        gen = new_generator(seed_params, torch.device("cpu"))
        return [pick(logits[:1], [seed_params], [gen])[0] for _ in range(n)]

    first = draws(hot)
    assert first == draws(hot) and len(set(first)) > 1
    assert first != draws(SamplingParams(temperature=2.0, top_p=0.9, top_k=20, seed=6))
    allowed = set(torch.topk(logits[0], 20).indices.tolist())
    assert set(first) <= allowed


def test_chat_template_renders_in_a_process_that_never_imported_transformers(tmp_path):
    """Regression: a worker or controller that had not imported transformers failed every chat
    request with AttributeError: module 'jinja2' has no attribute 'ext' (a 500)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from tokenizers import Tokenizer, models
        from serving.text import Text
        tok = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
        config = {"chat_template": "{% for m in messages %}{% if loop.first %}{% continue %}"
                                   "{% endif %}{{ m.content }}{% endfor %}"}
        text = Text(tok.to_str(), tokenizer_config=config)
        assert "transformers" not in sys.modules and "jinja2.ext" not in sys.modules
        print(text.render([{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "a"
