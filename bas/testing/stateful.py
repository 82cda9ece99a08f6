"""A hypothesis state machine that runs writes, persists, crashes and reads on a device and a
bytearray model side by side. Subclass it with a `make_device()` returning a FaultDevice (for
crash()), and run `MyMachine.TestCase`.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bas.wrappers.fault import FaultDevice

__all__ = ["DeviceMachine"]

MAX_IO = 700


class DeviceMachine(RuleBasedStateMachine):
    """Model: `current` is what reads must return, `durable` what a crash rolls back to.

    After a torn crash every byte must equal either its durable value or its current value.
    """

    #: bytes of the device under test
    size = 64 << 10

    def make_device(self) -> FaultDevice:
        raise NotImplementedError

    @initialize()
    def open(self):
        self.dev = self.make_device()
        assert isinstance(self.dev, FaultDevice), "make_device must return a FaultDevice"
        self.size = self.dev.size
        base = self.dev.read(0, self.size)
        self.current = bytearray(base)
        self.durable = bytearray(base)

    def teardown(self):
        dev = getattr(self, "dev", None)
        if dev is not None and not dev.closed:
            dev.close()

    @rule(data=st.data())
    def write(self, data):
        off = data.draw(st.integers(0, self.size - 1))
        payload = data.draw(st.binary(max_size=min(MAX_IO, self.size - off)))
        self.dev.write(off, payload)
        self.current[off:off + len(payload)] = payload

    @rule(data=st.data(), threads=st.sampled_from([1, 2, 4]))
    def write_many(self, data, threads):
        n = data.draw(st.integers(1, 6))
        stride = self.size // n
        offs = [i * stride + data.draw(st.integers(0, stride // 2)) for i in range(n)]
        lens = [data.draw(st.integers(0, min(MAX_IO, stride // 2))) for _ in range(n)]
        payload = data.draw(st.binary(min_size=sum(lens), max_size=sum(lens)))
        self.dev.write_many(offs, lens, payload, threads=threads)
        pos = 0
        for off, length in zip(offs, lens, strict=True):
            self.current[off:off + length] = payload[pos:pos + length]
            pos += length

    @rule(data=st.data())
    def read(self, data):
        off = data.draw(st.integers(0, self.size))
        length = data.draw(st.integers(0, min(MAX_IO, self.size - off)))
        assert self.dev.read(off, length) == bytes(self.current[off:off + length])

    @rule()
    def persist(self):
        self.dev.persist()
        self.durable[:] = self.current

    @rule()
    def crash_drop(self):
        self.dev.crash("drop")
        self.current[:] = self.durable

    @precondition(lambda self: self.dev.unpersisted_writes > 0)
    @rule()
    def crash_tear(self):
        self.dev.crash("tear")
        after = self.dev.read(0, self.size)
        for i, (old, new, got) in enumerate(zip(self.durable, self.current, after, strict=True)):
            assert got in (old, new), f"byte {i} is {got}, neither durable {old} nor new {new}"
        self.current[:] = after
        self.durable[:] = after

    @invariant()
    def sampled_bytes_match(self):
        if hasattr(self, "dev"):
            head = self.dev.read(0, 64)
            assert head == bytes(self.current[:64])
