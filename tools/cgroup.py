"""Memory cgroups for benchmark runs: one fresh cgroup per child process, removed after it exits.

    cg = MemoryCgroup.create(1536 << 20)      # CgroupError says why when it cannot be done
    try:
        subprocess.run(cg.wrap(["python", "x.py"]))  # the child joins the cgroup before exec
        print(cg.usage())                     # {"cgroup_peak": ..., "cgroup_oom_kills": ...}
    finally:
        cg.remove()

cgroup v2 is used where its hierarchy has the memory controller: the cgroup is made under the
mount root (/sys/fs/cgroup/bas-bench-PID-N), "+memory" is written to the root's
cgroup.subtree_control if it is not there yet, and memory.max is set (memory.swap.max to 0 where
the file exists, so the limit is one on memory, not on memory plus swap, as in a Kubernetes pod).
Where the memory controller is bound to a cgroup v1 hierarchy instead (hybrid systems), the same
is done there with memory.limit_in_bytes (and memory.memsw.limit_in_bytes). The child is moved in
by a tiny `sh` wrapper that writes its own pid to cgroup.procs and then execs the command, so the
pid, and every process it starts, is in the cgroup from its first instruction. Needs root.
systemd-run --scope -p MemoryMax= would do the same on a host booted with systemd; containers
usually have no systemd as PID 1, so it is not used.
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from dataclasses import dataclass

__all__ = ["CgroupError", "Hierarchy", "MemoryCgroup", "find_hierarchy", "limit_of"]

_SEQ = itertools.count()


class CgroupError(RuntimeError):
    """A memory cgroup cannot be made or used here; the message says why and what would help."""


@dataclass(frozen=True)
class Hierarchy:
    """Where memory cgroups live: version 2 or 1, the mount point, the mount's root path."""

    version: int
    mount: str
    root: str = "/"

    @property
    def limit_file(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(fstype, mount point, root, super options) of every cgroup mount in mountinfo text."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((tail[0], _unescape(fields[4]), _unescape(fields[3]), set(tail[2].split(","))))
    return out


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def find_hierarchy(mountinfo: str | None = None, read=None) -> Hierarchy:
    """The hierarchy that has the memory controller: v2 if its root offers it, else v1.

    mountinfo: /proc/self/mountinfo's text (read when None); read(path) -> str reads a control
    file (for tests). Raises CgroupError when neither hierarchy has the memory controller.
    """
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    read = read or _read
    mounts = _mounts(mountinfo)
    seen = []
    for fstype, mount, root, _ in mounts:
        if fstype != "cgroup2":
            continue
        try:
            controllers = read(os.path.join(mount, "cgroup.controllers")).split()
        except OSError:
            continue
        if "memory" in controllers:
            return Hierarchy(2, mount, root)
        seen.append(f"cgroup v2 at {mount} offers {controllers or 'no controllers'}")
    for fstype, mount, root, options in mounts:
        if fstype == "cgroup" and "memory" in options:
            return Hierarchy(1, mount, root)
    found = "; ".join(seen) if seen else "no cgroup mount has it"
    raise CgroupError(f"no memory cgroup controller is available ({found}): mount cgroup v2 "
                      "with the memory controller (or the cgroup v1 memory hierarchy)")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def limit_of(pid: str | int = "self", hierarchy: Hierarchy | None = None) -> int | None:
    """The memory limit of the cgroup that pid is in (bytes; None for "max"/unlimited)."""
    hierarchy = hierarchy or find_hierarchy()
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        num, controllers, path = line.split(":", 2)
        if (hierarchy.version == 2 and num == "0" and controllers == "") or (
                hierarchy.version == 1 and "memory" in controllers.split(",")):
            rel = os.path.relpath(path, hierarchy.root)
            text = _read(os.path.join(hierarchy.mount, rel, hierarchy.limit_file)).strip()
            value = None if text == "max" else int(text)
            return None if value is not None and value >= 1 << 62 else value
    raise CgroupError(f"/proc/{pid}/cgroup has no line for the cgroup v{hierarchy.version} "
                      "memory hierarchy")


class MemoryCgroup:
    """One memory cgroup made for one run; remove() deletes it once its processes are gone."""

    def __init__(self, hierarchy: Hierarchy, path: str, limit: int):
        self.hierarchy, self.path, self.limit = hierarchy, path, limit

    @classmethod
    def create(cls, limit: int, hierarchy: Hierarchy | None = None,
               name: str | None = None) -> MemoryCgroup:
        """A new cgroup limited to `limit` bytes of memory. Raises CgroupError saying why not."""
        if limit < 1 << 20:
            raise CgroupError(f"memory limit {limit} bytes is under 1 MiB")
        if os.geteuid() != 0:
            raise CgroupError("--cgroup-memory needs root: making a cgroup and moving a process "
                              "into it are privileged (run the harness as root, or under "
                              "systemd-run --scope -p MemoryMax=SIZE on a systemd host)")
        hierarchy = hierarchy or find_hierarchy()
        if hierarchy.version == 2:
            _enable_memory(hierarchy.mount)
        name = name or f"bas-bench-{os.getpid()}-{next(_SEQ)}"
        path = os.path.join(hierarchy.mount, name)
        try:
            os.mkdir(path)
        except OSError as exc:
            raise CgroupError(f"cannot make cgroup {path}: {exc.strerror} (a read-only "
                              "/sys/fs/cgroup, as in an unprivileged container, cannot hold "
                              "new cgroups)") from exc
        cg = cls(hierarchy, path, limit)
        try:
            cg._set_limit()
        except OSError as exc:
            cg.remove()
            raise CgroupError(f"cannot set the memory limit of {path}: {exc.strerror}") from exc
        return cg

    def _set_limit(self) -> None:
        if self.hierarchy.version == 2:
            _write(os.path.join(self.path, "memory.max"), str(self.limit))
            swap = os.path.join(self.path, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")
            return
        _write(os.path.join(self.path, "memory.limit_in_bytes"), str(self.limit))
        memsw = os.path.join(self.path, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # only with swap accounting on; must be >= the limit above
            _write(memsw, str(self.limit))

    @property
    def procs(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run through `sh`, which moves itself into the cgroup, then execs argv."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', self.procs, *argv]

    def usage(self) -> dict:
        """Peak memory and OOM kills so far (keys absent where the kernel does not say)."""
        out: dict = {"cgroup_memory_limit": self.limit, "cgroup_version": self.hierarchy.version}
        names = (("memory.peak", "memory.events") if self.hierarchy.version == 2 else
                 ("memory.max_usage_in_bytes", "memory.oom_control"))
        try:
            out["cgroup_peak"] = int(_read(os.path.join(self.path, names[0])))
        except (OSError, ValueError):
            pass
        try:
            for line in _read(os.path.join(self.path, names[1])).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    out["cgroup_oom_kills"] = int(value)
        except (OSError, ValueError):
            pass
        return out

    def remove(self, timeout: float = 10.0) -> None:
        """rmdir the cgroup, waiting for exiting processes to leave it (EBUSY until they have)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise CgroupError(f"cannot remove cgroup {self.path}: {exc.strerror} "
                                      f"(processes left: {self._members()})") from exc
                time.sleep(0.02)

    def _members(self) -> str:
        try:
            return _read(self.procs).split() or "none"
        except OSError:
            return "unknown"


def _enable_memory(mount: str) -> None:
    """Turn the memory controller on for the children of the v2 mount root, if it is not."""
    control = os.path.join(mount, "cgroup.subtree_control")
    try:
        if "memory" in _read(control).split():
            return
        _write(control, "+memory")
    except OSError as exc:
        hint = (" (the root of this cgroup namespace has member processes, and cgroup v2 lets a "
                "non-root cgroup with processes enable no controller: move them into a child "
                "cgroup first)" if exc.errno == errno.EBUSY else "")
        raise CgroupError(f"cannot enable the memory controller in {control}: "
                          f"{exc.strerror}{hint}") from exc
