"""bas: a storage-engine library for byte-addressable and other fast storage (BRAID devices)."""

from bas._native import MAX_THREADS
from bas._native.io import crc32, prefault
from bas.device import Capabilities, Device, Requests
from bas.errors import (
    AlignmentError,
    BackendUnavailableError,
    CorruptionError,
    DeviceBusyError,
    DeviceClosedError,
    DeviceError,
    DeviceIOError,
    InvalidURLError,
    LayoutError,
    OutOfBoundsError,
    PoolTooSmallError,
    ReadOnlyError,
    UnsupportedError,
)
from bas.registry import BACKENDS, open_device, parse_size, register_device

__all__ = [
    "BACKENDS",
    "MAX_THREADS",
    "AlignmentError",
    "Capabilities",
    "BackendUnavailableError",
    "CorruptionError",
    "Device",
    "DeviceBusyError",
    "DeviceClosedError",
    "DeviceError",
    "DeviceIOError",
    "InvalidURLError",
    "LayoutError",
    "OutOfBoundsError",
    "PoolTooSmallError",
    "ReadOnlyError",
    "Requests",
    "UnsupportedError",
    "crc32",
    "open_device",
    "parse_size",
    "prefault",
    "register_device",
]
