"""The serving layer's configuration: one dataclass, loaded from YAML, with overrides on top.

    config = load_config("deploy.yaml", port=9000, models=["tiny=/models/tiny"])

    # deploy.yaml
    port: 8343
    workers: 2
    dram_per_worker: 2GiB
    models:
      - name: tiny
        path: /models/tiny          # a Hugging Face directory, deployed into the registry
        min_instances: 0
        keep_alive: 60

Sizes take a number of bytes or a string such as "512MiB", "2GiB", "1.5GB"; durations are
seconds. Every error is a ConfigError (a ValueError) that names the bad key and value.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from serving.policy import POLICIES

__all__ = ["Config", "ConfigError", "ModelSpec", "load_config", "parse_model_arg",
           "parse_size"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20,
          "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*$")


#: where workers run: "local" (processes on this machine, serving.process) or "ray" (actors
#: on a Ray cluster's nodes, serving.rayworker; needs the bas[ray] extra)
BACKENDS = ("local", "ray")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


def parse_size(value: Any, key: str = "size") -> int:
    """Bytes of value: an int, or a string like "2GiB" / "500MB" / "1024"."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size such as 2GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key}: a size must not be negative, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ConfigError(f"{key}: expected a size such as 2GiB, 512MiB or a number of bytes, "
                      f"got {value!r}")


@dataclass
class ModelSpec:
    """One deployed model and its autoscaling bounds.

    path: a Hugging Face model directory (or a ckpt directory) to deploy into the registry at
    start-up; None when the registry already holds name. target_concurrency: requests one
    instance serves at a time (the engine batches them); more start another instance, up to
    max_instances, else they queue (at most queue_limit, then 429; 0: no queue, and a model
    without an instance starts one while refusing). keep_alive: seconds an
    idle instance stays loaded (min_instances of them always do). max_prompt_tokens None: the
    model's context length.
    """

    name: str
    path: str | None = None
    min_instances: int = 0
    max_instances: int = 8  # scale out with the load, one instance per worker at most
    target_concurrency: int = 8
    keep_alive: float = 300.0
    max_prompt_tokens: int | None = None
    max_tokens: int = 2048
    queue_limit: int = 64

    def __post_init__(self) -> None:
        where = f"models[{self.name!r}]"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"models: a model needs a non-empty name, got {self.name!r}")
        for key in ("min_instances", "max_instances", "target_concurrency", "max_tokens",
                    "queue_limit"):
            _check_int(getattr(self, key), f"{where}.{key}",
                       minimum=0 if key in ("min_instances", "queue_limit") else 1)
        if self.max_prompt_tokens is not None:
            _check_int(self.max_prompt_tokens, f"{where}.max_prompt_tokens", minimum=1)
        if self.min_instances > self.max_instances:
            raise ConfigError(f"{where}.min_instances: {self.min_instances} is more than "
                              f"max_instances {self.max_instances}")
        self.keep_alive = _check_seconds(self.keep_alive, f"{where}.keep_alive")
        if self.path is not None and not isinstance(self.path, str | os.PathLike):
            raise ConfigError(f"{where}.path: expected a path, got {self.path!r}")
        if self.path is not None:
            self.path = os.fspath(self.path)


@dataclass
class Config:
    """Everything `serving.run` needs; defaults serve one machine on 127.0.0.1:8343.

    store: the root of the local state (STORE/registry, STORE/workers/I); registry: the
    registry's directory or URL (default STORE/registry); registry_bandwidth: bytes/s of the
    link to it (e.g. "1.25GB" for 10 Gbit/s), the first estimate of a registry load until
    loads are observed (None: ckpt's RemoteTier default). policy: the serving.policy that
    places cold starts ("locality", "locality+migration", "random", "least-loaded"). Each
    worker stands for one server with its own DRAM tier (dram_per_worker bytes, 0 for
    none) and disk tier (disk_per_worker bytes under STORE/workers/I). backend "ray": every
    worker is a Ray actor on a node of the cluster at address, holding one of its server
    slots, with its tiers on that node (serving.rayworker). heartbeat: seconds
    between "wait" events of a request held up by a cold start or a queue.
    """

    host: str = "127.0.0.1"
    port: int = 8343
    workers: int = 2
    api_key: str | None = None
    store: str = "./serving-store"
    registry: str | None = None
    registry_bandwidth: int | None = None  # bytes/s of the link to it; None: the tier's default
    dram_per_worker: int = 4 << 30
    disk_per_worker: int = 64 << 30
    max_body_bytes: int = 1 << 20
    request_timeout: float = 600.0
    shutdown_grace: float = 30.0
    heartbeat: float = 3.0
    threads_per_worker: int | None = None  # None: cores // workers, at least 1
    device: str = "cpu"
    policy: str = "locality"  # serving.policy.POLICIES: where cold starts go
    backend: str = "local"  # BACKENDS: worker processes here, or Ray actors on a cluster
    address: str | None = None  # backend "ray": the cluster (None: a Ray instance here)
    models: list[ModelSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host: expected a host name or address, got {self.host!r}")
        _check_int(self.port, "port", minimum=0)
        if self.port > 65535:
            raise ConfigError(f"port: {self.port} is not a TCP port")
        _check_int(self.workers, "workers", minimum=1)
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ConfigError("api_key: expected a non-empty string")
        for key in ("dram_per_worker", "disk_per_worker", "max_body_bytes"):
            setattr(self, key, parse_size(getattr(self, key), key))
        if self.registry_bandwidth is not None:
            self.registry_bandwidth = parse_size(self.registry_bandwidth, "registry_bandwidth")
            if self.registry_bandwidth == 0:
                raise ConfigError("registry_bandwidth: must be more than 0 bytes/s")
        for key in ("request_timeout", "shutdown_grace", "heartbeat"):
            setattr(self, key, _check_seconds(getattr(self, key), key))
        if self.heartbeat <= 0:
            raise ConfigError(f"heartbeat: must be more than 0, got {self.heartbeat}")
        if self.threads_per_worker is not None:
            _check_int(self.threads_per_worker, "threads_per_worker", minimum=1)
        if not isinstance(self.policy, str) or self.policy not in POLICIES:
            raise ConfigError(f"policy: {self.policy!r} is not a placement policy; known: "
                              f"{sorted(POLICIES)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: {self.backend!r} is not a backend; known: {BACKENDS}")
        if self.address is not None and (self.backend != "ray" or not isinstance(
                self.address, str) or not self.address):
            raise ConfigError(f"address: {self.address!r}: a Ray cluster's address (such as "
                              f"auto or HOST:6379), for backend: ray only")
        self.store = os.fspath(self.store)
        if self.registry is not None:
            self.registry = os.fspath(self.registry)
        models = [m if isinstance(m, ModelSpec) else _model(m, i)
                  for i, m in enumerate(self.models or [])]
        names = [m.name for m in models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"models: {dup} deployed more than once")
        self.models = models

    @property
    def registry_location(self) -> str:
        """The registry's directory or URL."""
        return self.registry or os.path.join(self.store, "registry")

    def worker_dir(self, index: int) -> str:
        """The local disk tier of worker index."""
        return os.path.join(self.store, "workers", str(index))

    def threads(self) -> int:
        """torch threads of one worker, so that workers do not fight over cores."""
        if self.threads_per_worker is not None:
            return self.threads_per_worker
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        return max(1, cores // self.workers)

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> Config:
    """A Config from the YAML file at path (if any), with overrides (None values ignored).

    overrides["models"] may hold ModelSpecs, dicts or "NAME=PATH" strings; they replace the
    file's entry of the same name (keeping its other settings) or are added.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(path)
    models = data.pop("models", None) or []
    if not isinstance(models, list):
        raise ConfigError(f"models: expected a list of models, got {type(models).__name__}")
    specs = [_model(m, i) for i, m in enumerate(models)]
    extra = overrides.pop("models", None) or []
    for item in extra:
        spec = parse_model_arg(item) if isinstance(item, str) else (
            item if isinstance(item, ModelSpec) else _model(item, len(specs)))
        old = next((i for i, s in enumerate(specs) if s.name == spec.name), None)
        if old is None:
            specs.append(spec)
        elif isinstance(item, str):  # NAME=PATH on the command line: only the path changes
            specs[old] = dataclasses.replace(specs[old], path=spec.path)
        else:
            specs[old] = spec
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
    return Config(**data, models=specs)


def parse_model_arg(text: str) -> ModelSpec:
    """ModelSpec of a command line's NAME=PATH."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--model: expected NAME=PATH, got {text!r}")
    return ModelSpec(name=name, path=path)


def _read_yaml(path) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"config file {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {os.fspath(path)!r}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {os.fspath(path)!r}: expected a mapping of settings, "
                          f"got {type(data).__name__}")
    return data


def _model(item: Any, i: int) -> ModelSpec:
    if not isinstance(item, dict):
        raise ConfigError(f"models[{i}]: expected a mapping with name and path, got {item!r}")
    known = {f.name for f in dataclasses.fields(ModelSpec)}
    unknown = sorted(set(item) - known)
    if unknown:
        raise ConfigError(f"models[{i}] ({item.get('name')!r}): unknown setting(s) {unknown}; "
                          f"known: {sorted(known)}")
    if "name" not in item:
        raise ConfigError(f"models[{i}]: a model needs a name")
    return ModelSpec(**item)


def _check_int(value: Any, key: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}, got {value}")


def _check_seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(f"{key}: expected a number of seconds, got {value!r}")
    if value < 0:
        raise ConfigError(f"{key}: must not be negative, got {value}")
    return float(value)
