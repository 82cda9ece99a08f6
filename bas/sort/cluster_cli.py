"""python -m bas.sort --ray ADDRESS NODE:PATH... --output-dir DIR: the cluster sort's command line.

Each input is NODE:PATH, NODE being the Ray custom resource that names the node holding PATH
(a relative PATH is taken from this directory); a node with no input is named as NODE: (an
empty path). Partition p goes to the p-th node named, as DIR/part-000pp.dat on that node.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bas.sort",
                                description="Sort fixed-size records spread over the nodes of "
                                            "a Ray cluster (WiscSort on each node).")
    p.add_argument("--ray", required=True, metavar="ADDRESS",
                   help="the Ray cluster's address (as `ray start` printed it, or auto)")
    p.add_argument("inputs", nargs="+", metavar="NODE:PATH",
                   help="an input file on the node named by the Ray resource NODE")
    p.add_argument("--output-dir", required=True,
                   help="directory (the same path on every node) for the partitions")
    p.add_argument("--scratch", default=None, help="where reduces spill (default: output dir)")
    p.add_argument("--memory", default="1G", help="buffers one task may hold (default 1G)")
    p.add_argument("--block", default="64M", help="most bytes a map task reads (default 64M)")
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--key-size", type=int, default=10)
    p.add_argument("--key-offset", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="threads of each task's kernels")
    p.add_argument("--profile", default=None,
                   help="device profile JSON, the same path on every node")
    p.add_argument("--quiet", action="store_true", help="no summary")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    return p


def _inputs(specs: list[str], parser) -> dict[str, list[str]]:
    nodes: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, path = spec.partition(":")
        if not sep or not name:
            parser.error(f"input {spec!r} is not NODE:PATH")
        paths = nodes.setdefault(name, [])
        if path:
            paths.append(os.path.abspath(path))
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from bas.sort.cluster import ClusterSortError, sort_cluster

    try:
        report = sort_cluster(_inputs(args.inputs, parser), os.path.abspath(args.output_dir),
                              args.key_size, args.record_size, args.ray,
                              key_offset=args.key_offset,
                              scratch=os.path.abspath(args.scratch) if args.scratch else None,
                              memory_budget=args.memory, block_bytes=args.block,
                              threads=args.threads, profiles=args.profile)
    except (ValueError, OSError, ClusterSortError) as exc:
        print(f"bas.sort: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(report.to_json())
    elif not args.quiet:
        print(report.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
