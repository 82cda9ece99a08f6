"""BRAID profiles: measure a device (or take a preset), save/load JSON, print the table, plot.

    python -m bas.profile URL [URL ...] [--quick] [--threads 1,2,4] [--save DIR] [--plot F.png]

A Profile holds bandwidth against thread count for each (kind, pattern, access size), the
latency of an isolated small read, and the read/write interference factor. Engines size their
thread pools and estimate phase times from it, whether it was measured or built from a preset:

    prof = Profile.load(path) or Profile.from_preset("optane-1dimm")
    prof.best_threads("write")                          # -> 1
    prof.bandwidth("read", "random", 8, access_size=100) # useful bytes/s
    prof.seconds("read", 10 << 30, threads=4)            # estimated phase time
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from bas.braid.phase import Phase, PhaseResult, random_phase, run_mixed, run_phase, sequential_phase
from bas.braid.presets import get_preset, interference_from
from bas.namespace import replace_file

__all__ = ["CHUNK", "RANDOM_SIZES", "SCHEMA", "Profile", "main", "measure", "preset_threads"]

SCHEMA = 1
CHUNK = 1 << 20  # sequential requests
RANDOM_SIZES = (100, 256, 4096, 65536)
#: the access size whose random-read bandwidth BRAID's R compares with sequential reads
R_SIZE = 4096
#: best_threads takes the fewest threads within this fraction of the best bandwidth
BEST_SLACK = 0.01


@dataclass
class Profile:
    """Measured (or preset) BRAID parameters of one device.

    series maps "kind/pattern/access_size" to [(threads, useful bytes/s), ...] sorted by
    threads. latency: seconds of one isolated small random read (1 thread, 1 request per
    call). interference: the fraction of its alone speed each of a read and a write phase
    keeps while both run (1 = none). cache says how reads were kept off the page cache.
    """

    device: str
    source: str  # "measured" or "preset"
    cache: str
    granularity: int
    latency: float
    interference: float
    series: dict[str, list[tuple[int, float]]]
    preset: str | None = None
    quick: bool = False
    created: str = ""
    host: dict = field(default_factory=dict)

    # -- queries ------------------------------------------------------------------------

    def sizes(self, kind: str, pattern: str) -> list[int]:
        """Access sizes measured for (kind, pattern), ascending."""
        prefix = f"{kind}/{pattern}/"
        found = sorted(int(k[len(prefix):]) for k in self.series if k.startswith(prefix))
        if not found:
            raise KeyError(f"{self.device}: no {kind} {pattern} measurements in this profile")
        return found

    def points(self, kind: str, pattern: str, access_size: int | None = None
               ) -> list[tuple[int, float]]:
        """(threads, bytes/s) for the measured access size nearest to access_size (default:
        the largest)."""
        sizes = self.sizes(kind, pattern)
        size = sizes[-1] if access_size is None else min(
            sizes, key=lambda s: abs(np.log(s / access_size)))
        return self.series[f"{kind}/{pattern}/{size}"]

    def bandwidth(self, kind: str, pattern: str = "sequential", threads: int | None = None,
                  access_size: int | None = None) -> float:
        """Useful bytes/s for `threads` threads (default: the best) and access_size.

        Threads between measured counts interpolate linearly, beyond them hold the nearest.
        An access size between measured ones interpolates log-log; below the smallest the
        time per request holds (small accesses are amplified), above the largest the
        bandwidth holds.
        """
        if threads is None:
            threads = self.best_threads(kind, pattern, access_size)
        sizes = self.sizes(kind, pattern)
        if access_size is None or pattern == "sequential":
            return self._at_threads(kind, pattern, sizes[-1], threads)
        if access_size <= sizes[0]:
            return self._at_threads(kind, pattern, sizes[0], threads) * access_size / sizes[0]
        if access_size >= sizes[-1]:
            return self._at_threads(kind, pattern, sizes[-1], threads)
        hi = next(i for i, s in enumerate(sizes) if s >= access_size)
        lo_s, hi_s = sizes[hi - 1], sizes[hi]
        lo_bw = self._at_threads(kind, pattern, lo_s, threads)
        hi_bw = self._at_threads(kind, pattern, hi_s, threads)
        w = np.log(access_size / lo_s) / np.log(hi_s / lo_s)
        return float(np.exp(np.log(lo_bw) * (1 - w) + np.log(hi_bw) * w))

    def best_threads(self, kind: str, pattern: str = "sequential",
                     access_size: int | None = None) -> int:
        """The fewest measured threads within 1 % of the best bandwidth (more would be waste)."""
        pts = self.points(kind, pattern, access_size)
        top = max(bw for _, bw in pts)
        return min(t for t, bw in pts if bw >= top * (1 - BEST_SLACK))

    def peak(self, kind: str, pattern: str = "sequential", access_size: int | None = None
             ) -> float:
        """The best measured bandwidth (bytes/s)."""
        return max(bw for _, bw in self.points(kind, pattern, access_size))

    def seconds(self, kind: str, nbytes: int, pattern: str = "sequential",
                threads: int | None = None, access_size: int | None = None) -> float:
        """Estimated time to move nbytes in one phase (for load-time estimates)."""
        return nbytes / self.bandwidth(kind, pattern, threads, access_size)

    def braid(self) -> dict[str, float]:
        """The BRAID summary: B granularity, R random/seq read, A read/write, I, D threads."""
        r_sizes = self.sizes("read", "random")
        r_size = min(r_sizes, key=lambda s: abs(np.log(s / R_SIZE)))
        return {
            "granularity": self.granularity,
            "random_over_sequential": self.peak("read", "random", r_size) / self.peak("read"),
            "random_size": r_size,
            "read_over_write": self.peak("read") / self.peak("write"),
            "interference": self.interference,
            "read_threads": self.best_threads("read"),
            "write_threads": self.best_threads("write"),
        }

    def _at_threads(self, kind: str, pattern: str, size: int, threads: int) -> float:
        pts = self.series[f"{kind}/{pattern}/{size}"]
        ts = [t for t, _ in pts]
        return float(np.interp(threads, ts, [bw for _, bw in pts]))

    # -- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = asdict(self)
        data["series"] = {k: [[int(t), float(bw)] for t, bw in v] for k, v in self.series.items()}
        return {"schema": SCHEMA, **data}

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"profile schema {data.get('schema')!r} is not {SCHEMA} (re-run "
                             f"python -m bas.profile to measure again)")
        fields = {k: v for k, v in data.items() if k != "schema"}
        fields["series"] = {k: sorted((int(t), float(bw)) for t, bw in v)
                            for k, v in data["series"].items()}
        return cls(**fields)

    def save(self, path: str) -> None:
        """Write the profile as JSON (atomically: a reader never sees half a file)."""
        data = (json.dumps(self.to_dict(), indent=1) + "\n").encode()

        def fill(fd: int) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]

        replace_file(path, fill, tmp=f"{path}.tmp", mode=0o666)  # less the umask

    @classmethod
    def load(cls, path: str) -> Profile:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_preset(cls, name: str, threads: list[int] | None = None,
                    sizes: tuple[int, ...] = RANDOM_SIZES, chunk: int = CHUNK) -> Profile:
        """The profile an emulated device of this preset measures, computed from the model."""
        p = get_preset(name)
        threads = sorted(threads or preset_threads(name))
        series = {}
        for kind in ("read", "write"):
            series[f"{kind}/sequential/{chunk}"] = [
                (t, p.bandwidth(kind, "sequential", t, chunk)) for t in threads]
            for size in sizes:
                series[f"{kind}/random/{size}"] = [
                    (t, p.bandwidth(kind, "random", t, size)) for t in threads]
        latency = p.batch_seconds("read", True, 1, p.media_bytes(min(sizes)), 1)
        return cls(device=f"preset:{name}", source="preset", cache="preset model",
                   granularity=p.granularity, latency=latency, interference=p.interference,
                   series=series, preset=name, created=_now(), host={})


def preset_threads(name: str) -> list[int]:
    """Thread counts that show a preset's curves: powers of two past every peak, and the peaks."""
    p = get_preset(name)
    peaks = {c.peak_threads for c in (p.seq_read, p.seq_write, p.rand_read, p.rand_write)}
    powers = {1 << i for i in range(9) if 1 << i <= 2 * max(peaks)}
    return sorted(powers | peaks | {2 * max(peaks)})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def host_info() -> dict:
    return {"machine": platform.machine(), "system": platform.system(),
            "cpus": os.cpu_count(), "python": platform.python_version()}



# -- measuring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How much to move per measurement point: exact single batches on a virtual clock,
    time- and byte-capped runs on real devices."""

    virtual: bool
    chunk: int
    seconds: float  # wall-time cap per point (real devices)
    budget: int  # bytes cap per point (real devices)
    write_requests: int  # random-write cap on real persistent devices (each dirties a block)


def measure(device, *, threads: list[int] | None = None, sizes: tuple[int, ...] = RANDOM_SIZES,
            chunk: int = CHUNK, quick: bool = False, log=None) -> Profile:
    """Profile `device` (any Device). Overwrites its contents.

    On a device with a virtual clock (emu:// in account mode) every point is one exact batch
    (sequential: max(2, threads) chunks; random: 64 requests per thread) timed by the clock,
    so the profile reproduces the preset. On real devices the device is first filled (real
    blocks, touched pages), operating-system caches are dropped before every read
    measurement (drop_caches: posix_fadvise DONTNEED on files) and writes are timed through
    persist().
    """
    threads = sorted(threads or ([1, 2, 4] if quick else [1, 2, 4, 8, 16]))
    # a device that refuses unaligned requests (O_DIRECT without bounce) gets aligned sizes
    a = device.alignment
    sizes = tuple(sorted({-(-s // a) * a for s in sizes}))
    virtual = device.clock is not None
    plan = _Plan(virtual, min(chunk, device.size), 0.15 if quick else 0.5,
                 (64 << 20) if quick else (512 << 20), 4096 if quick else 32768)
    say = log or (lambda _msg: None)
    if not virtual:
        say(f"  filling {device.size >> 20} MiB")
        run_phase(device, sequential_phase("write", 0, device.size, chunk=plan.chunk,
                                           threads=min(4, os.cpu_count() or 1), persist=True))
    series: dict[str, list[tuple[int, float]]] = {}
    for kind in ("read", "write"):
        say(f"  sequential {kind}s")
        series[f"{kind}/sequential/{chunk}"] = [
            (t, _timed(device, _seq(device, kind, t, plan)).bandwidth) for t in threads]
    for size in sizes:
        say(f"  random reads and writes of {size} B")
        for kind in ("read", "write"):
            series[f"{kind}/random/{size}"] = [
                (t, _timed(device, _rand(device, kind, size, t, plan)).bandwidth)
                for t in threads]
    prof = Profile(device=device.url, source="measured", cache=cache_mode(device),
                   granularity=device.granularity, latency=_latency(device, min(sizes), plan),
                   interference=1.0, series=series, quick=quick, created=_now(),
                   host=host_info())
    say("  mixed reads and writes")
    prof.interference = _interference(device, prof, plan)
    return prof


def cache_mode(device) -> str:
    """How reads reach the media, in words, for the table."""
    if device.clock is not None:
        return "virtual clock"
    if device.direct_io:
        return "O_DIRECT"
    if device.is_pmem:
        return "DAX (no page cache)"
    if not device.persistent:
        return "memory"
    return "page cache dropped"


def _timed(device, phase: Phase) -> PhaseResult:
    if phase.kind == "read":
        device.drop_caches()
    return run_phase(device, phase)


def _seq(device, kind: str, threads: int, plan: _Plan, start: int = 0,
         room: int | None = None) -> Phase:
    room = device.size - start if room is None else room
    if plan.virtual:
        n = max(2, threads)
        chunk = max(1, min(plan.chunk, room // n))
        return sequential_phase(kind, start, n * chunk, chunk=chunk, threads=threads,
                                batch_requests=n, persist=kind == "write")
    length = min(room, plan.budget)
    phase = sequential_phase(kind, start, length - length % plan.chunk or length,
                             chunk=plan.chunk, threads=threads, max_seconds=plan.seconds,
                             persist=kind == "write")
    # memory has no cache to defeat: pass over it again until the time cap
    return phase if device.persistent else _tiled(phase, 16)


def _tiled(phase: Phase, reps: int) -> Phase:
    lengths = phase.lengths if isinstance(phase.lengths, int) else np.tile(phase.lengths, reps)
    return replace(phase, offsets=np.tile(phase.offsets, reps), lengths=lengths)


def _rand(device, kind: str, size: int, threads: int, plan: _Plan) -> Phase:
    seed = size * 1000 + threads
    if plan.virtual:
        n = 64 * threads
        return random_phase(kind, device.size, size, n, seed=seed, threads=threads,
                            batch_requests=n)
    count = plan.budget // size
    if kind == "write" and device.persistent:
        count = min(count, plan.write_requests)
    return random_phase(kind, device.size, size, max(count, threads), seed=seed,
                        threads=threads, max_seconds=plan.seconds, persist=kind == "write")


def _latency(device, size: int, plan: _Plan) -> float:
    """Seconds per isolated read: one request per call, one thread, random slots."""
    calls = 64 if plan.virtual else 4096
    offsets = random_phase("read", device.size, size, calls, seed=7).offsets.tolist()
    raw = np.zeros(size + device.alignment, dtype=np.uint8)
    skip = (-raw.ctypes.data) % device.alignment
    buf = raw[skip:skip + size]
    device.drop_caches()
    clock0, start = device.clock, time.perf_counter()
    done = 0
    for off in offsets:
        device.read_into(off, buf)
        done += 1
        if not plan.virtual and time.perf_counter() - start > plan.seconds:
            break
    if plan.virtual:
        return (device.clock - clock0) / done
    return (time.perf_counter() - start) / done


def _interference(device, prof: Profile, plan: _Plan) -> float:
    """Run a read phase and a write phase alone, then together; invert overlapped_seconds."""
    half = device.size // 2
    tr, tw = prof.best_threads("read"), prof.best_threads("write")
    if plan.virtual:
        read, write = _seq(device, "read", tr, plan, 0, half), _seq(
            device, "write", tw, plan, half, half)
    else:
        # about plan.seconds each, so that the two overlap for most of the run
        def phase(kind: str, start: int, threads: int) -> Phase:
            want = int(prof.peak(kind) * plan.seconds)
            length = max(plan.chunk, min(half, plan.budget, want - want % plan.chunk))
            ph = sequential_phase(kind, start, length, chunk=plan.chunk, threads=threads,
                                  persist=kind == "write")
            return ph if device.persistent else _tiled(ph, max(1, want // length))

        read, write = phase("read", 0, tr), phase("write", half, tw)
    alone_r = _timed(device, read).elapsed
    alone_w = _timed(device, write).elapsed
    device.drop_caches()
    together = run_mixed(device, read, write).elapsed
    return interference_from(alone_r, alone_w, together)


# -- the table, the plot and the command line --------------------------------------------


def rate(bps: float) -> str:
    """Bytes/s in a short human form: 6.60G, 512M, 97.0k."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g}{unit}"
    return f"{bps:.3g}"


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def table(prof: Profile) -> str:
    """The readable BRAID table of one profile."""
    b = prof.braid()
    threads = sorted({t for pts in prof.series.values() for t, _ in pts})
    lines = [
        f"{prof.device}  [{prof.source}{', quick' if prof.quick else ''}; reads: {prof.cache}]",
        f"  B granularity {b['granularity']} B | R random/seq read "
        f"{b['random_over_sequential']:.2f} ({_size(b['random_size'])}) | A read/write "
        f"{b['read_over_write']:.2f} | I interference {b['interference']:.2f} | D best threads "
        f"read {b['read_threads']}, write {b['write_threads']}",
        f"  peak seq read {rate(prof.peak('read'))}B/s | peak seq write "
        f"{rate(prof.peak('write'))}B/s | latency {prof.latency * 1e6:.3g} us (1 thread, "
        f"1 request per call)",
        "  bytes/s by threads " + "".join(f"{t:>8}" for t in threads),
    ]
    for key in sorted(prof.series, key=_series_order):
        kind, pattern, size = key.split("/")
        row = dict(prof.series[key])
        cells = "".join(f"{rate(row[t]) if t in row else '-':>8}" for t in threads)
        lines.append(f"  {kind:<5} {pattern[:4]} {_size(int(size)):>7}" + cells)
    return "\n".join(lines)


def _series_order(key: str):
    kind, pattern, size = key.split("/")
    return (kind != "read", pattern != "sequential", int(size))


def summary(profiles: list[Profile]) -> str:
    """One line per device: the BRAID columns side by side."""
    head = (f"{'device':<44} {'B':>5} {'R':>5} {'A':>5} {'I':>5} {'D r/w':>6} {'seq rd':>7} "
            f"{'seq wr':>7} {'latency':>9}  reads")
    lines = [head]
    for p in profiles:
        b = p.braid()
        name = p.device if len(p.device) <= 44 else "..." + p.device[-41:]
        lines.append(
            f"{name:<44} {b['granularity']:>5} {b['random_over_sequential']:>5.2f} "
            f"{b['read_over_write']:>5.2f} {b['interference']:>5.2f} "
            f"{b['read_threads']:>3}/{b['write_threads']:<2} {rate(p.peak('read')):>7} "
            f"{rate(p.peak('write')):>7} {p.latency * 1e6:>7.3g}us  {p.cache}")
    return "\n".join(lines)


def plot(profiles: list[Profile], path: str) -> None:
    """Bandwidth against threads for each profile, four panels, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [("read", "sequential", None), ("write", "sequential", None),
              ("read", "random", R_SIZE), ("write", "random", R_SIZE)]
    for ax, (kind, pattern, size) in zip(axes.flat, panels, strict=True):
        for p in profiles:
            pts = p.points(kind, pattern, size)
            ax.plot([t for t, _ in pts], [bw / 1e9 for _, bw in pts], marker="o",
                    label=p.device if len(p.device) < 40 else "..." + p.device[-37:])
        ax.set_title(f"{pattern} {kind}" + (f" ({_size(size)})" if size else ""))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # devices differ by orders of magnitude
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_ylabel("GB/s")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("threads")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _slug(url: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in url).split())[:80]


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bas.registry import open_device

    parser = argparse.ArgumentParser(prog="python -m bas.profile", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("urls", nargs="*", metavar="URL", help="devices to profile "
                        "(their contents are overwritten)")
    parser.add_argument("--quick", action="store_true", help="threads 1,2,4 and short runs")
    parser.add_argument("--threads", help="thread counts, e.g. 1,2,4,8")
    parser.add_argument("--preset", action="append", default=[],
                        help="also show a preset's profile (repeatable)")
    parser.add_argument("--save", metavar="DIR", help="write profile-<device>.json files here")
    parser.add_argument("--plot", metavar="FILE.png", help="plot bandwidth against threads")
    args = parser.parse_args(argv)
    if not args.urls and not args.preset:
        parser.error("give at least one device URL or --preset")
    threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    profiles = [Profile.from_preset(name, threads) for name in args.preset]
    for url in args.urls:
        print(f"profiling {url} ...", flush=True)
        start = time.perf_counter()
        with open_device(url) as device:
            profiles.append(measure(device, threads=threads, quick=args.quick,
                                    log=lambda msg: print(msg, flush=True)))
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    for prof in profiles:
        print()
        print(table(prof))
    print()
    print(summary(profiles))
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        for prof in profiles:
            path = os.path.join(args.save, f"profile-{_slug(prof.device)}.json")
            prof.save(path)
            print(f"saved {path}")
    if args.plot:
        plot(profiles, args.plot)
        print(f"plotted {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
