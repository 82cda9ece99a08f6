"""Typed errors of the checkpoint layer; every one names the file and what is wrong with it.

Readers raise only these on bad input (plus MemoryError-free, bounded work): a hostile file must
end in a CheckpointError subclass, never in a crash, a hang or an unbounded allocation.
"""

__all__ = [
    "AliasError",
    "BadMagicError",
    "CheckpointError",
    "CheckpointIOError",
    "ChecksumError",
    "ConvertError",
    "FormatError",
    "IndexDecodeError",
    "IndexTooLargeError",
    "LayoutError",
    "LengthMismatchError",
    "MissingPartitionError",
    "ModelNameError",
    "NotACheckpointError",
    "PartitionNameError",
    "PartitionSizeError",
    "SaveInProgressError",
    "SchemaError",
    "ShapeError",
    "UnsupportedDtypeError",
    "UnsupportedVersionError",
]


class CheckpointError(Exception):
    """Base class of every error the checkpoint layer raises on purpose."""


class CheckpointIOError(CheckpointError, OSError):
    """The operating system failed a read, write, fsync or rename (errno kept when known)."""


class SaveInProgressError(CheckpointIOError):
    """Another save to the same path holds its lock (raised only when asked not to wait)."""


class NotACheckpointError(CheckpointError, FileNotFoundError):
    """The path holds no checkpoint (no directory, or no index file in it)."""


class FormatError(CheckpointError, ValueError):
    """The index or a partition breaks a MUST rule of docs/FORMAT.md."""


class BadMagicError(FormatError):
    """The index file does not start with the checkpoint magic (not a bas checkpoint)."""


class UnsupportedVersionError(FormatError):
    """The index declares a major version this reader does not implement."""


class IndexTooLargeError(FormatError):
    """The index is larger than the cap (or than the bytes actually present)."""


class IndexDecodeError(FormatError):
    """The index bytes are not valid UTF-8 JSON (bad checksum, syntax, nesting, duplicates)."""


class SchemaError(FormatError):
    """A field of the index is missing, unknown, of the wrong type or out of range."""


class UnsupportedDtypeError(FormatError):
    """A dtype is unknown to the format or to the framework that loads it."""


class ShapeError(FormatError):
    """A shape has a negative dimension, too many dimensions, or too many elements."""


class LengthMismatchError(FormatError):
    """A tensor's byte length differs from its dtype's size times the number of elements."""


class LayoutError(FormatError):
    """Offsets are misaligned, overlapping, out of order or outside their partition."""


class AliasError(FormatError):
    """An alias collides with a tensor name, points nowhere, or points at another alias."""


class PartitionNameError(FormatError):
    """A partition file name is unsafe (path separators, '..', hidden) or repeated."""


class PartitionSizeError(FormatError):
    """A partition file is shorter or longer than the index says (truncated or extended)."""


class MissingPartitionError(FormatError):
    """A partition file named by the index is absent or not a regular file."""


class ChecksumError(FormatError):
    """A chunk of a partition does not match its CRC-32 (bit rot, torn or altered data)."""


class ConvertError(CheckpointError, ValueError):
    """A source file for conversion (safetensors, torch .pt/.bin, HF directory) is unusable."""


class ModelNameError(CheckpointError, ValueError):
    """A model name a tier cannot store (reserved, unsafe as a file name, too long, ...)."""
