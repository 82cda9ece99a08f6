"""The benchmark harness core: a workload registry, one JSON line per run, child processes.

Like leveldb's db_bench: named workloads, each run printed as one JSON object with the workload,
the device URL, sizes, times, bytes read and written, is_pmem and the commit. Peers are workloads
of the same harness so they run side by side in one invocation. A workload registered with
process=True runs each measurement in a fresh child process (`run_child`): the harness times the
child from spawn to exit (`process_seconds`: interpreter start, imports, set-up and the work)
beside the child's own timed region (`seconds`), and can put the child in a memory cgroup.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["WORKLOADS", "Child", "Context", "Workload", "evict", "prepare_cache", "run_child",
           "summarize", "workload"]


@dataclass
class Context:
    """What every workload receives: where to put data, how big to make it, how to run it."""

    device: str  # a device URL, or a directory for file-based workloads
    size: int  # bytes of data the workload moves
    threads: int
    workdir: str
    cold: bool  # evict the page cache before each measured run
    repeat: int = 5  # measured runs
    memory: int | None = None  # memory budget for sort workloads (None: each tool's default)
    cgroup_memory: int | None = None  # run each child in a memory cgroup of this many bytes
    timeout: float | None = None  # seconds a child may run before it is killed
    cached_fraction: float | None = None  # cache this fraction of each input file before a run
    loads: int = 1  # ckpt: loads per child process (a long-lived process's repeated loads)


@dataclass(frozen=True)
class Workload:
    """A registered workload: fn(ctx) yields one record per run. process: a child per run."""

    name: str
    group: str
    fn: Callable[[Context], Iterator[dict]]
    process: bool = False

    @property
    def doc(self) -> str:
        lines = (self.fn.__doc__ or "").strip().splitlines()
        return lines[0] if lines else ""


#: name -> Workload
WORKLOADS: dict[str, Workload] = {}


def workload(name: str, group: str, *, process: bool = False):
    """Register a workload function under `name` (peers are registered the same way)."""

    def register(fn):
        if name in WORKLOADS:
            raise ValueError(f"workload {name!r} registered twice")
        WORKLOADS[name] = Workload(name, group, fn, process)
        return fn

    return register


def evict(path: str) -> None:
    """Drop a file's pages from the page cache (after syncing them) for a cold run."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def prepare_cache(files: list[str], ctx: Context) -> str:
    """Put the files a run reads in the page-cache state the context asks for; name the state.

    cold: evicted (posix_fadvise DONTNEED); cached_fraction F: evicted, then the first F of each
    file read back; otherwise read whole, so the run finds them cached. Done before every run,
    so a run never inherits the state the previous workload left.
    """
    if ctx.cold or ctx.cached_fraction is not None:
        for path in files:
            evict(path)
    if ctx.cold:
        return "cold"
    fraction = 1.0 if ctx.cached_fraction is None else ctx.cached_fraction
    for path in files:
        _read_prefix(path, int(os.path.getsize(path) * fraction))
    return "warm" if fraction >= 1.0 else f"cached-{fraction:g}"


def _read_prefix(path: str, nbytes: int) -> None:
    with open(path, "rb", buffering=0) as f:
        while nbytes > 0:
            got = f.read(min(nbytes, 64 << 20))
            if not got:
                return
            nbytes -= len(got)


@dataclass
class Child:
    """How a child process ended: status "ok", "failed" (non-zero exit) or "timeout"."""

    status: str
    returncode: int
    stdout: str
    stderr: str
    process_seconds: float  # spawn to exit, as the parent saw it
    cgroup: dict = field(default_factory=dict)

    def result(self) -> dict:
        """The child's last stdout line as JSON (a dict), or {} when it did not finish."""
        lines = self.stdout.strip().splitlines()
        if self.status != "ok" or not lines:
            return {}
        return json.loads(lines[-1])

    def fields(self) -> dict:
        """What every record of a child run carries, besides the child's own result."""
        out = dict(status=self.status, process_seconds=self.process_seconds, **self.cgroup)
        if self.status == "timeout":
            out["error"] = f"killed after the {self.process_seconds:.1f} s timeout"
        elif self.status != "ok":
            out["error"] = self.stderr[-2000:] or f"exit status {self.returncode}"
        return out


def run_child(argv: list[str], ctx: Context, env: dict | None = None) -> Child:
    """Run argv to completion, timed from spawn to exit; in a memory cgroup when ctx says so.

    The child gets its own session so a timeout (ctx.timeout) kills it and everything it
    started. A cgroup (ctx.cgroup_memory) is made before the clock starts and removed after.
    """
    cg = None
    if ctx.cgroup_memory:
        from cgroup import MemoryCgroup

        cg = MemoryCgroup.create(ctx.cgroup_memory)
        argv = cg.wrap(argv)
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=ctx.timeout)
            status = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            status = "timeout"
        seconds = time.perf_counter() - start
        usage = cg.usage() if cg else {}
    finally:
        if cg is not None:
            cg.remove()
    if status == "failed" and usage.get("cgroup_oom_kills"):
        err += f"\n(killed by the OOM killer of the {ctx.cgroup_memory}-byte memory cgroup)"
    return Child(status, proc.returncode, out, err, seconds, usage)


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=os.path.dirname(__file__))
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], capture_output=True,
                               text=True, cwd=os.path.dirname(__file__)).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Timer:
    """Wall-clock seconds of a with-block (perf_counter)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def emit(record: dict, stream=sys.stdout) -> None:
    seconds = record.get("seconds")
    moved = record.get("bytes")
    if seconds and moved:
        record.setdefault("mb_per_s", round(moved / seconds / 1e6, 1))
    record.setdefault("status", "ok")
    record.setdefault("commit", commit())
    stream.write(json.dumps(record, sort_keys=True) + "\n")
    stream.flush()


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value, spec: str = "10.4f") -> str:
    width = int(spec.split(".")[0])
    return f"{value:{spec}}" if value is not None else f"{'-':>{width}}"


def summarize(records: list[dict], stream=sys.stderr) -> None:
    """Per (workload, device): runs, median seconds in the child, median whole-process seconds,
    median set-up seconds (tuned rows), MB/s, and what a tuned row tunes. Warm-up runs and runs
    that did not finish are left out of the medians and counted as failed."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if not r.get("warmup"):
            groups.setdefault((r["workload"], r.get("device", "")), []).append(r)
    stream.write(f"{'workload':30} {'runs':>4} {'failed':>6} {'median s':>10} {'process s':>10}"
                 f" {'setup s':>8} {'MB/s':>9}  tuned / device\n")
    for (name, dev), rs in sorted(groups.items()):
        ok = [r for r in rs if r.get("status", "ok") == "ok"]
        sec = _median(r.get("seconds") for r in ok)
        proc = _median(r.get("process_seconds") for r in ok)
        setup = _median(r.get("setup_seconds") for r in ok)
        mbs = _median(r.get("mb_per_s") for r in ok)
        tuned = next((r["tuned"] for r in rs if r.get("tuned")), None)
        note = f"tuned: {tuned}" if tuned else dev[:60]
        stream.write(f"{name:30} {len(rs):4d} {len(rs) - len(ok):6d} {_fmt(sec)} {_fmt(proc)}"
                     f" {_fmt(setup, '8.3f')} {_fmt(mbs, '9.1f')}  {note}\n")
