"""Figures of what the network sees: noisy digits per pixel-noise level, and the label noise
as a true-label -> assigned-label matrix per level."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display: set before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .data import ReportData  # noqa: E402
from .style import pct_label, setup_colour  # noqa: E402


def mosaic(images: np.ndarray, shape: tuple[int, int], gap: int = 2) -> tuple[np.ndarray, int]:
    """[levels, n, C*H*W] uint8 -> one grey image, a row per level, tiles `gap` grey pixels
    apart (colour images shown as their channel mean); also the row pitch."""
    levels, n, features = images.shape
    h, w = shape
    tiles = images.reshape(levels, n, features // (h * w), h, w).mean(axis=2).astype(np.uint8)
    out = np.full((levels * (h + gap) - gap, n * (w + gap) - gap), 70, dtype=np.uint8)
    for r in range(levels):
        for c in range(n):
            out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tiles[r, c]
    return out, h + gap


def examples(data: ReportData) -> Figure | None:
    """Figure 6a: the same training digits at each pixel-noise level."""
    blocks = [(s, data.examples[s.name]) for s in data.setups if s.name in data.examples]
    if not blocks:
        return None
    heights = [len(imgs) for _, imgs in blocks]
    fig, axes = plt.subplots(
        len(blocks),
        1,
        figsize=(7.0, 0.85 * sum(heights) + 0.5 * len(blocks)),
        height_ratios=heights,
        layout="constrained",
        squeeze=False,
    )
    for ax, (setup, imgs) in zip(axes[:, 0], blocks, strict=True):
        h, w = data.meta.get("image_shape") or (28, 28)
        grid, step = mosaic(imgs, (h, w))
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_yticks(
            [r * step + h / 2 for r in range(len(imgs))], [pct_label(lv) for lv in setup.levels]
        )
        ax.set_xticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(length=0)
        ax.set_title(setup.name, color=setup_colour(setup), fontweight="bold")
    return fig


def label_matrix(data: ReportData) -> Figure | None:
    """Figure 6b: true label -> assigned training label, one small matrix per level."""
    panels = [
        (setup, lv, mat)
        for setup in data.setups
        for lv, mat in data.label_matrices.get(setup.name, {}).items()
    ]
    if not panels:
        return None
    rows = math.ceil(len(panels) / 4)
    cols = math.ceil(len(panels) / rows)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.5 * cols + 1.0, 2.6 * rows), squeeze=False, layout="constrained"
    )
    image = None
    k = data.num_classes
    names = data.meta.get("class_names") or [str(i) for i in range(k)]
    for ax, (setup, lv, mat) in zip(axes.flat, panels, strict=False):
        image = ax.imshow(mat.matrix * 100, cmap="cividis", vmin=0, vmax=100)
        ax.grid(False)
        ax.set_title(
            f"{setup.name}, {pct_label(lv)}\ntrue label kept: {mat.true_share * 100:.0f} %",
            fontsize=8,
        )
        ticks = range(0, k, max(1, k // 5))
        ax.set_xticks(list(ticks), [names[i] for i in ticks], fontsize=7)
        ax.set_yticks(list(ticks), [names[i] for i in ticks], fontsize=7)
        ax.set_xlabel("assigned label", fontsize=8)
        ax.set_ylabel("true label", fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    bar = fig.colorbar(image, ax=axes, shrink=0.8)
    bar.set_label("share of the true class (%)")
    return fig
