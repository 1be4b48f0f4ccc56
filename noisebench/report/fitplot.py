"""The curve-fit figure: test accuracy per epoch with the fitted logistics, and the late-epoch
slopes of train and test loss against X (the maths is in fits.py)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display: set before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402

from .data import ReportData, SetupInfo  # noqa: E402
from .fits import MIN_FIT_EPOCHS, MIN_WINDOW, LogisticFit, Slope, accuracy_fits, slopes  # noqa: E402
from .style import level_colour, pct_label, setup_colour  # noqa: E402

AHEAD = 0.3  # the fitted curves run on this share of the epochs past the last one


def _note(ax, text: str) -> None:
    box = {"facecolor": "white", "alpha": 0.85, "edgecolor": "0.8"}
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.3", bbox=box)


def _accuracy(ax, data: ReportData, setup: SetupInfo, fits: dict) -> None:
    """Mean test accuracy per epoch (dots) and, where the fit is good, its logistic (dashed)."""
    last = data.epochs
    for lv in data.levels(setup.name):
        ests = data.stats[(setup.name, lv)].epochs["test_acc"]
        x = np.arange(1, len(ests) + 1)
        colour = level_colour(lv)
        ax.plot(x, [e.mean * 100 for e in ests], "o", color=colour, markersize=3)
        fit: LogisticFit | None = fits.get((setup.name, lv))
        if fit is not None and fit.ok:
            grid = np.linspace(1, len(ests) * (1 + AHEAD), 200)
            ax.plot(grid, fit(grid) * 100, "--", color=colour, linewidth=1.2)
    ax.axvline(last, color="0.6", linestyle=":", linewidth=1)
    ax.axhline(data.chance * 100, color="0.45", linestyle=":", linewidth=1)
    if last < MIN_FIT_EPOCHS:
        _note(ax, f"{last} epochs: too few for a fit (needs {MIN_FIT_EPOCHS})")
    ax.set_ylim(0, 100)
    ax.set_xlim(0.5, max(last * (1 + AHEAD), 2) + 0.5)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{setup.name}: test accuracy, logistic fits", color=setup_colour(setup))


def _slopes(ax, data: ReportData, setup: SetupInfo, found: dict[tuple[str, float], Slope]):
    """Late-epoch slope of train (dashed) and test (solid) loss against X, 95 % CI bars."""
    levels = [lv for lv in data.levels(setup.name) if (setup.name, lv) in found]
    ax.axhline(0, color="0.45", linewidth=0.8)
    ax.set_xlabel("noise level X (%)")
    ax.set_xlim(-4, 104)
    ax.set_ylabel("loss slope (nats per epoch)")
    if not levels:
        _note(ax, f"{data.epochs} epochs: too few for a slope (needs {MIN_WINDOW})")
        ax.set_title(f"{setup.name}: late-epoch loss slope", color=setup_colour(setup))
        return
    x = np.array([lv * 100 for lv in levels])
    colour = setup_colour(setup)
    for part, style, marker, shift in (("train", "--", "s", -0.8), ("test", "-", "o", 0.8)):
        ests = [getattr(found[(setup.name, lv)], part) for lv in levels]
        half = [e.half if math.isfinite(e.half) else 0.0 for e in ests]
        ax.errorbar(
            x + shift,
            [e.mean for e in ests],
            yerr=half,
            color=colour,
            linestyle=style,
            marker=marker,
            markersize=4,
            markerfacecolor="white" if part == "train" else colour,
            capsize=2,
            linewidth=1.2,
        )
    hits = [(lv, found[(setup.name, lv)]) for lv in levels]
    hits = [(lv * 100 + 0.8, s.test.high) for lv, s in hits if s.overfitting]
    if hits:
        above = offset_copy(ax.transData, fig=ax.figure, y=7, units="points")
        hx, hy = zip(*hits, strict=True)
        ax.plot(hx, hy, "v", color="black", markersize=6, linestyle="none", transform=above)
        ax.margins(y=0.15)
    window = next(iter(found.values())).window
    ax.set_title(
        f"{setup.name}: loss slope over the last {window} epochs", color=setup_colour(setup)
    )


def fits_figure(data: ReportData) -> Figure | None:
    """One row per setup: test accuracy with logistic fits, and late-epoch loss slopes vs X."""
    if not data.stats:
        return None
    fits, found = accuracy_fits(data), slopes(data)
    rows = len(data.setups)
    fig, axes = plt.subplots(
        rows, 2, figsize=(10.0, 3.1 * rows), layout="constrained", squeeze=False
    )
    shown: dict[float, None] = {}
    for (ax_acc, ax_slope), setup in zip(axes, data.setups, strict=True):
        _accuracy(ax_acc, data, setup, fits)
        _slopes(ax_slope, data, setup, found)
        shown.update(dict.fromkeys(data.levels(setup.name)))
    handles = [
        plt.Line2D([], [], color=level_colour(lv), marker="o", markersize=3, label=pct_label(lv))
        for lv in sorted(shown)
    ]
    grey = "0.3"
    handles += [
        plt.Line2D([], [], color=grey, linestyle="--", label="logistic fit (good fits only)"),
        plt.Line2D([], [], color="0.6", linestyle=":", label="last epoch / chance"),
        plt.Line2D([], [], color=grey, marker="o", label="test loss slope"),
        plt.Line2D(
            [],
            [],
            color=grey,
            marker="s",
            markerfacecolor="white",
            ls="--",
            label="train loss slope",
        ),
        plt.Line2D(
            [], [], color="black", marker="v", ls="none", label="test ↑ while train ↓ (95 % CIs)"
        ),
    ]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig
