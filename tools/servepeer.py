"""The serving benchmarks' peers, each run as its own process.

    python tools/servepeer.py hf-serve [transformers serve options...]
    python tools/servepeer.py hf-process MODEL_DIR MAX_NEW_TOKENS SPAWNED_AT PROMPT

hf-serve is `transformers serve` itself (its own command-line entry point, options passed
through) with one wrapper added: its model manager's load and unload print a line
`BENCH-LOAD {"start": T0, "end": T1}` / `BENCH-UNLOAD {"at": T}` (time.time()) on stderr,
so the harness can split a cold request's time to first token into waiting, loading and the
first token. The wrapper only reads the clock around the calls; what it wraps runs unchanged.

hf-process is a fresh process that does what a script without a server does: import torch and
transformers, AutoTokenizer + AutoModelForCausalLM.from_pretrained, the chat template around
PROMPT (one user message), then generate(max_new_tokens=MAX_NEW_TOKENS, greedy). It prints
one JSON object: import_seconds, load_seconds (both from_pretrained calls),
first_token_seconds (the generate call), `seconds` (load + first token: the in-process time)
and ttft (from SPAWNED_AT, the parent's time.time() just before it spawned this process, to
the end of generate).
"""

from __future__ import annotations

import json
import sys
import time


def _hf_serve(argv: list[str]) -> None:
    from transformers.cli.serving import model_manager as mm

    load = mm.ModelManager.load_model_and_processor
    delete = mm.TimedModel.delete_model

    def timed_load(self, key, *args, **kwargs):
        cached = key in self.loaded_models
        start = time.time()
        out = load(self, key, *args, **kwargs)
        if not cached:
            _say("BENCH-LOAD", {"model": key, "start": start, "end": time.time()})
        return out

    def timed_delete(self):
        had = getattr(self, "model", None) is not None
        delete(self)
        if had:
            _say("BENCH-UNLOAD", {"at": time.time()})

    mm.ModelManager.load_model_and_processor = timed_load
    mm.TimedModel.delete_model = timed_delete

    from transformers.cli.transformers import app

    sys.argv = ["transformers", "serve", *argv]
    app()


def _say(tag: str, doc: dict) -> None:
    # one write: stderr is unbuffered here, and print() would write the newline separately,
    # leaving room for another thread's log line in between
    sys.stderr.write(f"{tag} {json.dumps(doc)}\n")
    sys.stderr.flush()


def _hf_process(model_dir: str, max_new_tokens: int, spawned_at: float, prompt: str) -> dict:
    start = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    imported = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    loaded = time.perf_counter()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    done = time.perf_counter()
    ttft = time.time() - spawned_at
    return dict(import_seconds=imported - start, load_seconds=loaded - imported,
                first_token_seconds=done - loaded, seconds=done - imported, ttft=ttft,
                output_tokens=int(out.shape[-1] - inputs["input_ids"].shape[-1]),
                dtype=str(model.dtype).removeprefix("torch."),
                torch_threads=torch.get_num_threads())


def main(argv: list[str]) -> int:
    if argv[:1] == ["hf-serve"]:
        _hf_serve(argv[1:])
        return 0
    if argv[:1] == ["hf-process"] and len(argv) == 5:
        print(json.dumps(_hf_process(argv[1], int(argv[2]), float(argv[3]), argv[4])))
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
