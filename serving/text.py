"""The tokenizer side of a served model: prompts and chats to token ids, token ids back to text.

    text = Text.from_metadata(loaded.metadata)
    ids = text.chat([{"role": "user", "content": "Hi"}])
    detok, stops = text.detokenizer(ids), StopStrings(("\\n\\n",))
    delta = stops.feed(detok.feed(token_id))        # per generated token; "" while held back

Only the `tokenizers` library and jinja2 are used (no transformers import). Chat templates are
rendered the way transformers renders them (same jinja environment, filters and globals).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from serving.protocol import (
    META_CONFIG,
    META_GENERATION_CONFIG,
    META_TOKENIZER,
    META_TOKENIZER_CONFIG,
    ServingError,
)

__all__ = ["Detokenizer", "StopStrings", "Text"]

_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
            "mask_token")
_CONTEXT = 5  # prompt tokens a detokenizer starts from, so the first delta is spaced right


class Text:
    """A tokenizer with its chat template and end-of-sequence ids. Thread-safe (read-only)."""

    def __init__(self, tokenizer_json: str, tokenizer_config: Mapping | None = None,
                 generation_config: Mapping | None = None, model_config: Mapping | None = None):
        """tokenizer_json: tokenizer.json text; the others: the parsed JSON files, if any."""
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tokenizer_json)
        config = dict(tokenizer_config or {})
        self.special: dict[str, str] = {}  # bos_token etc. as the chat template sees them
        for name in _SPECIAL:
            value = config.get(name)
            if isinstance(value, dict):  # an AddedToken written out
                value = value.get("content")
            if isinstance(value, str):
                self.special[name] = value
        self.chat_template: str | None = _pick_template(config.get("chat_template"))
        self._compiled = None
        eos: set[int] = set()
        for source in (generation_config or {}, model_config or {}):
            value = source.get("eos_token_id")
            eos.update([value] if isinstance(value, int) else [v for v in value or ()
                                                               if isinstance(v, int)])
        if "eos_token" in self.special:
            found = self._tok.token_to_id(self.special["eos_token"])
            if found is not None:
                eos.add(found)
        self.eos_ids: frozenset[int] = frozenset(eos)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Text:
        """From checkpoint metadata (META_* keys); META_TOKENIZER is required."""
        if META_TOKENIZER not in metadata:
            raise ServingError(500, f"checkpoint metadata has no tokenizer ({META_TOKENIZER!r})")

        def parsed(key):
            return json.loads(metadata[key]) if key in metadata else None

        return cls(metadata[META_TOKENIZER], parsed(META_TOKENIZER_CONFIG),
                   parsed(META_GENERATION_CONFIG), parsed(META_CONFIG))

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to vocab_size - 1 (added tokens included)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, prompt: str, *, add_special_tokens: bool = True) -> list[int]:
        """A completion prompt's token ids (the tokenizer's BOS etc. added, as transformers)."""
        return self._tok.encode(prompt, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens left out."""
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def render(self, messages: Sequence[Mapping]) -> str:
        """The chat as the model sees it, ending where the assistant's answer starts.

        Raises ServingError(400) when the template refuses the messages (raise_exception).
        """
        if self.chat_template is None:
            return "".join(f"{m['role']}: {_content(m.get('content'))}\n"
                           for m in messages) + "assistant:"
        import jinja2

        if self._compiled is None:
            self._compiled = _environment().from_string(self.chat_template)
        try:
            return self._compiled.render(messages=list(messages), add_generation_prompt=True,
                                         tools=None, documents=None, **self.special)
        except jinja2.TemplateError as exc:
            raise ServingError(400, f"chat template: {exc}") from exc

    def chat(self, messages: Sequence[Mapping]) -> list[int]:
        """Token ids of a chat: a template's text holds its special tokens itself."""
        text = self.render(messages)
        return self.encode(text, add_special_tokens=self.chat_template is None)

    def detokenizer(self, prompt_ids: Sequence[int] = ()) -> Detokenizer:
        """A fresh incremental decoder for the tokens generated after prompt_ids."""
        return Detokenizer(self._tok, prompt_ids)


def _pick_template(value) -> str | None:
    if isinstance(value, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default")
    return value if isinstance(value, str) and value else None


def _content(content) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _environment():
    """The jinja environment transformers renders chat templates in."""
    import jinja2
    import jinja2.ext  # loopcontrols: not loaded by `import jinja2` alone
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


class Detokenizer:
    """Token ids in, text deltas out; a character split over several tokens comes out whole.

    The tokens since the last complete text are decoded together with a few before them (so
    word-start spaces and byte-level pieces decode as in the full text); text that ends in an
    incomplete UTF-8 sequence (U+FFFD) is held until a later token completes it.
    """

    def __init__(self, tokenizer, prompt_ids: Sequence[int] = ()):
        self._tok = tokenizer
        self._ids: list[int] = list(prompt_ids[-_CONTEXT:])
        self._prefix = 0  # _ids[_prefix:_read] is context already given out
        self._read = len(self._ids)

    def feed(self, token_id: int) -> str:
        """The new text that token_id completes ("" while a character is incomplete)."""
        self._ids.append(token_id)
        before = self._decode(self._prefix, self._read)
        now = self._decode(self._prefix, len(self._ids))
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        if self._prefix > 4 * _CONTEXT:  # what lies before _prefix is never decoded again
            del self._ids[:self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return now[len(before):]

    def flush(self) -> str:
        """Whatever is held at the end of the output (incomplete bytes as U+FFFD)."""
        before = self._decode(self._prefix, self._read)
        now = self._decode(self._prefix, len(self._ids))
        self._prefix = self._read = len(self._ids)
        return now[len(before):] if len(now) > len(before) else ""

    def _decode(self, start: int, end: int) -> str:
        return self._tok.decode(self._ids[start:end], skip_special_tokens=True)


class StopStrings:
    """Cuts text before the first stop string to be complete; holds back text that may start one.

    feed() returns the text that is safe to give out; once a stop string is found, `hit` is
    it and everything from it on is dropped. flush() gives out what is held when the output
    ends for another reason.
    """

    def __init__(self, stops: Iterable[str] = ()):
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.hit: str | None = None

    def feed(self, text: str) -> str:
        if self.hit is not None:
            return ""
        if not self._stops:
            return text
        held = self._held + text
        # the stop string that is complete first, as it would be when fed char by char
        found = [(at + len(s), at, s) for s in self._stops if (at := held.find(s)) >= 0]
        if found:
            _, at, self.hit = min(found)
            self._held = ""
            return held[:at]
        keep = self._partial(held)
        self._held = held[len(held) - keep:] if keep else ""
        return held[:len(held) - keep]

    def flush(self) -> str:
        out, self._held = self._held, ""
        return out if self.hit is None else ""

    def _partial(self, text: str) -> int:
        """Length of the longest end of text that some stop string starts with."""
        longest = min(len(text), max(len(s) for s in self._stops) - 1)
        for n in range(longest, 0, -1):
            end = text[-n:]
            if any(s.startswith(end) for s in self._stops):
                return n
        return 0
