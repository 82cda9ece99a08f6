"""Devices over devices: WrapperDevice forwards everything (base.py); emu:// charges a BRAID
cost model, fault:// loses unpersisted writes and fails chosen operations."""

from bas.wrappers.base import WrapperDevice

__all__ = ["WrapperDevice"]
