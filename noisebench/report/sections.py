"""Report sections beyond the Summary and the main figures: one per topic that has data.

The interface for a new section is one module with one function

    def section(frames: Frames, folder: Path) -> Section | None

that reads only the Frames (frames.py: `runs`, the long `values` table, `shown`), returns
None when the study has nothing for it, and otherwise a Section built by `from_findings`
from its Findings (finding.py: each sentence with its check), figures saved by
`save_figure` into `folder`, and an optional table. List the function in
report/__init__.py's `SECTIONS`. Builders run under the report's matplotlib style; their
figures are numbered after the main figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .figures import FigureFile, save
from .finding import Finding, ordered
from .frames import Frames


@dataclass(frozen=True)
class Section:
    key: str  # anchor and figure-file prefix
    title: str
    paragraphs: list[str]  # generated sentences, each from measured numbers
    figures: list[FigureFile] = field(default_factory=list)
    table_head: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # paragraphs' source, when known


def from_findings(
    key: str,
    title: str,
    findings: list[Finding | None],
    figures: list[FigureFile] | None = None,
    table_head: list[str] | None = None,
    table_rows: list[list[str]] | None = None,
) -> Section:
    """A Section whose paragraphs are its findings' sentences, most important first."""
    kept = ordered(findings)
    return Section(
        key,
        title,
        [f.text for f in kept],
        list(figures or []),
        list(table_head or []),
        list(table_rows or []),
        kept,
    )


SectionBuilder = Callable[[Frames, Path], Section | None]


def save_figure(fig: Figure, folder: Path, name: str, title: str, caption: str) -> FigureFile:
    """Save `fig` as folder/name.png and .svg (as the main figures are) and close it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return save(fig, folder, name, title, caption)
    finally:
        plt.close(fig)
