"""serving: a serverless OpenAI-compatible LLM server over ckpt's tiered checkpoint store.

    import serving
    serving.run(models=["tiny=/models/tiny"], workers=2)   # blocks until Ctrl-C / SIGTERM
    python -m serving.run --model tiny=/models/tiny
"""

__all__ = ["run"]


def __getattr__(name: str):
    if name == "run":  # imported on first use; the module itself is callable (serving/run.py)
        import importlib

        return importlib.import_module("serving.run")
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
