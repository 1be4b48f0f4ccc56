"""Figures of the diagnostic sections (diagnostics.py): fitting the noisy labels over epochs,
calibration, robustness to FGSM, finding the wrong labels, and the setups ranked by accuracy lost.

Every line is a mean over seeds with its 95 % CI as a band (or bar); colours follow the main
figures: one per setup, one viridis shade per noise level.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..summary import Estimate  # noqa: E402
from .frames import Frames, SetupInfo  # noqa: E402
from .measured import (  # noqa: E402
    Measured,
    counts_copies,
    level_short,
    unperturbed,
    x_share,
)
from .plots import MANY_SETUPS, band, ci_line, dodge, panels  # noqa: E402
from .style import level_colour, setup_colour, setup_line  # noqa: E402

FITS = {
    "fit_noisy": ("#D55E00", "corrupted examples predicted as their noisy label (memorised)"),
    "fit_true": ("#0072B2", "corrupted examples predicted as their true label"),
    "fit_clean": ("#009E73", "uncorrupted examples predicted as their label"),
}


def _level_colour(setup: SetupInfo, level: float):
    return level_colour(x_share(setup, level) / 100)


def noisy_fit(fr: Frames, m: Measured, shown: dict[str, list[float]], crossings: dict) -> Figure:
    """Per label-noise setup and level: the three fits of the training set per epoch."""
    setups = [s for s in fr.infos if s.name in shown]
    cols = max(len(lvs) for lvs in shown.values())
    fig, axes = plt.subplots(
        len(setups),
        cols,
        figsize=(3.0 * cols + 0.6, 2.2 * len(setups) + 0.8),
        layout="constrained",
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for row, setup in zip(axes, setups, strict=True):
        for ax in row[len(shown[setup.name]) :]:
            ax.set_visible(False)
        for ax, lv in zip(row, shown[setup.name], strict=False):
            for name, (colour, _) in FITS.items():
                ests = m.per_epoch(setup.name, lv, name)
                dots = {"marker": "."} if len(ests) <= 20 else {}
                band(ax, np.arange(1, len(ests) + 1), ests, colour, **dots)
            cross = crossings.get((setup.name, lv))
            if cross:
                ax.axvline(cross, color="0.35", linestyle=":", linewidth=1)
            ax.set_title(
                f"{setup.name}, {level_short(setup, lv)}",
                color=setup_colour(setup),
                fontweight="bold",
                fontsize=9,
            )
            ax.set_ylim(0, 100)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.tick_params(labelbottom=True, labelleft=True)
        row[0].set_ylabel("share of examples (%)")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    handles = [plt.Line2D([], [], color=c, marker=".", label=text) for c, text in FITS.values()]
    handles.append(
        plt.Line2D([], [], color="0.35", linestyle=":", label="noisy label overtakes true label")
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    return fig


def _vs_level(ax, setups: list[SetupInfo], series, bars: bool) -> None:
    """One line per setup: series(setup) -> [(level, Estimate)] in fractions, at X (%)."""
    for i, setup in enumerate(setups):
        points = series(setup)
        if not points:
            continue
        x = [x_share(setup, lv) for lv, _ in points]
        ci_line(
            ax,
            x,
            [e for _, e in points],
            100,
            setup_colour(setup),
            setup.name,
            bars,
            dodge(i, len(setups)),
            markersize=4,
            **setup_line(setup),
        )
    ax.set_xlabel("noise level X (%)")
    ax.set_xlim(-2, 102)


def calibration(fr: Frames, setups: list[SetupInfo], conf, gap, ece) -> Figure:
    """Mean confidence, confidence minus accuracy and ECE against X, a line per setup; with
    many setups, a row for label noise and one for the rest."""
    labels = [s for s in setups if s.kind == "labels"]
    rest = [s for s in setups if s.kind != "labels"]
    rows = [labels, rest] if len(setups) > MANY_SETUPS and labels and rest else [setups]
    fig, axes = plt.subplots(
        len(rows), 3, figsize=(11.0, 3.3 * len(rows)), layout="constrained", squeeze=False
    )
    for row, group in zip(axes, rows, strict=True):
        bars = len(group) > MANY_SETUPS
        for ax, series, label in (
            (row[0], conf, "mean confidence (%)"),
            (row[1], gap, "confidence − accuracy (points)"),
            (row[2], ece, "expected calibration error (%)"),
        ):
            _vs_level(ax, group, series, bars)
            ax.set_ylabel(label)
        row[0].set_ylim(0, 100)
        row[1].set_ylim(-100, 100)
        row[2].set_ylim(0, 100)
        row[1].axhline(0, color="0.45", linewidth=0.8)
        for y, text, va in ((0.98, "over-confident", "top"), (0.02, "under-confident", "bottom")):
            row[1].text(0.03, y, text, transform=row[1].transAxes, va=va, fontsize=7.5, color="0.4")
        if len(rows) > 1:
            row[0].legend(loc="lower left", frameon=True, framealpha=0.85, fontsize=7)
            what = "label noise" if group is labels else "other noise"
            row[1].set_title(what, fontweight="bold", fontsize=9)
    if len(rows) == 1:
        _setup_legend(fig, axes[0][0])
    return fig


def robustness(
    fr: Frames, m: Measured, shown: dict[str, list[float]], eps: list[float], middle: float
) -> Figure:
    """Per setup: test accuracy against eps under FGSM (solid) and random signs (dashed)."""
    setups = [s for s in fr.infos if s.name in shown]
    fig, axes = panels(len(setups), 3.3, 2.5, None if len(setups) <= 4 else 3, shared=True)
    seen: dict[tuple[bool, float], str] = {}
    for ax, setup in zip(axes, setups, strict=True):
        for lv in shown[setup.name]:
            clean = unperturbed(m, setup.name, lv)
            colour = _level_colour(setup, lv)
            for kind, style in (("fgsm", "-"), ("randsign", "--")):
                ests = [clean] + [m.final(setup.name, lv, f"{kind}@{e:g}") for e in eps]
                band(ax, [0, *eps], ests, colour, alpha=0.1, linestyle=style, marker=".")
            copies = counts_copies(setup.noise) and lv > 0
            seen[(copies, lv)] = level_short(setup, lv) if lv > 0 else "clean (X = 0)"
        ax.axvline(middle, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_title(setup.name, color=setup_colour(setup), fontweight="bold", fontsize=9)
        ax.set_ylim(0, 100)
    fig.supxlabel("perturbation size ε (pixels in [0, 1])", fontsize=9)
    fig.supylabel("test accuracy (%)", fontsize=9)
    handles = [
        plt.Line2D(
            [], [], color=level_colour(lv / (lv + 1) if copies else lv), marker=".", label=text
        )
        for (copies, lv), text in sorted(seen.items())
    ]
    handles += [
        plt.Line2D([], [], color="0.3", linestyle="-", label="FGSM"),
        plt.Line2D([], [], color="0.3", linestyle="--", label="random ±ε signs"),
    ]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig


def label_issues(fr: Frames, setups: list[SetupInfo], series, base_rate) -> Figure:
    """Precision, recall and precision@k of flagging by self-confidence, against X; the
    precision panels draw each setup's base rate (the share of labels changed) dotted."""
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.4), layout="constrained", sharey=True)
    for ax, name, title in (
        (axes[0], "issues_precision", "precision: flagged that are corrupted"),
        (axes[1], "issues_recall", "recall: corrupted that are flagged"),
        (axes[2], "issues_precision_at_k", "precision@k (k = corrupted count)"),
    ):
        _vs_level(ax, setups, lambda s, name=name: series(s, name), len(setups) > MANY_SETUPS)
        if name != "issues_recall":
            for s in setups:
                points = base_rate(s)
                ax.plot(
                    [x_share(s, lv) for lv, _ in points],
                    [e.mean * 100 for _, e in points],
                    color=setup_colour(s),
                    linestyle=":",
                    linewidth=1,
                )
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 100)
        ax.tick_params(labelleft=True)
    axes[0].set_ylabel("%")
    _setup_legend(fig, axes[0])
    return fig


def ranking(
    base: Estimate, rows: list[tuple[SetupInfo, Estimate]], level_label: str, chance: float
) -> Figure:
    """Final test accuracy of each setup at one shared level, most accuracy lost at the bottom,
    against the clean baseline."""
    rows = sorted(rows, key=lambda r: r[1].mean)
    fig, ax = plt.subplots(figsize=(7.6, 0.42 * len(rows) + 1.3), layout="constrained")
    y = np.arange(len(rows))
    means = [e.mean * 100 for _, e in rows]
    errs = [e.half * 100 if math.isfinite(e.half) else 0 for _, e in rows]
    bars = ax.barh(
        y, means, xerr=errs, color=[setup_colour(s) for s, _ in rows], alpha=0.85, capsize=3
    )
    for bar, (setup, _) in zip(bars, rows, strict=True):
        if setup_line(setup)["linestyle"] != "-":  # shares its colour with an earlier setup
            bar.set_hatch("///")
            bar.set_edgecolor("white")
    ax.set_yticks(y, [s.name for s, _ in rows])
    ax.axvline(base.mean * 100, color="0.2", linewidth=1.2, label="clean baseline")
    if math.isfinite(base.half):
        ax.axvspan(base.low * 100, base.high * 100, color="0.2", alpha=0.12, linewidth=0)
    ax.axvline(chance * 100, color="0.45", linestyle=":", linewidth=1, label="chance (1/K)")
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"final test accuracy (%) at {level_label}")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right", frameon=True, framealpha=0.9)
    return fig


def _setup_legend(fig: Figure, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", frameon=False)
