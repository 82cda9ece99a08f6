"""Typed errors raised by the device layer; every one names the device and what is wrong."""

__all__ = [
    "AlignmentError",
    "BackendUnavailableError",
    "CorruptionError",
    "DeviceBusyError",
    "DeviceClosedError",
    "DeviceError",
    "DeviceIOError",
    "InvalidURLError",
    "LayoutError",
    "OutOfBoundsError",
    "PoolTooSmallError",
    "ReadOnlyError",
    "UnsupportedError",
]


class DeviceError(Exception):
    """Base class of every error the device layer raises on purpose."""


class InvalidURLError(DeviceError, ValueError):
    """A device URL or option is malformed, unknown or out of range."""


class BackendUnavailableError(DeviceError, ImportError):
    """A backend's module or native library is missing; the message says what to install."""


class DeviceClosedError(DeviceError, ValueError):
    """The device was used after close(), or closed twice."""


class OutOfBoundsError(DeviceError, ValueError):
    """A request reaches outside [0, size) or has a negative offset or length."""


class AlignmentError(DeviceError, ValueError):
    """A request breaks the alignment that an unbounced O_DIRECT device requires."""


class ReadOnlyError(DeviceError, PermissionError):
    """A write or persist was issued to a device opened read-only."""


class UnsupportedError(DeviceError, NotImplementedError):
    """The device or the file system cannot do what was asked (e.g. O_DIRECT on tmpfs)."""


class DeviceBusyError(DeviceError, BlockingIOError):
    """The device is held by another user (a PMem pool is locked while open)."""


class PoolTooSmallError(DeviceError, ValueError):
    """A PMem pool size is below PMDK's minimum or cannot hold the requested region."""


class LayoutError(DeviceError, ValueError):
    """A PMem pool was created with another layout name, or is not a bas pool."""


class CorruptionError(DeviceError):
    """Stored data or metadata fails its checksum or consistency check."""


class DeviceIOError(DeviceError, OSError):
    """An operating-system I/O error (EIO, ENOSPC, ...), with errno set and context added."""
