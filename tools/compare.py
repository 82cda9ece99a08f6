"""Interleaved runs of several workloads (A B A B ...) and their ratios, paired by round.

Drift on the machine (other jobs, thermal state, the page cache) then falls on every workload
alike, and each round gives one ratio per workload against the reference; the median and the
range of those ratios are the result, never one absolute time.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Iterator

from benchkit import WORKLOADS, Context, emit

__all__ = ["interleave", "pair_ratios", "report"]


def interleave(names: list[str], make_ctx: Callable[[str], Context], rounds: int,
               warmup: int = 0, sink: Callable[[dict], None] = emit) -> list[dict]:
    """Run round after round, each workload once per round in the order given; every record.

    Each workload's generator is made once (its set-up, e.g. making a data set, happens on its
    first run) with ctx.repeat = warmup + rounds, and advanced one run at a time. Records get
    `round` (1-based; warm-up rounds are 0, -1, ...) and `warmup`. A workload that raises is
    recorded as failed in that round and not run again.
    """
    total = warmup + rounds
    gens: dict[str, Iterator[dict] | None] = {}
    for name in names:
        ctx = make_ctx(name)
        ctx.repeat = total
        gens[name] = WORKLOADS[name].fn(ctx)
    records = []
    for i in range(total):
        number = i - warmup + 1
        for name, gen in gens.items():
            if gen is None:
                continue
            try:
                record = next(gen)
            except StopIteration:
                gens[name] = None
                continue
            except Exception as exc:  # noqa: BLE001 - recorded; the other workloads go on
                gens[name] = None
                record = dict(workload=name, status="failed", seconds=None,
                              error=f"{type(exc).__name__}: {exc}"[-2000:])
            record.update(round=number, warmup=number <= 0)
            sink(record)
            records.append(record)
    for gen in gens.values():
        if gen is not None:
            gen.close()
    return records


def _ok(record: dict | None) -> bool:
    return record is not None and record.get("status", "ok") == "ok" and bool(
        record.get("seconds"))


def pair_ratios(records: list[dict], reference: str, other: str,
                key: str = "seconds") -> list[tuple[int, float | None]]:
    """(round, other's time / reference's time) for every measured round; None where either
    run did not finish or has no `key` (e.g. process_seconds of an in-process workload)."""
    by_round: dict[int, dict[str, dict]] = {}
    for r in records:
        if not r.get("warmup"):
            by_round.setdefault(r["round"], {})[r["workload"]] = r
    out = []
    for number in sorted(by_round):
        ref, oth = by_round[number].get(reference), by_round[number].get(other)
        if ref is None and oth is None:
            continue
        ok = _ok(ref) and _ok(oth) and ref.get(key) and oth.get(key)
        out.append((number, oth[key] / ref[key] if ok else None))
    return out


def _stats(ratios: list[tuple[int, float | None]]) -> str:
    values = [v for _, v in ratios if v is not None]
    if not values:
        return "no complete pair"
    missing = len(ratios) - len(values)
    text = (f"median {statistics.median(values):.2f}x, min {min(values):.2f}x, "
            f"max {max(values):.2f}x over {len(values)} pairs")
    return text + (f" ({missing} incomplete, left out)" if missing else "")


def _why(records: list[dict], number: int, names: tuple[str, ...]) -> str:
    """Why a round has no ratio: which run did not finish, and after how long."""
    notes = []
    for r in records:
        if r.get("round") == number and r["workload"] in names and not _ok(r):
            after = r.get("process_seconds")
            notes.append(f"{r['workload']}: {r.get('status', 'no time')}"
                         + (f" after {after:.1f} s" if after else ""))
    return f"  ({'; '.join(notes)})" if notes else ""


def report(records: list[dict], reference: str, stream=sys.stderr) -> None:
    """Per pair the ratio, then median and min-max, for in-process and whole-process seconds.

    ratio = the other workload's seconds / the reference's seconds in the same round, so >1
    means the reference was faster by that factor.
    """
    names = list(dict.fromkeys(r["workload"] for r in records))
    measured = [r for r in records if not r.get("warmup")]
    stream.write(f"\nratios per round: other's seconds / {reference}'s seconds "
                 f"(>1: {reference} is faster)\n")
    for other in names:
        if other == reference:
            continue
        inproc = pair_ratios(measured, reference, other, "seconds")
        whole = pair_ratios(measured, reference, other, "process_seconds")
        stream.write(f"{other} / {reference}\n")
        wholes = dict(whole)
        for number, ratio in inproc:
            w = wholes.get(number)
            stream.write(f"  round {number:3d}: in-process "
                         f"{f'{ratio:.3f}x' if ratio is not None else '-':>8}  whole-process "
                         f"{f'{w:.3f}x' if w is not None else '-':>8}"
                         f"{_why(measured, number, (reference, other))}\n")
        stream.write(f"  in-process:    {_stats(inproc)}\n")
        if any(r.get("process_seconds") for r in measured if r["workload"] in (reference, other)):
            stream.write(f"  whole-process: {_stats(whole)}\n")
        else:
            stream.write("  whole-process: - (these workloads run inside the harness)\n")
