"""The MUST rules of docs/FORMAT.md as code: JSON schema first, then layout and names.

Each check raises the most specific FormatError subclass and names the offending tensor or
partition, so a rejected file tells its author what to fix. Every loop is linear in the index.
"""

from __future__ import annotations

from ckpt.errors import (
    AliasError,
    LayoutError,
    LengthMismatchError,
    PartitionNameError,
    SchemaError,
    ShapeError,
    UnsupportedDtypeError,
)
from ckpt.schema import (
    BLOCK,
    DTYPES,
    INDEX_FILE,
    MAX_ALIGNMENT,
    MAX_BYTES,
    MAX_CHUNK_SIZE,
    MAX_NAME_BYTES,
    MAX_NDIM,
    MIN_ALIGNMENT,
    MIN_CHUNK_SIZE,
    PARTITION_NAME,
    VERSION,
    IndexFields,
    Partition,
    TensorEntry,
    align_up,
)

__all__ = ["check_entry", "check_index", "index_from_json"]

_TOP = {"alignment", "chunk_size", "partitions", "tensors", "aliases", "metadata"}
_PART = {"file", "size", "crc32"}
_TENSOR = {"name", "dtype", "shape", "partition", "offset", "length"}


def index_from_json(doc, minor: int, source: str) -> IndexFields:
    """An Index from the parsed JSON document; rejects missing, unknown or mistyped fields.

    Only the JSON shape (objects, arrays, keys) is checked here; every value is checked by
    `check_index`, the one validator that the writer runs too, so what one accepts the other
    accepts.
    """
    lenient = minor > VERSION[1]  # a newer minor version may add optional keys: ignore them
    _keys(doc, _TOP, "the index", source, lenient)
    parts = []
    for i, p in enumerate(_list(doc["partitions"], "partitions", source)):
        _keys(p, _PART, f"partition {i}", source, lenient)
        parts.append(Partition(p["file"], p["size"],
                               tuple(_list(p["crc32"], f"partition {i} crc32", source))))
    tensors = []
    for i, t in enumerate(_list(doc["tensors"], "tensors", source)):
        _keys(t, _TENSOR, f"tensor {i}", source, lenient)
        tensors.append(TensorEntry(t["name"], t["dtype"],
                                   tuple(_list(t["shape"], f"tensor {i} shape", source)),
                                   t["partition"], t["offset"], t["length"]))
    for key in ("aliases", "metadata"):
        if not isinstance(doc[key], dict):
            raise SchemaError(f"{source}: {key} must be a JSON object")
    index = IndexFields(doc["alignment"], doc["chunk_size"], tuple(parts), tuple(tensors),
                        doc["aliases"], doc["metadata"])
    check_index(index, source)
    return index


def check_index(index: IndexFields, source: str = "index") -> None:
    """Raise a FormatError subclass unless the index obeys every MUST rule of the format.

    The one validator: the writer runs it before anything is published and the reader after
    parsing, so the writer accepts exactly what the reader accepts (types included: a float
    in the metadata or a 65-dimension shape is refused before a save touches the old version).
    """
    if not isinstance(index, IndexFields):
        raise SchemaError(f"{source}: not an Index but a {type(index).__name__}")
    a = _int(index.alignment, "alignment", source)
    chunk = _int(index.chunk_size, "chunk_size", source)
    for i, p in enumerate(index.partitions):
        _check_partition_fields(p, f"partition {i}", source)
    for i, t in enumerate(index.tensors):
        check_entry(t, source, f"tensor {i}")
    _str_map(index.aliases, "aliases", source)
    _str_map(index.metadata, "metadata", source)
    if not MIN_ALIGNMENT <= a <= MAX_ALIGNMENT or a & (a - 1):
        raise LayoutError(f"{source}: alignment {a} is not a power of two in "
                          f"[{MIN_ALIGNMENT}, {MAX_ALIGNMENT}]")
    if not MIN_CHUNK_SIZE <= chunk <= MAX_CHUNK_SIZE or chunk % BLOCK:
        raise LayoutError(f"{source}: chunk_size {chunk} is not a multiple of {BLOCK} in "
                          f"[{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    _check_partitions(index, source)
    names = set()
    ends = [0] * len(index.partitions)  # end of the last tensor placed in each partition
    counts = [0] * len(index.partitions)
    last_partition = 0
    for t in index.tensors:
        what = f"{source}: tensor {t.name!r}"
        _check_name(t.name, names, what, source)
        if t.dtype not in DTYPES:
            raise UnsupportedDtypeError(f"{what} has unknown dtype {t.dtype!r}")
        nbytes = _nbytes(t, what)
        if t.length != nbytes:
            raise LengthMismatchError(f"{what} is {t.length} bytes, but {t.dtype} x "
                                      f"{list(t.shape)} needs {nbytes}")
        if not 0 <= t.partition < len(index.partitions):
            raise LayoutError(f"{what} names partition {t.partition}, but there are "
                              f"{len(index.partitions)}")
        if t.partition < last_partition:
            raise LayoutError(f"{what} goes back to partition {t.partition}: tensors must be "
                              f"listed in storage (load) order")
        last_partition = t.partition
        expected = align_up(ends[t.partition], a)
        if t.offset != expected:
            kind = "overlaps the previous tensor" if t.offset < expected else "leaves a gap"
            raise LayoutError(f"{what} at offset {t.offset} {kind}: the canonical offset is "
                              f"{expected} (alignment {a})")
        size = index.partitions[t.partition].size
        if t.offset > size or t.length > size - t.offset:
            raise LayoutError(f"{what} [{t.offset}, {t.offset + t.length}) reaches past the "
                              f"{size} bytes of partition {t.partition}")
        ends[t.partition] = t.offset + t.length
        counts[t.partition] += 1
    for i, p in enumerate(index.partitions):
        if not counts[i]:
            raise LayoutError(f"{source}: partition {i} ({p.file}) holds no tensor")
        if p.size != align_up(ends[i], BLOCK):
            raise LayoutError(f"{source}: partition {i} ({p.file}) is {p.size} bytes; its "
                              f"tensors end at {ends[i]}, so it must be "
                              f"{align_up(ends[i], BLOCK)} (padded to {BLOCK})")
    tensor_names = set(names)
    for alias, target in index.aliases.items():
        if alias in tensor_names:
            raise AliasError(f"{source}: alias {alias!r} has the name of a stored tensor")
        _check_name(alias, names, f"{source}: alias {alias!r}", source)
        if target not in tensor_names:
            raise AliasError(f"{source}: alias {alias!r} points at {target!r}, which is not a "
                             f"stored tensor (aliases never chain)")


def check_entry(t: TensorEntry, source: str = "index", what: str | None = None) -> None:
    """The value types and ranges of one tensor entry (a writer checks each before its bytes)."""
    if not isinstance(t, TensorEntry):
        raise SchemaError(f"{source}: {what or 'tensor'} is a {type(t).__name__}, not a "
                          f"TensorEntry")
    name = _text(t.name, f"{what or 'tensor'} name", source)
    what = f"tensor {name!r}"
    _check_name(name, set(), f"{source}: {what}", source)
    _text(t.dtype, f"{what} dtype", source)
    if not isinstance(t.shape, (tuple, list)):
        raise SchemaError(f"{source}: {what} shape must be an array, got "
                          f"{type(t.shape).__name__}")
    if len(t.shape) > MAX_NDIM:
        raise ShapeError(f"{source}: {what} has {len(t.shape)} dimensions (at most {MAX_NDIM})")
    for d in t.shape:
        _int(d, f"{what} shape", source, negative_ok=True)
    _int(t.partition, f"{what} partition", source)
    _int(t.offset, f"{what} offset", source)
    _int(t.length, f"{what} length", source)
    if t.dtype in DTYPES:
        _nbytes(t, f"{source}: {what}")  # negative or too many elements: ShapeError


def _check_partition_fields(p: Partition, what: str, source: str) -> None:
    if not isinstance(p, Partition):
        raise SchemaError(f"{source}: {what} is a {type(p).__name__}, not a Partition")
    _text(p.file, f"{what} file", source)
    _int(p.size, f"{what} size", source)
    if not isinstance(p.crc32, (tuple, list)):
        raise SchemaError(f"{source}: {what} crc32 must be an array")
    for c in p.crc32:
        _int(c, f"{what} crc32", source)


def _check_partitions(index: IndexFields, source: str) -> None:
    seen = set()
    for i, p in enumerate(index.partitions):
        what = f"{source}: partition {i}"
        if not PARTITION_NAME.match(p.file) or p.file == INDEX_FILE or p.file in seen:
            raise PartitionNameError(f"{what} file name {p.file!r} is unsafe or repeated (one "
                                     f"plain name: letters, digits, '.', '_', '-')")
        seen.add(p.file)
        if not 0 <= p.size <= MAX_BYTES or p.size % BLOCK:
            raise LayoutError(f"{what} size {p.size} is not a multiple of {BLOCK} below "
                              f"{MAX_BYTES}")
        want = -(-p.size // index.chunk_size)
        if len(p.crc32) != want:
            raise LayoutError(f"{what} has {len(p.crc32)} checksums, its {p.size} bytes in "
                              f"chunks of {index.chunk_size} need {want}")
        if any(not 0 <= c < 1 << 32 for c in p.crc32):
            raise SchemaError(f"{what} has a checksum outside 32 bits")


def _check_name(name: str, seen: set, what: str, source: str) -> None:
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise SchemaError(f"{what}: name is not valid Unicode") from None
    if not 0 < size <= MAX_NAME_BYTES:
        raise SchemaError(f"{what}: names must be 1 to {MAX_NAME_BYTES} bytes")
    if name in seen:
        raise SchemaError(f"{what}: name used twice")
    seen.add(name)


def _nbytes(t: TensorEntry, what: str) -> int:
    n = DTYPES[t.dtype]
    for d in t.shape:
        if d < 0:
            raise ShapeError(f"{what} has a negative dimension in shape {list(t.shape)}")
    for d in t.shape:
        if d == 0:
            return 0
        n *= d
        if n > MAX_BYTES:
            raise ShapeError(f"{what}: shape {list(t.shape)} needs more than {MAX_BYTES} bytes")
    return n


def _keys(obj, allowed: set, what: str, source: str, lenient: bool) -> None:
    if not isinstance(obj, dict):
        raise SchemaError(f"{source}: {what} must be a JSON object")
    missing = allowed - obj.keys()
    if missing:
        raise SchemaError(f"{source}: {what} lacks {sorted(missing)}")
    if not lenient and obj.keys() - allowed:
        raise SchemaError(f"{source}: {what} has unknown keys {sorted(obj.keys() - allowed)}")


def _list(value, what: str, source: str) -> list:
    if not isinstance(value, list):
        raise SchemaError(f"{source}: {what} must be a JSON array")
    return value


def _int(value, what: str, source: str, negative_ok: bool = False) -> int:
    if type(value) is not int:  # bool and numpy integers too: JSON would not round-trip them
        raise SchemaError(f"{source}: {what} must be an integer, got {type(value).__name__}")
    if value < 0 and not negative_ok:
        raise SchemaError(f"{source}: {what} must not be negative, got {value}")
    if not -MAX_BYTES <= value <= MAX_BYTES:
        raise SchemaError(f"{source}: {what} {value} is out of range")
    return value


def _text(value, what: str, source: str) -> str:
    """A string that UTF-8 can encode (a lone surrogate cannot be written or read back)."""
    if type(value) is not str:
        raise SchemaError(f"{source}: {what} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SchemaError(f"{source}: {what} {value[:40]!r} is not valid Unicode (a lone "
                          f"surrogate)") from None
    return value


def _str_map(value, what: str, source: str) -> dict[str, str]:
    if type(value) is not dict:
        raise SchemaError(f"{source}: {what} must be a JSON object (a dict), got "
                          f"{type(value).__name__}")
    for k, v in value.items():
        _text(k, f"{what} key", source)
        _text(v, f"{what}[{k!r}]", source)
    return value
