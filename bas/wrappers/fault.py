"""fault:// -- a wrapper that loses unpersisted writes on crash() and fails chosen operations.

Like leveldb's FaultInjectionTestEnv: to drop or tear what was written since the last persist,
it remembers the old bytes under every unpersisted write (in memory, so use it in tests with
devices of test size). crash() then rolls the inner device back to its persisted state
("drop"), or keeps a random subset of the written units ("tear", as a power cut between
sectors does), persists that, and the device goes on as after a reboot.

URL: fault://?inner=<percent-encoded URL>|dram&size=1M[&fail_after=N][&fail_op=any|read|write|
persist][&errno=EIO|ENOSPC][&fail_count=1][&tear_unit=512][&seed=0]
"""

from __future__ import annotations

import errno as errno_codes
import threading

import numpy as np

from bas.device import Device, Requests
from bas.errors import DeviceClosedError, InvalidURLError
from bas.registry import DeviceURL
from bas.wrappers.base import WrapperDevice, inner_from_url

__all__ = ["FaultDevice"]

_OPS = ("any", "read", "write", "persist")


class FaultDevice(WrapperDevice):
    """Fault injection around any device.

    fail_after: the Nth counted operation (1-based) fails with OSError(fail_errno), and so do
      the next fail_count - 1 (fail_count=0: every later one: a dead device).
    fail_op: which operations count ("any", "read", "write" incl. write_many, "persist").
    A failing write stores nothing.
    """

    scheme = "fault"

    def __init__(self, inner: Device, *, fail_after: int | None = None, fail_op: str = "any",
                 fail_errno: int = errno_codes.EIO, fail_count: int = 1, tear_unit: int = 512,
                 seed: int = 0, url: str | None = None):
        if fail_op not in _OPS:
            raise InvalidURLError(f"fail_op must be one of {_OPS}, got {fail_op!r}")
        if fail_after is not None and fail_after < 1:
            raise InvalidURLError(f"fail_after counts from 1, got {fail_after}")
        if tear_unit < 1:
            raise InvalidURLError(f"tear_unit must be positive, got {tear_unit}")
        super().__init__(inner, url or f"fault://?inner={inner.url}")
        self.fail_after = fail_after
        self.fail_op = fail_op
        self.fail_errno = fail_errno
        self.fail_count = fail_count
        self.tear_unit = tear_unit
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._counted = 0
        # [offset, bytes before the write, write returned?], in issue order
        self._undo: list[list] = []
        self._epoch = 0  # bumped by crash(): a persist racing a crash forgets nothing
        self.crashes = 0

    @classmethod
    def open_url(cls, url: DeviceURL) -> FaultDevice:
        size = url.take_size("size")
        options = dict(
            fail_after=url.take_int("fail_after", 0) or None,
            fail_op=url.take("fail_op", "any"),
            fail_errno=_errno(url.take("errno", "EIO"), url.text),
            fail_count=url.take_int("fail_count", 1),
            tear_unit=url.take_int("tear_unit", 512),
            seed=url.take_int("seed", 0),
        )
        inner = inner_from_url(url, size)
        try:
            url.finish()
            return cls(inner, url=url.text, **options)
        except BaseException:
            inner.close()
            raise

    # -- fault injection ----------------------------------------------------------------

    @property
    def operations(self) -> int:
        """Counted operations so far (those matching fail_op)."""
        return self._counted

    def arm(self, fail_after: int | None, *, fail_op: str | None = None,
            fail_errno: int | None = None, fail_count: int | None = None) -> None:
        """Re-arm: the fail_after-th counted operation from now fails (None disarms)."""
        with self._lock:
            self._counted = 0
            self.fail_after = fail_after
            self.fail_op = fail_op or self.fail_op
            self.fail_errno = fail_errno or self.fail_errno
            self.fail_count = self.fail_count if fail_count is None else fail_count

    def _maybe_fail(self, kind: str) -> None:
        if self.fail_op not in ("any", kind):
            return
        with self._lock:
            self._counted += 1
            n = self._counted
        if self.fail_after is None or n < self.fail_after:
            return
        if self.fail_count and n >= self.fail_after + self.fail_count:
            return
        raise OSError(self.fail_errno, f"injected fault in {kind} operation #{n}")

    # -- crash simulation ---------------------------------------------------------------

    @property
    def unpersisted_writes(self) -> int:
        return len(self._undo)

    def crash(self, mode: str = "drop") -> None:
        """Lose writes since the last persist: all ("drop") or a random subset of units ("tear").

        The surviving state is persisted on the inner device, as a machine that rebooted.
        """
        if mode not in ("drop", "tear"):
            raise ValueError(f"crash mode must be 'drop' or 'tear', got {mode!r}")
        if self.closed:
            raise DeviceClosedError(f"{self.url}: crash() on a closed device")
        with self._lock:
            undo, self._undo = [(off, old) for off, old, _ in self._undo], []
            self._epoch += 1
        if mode == "tear":
            kept = self._surviving_units(undo)
        for offset, old in reversed(undo):
            self.inner.write(offset, old)
        if mode == "tear":
            for offset, data in kept:
                self.inner.write(offset, data)
        if not self.inner.read_only:
            self.inner.persist()
        self.crashes += 1

    def _surviving_units(self, undo: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """Current bytes of a random half of the tear units that unpersisted writes touched."""
        unit = self.tear_unit
        touched = set()
        for offset, old in undo:
            touched.update(range(offset // unit, (offset + len(old) - 1) // unit + 1))
        kept = []
        for u in sorted(touched):
            if self._rng.random() < 0.5:
                start = u * unit
                length = min(unit, self.size - start)
                kept.append((start, self.inner.read(start, length)))
        return kept

    # -- primitives ---------------------------------------------------------------------

    def _read_into(self, offset: int, view: memoryview) -> None:
        self._maybe_fail("read")
        super()._read_into(offset, view)

    def _read_many(self, req: Requests, out: memoryview, threads: int) -> None:
        self._maybe_fail("read")
        super()._read_many(req, out, threads)

    def _write(self, offset: int, view: memoryview) -> None:
        self._maybe_fail("write")
        entry = [offset, self.inner.read(offset, view.nbytes), False]
        with self._lock:
            self._undo.append(entry)
        super()._write(offset, view)
        entry[2] = True

    def _write_many(self, req: Requests, data: memoryview, threads: int) -> None:
        self._maybe_fail("write")
        lengths = req.length_array().tolist()
        old = bytes(self.inner.read_many(req.offsets, lengths))
        pos = 0
        entries = []
        for offset, length in zip(req.offsets.tolist(), lengths, strict=True):
            entries.append([offset, old[pos:pos + length], False])
            pos += length
        with self._lock:
            self._undo.extend(entries)
        super()._write_many(req, data, threads)
        for entry in entries:
            entry[2] = True

    def _persist(self) -> None:
        self._maybe_fail("persist")
        with self._lock:
            # only writes that had returned are covered; one still in flight may land later
            durable = {id(e) for e in self._undo if e[2]}
            epoch = self._epoch
        super()._persist()
        with self._lock:
            if epoch == self._epoch:  # a crash() meanwhile already settled the log
                self._undo = [e for e in self._undo if id(e) not in durable]


def _errno(name: str, url: str) -> int:
    code = getattr(errno_codes, name.upper(), None) if not name.isdigit() else int(name)
    if not isinstance(code, int):
        raise InvalidURLError(f"{url}: unknown errno {name!r} (use e.g. EIO, ENOSPC)")
    return code
