"""python -m bas.sort IN OUT [--memory 1G] ...: sort fixed-size records, report as JSON."""

from __future__ import annotations

import argparse
import sys
import time

from bas.sort.engine import SCHEDULES, sort
from bas.sort.plan import ALGORITHMS


def _progress(stream):
    last = [0.0]

    def report(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done == total:
            last[0] = now
            stream.write(f"\r{phase:14} {done:>14,}/{total:,} records")
            if done == total:
                stream.write("\n")
            stream.flush()

    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bas.sort",
                                description="Sort fixed-size records (WiscSort).")
    p.add_argument("input", help="input path or device URL")
    p.add_argument("output", help="output path (written atomically) or device URL")
    p.add_argument("--memory", default="1G", help="memory budget for buffers (default 1G)")
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--key-size", type=int, default=10)
    p.add_argument("--key-offset", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every phase (default: from the profile / CPU count)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="auto")
    p.add_argument("--schedule", choices=SCHEDULES, default="staged")
    p.add_argument("--profile", default=None, help="device profile JSON (bas.profile --save)")
    p.add_argument("--scratch", default=None, help="directory for runs (default: output's)")
    p.add_argument("--quiet", action="store_true", help="no progress, no summary")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    args = p.parse_args(argv)

    profile = None
    if args.profile:
        from bas.profile import Profile

        profile = Profile.load(args.profile)
    try:
        report = sort(args.input, args.output, record_size=args.record_size,
                      key_size=args.key_size, key_offset=args.key_offset,
                      memory_budget=args.memory, threads=args.threads,
                      algorithm=args.algorithm, schedule=args.schedule, profile=profile,
                      scratch=args.scratch,
                      progress=None if args.quiet else _progress(sys.stderr))
    except (ValueError, OSError) as exc:
        print(f"bas.sort: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bas.sort: interrupted; no output was written", file=sys.stderr)
        return 130
    if args.json:
        print(report.to_json())
    elif not args.quiet:
        print(report.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
