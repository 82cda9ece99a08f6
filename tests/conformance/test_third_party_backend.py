"""Adding a device = the primitives + one registry line + one conformance class: a toy
backend defined here, registered with register_device, passes the whole kit."""

from __future__ import annotations

import pytest

import bas
from bas import Device, open_device, register_device, registry
from bas.testing import DeviceConformance


class ToyDevice(Device):
    """A volatile device over a bytearray: the five primitives and open_url, nothing else."""

    scheme = "toy"

    def __init__(self, size: int, url: str = ""):
        super().__init__(url or f"toy://?size={size}")
        self._mem = bytearray(size)

    @classmethod
    def open_url(cls, url) -> ToyDevice:
        size = url.take_size("size", 0)
        url.finish()
        return cls(size, url.text)

    def _size(self) -> int:
        return len(self._mem)

    def _read_into(self, offset: int, view: memoryview) -> None:
        view[:] = self._mem[offset:offset + view.nbytes]

    def _write(self, offset: int, view: memoryview) -> None:
        self._mem[offset:offset + view.nbytes] = view

    def _persist(self) -> None:
        pass  # volatile: persistent stays False, so the kit skips durability checks

    def _close(self) -> None:
        self._mem = bytearray()


@pytest.fixture(autouse=True)
def toy_scheme(monkeypatch):
    monkeypatch.setattr(registry, "BACKENDS", dict(registry.BACKENDS))  # undone after the test
    register_device("toy", ToyDevice)


class TestToy(DeviceConformance):
    def make_device(self, tmp_path, size):
        return open_device(f"toy://?size={size}")


def test_a_backend_missing_a_primitive_cannot_be_made():
    class Half(Device):
        def _size(self) -> int:
            return 0

    with pytest.raises(TypeError, match="abstract"):
        Half("half://")


def test_register_device_refuses_bad_schemes_targets_and_silent_replacement():
    with pytest.raises(ValueError, match="already registered"):
        register_device("file", ToyDevice)
    register_device("file", "tests.conformance.test_third_party_backend:ToyDevice",
                    replace=True)
    for scheme in ("", "Toy", "1x", "to y", None):
        with pytest.raises(ValueError):
            register_device(scheme, ToyDevice)
    with pytest.raises(TypeError):
        register_device("other", object)
    with pytest.raises(ValueError):
        register_device("other", "no_colon")


def test_a_registered_module_target_gives_its_install_hint():
    register_device("missing", "no_such_package.mod:Dev", hint="pip install no-such-package")
    with pytest.raises(bas.BackendUnavailableError, match="pip install no-such-package"):
        open_device("missing://x")


def test_a_wrapper_not_opened_by_url_refuses_a_url():
    class Built(ToyDevice):
        open_url = Device.open_url

    register_device("built", Built)
    with pytest.raises(bas.InvalidURLError, match="not opened by URL"):
        open_device("built://")


def test_capabilities_are_read_only_and_wrappers_inherit_them(tmp_path):
    from bas.wrappers.fault import FaultDevice

    with open_device(f"file://{tmp_path}/d.bin?size=8192&direct=1&bounce=0") as dev:
        with pytest.raises(AttributeError):
            dev.persistent = False
        assert dev.capabilities.alignment == dev.alignment == 4096
        wrapped = FaultDevice(dev)
        assert wrapped.capabilities == dev.capabilities and wrapped.persistent


def test_a_capability_declared_as_a_class_attribute_is_refused():
    with pytest.raises(TypeError, match="declare capabilities"):
        class Old(ToyDevice):  # the pre-Capabilities way: wrappers would not see it
            persistent = True
