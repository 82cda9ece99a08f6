"""python -m bas.sort IN OUT [--memory 1G] ...: sort fixed-size records, report as JSON.

With --ray ADDRESS the records of several nodes are sorted over a Ray cluster
(bas.sort.cluster_cli).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from bas.sort.engine import SCHEDULES, sort
from bas.sort.plan import ALGORITHMS

#: signals that stop a sort and remove what it wrote, as Ctrl-C does
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stopped(KeyboardInterrupt):
    """A stop signal, raised where the sort reports progress (so exit code 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP stop the sort at its next progress point, between batches,
    where no lock is held or device call is in flight, and its cleanup removes the temporary
    output and the runs. Raising straight from the handler could land inside a device's
    lock and hang the cleanup. A second Ctrl-C stops it at once and a third kills it; other
    repeated signals are ignored until the cleanup is done. Signals the process was started
    with ignored (nohup) stay ignored.

    The CLI's choice only: library calls never take over a process's signals.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> _StopSignals:
        try:
            for s in STOP_SIGNALS:
                if signal.getsignal(s) == signal.SIG_IGN:
                    continue  # nohup, or a background job: ignored it was, ignored it stays
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread (main() called from a thread): leave them
            pass
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._previous.items():
            signal.signal(s, old)

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            return
        if not (signum == self.received == signal.SIGINT):
            return  # a process manager repeating SIGTERM must not cut the cleanup short
        for s in self._previous:  # a second Ctrl-C: stop at once, a third kills
            signal.signal(s, signal.SIG_DFL)
        raise _Stopped(signum)

    def check(self) -> None:
        if self.received is not None:
            raise _Stopped(self.received)


def _progress(stream, signals: _StopSignals):
    """The progress callback: stops the sort once a signal came, draws a line unless quiet."""
    last = [0.0]

    def report(phase: str, done: int, total: int) -> None:
        signals.check()
        if stream is None:
            return
        now = time.monotonic()
        if now - last[0] >= 0.5 or done == total:
            last[0] = now
            stream.write(f"\r{phase:14} {done:>14,}/{total:,} records")
            if done == total:
                stream.write("\n")
            stream.flush()

    return report


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--ray" or a.startswith("--ray=") for a in argv):  # the cluster sort
        from bas.sort.cluster_cli import main as cluster_main

        return cluster_main(argv)
    p = argparse.ArgumentParser(prog="python -m bas.sort",
                                description="Sort fixed-size records (WiscSort).",
                                epilog="python -m bas.sort --ray ADDRESS NODE:PATH... "
                                       "--output-dir DIR sorts over a Ray cluster "
                                       "(python -m bas.sort --ray ADDRESS --help).")
    p.add_argument("input", help="input path or device URL")
    p.add_argument("output", help="output path (written atomically) or device URL")
    p.add_argument("--memory", default="1G",
                   help="budget for the sort's own buffers: the key index, runs being formed, "
                        "merge, gather and write buffers (default 1G). It does not bound the "
                        "page cache the kernel keeps for the input and output, nor the "
                        "interpreter (~100 MiB). The plan reads the cgroup memory limit, "
                        "what is available and how much of the input is cached, cuts a budget "
                        "past 90%% of the available memory, and avoids random reads the page "
                        "cache left beside the budget cannot serve")
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--key-size", type=int, default=10)
    p.add_argument("--key-offset", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every phase (default: from the profile / CPU count)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="auto")
    p.add_argument("--schedule", choices=SCHEDULES, default="staged")
    p.add_argument("--profile", default=None, help="device profile JSON (bas.braid.profile --save)")
    p.add_argument("--scratch", default=None, help="directory for runs (default: output's)")
    p.add_argument("--quiet", action="store_true", help="no progress, no summary")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    args = p.parse_args(argv)

    profile = None
    if args.profile:
        from bas.braid.profile import Profile

        profile = Profile.load(args.profile)
    try:
        with _StopSignals() as signals:
            report = sort(args.input, args.output, record_size=args.record_size,
                          key_size=args.key_size, key_offset=args.key_offset,
                          memory_budget=args.memory, threads=args.threads,
                          algorithm=args.algorithm, schedule=args.schedule, profile=profile,
                          scratch=args.scratch,
                          progress=_progress(None if args.quiet else sys.stderr, signals))
    except (ValueError, OSError) as exc:
        print(f"bas.sort: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        print(f"bas.sort: stopped by {signal.Signals(signum).name}; no output was written",
              file=sys.stderr)
        return 128 + signum
    if signals.received is not None:  # it came after the last progress point
        print(f"bas.sort: {signal.Signals(signals.received).name} came as the sort finished; "
              "the output is complete", file=sys.stderr)
    if args.json:
        print(report.to_json())
    elif not args.quiet:
        print(report.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
