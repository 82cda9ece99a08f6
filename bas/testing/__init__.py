"""Test kit for users of bas: the device conformance suite, media, a fault-injecting namespace,
hypothesis strategies and a Ray cluster of loopback nodes."""

from bas.testing.conformance import DeviceConformance
from bas.testing.faultns import FaultNamespace
from bas.testing.medium import FileMedium, Medium, PmemMedium
from bas.testing.raycluster import LoopbackCluster
from bas.testing.strategies import crash_points, device_urls, io_sequences

__all__ = ["DeviceConformance", "FaultNamespace", "FileMedium", "LoopbackCluster", "Medium",
           "PmemMedium", "crash_points", "device_urls", "io_sequences"]
