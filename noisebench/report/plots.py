"""The report's plot helpers, once: mean lines with interval bands or bars, panel grids,
the chance line and a log axis of training sizes. Every figure module draws with these.

An interval is drawn only where there is one: with one seed, a line without a band.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from ..summary import Estimate  # noqa: E402

MANY_SETUPS = 4  # more setups than this on one chart: CIs as offset error bars, not bands


def band(
    ax,
    x,
    ests: list[Estimate],
    colour,
    label: str = "",
    scale: float = 100,
    alpha: float = 0.18,
    clip: bool = False,
    **line,
) -> None:
    """The means as a line, their 95 % CIs as a band (`clip`: kept within 0-100, for
    accuracies in percent)."""
    mean = np.array([e.mean for e in ests]) * scale
    ax.plot(x, mean, color=colour, label=label, **line)
    if any(math.isfinite(e.half) for e in ests):
        low = np.array([e.low for e in ests]) * scale
        high = np.array([e.high for e in ests]) * scale
        if clip:
            low, high = np.clip(low, 0, 100), np.clip(high, 0, 100)
        ax.fill_between(x, low, high, color=colour, alpha=alpha, linewidth=0)


def bars(ax, x, ests: list[Estimate], colour, scale: float = 100, offset: float = 0.0, **line):
    """The means with 95 % CI error bars (none for one seed), shifted `offset` along x."""
    mean = np.array([e.mean for e in ests]) * scale
    half = np.array([e.half if math.isfinite(e.half) else 0.0 for e in ests]) * scale
    line = {"capsize": 2, "elinewidth": 0.8, "capthick": 0.8, **line}
    ax.errorbar(np.asarray(x, dtype=float) + offset, mean, yerr=half, color=colour, **line)


def ci_line(ax, x, ests, scale, colour, label: str, many: bool = False, offset=0.0, **line):
    """A band, or for charts with `many` lines (bands would pile up) offset error bars."""
    if many:
        bars(ax, x, ests, colour, scale, offset, label=label, **line)
    else:
        band(ax, x, ests, colour, label, scale, **line)


def dodge(index: int, count: int, step: float = 0.6) -> float:
    """x offset of the index-th of `count` lines, so their error bars sit side by side."""
    return (index - (count - 1) / 2) * step


def panels(
    n: int, width: float = 4.2, height: float = 3.2, cols: int | None = None, shared: bool = False
) -> tuple[Figure, list]:
    """n axes in rows of `cols` (two by default); unused cells hidden. `shared`: common x and
    y scales, tick labels on every panel."""
    cols = cols or min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width * cols + (0.6 if shared else 1.6), height * rows + (0.7 if shared else 0)),
        layout="constrained",
        squeeze=False,
        sharex=shared,
        sharey=shared,
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    if shared:
        for ax in flat[:n]:
            ax.tick_params(labelbottom=True, labelleft=True)
    return fig, flat[:n]


def chance(ax, value: float, label: str | None = None) -> None:
    """A dotted horizontal line at chance accuracy (in percent)."""
    ax.axhline(value * 100, color="0.45", linestyle=":", linewidth=1, label=label)


def log_sizes(ax, sizes: list[int]) -> None:
    """A log x axis ticked at the training sizes."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    crowded = any(b / a < 1.6 for a, b in zip(sizes, sizes[1:], strict=False)) or len(sizes) > 5
    ax.set_xticklabels(
        [f"{n:,}" for n in sizes],
        rotation=45 if crowded else 0,
        ha="right" if crowded else "center",
    )
    ax.set_xlabel("training examples N (log scale)")
