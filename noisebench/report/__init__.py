"""The report: figures, a generated explanation and a table, from results.sqlite alone.

`write_report(directory)` reads `directory/results.sqlite` (never the dataset) once into
`Frames` (frames.py), so it works on finished and partly finished studies and can be re-run
at any time. The report opens with the Summary (answer.py): a list of checked Findings.
It writes report.html (self-contained), report.pdf, report.md and figures/*.png + *.svg.
Everything is first built in a hidden staging folder and only then renamed into place, so a
failure leaves the previous report (or none) untouched rather than half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import filelock

from ..errors import NoisebenchError
from ..store import Store
from . import diagnostics, experiments, label_issues_section, methods_section
from .answer import summary
from .data import ReportData, load
from .figures import make_figures, styled
from .frames import Frames, read
from .pdf import write_pdf
from .render import content, write_html, write_markdown
from .sections import Section, SectionBuilder

__all__ = ["Frames", "ReportData", "explain", "load", "read", "write_report"]


def explain(frames: Frames) -> list[str]:
    """The Summary's sentences, most important first."""
    return [finding.text for finding in summary(frames)]


NAMES = {"html": "report.html", "pdf": "report.pdf", "md": "report.md"}


def write_report(directory: str | Path) -> dict[str, Path]:
    """Render the report of the study in `directory`; return the paths by format."""
    directory = Path(directory)
    with Store.open_existing(directory, readonly=True) as store:
        data = load(store, directory)
        frames = data.frames
    with _staging(directory) as stage:
        figures = make_figures(data, stage / "figures")
        extra = sections(frames, stage / "figures")
        c = content(data, frames, summary(frames), figures, extra)
        write_html(c, stage / NAMES["html"])
        write_markdown(c, stage / NAMES["md"])
        write_pdf(c, stage / NAMES["pdf"])
        _publish(stage, directory)
    return {key: directory / name for key, name in NAMES.items()}


REPORT_LOCK = ".noisebench-report.lock"  # held while a report of the directory is written


@contextlib.contextmanager
def _staging(directory: Path) -> Iterator[Path]:
    """A fresh staging folder in `directory`, removed afterwards. Reports of one study take
    turns, so any `.report-*` folder found while holding the lock is a killed report's."""
    lock = filelock.FileLock(directory / REPORT_LOCK)
    try:
        lock.acquire()
        for leftover in directory.glob(".report-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=".report-", dir=directory))
    except OSError as exc:
        _unlock(lock, directory)
        raise NoisebenchError(f"cannot write the report into {directory}: {exc.strerror}") from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        _unlock(lock, directory)


def _unlock(lock: filelock.FileLock, directory: Path) -> None:
    (directory / REPORT_LOCK).unlink(missing_ok=True)  # unlinked while held, as a run's lock is
    lock.release()


# Sections in report order, one module each: `section(frames, folder) -> Section | None`.
SECTIONS: list[SectionBuilder] = [
    *diagnostics.SECTIONS,
    *experiments.SECTIONS,
    label_issues_section.section,
    methods_section.section,
]


def sections(frames: Frames, folder: Path) -> list[Section]:
    """Every section that has data, its figures drawn into `folder` under the report style."""
    if frames.shown.empty:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Section] = []
    for build in SECTIONS:
        section = styled(lambda build=build: build(frames, folder))()
        if section is None:
            continue
        names = {f.name for s in out for f in s.figures} | {s.key for s in out}
        if section.key in names or any(f.name in names for f in section.figures):
            raise NoisebenchError(f"report section '{section.key}' repeats a key or figure name")
        out.append(section)
    return out


def _publish(stage: Path, directory: Path) -> None:
    """Move the staged files into place: the figures folder first, then each report file."""
    target = directory / "figures"
    old = stage / "figures.old"
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(stage / "figures", target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
    for name in NAMES.values():
        os.replace(stage / name, directory / name)
