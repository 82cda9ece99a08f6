"""The controller's side of the registry: deploy once, versions, and each model's tokenizer.

    deployments = Deployments(config)
    version = deployments.ensure("tiny", "/models/tiny")   # converts only when path changed
    text, context = deployments.text("tiny")

A deploy converts a Hugging Face directory, which takes minutes for a large model, so a
start-up that names the same directory again skips it: STORE/deployed.json remembers, per
name, the source path, a fingerprint of its files (names, sizes, modification times) and the
version it became (serving.worker.version_of its index). Blocking calls (file I/O, the
conversion): the controller runs them in a thread.
"""

from __future__ import annotations

import json
import os
import threading

from serving.config import Config
from serving.protocol import META_CONFIG
from serving.worker import version_of

__all__ = ["Deployments"]

_STATE = "deployed.json"


class Deployments:
    """Registry operations for one controller (thread-safe)."""

    def __init__(self, config: Config):
        from serving.registry import Registry

        self.registry = Registry(config.registry_location)
        self._tier = self.registry.tier()
        self._state_path = os.path.join(config.store, _STATE)
        self._lock = threading.Lock()

    def ensure(self, name: str, path: str | None) -> str:
        """name deployed from path (None: it must be in the registry already); its version.

        Skips the conversion when the registry holds the version that the same, unchanged
        path gave before. Raises what Registry.deploy raises (DeployError, a ValueError),
        LookupError when path is None and name is not deployed.
        """
        with self._lock:
            if path is None:
                if not self._tier.holds(name):
                    raise LookupError(f"model {name!r}: no path given and the registry "
                                      f"{self.registry.url} does not hold it")
                return self.version(name)
            path = os.path.abspath(path)
            state = self._load()
            mark = {"path": path, "fingerprint": _fingerprint(path)}
            old = state.get(name)
            if old is not None and all(
                    old.get(k) == v for k, v in mark.items()) and self._tier.holds(name):
                version = self.version(name)
                if version == old.get("version"):
                    return version
            self.registry.deploy(name, path)
            version = self.version(name)
            state[name] = {**mark, "version": version}
            self._save(state)
            return version

    def version(self, name: str) -> str:
        return version_of(self._tier.index(name))

    def size(self, name: str) -> tuple[int, int]:
        """(bytes, tensors) of the deployed checkpoint, from its index (placement estimates)."""
        index = self._tier.index(name)
        return index.total_bytes, len(index.tensors) + len(index.aliases)

    def text(self, name: str):
        """(serving.text.Text, context length or None) of the deployed model."""
        from serving.text import Text

        metadata = self._tier.index(name).metadata
        return Text.from_metadata(metadata), _context(metadata)

    def remove(self, name: str) -> None:
        with self._lock:
            if self._tier.holds(name):
                self.registry.remove(name)
            state = self._load()
            if state.pop(name, None) is not None:
                self._save(state)

    def _load(self) -> dict:
        try:
            with open(self._state_path, encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _save(self, state: dict) -> None:
        os.makedirs(os.path.dirname(self._state_path) or ".", exist_ok=True)
        tmp = f"{self._state_path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, sort_keys=True)
        os.replace(tmp, self._state_path)


def _fingerprint(path: str) -> list:
    """Names, sizes and modification times of the files under path."""
    out = []
    for top, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(top, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            out.append([os.path.relpath(full, path), st.st_size, st.st_mtime_ns])
    return out


def _context(metadata) -> int | None:
    try:
        config = json.loads(metadata.get(META_CONFIG, "{}"))
    except ValueError:
        return None
    for doc in (config, config.get("text_config") or {}):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = doc.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None
