"""Report sections beyond the main figures: one per experiment or analysis that has data.

A section builder takes the ReportData (with `metrics`, the tidy named-metric rows of the
store, and `runs`, each with its `config`) and a folder for figures, and returns a Section,
or None when its study has nothing for it. Figures are saved as PNG + SVG by `save_figure`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .data import ReportData
from .figures import FigureFile


@dataclass(frozen=True)
class Section:
    key: str  # anchor and figure-file prefix
    title: str
    paragraphs: list[str]  # generated sentences, each from measured numbers
    figures: list[FigureFile] = field(default_factory=list)
    table_head: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)


SectionBuilder = Callable[[ReportData, Path], Section | None]
