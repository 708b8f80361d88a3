"""benchmarks/lateness.png: how late W3's jobs fired at 1,000 jobs/s, engine vs APScheduler.

Reads the records the last W3 and peer runs kept in the output folder; either may be missing
(the plot then shows what there is, or is not made at all).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.records import read
from benchmarks.stats import percentile

RATE = 1000
SERIES = (("engine", "infinite-scheduler"), ("peer", "APScheduler 3.11 (SQLAlchemy store)"))


def lateness_plot(out_dir: Path, target: Path) -> Path | None:
    """The complementary CDF of lateness (log scales, so that the tail shows); None if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = 0
    for key, label in SERIES:
        fires = read(out_dir / f"w3-{key}-r{RATE}.rec")
        values = sorted(max(v, 0.01) for v in fires.lateness_ms())
        if not values:
            continue
        n = len(values)
        share_later = [1 - i / n for i in range(n)]
        p99 = percentile(values, 99)
        ax.step(values, share_later, where="post", label=f"{label}: p99 {p99:.1f} ms, n={n:,}")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lateness (ms, fired - scheduled)")
    ax.set_ylabel("share of jobs at least this late")
    ax.set_title(f"W3 steady at {RATE:,} jobs/s on MariaDB")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
