"""Figures of the experiment sections: memorisation, zero loss, sample size, early stopping.

Same look as the main figures (report style, mean over seeds with a 95 % CI band or bars).
Colours: a setup keeps its Okabe–Ito colour and the clean baseline is black; a noise level
keeps its viridis shade; a training-set size N gets a plasma shade (darker = smaller N).
"""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # no display: set before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..study import CLEAN  # noqa: E402
from ..summary import Estimate, estimate  # noqa: E402
from . import plots  # noqa: E402
from .experiment_runs import Group, StudyRuns, per_epoch  # noqa: E402
from .fits import LogisticFit  # noqa: E402
from .plots import band, bars, chance, log_sizes  # noqa: E402
from .style import level_colour, pct_label, setup_colour  # noqa: E402

SIZE_MAP = plt.get_cmap("plasma")


def size_colour(n: int, sizes: list[int]):
    rank = sizes.index(n) / max(len(sizes) - 1, 1)
    return SIZE_MAP(0.05 + 0.75 * rank)  # stop before plasma's pale yellow end


def group_colour(sr: StudyRuns, group: Group):
    info = next((s for s in sr.frames.infos if s.name == group[0]), None)
    return "black" if group[0] == CLEAN or info is None else setup_colour(info)


# --- memorisation -----------------------------------------------------------------------------
def small_set_curves(
    sr: StudyRuns, groups: list[Group], target: float, fits: dict[tuple[Group, int], LogisticFit]
) -> Figure:
    """A panel per group: training accuracy on clean inputs per epoch, a line per N, with the
    fitted logistic (dashed) where the fit is good."""
    sizes = sr.sizes()
    fig, axes = plots.panels(len(groups), 4.4)
    for ax, group in zip(axes, groups, strict=True):
        for n in sizes:
            runs = sr.select(group, n)
            ests = per_epoch(runs, "train_clean_acc", carry=True)
            if not ests:
                continue
            x = np.arange(1, len(ests) + 1)
            colour = size_colour(n, sizes)
            band(ax, x, ests, colour, alpha=0.1, clip=True, marker=".", markersize=3, linewidth=1.2)
            fit = fits.get((group, n))
            if fit is not None and fit.ok:
                grid = np.linspace(1, len(ests), 200)
                ax.plot(grid, fit(grid) * 100, "--", color=colour, linewidth=1, alpha=0.8)
        ax.axhline(target * 100, color="0.3", linestyle=":", linewidth=1)
        chance(ax, sr.frames.chance)
        ax.set_title(sr.label(group), color=group_colour(sr, group), fontweight="bold")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("training accuracy, clean inputs (%)")
        ax.set_ylim(0, 102)
    handles = [
        plt.Line2D([], [], color=size_colour(n, sizes), marker=".", label=sr.n_text(n))
        for n in sizes
    ]
    handles += [
        plt.Line2D([], [], color="0.3", linestyle="--", label="logistic fit (good fits only)"),
        plt.Line2D([], [], color="0.3", linestyle=":", label=f"target {target * 100:g} % / chance"),
    ]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig


def epochs_to_target(
    sr: StudyRuns, groups: list[Group], reach: dict[str, int | None], target: float
) -> Figure:
    """Left: epochs to reach the target against N (× at the cap: a run that never did).
    Right: test accuracy of the trained network against N."""
    sizes = sr.sizes()
    cap = sr.cap
    fig, (ax, ax_test) = plots.panels(2, 4.4)
    missed = False
    for group in groups:
        colour = group_colour(sr, group)
        xs, done, tests = [], [], []
        for n in sizes:
            runs = sr.select(group, n)
            if not runs:
                continue
            xs.append(n)
            hit = [reach[r.run_id] for r in runs if reach[r.run_id] is not None]
            done.append(estimate(hit))
            tests.append(estimate([r.last("test_acc") for r in runs]))
            never = sum(reach[r.run_id] is None for r in runs)
            if never:
                missed = True
                ax.plot([n], [cap], "x", color=colour, markersize=7, mew=1.5)
                ax.annotate(f"{never}", (n, cap), textcoords="offset points", xytext=(5, 3))
        bars(ax, xs, done, colour, scale=1, marker="o", markersize=4, label=sr.label(group))
        bars(ax_test, xs, tests, colour, marker="o", markersize=4)
    ax.axhline(cap, color="0.6", linestyle=":", linewidth=1)
    ax.set_ylabel(f"epochs to {target * 100:g} % training accuracy")
    ax.set_ylim(0, cap * 1.08)
    ax.set_title("epochs needed to memorise", fontsize=9)
    chance(ax_test, sr.frames.chance)
    ax_test.set_ylabel("test accuracy (%)")
    ax_test.set_ylim(0, 100)
    ax_test.set_title("test accuracy of the trained network", fontsize=9)
    for a in (ax, ax_test):
        log_sizes(a, sizes)
    handles, labels = ax.get_legend_handles_labels()
    if missed:
        handles.append(plt.Line2D([], [], color="0.3", marker="x", ls="none"))
        labels.append("runs that never reached it (count)")
    fig.legend(handles, labels, loc="outside right upper", frameon=False)
    return fig


# --- zero loss --------------------------------------------------------------------------------
def zero_loss_bars(sr: StudyRuns, rows: list) -> Figure:
    """A panel per labelling: training accuracy (clean inputs, against the trained-on labels)
    and test accuracy side by side, per N."""
    groups = list(dict.fromkeys(row.group for row in rows))
    widths = [sum(row.group == g for row in rows) for g in groups]
    fig, axes = plt.subplots(
        1,
        len(groups),
        figsize=(sum(1.0 * w + 0.9 for w in widths) + 2.2, 3.4),
        layout="constrained",
        sharey=True,
        width_ratios=[w + 0.6 for w in widths],
        squeeze=False,
    )
    for ax, group in zip(axes[0], groups, strict=True):
        mine = [row for row in rows if row.group == group]
        x = np.arange(len(mine))
        for shift, part, colour in (
            (-0.2, "train", "0.55"),
            (0.2, "test", group_colour(sr, group)),
        ):
            ests = [getattr(row, part) for row in mine]
            mean = [e.mean * 100 for e in ests]
            err = [e.half * 100 if math.isfinite(e.half) else 0.0 for e in ests]
            ax.bar(x + shift, mean, 0.38, yerr=err, color=colour, capsize=2, ecolor="0.5")
            for xi, m, e in zip(x + shift, mean, err, strict=True):
                if math.isfinite(m):
                    top = (xi, min(m + e, 104))
                    ax.annotate(
                        f"{m:.1f}",
                        top,
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        chance(ax, sr.frames.chance)
        ax.set_xticks(x, [f"N = {row.n:,}" for row in mine], fontsize=8)
        # a narrow panel gets its title over two lines rather than across its neighbour
        title = textwrap.fill(sr.label(group), width=max(14, 12 * len(mine)))
        ax.set_title(title, color=group_colour(sr, group), fontweight="bold")
        ax.grid(axis="x", visible=False)
        ax.set_ylim(0, 110)
    axes[0][0].set_ylabel("accuracy (%)")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color="0.55", label="training accuracy (clean inputs)"),
        plt.Rectangle((0, 0), 1, 1, color="0.2", label="test accuracy (setup colour)"),
        plt.Line2D([], [], color="0.45", linestyle=":", label="chance"),
    ]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig


# --- sample size ------------------------------------------------------------------------------
def sample_size(
    sr: StudyRuns,
    panels: list[tuple[str, list[Group]]],
    seconds: dict[int, Estimate],
    buybacks: list[tuple[Group, float, float, float]],
) -> Figure:
    """A panel per setup: test accuracy against N, a line per level; a last panel: training
    time per run against N. A grey arrow runs from the clean accuracy at one N to the N at
    which a noisy level reaches it."""
    sizes = sr.sizes()
    fig, axes = plots.panels(len(panels) + 1, 4.4)
    for ax, (title, groups) in zip(axes, panels, strict=False):
        for group in groups:
            xs = [n for n in sizes if sr.select(group, n)]
            ests = [estimate([r.last("test_acc") for r in sr.select(group, n)]) for n in xs]
            band(ax, xs, ests, level_colour(group[1]), pct_label(group[1]), clip=True, marker="o")
        for group, n0, acc, nx in buybacks:
            if group in groups:
                ax.annotate(
                    "",
                    (nx, acc * 100),
                    (n0, acc * 100),
                    arrowprops={"arrowstyle": "->", "color": "0.4", "linewidth": 1},
                )
                ax.plot([nx], [acc * 100], "*", color=level_colour(group[1]), markersize=8)
        chance(ax, sr.frames.chance)
        ax.set_ylim(0, 100)
        ax.set_ylabel("final test accuracy (%)")
        ax.set_title(title, fontweight="bold")
        log_sizes(ax, sizes)
        ax.legend(frameon=False, loc="lower right")
    ax = axes[-1]
    xs = sorted(seconds)
    band(ax, xs, [seconds[n] for n in xs], "0.25", scale=1, marker="o")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("training time per run (s)")
    ax.set_title("training time per run", fontweight="bold")
    log_sizes(ax, sizes)
    return fig


# --- early stopping ---------------------------------------------------------------------------
def early_stopping(
    sr: StudyRuns, panels: list[tuple[str, list[Group]]], best: dict[str, int], n: int
) -> Figure:
    """A panel per setup: each run's validation loss per epoch (a line per run, coloured by
    level), a dot at its best-validation epoch and a cross where it stopped before the cap."""
    cap = sr.cap
    fig, axes = plots.panels(len(panels), 4.4)
    levels: dict[float, None] = {}
    for ax, (title, groups) in zip(axes, panels, strict=True):
        for group in groups:
            levels[group[1]] = None
            colour = level_colour(group[1])
            for run in sr.select(group, n):
                loss = run.curve("val_loss")
                x = np.arange(1, len(loss) + 1)
                ax.plot(x, loss, color=colour, linewidth=1, alpha=0.75)
                b = best.get(run.run_id)
                if b:
                    ax.plot([b], [run.at("val_loss", b)], "o", color=colour, markersize=4)
                if run.epochs < cap:
                    ax.plot([run.epochs], [run.last("val_loss")], "x", color=colour, mew=1.5)
        ax.axvline(cap, color="0.6", linestyle=":", linewidth=1)
        ax.set_title(title, fontweight="bold")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("validation cross-entropy (nats)")
        ax.set_ylim(bottom=0)
    handles = [
        plt.Line2D([], [], color=level_colour(lv), label=pct_label(lv)) for lv in sorted(levels)
    ]
    handles += [
        plt.Line2D([], [], color="0.3", marker="o", ls="none", label="best validation epoch"),
        plt.Line2D([], [], color="0.3", marker="x", ls="none", label="stopped (before the cap)"),
        plt.Line2D([], [], color="0.6", linestyle=":", label=f"epoch cap ({cap})"),
    ]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig
