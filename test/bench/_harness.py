"""Shared by the benchmarks: timing and the one-line JSON report."""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable

DSN = os.environ.get("PG_OBSERVE_BENCH_DSN", "")


def report(name: str, value: float, unit: str, baseline: float, **extra: object) -> None:
    """One figure: a ratio against a baseline measured in the same run."""
    value, baseline = float(value), float(baseline)
    figure = {"name": name, "value": round(value, 6), "unit": unit, "baseline": round(baseline, 6),
              "ratio": round(value / baseline, 3) if baseline else None}
    figure.update(extra)
    print(json.dumps(figure), flush=True)


def interleaved_latencies(a: Callable[[], object], b: Callable[[], object], rounds: int) -> tuple[list, list]:
    """Times a and b alternately, so that a noisy neighbour hurts both alike. Milliseconds."""
    times_a, times_b = [], []
    for _ in range(rounds):
        for fn, times in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
    return times_a, times_b


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
