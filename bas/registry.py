"""Backends by URL scheme, imported lazily, and `open_device` that turns anything into a Device.

Like fsspec's registry: a sorted table of scheme -> "module:Class" with an install hint for when
the import fails. Adding a backend = its module (named after the scheme) + one line here + one
conformance test class.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from bas.errors import BackendUnavailableError, InvalidURLError

__all__ = ["BACKENDS", "DeviceURL", "open_device", "parse_size", "register_device"]

# scheme -> ("module:Class" or a Device subclass, install hint); register_device adds to it
BACKENDS: dict[str, tuple[str, str]] = {
    "dram": ("bas.backends.dram:DramDevice", ""),
    "emu": ("bas.wrappers.emu:EmuDevice", ""),
    "fault": ("bas.wrappers.fault:FaultDevice", ""),
    "file": ("bas.backends.file:FileDevice", ""),
    "pmem": ("bas.backends.pmem:PmemDevice",
             "install PMDK's libpmemobj (apt-get install libpmemobj-dev) and rebuild: make setup"),
}

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'4096', '64K', '1G', '2GiB' -> bytes (binary units: K = 1024)."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidURLError(f"size must not be negative, got {text}")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise InvalidURLError(f"not a size: {text!r} (use e.g. 4096, 64K, 1G)")
    number, unit, _ = match.groups()
    return int(number) * 1024 ** ("kmgtp".find(unit.lower()) + 1) if unit else int(number)


@dataclass
class DeviceURL:
    """A parsed device URL: scheme://host/path?key=value&... (query keys are consumed by take)."""

    scheme: str
    host: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> DeviceURL:
        parts = urlsplit(text)
        if not parts.scheme:
            raise InvalidURLError(f"not a device URL: {text!r}")
        params: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in params:
                raise InvalidURLError(f"{text}: option {key!r} given twice")
            params[key] = value
        return cls(parts.scheme.lower(), unquote(parts.netloc), unquote(parts.path), params,
                   text)

    def take(self, key: str, default: str | None = None) -> str | None:
        return self.params.pop(key, default)

    def take_size(self, key: str, default: int | None = None) -> int | None:
        value = self.take(key)
        return default if value is None else parse_size(value)

    def take_int(self, key: str, default: int) -> int:
        value = self.take(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise InvalidURLError(f"{self.text}: option {key} must be an int, got "
                                  f"{value!r}") from None

    def take_bool(self, key: str, default: bool = False) -> bool:
        value = self.take(key)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on", ""):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise InvalidURLError(f"{self.text}: option {key} must be a boolean, got {value!r}")

    def finish(self) -> None:
        """Refuse options nobody consumed (typos must not pass silently)."""
        if self.params:
            raise InvalidURLError(f"{self.text}: unknown option(s) {sorted(self.params)} for "
                                  f"{self.scheme}://")


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")


def register_device(scheme: str, target, *, hint: str = "", replace: bool = False) -> None:
    """Make open_device("SCHEME://...") open target: a Device subclass or "module:Class".

    For third-party backends (bas's own are in BACKENDS). A module target is imported on
    first use, with `hint` added to the error when that fails. Registering a scheme that is
    taken raises ValueError unless replace=True.
    """
    if not isinstance(scheme, str) or not _SCHEME.match(scheme):
        raise ValueError(f"scheme {scheme!r} must be lower-case letters, digits, '+', '-', '.'"
                         f" starting with a letter")
    if scheme in BACKENDS and not replace:
        raise ValueError(f"scheme {scheme!r} is already registered ({BACKENDS[scheme][0]}); "
                         f"pass replace=True to replace it")
    if isinstance(target, str):
        if target.count(":") != 1:
            raise ValueError(f"target {target!r} must be 'module:Class'")
    else:
        from bas.device import Device

        if not (isinstance(target, type) and issubclass(target, Device)):
            raise TypeError(f"target must be a Device subclass or 'module:Class', got "
                            f"{target!r}")
    BACKENDS[scheme] = (target, hint)


def backend_class(scheme: str):
    """Import and return the Device class for a scheme."""
    try:
        target, hint = BACKENDS[scheme]
    except KeyError:
        raise InvalidURLError(f"unknown device scheme {scheme!r}; known: "
                              f"{', '.join(sorted(BACKENDS))}") from None
    if not isinstance(target, str):
        return target  # a class given to register_device
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"{scheme}:// backend unavailable ({exc})"
                                      + (f": {hint}" if hint else "")) from exc
    return getattr(module, class_name)


def open_device(target, **options):
    """A Device from a Device (returned as is), a URL string, or a file path.

    Keyword options are added to the URL's query (e.g. open_device("dram://", size="1M")).
    A plain path means file:// with that path.
    """
    from bas.device import Device

    if isinstance(target, Device):
        if options:
            raise InvalidURLError(f"options {sorted(options)} given with an open device")
        return target
    if isinstance(target, os.PathLike) or (isinstance(target, str) and "://" not in target):
        path = os.path.abspath(os.fspath(target))
        url = DeviceURL("file", "", path, {}, f"file://{path}")
    elif isinstance(target, str):
        url = DeviceURL.parse(target)
    else:
        raise TypeError(f"open_device takes a Device, URL or path, got {type(target).__name__}")
    for key, value in options.items():
        if key in url.params:
            raise InvalidURLError(f"{url.text}: option {key!r} given in the URL and as keyword")
        url.params[key] = _option_text(value)
    device = backend_class(url.scheme).open_url(url)
    return device


def _option_text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
