"""Formatting and small numeric helpers shared by the explanation's sentence functions."""

from __future__ import annotations

import math

from ..summary import Estimate
from .data import ReportData


# --- formatting -------------------------------------------------------------------------
def x(level: float) -> str:
    return f"{level * 100:.0f} %"


def acc(value: float) -> str:
    return f"{value * 100:.1f} %"


def pts(value: float) -> str:
    return f"{value * 100:.1f} points"


def nats(value: float) -> str:
    return f"{value:.2f}"


def levels_text(levels: list[float]) -> str:
    """'X = 10 %', 'X = 10 and 30 %', 'X = 10, 30 and 50 %' (runs of levels as ranges)."""
    nums = [f"{lv * 100:.0f}" for lv in levels]
    if len(nums) == 1:
        return f"X = {nums[0]} %"
    return f"X = {', '.join(nums[:-1])} and {nums[-1]} %"


def span(levels: list[float]) -> str:
    if len(levels) == 1:
        return f"X = {x(levels[0])}"
    return f"X = {levels[0] * 100:.0f}–{x(levels[-1])}"


def final_series(data: ReportData, setup: str, metric: str) -> list[tuple[float, Estimate]]:
    return [(lv, data.stats[(setup, lv)].final[metric]) for lv in data.levels(setup)]


def finite(e: Estimate) -> bool:
    return math.isfinite(e.mean)


def has_ci(*ests: Estimate) -> bool:
    return all(math.isfinite(e.half) for e in ests)


def within_noise(e0: Estimate, e1: Estimate) -> str:
    """' (…)' when the difference between two estimates is not established, else ''."""
    if not has_ci(e0, e1):
        return " (one seed, so uncertain)"
    return " (a change within the seeds' noise)" if e0.overlaps(e1) else ""


def steepest(series: list[tuple[float, Estimate]], sign: int) -> tuple[float, float, float]:
    """(from level, to level, change per 10 points of X) of the steepest step in direction
    `sign` (-1: largest fall, +1: largest rise)."""
    best = (series[0][0], series[1][0], -math.inf)
    for (l0, e0), (l1, e1) in zip(series, series[1:], strict=False):
        if l1 <= l0:
            continue
        rate = sign * (e1.mean - e0.mean) / ((l1 - l0) * 10)
        if rate > best[2]:
            best = (l0, l1, rate)
    return best
