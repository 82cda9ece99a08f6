"""What memory a process really has: cgroup v1/v2 limits, what is available, page-cache residency.

    info = memory_info("/data/in")  # MemoryInfo(limit=, available=, input_cached_fraction=)

Physical RAM is not the answer in a container: a memory cgroup caps the process and its page
cache together, and a file is only cheap to read at random if its pages are resident. Every
reader takes `root` (a directory standing for "/") so tests can build a fake /proc and /sys.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import asdict, dataclass

__all__ = ["RESIDENCY_SAMPLES", "MemoryInfo", "cached_fraction", "cgroup_memory", "memory_info",
           "mincore_trusted"]

#: pages probed to estimate how much of a file is in the page cache (spread over the file)
RESIDENCY_SAMPLES = 1024
#: a cgroup v1 limit at or above this means "no limit" (the kernel writes ~2**63 rounded down)
_V1_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class MemoryInfo:
    """Memory facts a plan rests on; build one by hand to plan for another machine.

    limit: the tightest cgroup memory limit over this process (memory.max or memory.high of
      it or any ancestor, or v1 memory.limit_in_bytes), in bytes; None when no cgroup limit is
      below physical memory.
    available: bytes the process could take now without swapping or reaching a limit: free
      memory plus reclaimable page cache, the smaller of the system's MemAvailable and each
      limited cgroup's headroom (limit - usage + its reclaimable file pages).
    input_cached_fraction: the share (0 to 1) of sampled input pages found in the page cache,
      or None when unknown (no input file, or mincore failed).
    source: where the limit came from, e.g. "cgroup v2 memory.max of /user.slice".
    """

    limit: int | None
    available: int
    input_cached_fraction: float | None = None
    source: str = ""

    def describe(self) -> str:
        """One line for reports: limit, available memory and the input's residency."""
        limit = ("no cgroup memory limit" if self.limit is None
                 else f"{size_text(self.limit)} {self.source or 'cgroup limit'}")
        cached = ("input residency unknown" if self.input_cached_fraction is None
                  else f"input {self.input_cached_fraction:.0%} in the page cache")
        return f"{limit}, {size_text(self.available)} available, {cached}"

    def to_dict(self) -> dict:
        return asdict(self)


def size_text(nbytes: float) -> str:
    """1536 MiB -> '1.5 GiB' (binary units, one decimal)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if abs(nbytes) >= 1 << shift:
            return f"{nbytes / (1 << shift):.1f} {unit}"
    return f"{int(nbytes)} B"


def memory_info(path: str | None = None, *, root: str = "/",
                samples: int = RESIDENCY_SAMPLES) -> MemoryInfo:
    """The memory this process can use and how much of the file at `path` is cached.

    Never raises for missing or unreadable /proc or /sys files: what cannot be read counts as
    no limit (a cgroup) or physical memory (MemAvailable). A path that cannot be probed gives
    input_cached_fraction None.
    """
    meminfo = _meminfo(root)
    total = meminfo.get("MemTotal") or _physical_memory()
    available = meminfo.get("MemAvailable", total)
    limit, headroom, source = cgroup_memory(root)
    if limit is not None and limit >= total:
        limit, source = None, ""
    if headroom is not None:
        available = min(available, headroom)
    cached = cached_fraction(path, samples) if path is not None else None
    return MemoryInfo(limit, max(0, available), cached, source)


def cgroup_memory(root: str = "/") -> tuple[int | None, int | None, str]:
    """(tightest limit, smallest headroom, where the limit is) over this process's memory
    cgroups, v2 and v1 alike, walking from its own cgroup up to the hierarchy's root.

    Headroom of a limited cgroup is limit - usage + reclaimable file pages (active_file +
    inactive_file): the page cache it holds can be given back. (None, None, "") when no
    cgroup sets a limit or none can be read.
    """
    limit: int | None = None
    headroom: int | None = None
    source = ""
    for version, directory, top in _memory_cgroups(root):
        rel = os.path.normpath(os.path.join("/", os.path.relpath(directory, top)))
        while True:
            stat = _stat(directory)
            for name, value in _limits(version, directory, stat):
                if limit is None or value < limit:
                    limit, source = value, f"cgroup {version} {name} of {rel}"
                room = _headroom(version, directory, value, stat)
                if room is not None and (headroom is None or room < headroom):
                    headroom = room
            if directory == top or os.path.dirname(directory) == directory:
                break
            directory, rel = os.path.dirname(directory), os.path.dirname(rel)
    return limit, headroom, source


def cached_fraction(path: str, samples: int = RESIDENCY_SAMPLES) -> float | None:
    """The share of `samples` pages, spread evenly over the file, that are in the page cache.

    Uses mincore(2) on a read-only mapping: nothing is read and no readahead starts (a
    preadv2(RWF_NOWAIT) probe starts readahead on a miss, loading what it measures). 1.0 for
    an empty file; None when the file cannot be opened or mapped, mincore is missing, or
    its answer would be made up (see mincore_trusted).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_size == 0:
            return 1.0
        if not mincore_trusted(fd, info):
            return None
        return _mincore_fraction(fd, info.st_size, max(1, samples))
    except (OSError, AttributeError):
        return None
    finally:
        os.close(fd)


def mincore_trusted(fd: int, info: os.stat_result | None = None) -> bool:
    """Whether mincore tells the truth about this file to this process.

    Since Linux 5.0 it reports every page resident for a file the caller neither owns nor
    may write (a side-channel fix), as root-owned model and data directories are to a
    service user. The same rule in C: native/bas_io.c, resident_prefix.
    """
    info = info or os.fstat(fd)
    if os.geteuid() in (0, info.st_uid):
        return True
    return os.access(f"/proc/self/fd/{fd}", os.W_OK)


# -- cgroups -------------------------------------------------------------------------------

def _memory_cgroups(root: str) -> list[tuple[str, str, str]]:
    """(version, this process's cgroup directory, hierarchy mount point) for each mounted
    hierarchy that holds the memory controller (v2 always offers memory.max where enabled)."""
    paths = {}  # "v2" or "v1" -> the cgroup path /proc/self/cgroup names
    for line in _read_lines(root, "proc/self/cgroup"):
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    found = []
    for line in _read_lines(root, "proc/self/mountinfo"):
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or sep < 5:
            continue
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        version = ("v2" if fstype == "cgroup2" else
                   "v1" if fstype == "cgroup" and "memory" in options else None)
        if version is None or version not in paths:
            continue
        mount_root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        path = paths[version]
        if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
            path = path[len(mount_root):]  # the mount shows a sub-tree (a container's)
        elif mount_root != "/" or path.startswith("/.."):
            path = "/"  # our cgroup is outside what is mounted: the mounted root is ours
        top = os.path.normpath(os.path.join(root, mount_point.lstrip("/")))
        directory = os.path.normpath(os.path.join(top, path.lstrip("/")))
        if (directory == top or directory.startswith(top + os.sep)) and os.path.isdir(directory):
            found.append((version, directory, top))
    return found


def _stat(directory: str) -> dict[str, int]:
    stat = {}
    for line in (_read_text(os.path.join(directory, "memory.stat")) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            stat[key] = int(value)
    return stat


def _limits(version: str, directory: str, stat: dict[str, int]) -> list[tuple[str, int]]:
    """(file name, bytes) of each limit set on this cgroup. v1's memory.stat also names the
    hierarchy's limit, which counts ancestors a container's mount does not show."""
    names = ("memory.max", "memory.high") if version == "v2" else ("memory.limit_in_bytes",)
    out = []
    for name in names:
        text = _read_text(os.path.join(directory, name))
        if text is not None and text.isdigit():
            out.append((name, int(text)))
    if version == "v1" and "hierarchical_memory_limit" in stat:
        out.append(("hierarchical_memory_limit", stat["hierarchical_memory_limit"]))
    return [(name, value) for name, value in out
            if not (version == "v1" and value >= _V1_UNLIMITED)]


def _headroom(version: str, directory: str, limit: int, stat: dict[str, int]) -> int | None:
    usage_name = "memory.current" if version == "v2" else "memory.usage_in_bytes"
    usage = _read_text(os.path.join(directory, usage_name))
    if usage is None or not usage.isdigit():
        return None
    prefix = "total_" if version == "v1" and "total_inactive_file" in stat else ""
    files = stat.get(prefix + "active_file", 0) + stat.get(prefix + "inactive_file", 0)
    return max(0, limit - int(usage) + files)


# -- system memory and residency -----------------------------------------------------------

def _meminfo(root: str) -> dict[str, int]:
    out = {}
    for line in _read_lines(root, "proc/meminfo"):
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            out[key] = int(words[0]) * (1024 if words[1:] == ["kB"] else 1)
    return out


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def _mincore_fraction(fd: int, size: int, samples: int) -> float:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "mmap for the residency probe failed")
    try:
        page = mmap.PAGESIZE
        pages = -(-size // page)
        count = min(samples, pages)
        vec = ctypes.create_string_buffer(1)
        hits = 0
        for i in range(count):
            if libc.mincore(addr + (i * pages // count) * page, page, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            hits += vec.raw[0] & 1
        return hits / count
    finally:
        libc.munmap(addr, size)


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_lines(root: str, rel: str) -> list[str]:
    return (_read_text(os.path.join(root, rel)) or "").splitlines()


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
