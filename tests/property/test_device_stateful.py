"""Random write / write_many / persist / crash / read sequences against a bytearray model."""

import shutil
import tempfile

import pytest

from bas import open_device
from bas.testing.stateful import DeviceMachine
from bas.testing.strategies import available_kinds, device_url
from bas.wrappers.fault import FaultDevice


def _machine_for(kind: str):
    class Machine(DeviceMachine):
        def make_device(self):
            self._dir = tempfile.mkdtemp(prefix="bas-stateful-")
            return FaultDevice(open_device(device_url(kind, self._dir, 64 << 10)), seed=3)

        def teardown(self):
            super().teardown()
            shutil.rmtree(self._dir, ignore_errors=True)

    Machine.__name__ = f"Machine_{kind.replace('-', '_')}"
    return Machine


# pmem: 13 s on an idle machine, 33 s on a loaded one (every other kind well under 1 s)
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "pmem" else k
                                  for k in available_kinds()])
def test_device_matches_model(kind):
    from hypothesis import settings

    machine = _machine_for(kind)
    machine.TestCase.settings = settings(settings(), stateful_step_count=25)
    machine.TestCase("runTest").runTest()
