"""PNG plots of simulation results: latency CDFs per policy, latency against request rate.

    cdf_plot(results, "startup", "docs/sim/cdf.png")       # one line per policy (one rate)
    rate_plot(results, "docs/sim/rate.png")                # mean and p99 against rps

matplotlib with the Agg backend, imported when a plot is drawn (the simulator needs none).
"""

from __future__ import annotations

import numpy as np

from serving.sim.report import Result

__all__ = ["cdf_plot", "rate_plot"]

_FLOOR = 1e-3  # log axes: zero latencies (warm starts) are drawn here
_LABEL = {"startup": "startup latency (s)", "ttft": "time to first token (s)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cdf_plot(results: list[Result], what: str, path: str, title: str = "") -> None:
    """The CDF of each result's `what` ("startup" or "ttft"), log x axis (zeros, i.e. warm
    starts, sit at the left edge)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    floor = _FLOOR
    for r in results:
        a = np.sort(np.maximum(getattr(r, what), floor))
        if len(a):
            ax.plot(a, np.arange(1, len(a) + 1) / len(a), label=r.policy, linewidth=1.4)
    ax.set_xscale("log")
    ax.set_xlabel(_LABEL[what] + f" (values under {floor:g} s drawn at {floor:g})")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rate_plot(results: list[Result], path: str, what: str = "startup",
              title: str = "") -> None:
    """Mean (solid) and p99 (dashed) of `what` against the request rate, per policy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    policies = list(dict.fromkeys(r.policy for r in results))
    for i, name in enumerate(policies):
        rows = sorted((r.rps, r.summary()) for r in results if r.policy == name)
        x = [rps for rps, _ in rows]
        color = f"C{i}"
        ax.plot(x, [max(s[f"{what}_mean"], _FLOOR) for _, s in rows], "o-", color=color,
                label=f"{name} mean")
        ax.plot(x, [max(s[f"{what}_p99"], _FLOOR) for _, s in rows], "s--", color=color,
                alpha=0.6, label=f"{name} p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    rates = sorted({r.rps for r in results})
    ax.set_xticks(rates, [f"{x:g}" for x in rates])
    ax.minorticks_off()
    ax.set_xlabel("request rate (requests/s)")
    ax.set_ylabel(_LABEL[what] + f" (under {_FLOOR:g} s drawn at {_FLOOR:g})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
