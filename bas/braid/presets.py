"""BRAID device presets: the numbers and the cost model that emu:// and Profile.from_preset share.

One model, written once, so an emulated device and a profile built from its preset cannot drift.
A batch of requests of one kind (read or write) issued with `threads` worker threads costs

    sequential batch (one contiguous run):  max(latency, media_bytes / curve_seq(t))
    random batch:                           max(media_bytes / curve_rand(t),
                                                n * latency / min(t * outstanding, n))

with t = min(threads, n) (a thread needs a request to work on), media_bytes the bytes the media
moves (each random request rounded out to whole `granularity` units, a sequential run once),
and `outstanding` the requests one thread keeps in flight (cache-line misses overlap on memory
devices; a synchronous pread keeps one). Reads and writes that overlap each run `interference`
times as fast as alone while both are active (see overlapped_seconds).
Numbers and their sources: docs/PRESETS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from bas.errors import InvalidURLError

__all__ = ["PRESETS", "Curve", "Preset", "get_preset", "interference_from", "overlapped_seconds"]

GB = 1e9  # datasheets count decimal bytes
KINDS = ("read", "write")
PATTERNS = ("sequential", "random")


@dataclass(frozen=True)
class Curve:
    """Bandwidth (media bytes/s) against thread count: a linear rise from `single` at one thread
    to `peak` at `peak_threads`, then a loss of `decline` x peak per extra thread, down to
    `floor` x peak."""

    peak: float
    peak_threads: int
    single: float
    decline: float = 0.0
    floor: float = 1.0

    def __post_init__(self):
        if not (0 < self.single <= self.peak and self.peak_threads >= 1 and self.decline >= 0
                and 0 < self.floor <= 1):
            raise ValueError(f"inconsistent bandwidth curve {self}")

    def at(self, threads: int) -> float:
        if threads >= self.peak_threads:
            return self.peak * max(self.floor, 1.0 - self.decline * (threads - self.peak_threads))
        rise = (threads - 1) / (self.peak_threads - 1)
        return self.single + (self.peak - self.single) * rise


@dataclass(frozen=True)
class Preset:
    """One emulated device: capabilities, latencies, four bandwidth curves and interference."""

    name: str
    summary: str
    persistent: bool
    byte_addressable: bool
    granularity: int
    outstanding: int
    read_latency: float
    write_latency: float
    seq_read: Curve
    seq_write: Curve
    rand_read: Curve
    rand_write: Curve
    interference: float

    def curve(self, kind: str, pattern: str) -> Curve:
        _check(kind, pattern)
        return getattr(self, ("seq_" if pattern == "sequential" else "rand_") + kind)

    def latency(self, kind: str) -> float:
        _check(kind, "sequential")
        return self.read_latency if kind == "read" else self.write_latency

    def media_bytes(self, access_size: int) -> int:
        """Bytes the media moves for one aligned access of access_size bytes."""
        g = self.granularity
        return -(-access_size // g) * g

    def batch_seconds(self, kind: str, sequential: bool, n: int, media: int,
                      threads: int) -> float:
        """Seconds one batch of n requests moving `media` media bytes costs (module docstring)."""
        if n <= 0:
            return 0.0
        t = max(1, min(threads, n))
        lat = self.latency(kind)
        if sequential:
            return max(lat, media / self.curve(kind, "sequential").at(t))
        in_flight = min(t * self.outstanding, n)
        return max(media / self.curve(kind, "random").at(t), n * lat / in_flight)

    def bandwidth(self, kind: str, pattern: str, threads: int, access_size: int) -> float:
        """Useful bytes/s of a long run of aligned accesses of access_size bytes.

        Sequential runs are bandwidth-bound (a batch of a thread's worth of 1 MiB chunks moves
        more than latency x bandwidth on every preset); random runs keep every thread's
        `outstanding` requests in flight.
        """
        if pattern == "sequential":
            return self.curve(kind, pattern).at(threads)
        n = threads * self.outstanding
        return n * access_size / self.batch_seconds(kind, False, n,
                                                     n * self.media_bytes(access_size), threads)


def overlapped_seconds(read_s: float, write_s: float, interference: float) -> float:
    """Elapsed time of a read phase and a write phase run together.

    While both run each goes `interference` times as fast as alone; the shorter one finishes
    after min/interference seconds, and the rest of the longer one runs alone.
    """
    shorter, longer = sorted((read_s, write_s))
    return shorter / interference + (longer - shorter)


def interference_from(read_s: float, write_s: float, together_s: float) -> float:
    """The interference factor that explains a measured overlapped run (overlapped_seconds^-1)."""
    shorter, longer = sorted((read_s, write_s))
    overlapped = together_s - (longer - shorter)
    if shorter <= 0 or overlapped <= 0:
        return 1.0
    return min(1.0, shorter / overlapped)


def get_preset(name: str) -> Preset:
    """The preset called `name`; InvalidURLError names the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidURLError(f"unknown device preset {name!r}; known: "
                              f"{', '.join(sorted(PRESETS))}") from None


def _check(kind: str, pattern: str) -> None:
    if kind not in KINDS or pattern not in PATTERNS:
        raise ValueError(f"kind must be one of {KINDS} and pattern one of {PATTERNS}, got "
                         f"{kind!r}, {pattern!r}")


def _optane(dimms: int, name: str, summary: str) -> Preset:
    # Per-thread rates (~2.3 GB/s read, ~3.5 GB/s write) are the 6-DIMM peaks divided by the
    # thread counts at which they saturate (17 and 4), so one DIMM peaks at 6.6/2.3 ~ 3 read
    # threads and a single write thread (docs/PRESETS.md).
    read_peak = 6.6 * GB if dimms == 1 else 39.4 * GB
    write_peak = 2.3 * GB if dimms == 1 else 13.9 * GB
    read_threads = max(1, round(read_peak / (2.3 * GB)))
    write_threads = max(1, round(write_peak / (3.5 * GB)))
    return Preset(
        name=name, summary=summary, persistent=True, byte_addressable=True, granularity=256,
        outstanding=8, read_latency=305e-9, write_latency=94e-9,
        seq_read=Curve(read_peak, read_threads, min(2.3 * GB, read_peak), 0.01, 0.9),
        seq_write=Curve(write_peak, write_threads, min(3.5 * GB, write_peak), 0.05, 0.5),
        rand_read=Curve(0.85 * read_peak, read_threads, min(1.9 * GB, 0.85 * read_peak),
                        0.01, 0.9),
        rand_write=Curve(0.8 * write_peak, write_threads, min(2.9 * GB, 0.8 * write_peak),
                         0.05, 0.5),
        interference=0.4)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        name="cxl-ssd",
        summary="memory-semantic CXL SSD (NAND behind a DRAM cache, CXL.mem loads/stores); "
                "illustrative",
        persistent=True, byte_addressable=True, granularity=64, outstanding=8,
        read_latency=1.5e-6, write_latency=0.6e-6,
        seq_read=Curve(16 * GB, 16, 2.0 * GB, 0.01, 0.8),
        seq_write=Curve(8 * GB, 8, 1.5 * GB, 0.02, 0.7),
        rand_read=Curve(12 * GB, 32, 1.0 * GB, 0.01, 0.8),
        rand_write=Curve(6 * GB, 8, 1.0 * GB, 0.02, 0.7),
        interference=0.6),
    Preset(
        name="dram",
        summary="DDR4-2666, six channels (one socket of the Optane papers' servers)",
        persistent=False, byte_addressable=True, granularity=64, outstanding=10,
        read_latency=81e-9, write_latency=81e-9,
        seq_read=Curve(105 * GB, 24, 12 * GB, 0.005, 0.9),
        seq_write=Curve(60 * GB, 12, 8 * GB, 0.005, 0.9),
        rand_read=Curve(80 * GB, 24, 8 * GB, 0.005, 0.9),
        rand_write=Curve(45 * GB, 12, 6 * GB, 0.005, 0.9),
        interference=0.9),
    Preset(
        name="nvme",
        summary="PCIe 4.0 x4 NVMe flash SSD (Samsung 980 PRO 1 TB datasheet)",
        persistent=True, byte_addressable=False, granularity=4096, outstanding=1,
        read_latency=1 / 22_000, write_latency=1 / 60_000,
        seq_read=Curve(7.0 * GB, 4, 3.0 * GB),
        seq_write=Curve(5.0 * GB, 2, 3.5 * GB, 0.01, 0.9),
        rand_read=Curve(4.1 * GB, 64, 1.0 * GB),
        rand_write=Curve(4.1 * GB, 16, 1.0 * GB, 0.01, 0.8),
        interference=0.6),
    _optane(1, "optane-1dimm", "one Intel Optane DC PMem 100 DIMM, App Direct"),
    _optane(6, "optane-6dimm", "six interleaved Intel Optane DC PMem 100 DIMMs, App Direct"),
    Preset(
        name="sata-ssd",
        summary="SATA 6 Gb/s flash SSD (Samsung 870 EVO 1 TB datasheet)",
        persistent=True, byte_addressable=False, granularity=4096, outstanding=1,
        read_latency=1 / 13_000, write_latency=1 / 36_000,
        seq_read=Curve(0.56 * GB, 1, 0.56 * GB),
        seq_write=Curve(0.53 * GB, 1, 0.53 * GB),
        rand_read=Curve(98_000 * 4096, 32, 13_000 * 4096),
        rand_write=Curve(88_000 * 4096, 32, 36_000 * 4096),
        interference=0.5),
)}
