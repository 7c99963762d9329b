"""Pure numbers for the bench: percentiles, summaries, the linearity check and the budget verdicts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default method); NaN for no values."""
    if not 0 <= pct <= 100:
        raise ValueError("pct must be within 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    n: int  # successful (2xx) requests measured
    errors: int  # non-2xx answers and transport failures
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput: float  # successful requests per second of measured wall time
    statuses: dict[str, int]


def summarize(
    latencies_ms: Sequence[float], errors: int, elapsed_s: float, statuses: dict[str, int] | None = None
) -> Summary:
    return Summary(
        n=len(latencies_ms),
        errors=errors,
        p50_ms=percentile(latencies_ms, 50),
        p95_ms=percentile(latencies_ms, 95),
        p99_ms=percentile(latencies_ms, 99),
        throughput=len(latencies_ms) / elapsed_s if elapsed_s > 0 else math.nan,
        statuses=dict(statuses or {}),
    )


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


@dataclass(frozen=True)
class Linearity:
    sizes: tuple[int, ...]
    marginal_us: tuple[float, ...]  # extra µs per extra resource between consecutive sizes
    growth: float  # last marginal cost / first marginal cost: ~1 when linear, >> 1 when superlinear
    linear: bool


def linearity(
    sizes: Sequence[int], times_ms: Sequence[float], tolerance: float = 1.5, floor_us: float = 2.0
) -> Linearity:
    """Is time per request linear in resources? Compares marginal cost per resource across ranges.

    Linear means the cost of each extra resource does not grow with the chart: the marginal cost over
    the last range is at most `tolerance` times that over the first. Marginal costs below `floor_us`
    µs per resource are treated as `floor_us`, so timer noise on a near-free path is not "growth".
    """
    if len(sizes) != len(times_ms) or len(sizes) < 3:
        raise ValueError("need at least three (size, time) points")
    pairs = sorted(zip(sizes, times_ms, strict=True))
    marginal = tuple(
        (t2 - t1) * 1000 / (n2 - n1) for (n1, t1), (n2, t2) in zip(pairs, pairs[1:], strict=False)
    )
    first, last = max(marginal[0], floor_us), max(marginal[-1], floor_us)
    growth = last / first
    return Linearity(tuple(n for n, _ in pairs), marginal, growth, growth <= tolerance)


@dataclass(frozen=True)
class Verdict:
    item: str
    budget: str
    measured: str
    passed: bool | None  # None: not measured in this run

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def at_most(item: str, value: float | None, limit: float, unit: str) -> Verdict:
    if value is None or math.isnan(value):
        return Verdict(item, f"≤ {limit:g} {unit}", "not measured", None)
    return Verdict(item, f"≤ {limit:g} {unit}", f"{value:.1f} {unit}", value <= limit)


def at_least(item: str, value: float | None, limit: float, unit: str) -> Verdict:
    if value is None or math.isnan(value):
        return Verdict(item, f"≥ {limit:.3g} {unit}", "not measured", None)
    return Verdict(item, f"≥ {limit:.3g} {unit}", f"{value:.2f} {unit}", value >= limit)
