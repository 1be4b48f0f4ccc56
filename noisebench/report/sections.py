"""Report sections beyond the main figures: one per experiment or analysis that has data.

A section builder takes the ReportData (with `metrics`, the tidy named-metric rows of the
store, and `runs`, each with its `config`) and a folder for figures, and returns a Section,
or None when its study has nothing for it. Builders run under the report's matplotlib style;
their figures are saved as PNG + SVG by `save_figure`, and numbered after the main figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .data import ReportData
from .figures import FigureFile, save


@dataclass(frozen=True)
class Section:
    key: str  # anchor and figure-file prefix
    title: str
    paragraphs: list[str]  # generated sentences, each from measured numbers
    figures: list[FigureFile] = field(default_factory=list)
    table_head: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)


SectionBuilder = Callable[[ReportData, Path], Section | None]


def save_figure(fig: Figure, folder: Path, name: str, title: str, caption: str) -> FigureFile:
    """Save `fig` as folder/name.png and .svg (as the main figures are) and close it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return save(fig, folder, name, title, caption)
    finally:
        plt.close(fig)
