"""Test kit for users of bas: the device conformance suite and hypothesis strategies."""

from bas.testing.conformance import DeviceConformance
from bas.testing.strategies import crash_points, device_urls, io_sequences

__all__ = ["DeviceConformance", "crash_points", "device_urls", "io_sequences"]
