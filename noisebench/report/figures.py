"""The report's figures: matplotlib (Agg), saved as PNG and SVG, one function per figure.

Every curve is the mean over seeds with its 95 % CI as a band. Colours are colour-blind safe
and mean the same thing everywhere: one Okabe–Ito colour per setup, and a viridis shade per
noise level (the same X always gets the same shade).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: set before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..summary import Estimate  # noqa: E402
from .data import ReportData  # noqa: E402
from .measured import counts_copies, x_share  # noqa: E402
from .plots import MANY_SETUPS, band, chance, ci_line, dodge, panels  # noqa: E402
from .seeing import examples, label_matrix  # noqa: E402
from .style import DPI, STYLE, level_colour, pct_label, setup_colour, setup_line  # noqa: E402


@dataclass(frozen=True)
class FigureFile:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path


def final_vs_level(data: ReportData, metric: str) -> Figure:
    """Figures 1 and 2: a final-epoch metric against X, every setup on one chart."""
    fig, ax = plt.subplots(figsize=(7.2, 4.0), layout="constrained")
    scale = 100 if metric == "test_acc" else 1
    many = len(data.setups) > MANY_SETUPS
    for setup in data.setups:
        if not data.levels(setup.name):
            continue
        # every level of the study, a gap (NaN) where none finished: no line across it
        levels = setup.levels
        missing = Estimate(math.nan, math.nan, 0)
        ests = [
            data.stats[(setup.name, lv)].final[metric] if data.get(setup.name, lv) else missing
            for lv in levels
        ]
        x = [x_share(setup, lv) for lv in levels]
        ci_line(
            ax,
            x,
            ests,
            scale,
            setup_colour(setup),
            setup.name,
            many,
            dodge(setup.index, len(data.setups)),
            markersize=4,
            **setup_line(setup),
        )
    if metric == "test_acc":
        chance(ax, data.chance, "chance (1/K)")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_ylim(0, 100)
    else:
        ax.axhline(
            math.log(data.num_classes),
            color="0.45",
            linestyle=":",
            linewidth=1,
            label="uniform guess, ln K",
        )
        ax.set_ylabel("final test cross-entropy (nats)")
        ax.set_ylim(bottom=0)
    ax.set_xlabel("noise level X (%)")
    ax.set_xlim(-2, 102)
    fig.legend(loc="outside right upper", frameon=False)
    return fig


def per_epoch(data: ReportData, metric: str) -> Figure:
    """Figures 3 and 4: a test metric per epoch, a line per level, a panel per setup."""
    fig, axes = panels(len(data.setups))
    scale = 100 if metric == "test_acc" else 1
    levels_seen: dict[float, None] = {}
    for ax, setup in zip(axes, data.setups, strict=True):
        for lv in data.levels(setup.name):
            ests = data.stats[(setup.name, lv)].epochs[metric]
            x = np.arange(1, len(ests) + 1)
            band(ax, x, ests, level_colour(lv), pct_label(lv), scale, marker=".")
            levels_seen[lv] = None
        ax.set_title(setup.name, color=setup_colour(setup), fontweight="bold")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if metric == "test_acc":
            ax.set_ylabel("test accuracy (%)")
            ax.set_ylim(0, 100)
        else:
            ax.set_ylabel("test cross-entropy (nats)")
            ax.set_ylim(bottom=0)
    _level_legend(fig, list(levels_seen))
    return fig


def _level_legend(
    fig: Figure, levels: list[float], extra: list | None = None, marker: str = "."
) -> None:
    handles = [
        plt.Line2D([], [], color=level_colour(lv), marker=marker, label=pct_label(lv))
        for lv in sorted(levels)
    ]
    fig.legend(handles=handles + (extra or []), loc="outside right upper", frameon=False)


def few_levels(levels: list[float], wanted=(0.0, 0.5, 0.9)) -> list[float]:
    """Up to three levels of a setup, nearest to 0, 50 and 90 %."""
    picked: list[float] = []
    for w in wanted:
        if levels:
            near = min(levels, key=lambda lv, w=w: abs(lv - w))
            if near not in picked:
                picked.append(near)
    return sorted(picked)


def generalisation(data: ReportData) -> Figure:
    """Figure 5: train (dashed) and test (solid) accuracy and loss per epoch for a few X."""
    rows = len(data.setups)
    fig, axes = plt.subplots(
        rows, 2, figsize=(10.0, 3.0 * rows), layout="constrained", squeeze=False
    )
    shown: dict[float, None] = {}
    for (ax_acc, ax_loss), setup in zip(axes, data.setups, strict=True):
        for lv in few_levels(data.levels(setup.name)):
            st = data.stats[(setup.name, lv)]
            shown[lv] = None
            for ax, split, scale in ((ax_acc, "acc", 100), (ax_loss, "loss", 1)):
                for part, style in (("train", "--"), ("test", "-")):
                    ests = st.epochs[f"{part}_{split}"]
                    x = np.arange(1, len(ests) + 1)
                    band(ax, x, ests, level_colour(lv), "", scale, linestyle=style)
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.set_ylim(0, 100)
        ax_loss.set_ylabel("cross-entropy (nats)")
        ax_loss.set_ylim(bottom=0)
        for ax, what in ((ax_acc, "accuracy"), (ax_loss, "cross-entropy")):
            ax.set_title(f"{setup.name}: {what}", color=setup_colour(setup), fontweight="bold")
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
    styles = [
        plt.Line2D([], [], color="0.3", linestyle="-", label="test"),
        plt.Line2D([], [], color="0.3", linestyle="--", label="train (noisy inputs/labels)"),
    ]
    _level_legend(fig, list(shown), styles, marker="")
    return fig


def best_vs_final(data: ReportData) -> Figure:
    """Figure 7: best-epoch (dashed) and final-epoch (solid) test accuracy against X, and the
    gap between them per seed."""
    fig, (ax, ax_gap) = plt.subplots(
        1, 2, figsize=(10.0, 3.8), layout="constrained", width_ratios=(3, 2)
    )
    for setup in data.setups:
        levels = data.levels(setup.name)
        if not levels:
            continue
        x = [lv * 100 for lv in levels]
        colour = setup_colour(setup)
        stats = [data.stats[(setup.name, lv)] for lv in levels]
        band(
            ax,
            x,
            [st.final["test_acc"] for st in stats],
            colour,
            f"{setup.name}: final epoch",
            marker="o",
            markersize=4,
        )
        band(
            ax,
            x,
            [st.best_acc for st in stats],
            colour,
            f"{setup.name}: best epoch",
            marker="^",
            markersize=4,
            linestyle="--",
        )
        band(ax_gap, x, [st.drop for st in stats], colour, marker="o", markersize=4)
    chance(ax, data.chance, "chance (1/K)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax_gap.axhline(0, color="0.45", linewidth=0.8)
    ax_gap.set_ylabel("best minus final accuracy (points)")
    ax_gap.set_title("accuracy lost after the best epoch", fontsize=9)
    ax.set_title("final vs best epoch", fontsize=9)
    for a in (ax, ax_gap):
        a.set_xlabel("noise level X (%)")
        a.set_xlim(-2, 102)
    fig.legend(loc="outside right upper", frameon=False)
    return fig


def styled(maker: Callable[[], Figure | None]) -> Callable[[], Figure | None]:
    """`maker` run under the report's style, so a figure looks the same wherever it is made."""

    def make() -> Figure | None:
        with plt.rc_context(STYLE):
            return maker()

    return make


def spread_note(seeds: int) -> str:
    """What a figure's lines and bands are: with one seed there is no interval to draw."""
    if seeds == 1:
        return "Lines: the one seed's values (no bands: one seed has no interval)."
    return "Lines: mean over seeds; bands: 95 % confidence interval."


def catalogue(data: ReportData) -> list[tuple[str, str, str, Callable[[], Figure | None]]]:
    """(file name, title, caption, maker) of every figure, in report order."""
    return [(name, title, caption, styled(maker)) for name, title, caption, maker in _entries(data)]


def _entries(data: ReportData) -> list[tuple[str, str, str, Callable[[], Figure | None]]]:
    ci = spread_note(len(data.study.seeds))
    ci_all = (
        "Lines: mean over seeds; bars: 95 % confidence interval (shifted a little along X so "
        "they do not hide each other)."
        if len(data.setups) > MANY_SETUPS and len(data.study.seeds) > 1
        else ci
    )
    if any(counts_copies(s.noise) for s in data.setups):
        ci_all += (
            " Setups whose level counts noisy copies per example sit at their share of noisy "
            "examples, k / (k + 1)."
        )
    fixed = [bool(s.params.get("fixed")) for s in data.setups if s.kind == "pixels"]
    if fixed and all(fixed):
        redraw = "each training example keeps one draw for the whole run"
    elif any(fixed):
        redraw = "setups with `fixed` keep one draw per example, the others redraw every step"
    else:
        redraw = "training redraws the noise at every step"
    estimated = any(
        not m.exact_counts for mats in data.label_matrices.values() for m in mats.values()
    )
    sizes = (
        " Class sizes are estimated from the relabelled examples (no run relabelled them all)."
        if estimated
        else ""
    )
    return [
        (
            "final_accuracy",
            "Final test accuracy vs noise level",
            f"Test accuracy after the last epoch against X, one colour per setup. {ci_all}",
            lambda: final_vs_level(data, "test_acc"),
        ),
        (
            "final_loss",
            "Final test cross-entropy vs noise level",
            f"Mean test cross-entropy after the last epoch against X; the dotted line is the loss "
            f"of a uniform guess. {ci_all}",
            lambda: final_vs_level(data, "test_loss"),
        ),
        (
            "accuracy_epochs",
            "Test accuracy per epoch",
            f"One panel per setup, one line per noise level (darker = less noise). {ci}",
            lambda: per_epoch(data, "test_acc"),
        ),
        (
            "loss_epochs",
            "Test cross-entropy per epoch",
            f"One panel per setup, one line per noise level. {ci}",
            lambda: per_epoch(data, "test_loss"),
        ),
        (
            "generalisation",
            "Train vs test: the generalisation gap",
            "Solid: test; dashed: train, measured on what the model trained on (noisy pixels, or "
            f"the noisy labels under label noise). Levels nearest 0, 50 and 90 %. {ci}",
            lambda: generalisation(data),
        ),
        (
            "examples",
            "What the network sees: pixel noise",
            f"The same training images at each pixel-noise level (one draw of the noise; "
            f"{redraw}).",
            lambda: examples(data),
        ),
        (
            "label_matrix",
            "What the network sees: label noise",
            "Share of each true class's training examples that carry each label, mean over seeds "
            f"(examples not picked for corruption keep their label).{sizes}",
            lambda: label_matrix(data),
        ),
        (
            "best_vs_final",
            "Best-epoch vs final-epoch test accuracy",
            "Left, solid: accuracy after the last epoch; dashed: accuracy at the best epoch, the "
            "epoch at which the mean test-accuracy curve peaks (as in the table). Right: the best "
            "epoch's accuracy minus the last epoch's, per seed: above zero, accuracy peaked and "
            f"then fell. {ci}",
            lambda: best_vs_final(data),
        ),
    ]


def make_figures(data: ReportData, folder: Path) -> list[FigureFile]:
    """Draw every figure that has data into `folder` as PNG + SVG."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with plt.rc_context(STYLE):
        for name, title, caption, maker in catalogue(data):
            if not data.stats and name not in ("examples",):
                continue
            fig = maker()
            if fig is None:
                continue
            try:
                out.append(save(fig, folder, name, title, caption))
            finally:
                plt.close(fig)
    return out


def save(fig: Figure, folder: Path, name: str, title: str, caption: str) -> FigureFile:
    """Write `fig` as folder/name.png (at the report's DPI) and folder/name.svg."""
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None})
    return FigureFile(name, title, caption, png, svg)
