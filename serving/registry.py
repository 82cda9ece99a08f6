"""The model registry: models deployed by name into one ckpt remote tier, where workers find them.

    reg = Registry("/srv/models")                 # or "file:///srv/models", "s3://bucket/models"
    reg.deploy("llama-1b", "/downloads/Llama-3.2-1B")   # a Hugging Face directory, converted once
    store = ckpt.Store([ckpt.DiskTier("/nvme/ckpt", 100 << 30), reg.tier()])
    store.load("llama-1b")                        # first load streams it into the disk tier

Layout: under the base URL (a plain directory means file://DIR), model NAME is the single
object `NAME.ckpt.pack` (ckpt.tiers.remote.SUFFIX; "org/model" is `org/model.ckpt.pack`): the packed
form of a ckpt checkpoint whose index metadata carries config.json, tokenizer.json,
tokenizer_config.json and generation_config.json under the serving.protocol META_* keys, so
whichever tier serves a load has them. Nothing else lives there, so `ckpt.RemoteTier(URL)` is
the whole read side. Publishing writes `NAME.ckpt.pack.uploading` and renames it over the old
object (RemoteTier.put): readers see the old version or the new one, never a mix, and a deploy
that fails at any step (bad input, conversion, upload) leaves the previous version in place.
In a directory registry, deploy and remove of one name take the ckpt save lock of its object;
on other schemes run one deployer per name at a time.

What deploy accepts (bad input raises DeployError, a ckpt.ConvertError, naming what is wrong):
a Hugging Face model directory (config.json of a causal LM that transformers knows,
tokenizer.json, optional tokenizer_config.json and generation_config.json; weights as
model.safetensors, sharded safetensors with model.safetensors.index.json, or
pytorch_model*.bin), converted by ckpt.convert into a staging directory; or a ckpt checkpoint
directory, whose META_* metadata is taken as it is, and what it lacks is read from those files
beside its index. A tokenizer_config.json whose chat template lives in chat_template.jinja (the
transformers 5 convention) or chat_template.json gets the template folded in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping

from ckpt import atomic
from ckpt.convert import convert
from ckpt.errors import CheckpointIOError, ConvertError, NotACheckpointError
from ckpt.format import INDEX_FILE, MAX_INDEX_BYTES, Index
from ckpt.source import read_index
from ckpt.tiers.disk import check_name
from ckpt.tiers.remote import SUFFIX, RemoteTier
from serving.protocol import (
    META_CONFIG,
    META_GENERATION_CONFIG,
    META_TOKENIZER,
    META_TOKENIZER_CONFIG,
)

__all__ = ["FILES", "DeployError", "Registry", "prepare"]

#: metadata key -> the Hugging Face file it holds (the first two are required)
FILES = {META_CONFIG: "config.json", META_TOKENIZER: "tokenizer.json",
         META_TOKENIZER_CONFIG: "tokenizer_config.json",
         META_GENERATION_CONFIG: "generation_config.json"}
_REQUIRED = (META_CONFIG, META_TOKENIZER)
_MAX_JSON = 1 << 20  # config, tokenizer_config, generation_config, chat template
_MAX_TOKENIZER_FILE = 2 * MAX_INDEX_BYTES  # pretty-printed; stored compact
#: the META_* texts share the checkpoint index (MAX_INDEX_BYTES) with the tensor table, which
#: is ~200 bytes a tensor: 2 MiB are left for ~10k tensors
_MAX_METADATA = MAX_INDEX_BYTES - (2 << 20)


class DeployError(ConvertError):
    """A model that cannot be deployed: the message names the file and what is wrong."""


class Registry:
    """Deployed models under one base URL or directory (see the module docstring for the
    layout). storage_options go to fsspec; staging (conversions) happens under work_dir
    (default: the system's temporary directory) and is removed afterwards."""

    def __init__(self, url_or_dir: str | os.PathLike, *, storage_options: dict | None = None,
                 work_dir: str | os.PathLike | None = None):
        url = os.fspath(url_or_dir)
        if "://" not in url:
            url = "file://" + os.path.abspath(url)
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.work_dir = os.fspath(work_dir) if work_dir is not None else None
        self._remote = self.tier()

    def tier(self, **options) -> RemoteTier:
        """The ckpt tier of this registry, for the end of a worker's Store; options go to
        RemoteTier (name defaults to "registry", bandwidth, latency, timeouts)."""
        options.setdefault("name", "registry")
        options.setdefault("storage_options", self.storage_options)
        return RemoteTier(self.url, **options)

    def deploy(self, name: str, path: str | os.PathLike) -> dict:
        """Publish the model at path (Hugging Face or ckpt directory) as name; its info().

        Replaces a previous deployment of name only once the new one is complete. Raises
        ModelNameError for a bad name, DeployError (or another ConvertError) for bad input,
        CheckpointIOError when the registry cannot be written.
        """
        check_name(name)
        path = os.path.abspath(os.fspath(path))
        with self._locked(name):
            metadata = read_index(path).metadata if _is_checkpoint(path) else {}
            if _complete(metadata):  # a checkpoint that needs nothing added goes up as it is
                _check_metadata(metadata, path)
                self._publish(name, path)
            else:
                staging = tempfile.mkdtemp(prefix="bas-deploy-", dir=self.work_dir)
                try:
                    prepare(path, os.path.join(staging, "model"))
                    self._publish(name, os.path.join(staging, "model"))
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        return self.info(name)

    def names(self) -> list[str]:
        """The deployed models' names, sorted."""
        fs, base = self._fs()
        try:
            found = fs.find(base, maxdepth=2) if fs.exists(base) else []
        except Exception as exc:  # noqa: BLE001 - every transport has its own error types
            raise CheckpointIOError(getattr(exc, "errno", None) or errno.EIO,
                                    f"{self.url}: cannot list the registry: {exc}") from exc
        names = []
        for found_path in found:
            rel = found_path[len(base):].lstrip("/")
            if rel.endswith(SUFFIX):
                with contextlib.suppress(ValueError):  # someone else's file
                    names.append(check_name(rel[:-len(SUFFIX)]))
        return sorted(names)

    def remove(self, name: str) -> None:
        """Delete the deployment of name; NotACheckpointError if there is none."""
        check_name(name)
        fs, base = self._fs()
        target = f"{base}/{name}{SUFFIX}"
        with self._locked(name):
            if not fs.exists(target):
                raise NotACheckpointError(2, f"{self._remote.url_of(name)}: no model {name!r} "
                                          f"is deployed", name)
            fs.rm(target)
        if "/" in name and self._local() is not None:  # drop an emptied org/ directory
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(target))

    def info(self, name: str) -> dict:
        """What is deployed as name: url, bytes (the packed object), data_bytes, tensors,
        aliases, parameters, dtypes, source_format, architecture, model_type, chat_template
        (whether one is set). NotACheckpointError if name is not deployed."""
        check_name(name)
        index = self._remote.index(name)
        fs, base = self._fs()
        config = json.loads(index.metadata.get(META_CONFIG, "{}"))
        tok_config = json.loads(index.metadata.get(META_TOKENIZER_CONFIG, "{}"))
        parameters = 0
        for t in index.tensors:
            n = 1
            for d in t.shape:
                n *= d
            parameters += n
        return {
            "name": name,
            "url": self._remote.url_of(name),
            "bytes": fs.size(f"{base}/{name}{SUFFIX}"),
            "data_bytes": index.total_bytes,
            "tensors": len(index.tensors),
            "aliases": len(index.aliases),
            "parameters": parameters,
            "dtypes": sorted({t.dtype for t in index.tensors}),
            "source_format": index.metadata.get("source_format", "ckpt"),
            "architecture": (config.get("architectures") or [None])[0],
            "model_type": config.get("model_type"),
            "chat_template": bool(tok_config.get("chat_template")),
        }

    # -- private ---------------------------------------------------------------------------

    def _publish(self, name: str, checkpoint: str) -> None:
        try:
            self._remote.put(name, checkpoint)
        except BaseException:
            fs, base = self._fs()
            with contextlib.suppress(Exception):  # the partial upload RemoteTier.put leaves
                fs.rm(f"{base}/{name}{SUFFIX}.uploading")
            raise

    def _fs(self):
        try:
            import fsspec.core
        except ImportError as exc:
            raise CheckpointIOError(errno.ENOPKG, f"{self.url}: the registry needs fsspec "
                                    f"(pip install 'bas[remote]')") from exc
        fs, base = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs, base.rstrip("/")

    def _local(self) -> str | None:
        return self.url[len("file://"):] if self.url.startswith("file://") else None

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        local = self._local()
        if local is None:
            yield
            return
        target = os.path.join(local, name + SUFFIX)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with atomic.lock(target):
            yield


def prepare(src: str | os.PathLike, dst: str | os.PathLike) -> Index:
    """Build at dst a ckpt checkpoint of the model at src that carries the META_* metadata,
    with config.json, tokenizer.json, ... also beside its index; its index.

    src: a Hugging Face model directory (converted with ckpt.convert) or a ckpt checkpoint
    directory (its partitions copied, its index given the missing metadata). DeployError
    naming the file for bad input.
    """
    src, dst = os.path.abspath(os.fspath(src)), os.path.abspath(os.fspath(dst))
    if not os.path.isdir(src):
        raise DeployError(f"{src}: not a directory (deploy a Hugging Face model directory or "
                          f"a ckpt checkpoint directory)")
    if _is_checkpoint(src):
        index = read_index(src)
        metadata = _gather(src, index.metadata)
        _check_metadata(metadata, src)
        index = _copy_checkpoint(src, index, metadata, dst)
    else:
        if not os.path.isfile(os.path.join(src, FILES[META_CONFIG])):
            raise DeployError(f"{src}: not a model directory: no config.json (a Hugging Face "
                              f"model directory) and no {INDEX_FILE} (a ckpt checkpoint)")
        metadata = _gather(src, {})
        _check_metadata(metadata, src)
        index = convert(src, dst, metadata=metadata)
    for key, file in FILES.items():
        if key in metadata:
            with open(os.path.join(dst, file), "w", encoding="utf-8") as f:
                f.write(metadata[key])
    return index


def _is_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, INDEX_FILE))


def _complete(metadata: Mapping[str, str]) -> bool:
    return all(key in metadata for key in _REQUIRED)


def _gather(directory: str, metadata: Mapping[str, str]) -> dict[str, str]:
    """metadata plus the META_* texts it lacks, read from the files in directory."""
    out = dict(metadata)
    for key, file in FILES.items():
        path = os.path.join(directory, file)
        if key in out:
            continue
        if not os.path.isfile(path):
            if key in _REQUIRED:
                raise DeployError(f"{path}: missing (a deployed model needs {file}; a ckpt "
                                  f"checkpoint may carry it as metadata {key!r} instead)")
            continue
        limit = _MAX_TOKENIZER_FILE if key == META_TOKENIZER else _MAX_JSON
        doc = _read_json(path, limit)
        if key == META_TOKENIZER_CONFIG:
            doc = _fold_chat_template(doc, directory)
        # compact, keys in file order (sorted for config.json, as ckpt.convert keeps it)
        out[key] = json.dumps(doc, ensure_ascii=False, sort_keys=key == META_CONFIG,
                              separators=(",", ":") if key == META_TOKENIZER else None)
    return out


def _read_json(path: str, limit: int) -> dict:
    try:
        size = os.path.getsize(path)
        if size > limit:
            raise DeployError(f"{path}: {size} bytes, more than the {limit} this file may have")
        with open(path, "rb") as f:
            doc = json.loads(f.read(limit + 1).decode("utf-8-sig"))
    except DeployError:
        raise
    except OSError as exc:
        raise DeployError(f"{path}: cannot read ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors
        raise DeployError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DeployError(f"{path}: not a JSON object but a {type(doc).__name__}")
    return doc


def _fold_chat_template(doc: dict, directory: str) -> dict:
    if doc.get("chat_template"):
        return doc
    jinja = os.path.join(directory, "chat_template.jinja")
    if os.path.isfile(jinja):
        try:
            with open(jinja, "rb") as f:
                data = f.read(_MAX_JSON + 1)
            if len(data) > _MAX_JSON:
                raise DeployError(f"{jinja}: more than {_MAX_JSON} bytes")
            return {**doc, "chat_template": data.decode("utf-8")}
        except UnicodeDecodeError as exc:
            raise DeployError(f"{jinja}: not UTF-8 text ({exc})") from None
    legacy = os.path.join(directory, "chat_template.json")
    if os.path.isfile(legacy):
        template = _read_json(legacy, _MAX_JSON).get("chat_template")
        if not isinstance(template, (str, list)):
            raise DeployError(f"{legacy}: no \"chat_template\" string")
        return {**doc, "chat_template": template}
    return doc


def _check_metadata(metadata: Mapping[str, str], where: str) -> None:
    """DeployError unless the META_* texts describe a model this server can run."""
    for key in _REQUIRED:
        if key not in metadata:
            raise DeployError(f"{where}: no {FILES[key]} (neither as metadata {key!r} nor as "
                              f"a file beside the checkpoint)")
    # what they take in the index: JSON strings inside its JSON, so quotes count twice
    total = sum(len(json.dumps(metadata[k], ensure_ascii=False).encode())
                for k in FILES if k in metadata)
    if total > _MAX_METADATA:
        raise DeployError(f"{where}: config and tokenizer files take {total} bytes in the "
                          f"checkpoint index, which holds at most {_MAX_METADATA} of them")
    docs = {}
    for key in FILES:
        if key in metadata:
            try:
                docs[key] = json.loads(metadata[key])
            except (ValueError, RecursionError) as exc:
                raise DeployError(f"{where}: {FILES[key]} is not valid JSON ({exc})") from None
            if not isinstance(docs[key], dict):
                raise DeployError(f"{where}: {FILES[key]} is not a JSON object")
    _check_config(docs[META_CONFIG], f"{where}: config.json")
    _check_tokenizer(metadata[META_TOKENIZER], docs[META_CONFIG], f"{where}: tokenizer.json")


def _check_config(config: dict, where: str) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise DeployError(f"{where}: no \"model_type\" (not a transformers model config)")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise DeployError(f"{where}: model_type {model_type!r} is no causal language model "
                          f"that transformers can build (custom code is not run)")
    known = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]
    known = {known} if isinstance(known, str) else set(known)
    architectures = config.get("architectures")
    if architectures is not None and not (isinstance(architectures, list) and any(
            isinstance(a, str) and a in known for a in architectures)):
        raise DeployError(f"{where}: unsupported architecture {architectures!r} (a "
                          f"{model_type!r} model here is one of {sorted(known)})")
    if _vocab_size(config) is None:
        raise DeployError(f"{where}: no positive integer \"vocab_size\"")


def _vocab_size(config: dict) -> int | None:
    text = config.get("text_config")  # multimodal configs keep the language model's apart
    vocab = config.get("vocab_size", text.get("vocab_size") if isinstance(text, dict) else None)
    return vocab if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0 else None


def _check_tokenizer(text: str, config: dict, where: str) -> None:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001 - the Rust parser's errors have no useful type
        raise DeployError(f"{where}: not a tokenizer the tokenizers library reads "
                          f"({exc})") from None
    vocab = _vocab_size(config)
    if tokenizer.get_vocab_size() > vocab:
        raise DeployError(f"{where}: {tokenizer.get_vocab_size()} tokens, more than the "
                          f"model's vocab_size {vocab} (token ids would fall outside its "
                          f"embedding)")


def _copy_checkpoint(src: str, index: Index, metadata: dict[str, str], dst: str) -> Index:
    """A copy of the checkpoint at src whose index carries metadata: partitions hard-linked
    (copied across file systems), the index rewritten."""
    new = dataclasses.replace(index, metadata=dict(metadata))
    data = new.encode()  # IndexTooLargeError before anything is written
    if os.path.lexists(dst):
        raise DeployError(f"{dst}: exists")
    os.makedirs(dst)
    for p in index.partitions:
        s, d = os.path.join(src, p.file), os.path.join(dst, p.file)
        try:
            os.link(s, d)
        except OSError:
            shutil.copyfile(s, d)
    with open(os.path.join(dst, INDEX_FILE), "wb") as f:
        f.write(data)
    return new
