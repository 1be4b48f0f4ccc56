"""Report content shared by every format (notices, facts, the table) and the HTML/Markdown writers.

The HTML is one self-contained file: figures are inline base64 PNGs, styles are inline, and a
Content-Security-Policy forbids every fetch, so it opens offline exactly as it will anywhere.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from ..noise import counts_copies
from .answer import best_epoch_row
from .data import ReportData
from .figures import FigureFile
from .finding import Finding
from .frames import Frames
from .sections import Section
from .stats import mean_half
from .words import count, pm, span

TABLE_TITLE = "Test accuracy per setup and level: best epoch and last epoch"


@dataclass(frozen=True)
class Content:
    """Everything a writer needs; all text is plain (writers escape it)."""

    title: str
    subtitle: str
    notices: list[str]  # shown prominently at the top
    paragraphs: list[list[str]]  # the Summary, grouped by topic
    figures: list[FigureFile]
    table_head: list[str]
    table_rows: list[list[str]]
    table_note: str
    facts: list[tuple[str, str]]
    sections: list[Section] = field(default_factory=list)  # shown after the main figures

    def numbered(self) -> list[tuple[int, FigureFile]]:
        """Every figure with its number: the main figures first, then each section's."""
        every = self.figures + [f for s in self.sections for f in s.figures]
        return list(enumerate(every, 1))

    def number(self, figure: FigureFile) -> int:
        return next(n for n, f in self.numbered() if f is figure)


def fallback_notice(data: ReportData) -> str | None:
    meta = data.meta
    if not meta.get("dataset_fallback"):
        return None
    return (
        f"DATA FALLBACK: '{meta.get('dataset_requested', 'mnist')}' was requested but was not "
        f"available, so this study ran on '{meta.get('dataset')}' "
        f"({meta.get('train_size')} training / {meta.get('test_size')} test images). "
        "These are NOT full-dataset results."
    )


def notices(data: ReportData) -> list[str]:
    out = []
    fallback = fallback_notice(data)
    if fallback:
        out.append(fallback)
    counts = data.status_counts()
    total = sum(counts.values())
    finished = counts.get("done", 0) + counts.get("diverged", 0)
    if finished < total:
        out.append(
            f"PARTIAL STUDY: {finished} of {total} planned runs have finished; the figures, "
            "table and text cover only those (levels may have fewer seeds or be missing)."
        )
    if counts.get("diverged"):
        out.append(f"{counts['diverged']} run(s) diverged; see the explanation below.")
    return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def facts(data: ReportData) -> list[tuple[str, str]]:
    meta, study = data.meta, data.study
    counts = data.status_counts()
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    setups = "; ".join(
        f"{s.name}: {s.noise}"
        + (f" {s.params}" if s.params else "")
        + (
            f" at {', '.join(f'{lv:g}' for lv in s.levels)} noisy copies per example"
            if counts_copies(s.noise)
            else f" at X = {', '.join(f'{lv * 100:.0f}' for lv in s.levels)} %"
        )
        for s in data.setups
    )
    train, model = study.train, study.model
    schedule = {
        "constant": "",
        "step": f", lr × {train.gamma} every {train.step_size} epochs",
        "cosine": ", cosine schedule",
        "onecycle": " (peak), one-cycle schedule",
    }[train.schedule]
    momentum = f", momentum {train.momentum}" if train.optimizer == "sgd" else ""
    recipe = (
        f"{train.optimizer}, lr {train.lr}{schedule}{momentum}, weight decay "
        f"{train.weight_decay}, batch {train.batch_size}, {train.epochs} epochs"
    )
    stopping = [
        f"training sizes {', '.join(f'{n:,}' if n != 'all' else 'all' for n in study.train_sizes)}"
        if study.train_sizes != ["all"]
        else "",
        f"validation hold-out {study.validation:.0%}" if study.validation else "",
        f"early stopping (patience {study.early_stopping.patience}, min delta "
        f"{study.early_stopping.min_delta})"
        if study.early_stopping
        else "",
        f"stop at {study.stop_at_train_acc:.2%} training accuracy"
        if study.stop_at_train_acc
        else "",
    ]
    recipe += "".join(f"; {part}" for part in stopping if part)
    layers = [model.activation] + (["batch norm"] if model.batchnorm else [])
    layers += [f"dropout {model.dropout}"] if model.dropout else []
    head = "softmax + cross-entropy" if model.loss == "cross-entropy" else "sigmoid + MSE"
    created = meta.get("created_at")
    walls = data.pack_walls
    wall = (
        f"{_duration(sum(walls))} of training in {len(walls)} pack(s) of stacked runs "
        f"({_duration(data.epoch_wall_s)} inside epochs)"
        if walls
        else "no run finished yet"
    )
    versions = meta.get("versions") or {}
    inputs = math.prod(meta.get("image_shape") or [0]) * meta.get("channels", 1)
    return [
        (
            "data used",
            f"{meta.get('dataset')} — {meta.get('dataset_source', '?')}; "
            f"{meta.get('train_size')} training / {meta.get('test_size')} test images"
            + (
                f" (FALLBACK: '{meta.get('dataset_requested')}' was requested)"
                if meta.get("dataset_fallback")
                else ""
            ),
        ),
        ("study", f"{study.name} — {study.description or 'no description'}"),
        ("setups", setups),
        ("seeds", ", ".join(str(s) for s in study.seeds)),
        (
            "model",
            f"MLP {inputs} → "
            f"{' → '.join(str(h) for h in study.model.hidden)} → {data.num_classes}, "
            f"{', '.join(layers)}, {head}",
        ),
        ("training", recipe),
        ("runs", status),
        ("device", str(meta.get("device", "?"))),
        ("wall time", wall),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "?"),
        (
            "created",
            dt.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M") if created else "?",
        ),
        ("results", str(data.directory / "results.sqlite")),
    ]


def table(frames: Frames) -> tuple[list[str], list[list[str]], str]:
    """The main table: best-epoch test accuracy (the mean curve's best epoch) and the last
    epoch's test accuracy and cross-entropy, per setup and level."""
    head = [
        "setup",
        "X (%)",
        "best-epoch test accuracy (%)",
        "best epoch",
        "last-epoch test accuracy (%)",
        "last-epoch test cross-entropy",
        "train accuracy (%)*",
        "seeds",
    ]
    sizes = frames.runs.train_size.notna().any()
    if sizes:
        head.insert(2, "training images")
    rows = []
    for setup in frames.setups:
        for lv in frames.levels(setup):
            best, epoch = best_epoch_row(frames, setup, lv)
            last = frames.last(setup, lv, "test_acc")
            loss = frames.last(setup, lv, "test_loss")
            train = frames.last(setup, lv, "train_acc")
            rows.append(
                [
                    setup,
                    count(round(lv), "copy", "copies")
                    if counts_copies(frames.noise_of(setup))
                    else f"{lv * 100:.0f}",
                    best,
                    epoch,
                    pm(*mean_half(last)[:2]),
                    pm(*mean_half(loss)[:2], scale=1, digits=3),
                    pm(*mean_half(train)[:2]),
                    str(len(last)),
                ]
            )
            if sizes:
                rows[-1].insert(2, frames.train_size(setup, lv))
    seeds = len(frames.seeds)
    spread = (
        "Mean ± half-width of the 95 % t-interval over seeds. "
        if seeds > 1
        else "One seed: single values, no intervals. "
    )
    noises = [frames.noise_of(s) or "" for s in frames.setups]
    trained_on = [
        what
        for kind, what in (
            ("labels.", "the noisy labels under label noise"),
            ("pixels.", "the noisy images under pixel noise"),
        )
        if any(n.startswith(kind) for n in noises)
    ]
    last = (
        f"Last epoch: epoch {frames.epochs}. "
        if frames.epochs >= frames.study.train.epochs
        else "Last epoch: each run's own last epoch (runs stop early). "
    )
    note = (
        spread
        + "Best epoch: the epoch at which the mean test-accuracy curve peaks; the best-epoch "
        + "column is the accuracy at that epoch. "
        + last
        + f"Cross-entropy of a uniform guess: ln {frames.num_classes} = "
        f"{math.log(frames.num_classes):.3f} nats; chance accuracy {frames.chance * 100:.1f} %. "
        + (
            "*Train accuracy is measured against what the model trained on: "
            + " and ".join(trained_on)
            + "."
            if trained_on
            else "*Train accuracy: against the training labels."
        )
    )
    return head, rows, note


def title(frames: Frames) -> tuple[str, str]:
    """What was studied, and its configuration as measured (not the preset's name)."""
    setups = [s for s in frames.setups if frames.levels(s)]
    what = " vs ".join(setups) if len(setups) <= 3 else f"{len(setups)} kinds of noise"
    methods = frames.runs.method.nunique()
    if methods > 1:  # a study of training methods: they are what it compares
        what = f"{methods} training methods under {what.replace(' vs ', ' and ')}"
    what = what[:1].upper() + what[1:]

    def copies(setup: str) -> bool:
        return counts_copies(frames.noise_of(setup))

    shares = sorted({lv for s in setups if not copies(s) for lv in frames.levels(s)})
    counts = sorted({lv for s in setups if copies(s) for lv in frames.levels(s)})
    seeds = len(frames.seeds)
    bits = [
        span(shares) if shares else "",
        f"{counts[0]:.0f}–{counts[-1]:.0f} noisy copies" if len(counts) > 1 else "",
        f"{seeds} seed{'s' if seeds != 1 else ''}",
        f"{frames.epochs} epochs",
        f"on {frames.meta.get('dataset')}",
    ]
    head = what if methods > 1 else f"{what}: what an MLP learns"
    return head, ", ".join(b for b in bits if b)


def grouped(findings: list[Finding]) -> list[list[str]]:
    """The Summary as paragraphs: scope, the comparison, the mechanism, the caveats."""
    bands = [(94, 1000), (80, 94), (60, 80), (-1000, 60)]
    paras = [[f.text for f in findings if lo <= f.importance < hi] for lo, hi in bands]
    return [p for p in paras if p]


def content(
    data: ReportData,
    frames: Frames,
    findings: list[Finding],
    figures: list[FigureFile],
    sections: list[Section] | None = None,
) -> Content:
    head, rows, note = table(frames)
    heading, subtitle = title(frames)
    return Content(
        title=heading,
        subtitle=subtitle,
        notices=notices(data),
        paragraphs=grouped(findings) or [["No run has finished yet."]],
        figures=figures,
        table_head=head,
        table_rows=rows,
        table_note=note,
        facts=facts(data),
        sections=list(sections or []),
    )


HTML = jinja2.Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ c.title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.5; }
h1 { margin-bottom: 0.1em; } .subtitle { color: #555; margin-top: 0; }
.notice { border: 3px solid #D55E00; background: #fff1e6; padding: 0.8em 1em;
          margin: 1em 0; font-weight: 600; }
.explanation p { margin: 0.4em 0; }
figure { margin: 2em 0; } figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #444; font-size: 0.92em; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.facts th { text-align: left; vertical-align: top; white-space: nowrap; }
.facts td { text-align: left; }
.note { font-size: 0.85em; color: #555; }
</style>
</head>
<body>
<h1>{{ c.title }}</h1>
<p class="subtitle">{{ c.subtitle }}</p>
{% for n in c.notices %}<div class="notice" role="alert">{{ n }}</div>
{% endfor %}
<h2>Summary</h2>
<div class="explanation" id="explanation">
{% for para in c.paragraphs %}<p>{{ para | join(" ") }}</p>
{% endfor %}</div>
<h2>{{ table_title }}</h2>
<table id="final-table"><thead><tr>{% for h in c.table_head %}<th>{{ h }}</th>{% endfor %}</tr>
</thead><tbody>
{% for row in c.table_rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
<p class="note">{{ c.table_note }}</p>
<h2>Figures</h2>
{% macro figure(f) %}{% set n = c.number(f) %}<figure id="fig-{{ f.name }}">
<figcaption><strong>Figure {{ n }}: {{ f.title }}.</strong></figcaption>
<img src="data:image/png;base64,{{ images[f.name] }}" style="width: {{ widths[f.name] }}px"
     alt="Figure {{ n }}: {{ f.title }}">
<figcaption>{{ f.caption }}</figcaption>
</figure>
{% endmacro %}
{% for f in c.figures %}{{ figure(f) }}{% endfor %}
{% for s in c.sections %}<section class="analysis">
<h2 id="{{ s.key }}">{{ s.title }}</h2>
{% for p in s.paragraphs %}<p>{{ p }}</p>
{% endfor %}{% for f in s.figures %}{{ figure(f) }}{% endfor %}
{% if s.table_rows %}<table><thead><tr>{% for h in s.table_head %}<th>{{ h }}</th>{% endfor %}</tr>
</thead><tbody>
{% for row in s.table_rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% endif %}</section>
{% endfor %}
<h2>Data and configuration</h2>
<table class="facts">
{% for k, v in c.facts %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>
{% endfor %}</table>
<p class="note">Generated by noisebench from results.sqlite alone. Figures are also in
figures/ as PNG and SVG.</p>
</body>
</html>
""",
    autoescape=True,
)


def png_size(blob: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    return int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")


def write_html(c: Content, path: Path, css_per_png_px: float = 0.7) -> Path:
    """Figures are shown at 0.7 CSS px per PNG px (about 105 dpi): sharp and not oversized."""
    images, widths = {}, {}
    for _, f in c.numbered():
        blob = f.png.read_bytes()
        images[f.name] = base64.b64encode(blob).decode("ascii")
        widths[f.name] = round(png_size(blob)[0] * css_per_png_px)
    path.write_text(
        HTML.render(c=c, images=images, widths=widths, table_title=TABLE_TITLE), encoding="utf-8"
    )
    return path


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_markdown(c: Content, path: Path, figures_dir: str = "figures") -> Path:
    lines = [f"# {c.title}", "", f"_{c.subtitle}_", ""]
    for n in c.notices:
        lines += [f"> **{n}**", ""]
    lines += ["## Summary", ""]
    for para in c.paragraphs:
        lines += [" ".join(para), ""]
    lines += [f"## {TABLE_TITLE}", ""]
    lines += ["| " + " | ".join(c.table_head) + " |", "|" + "---|" * len(c.table_head)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in c.table_rows]
    lines += ["", c.table_note, "", "## Figures", ""]

    def figure(f: FigureFile) -> list[str]:
        return [
            f"### Figure {c.number(f)}: {f.title}",
            "",
            f"![{f.title}]({figures_dir}/{f.png.name})",
            "",
            f"{f.caption} ([SVG]({figures_dir}/{f.svg.name}))",
            "",
        ]

    for f in c.figures:
        lines += figure(f)
    for s in c.sections:
        lines += [f'<a id="{s.key}"></a>', "", f"## {s.title}", ""]
        for para in s.paragraphs:
            lines += [para, ""]
        for f in s.figures:
            lines += figure(f)
        if s.table_rows:
            lines += ["| " + " | ".join(_md_cell(h) for h in s.table_head) + " |"]
            lines += ["|" + "---|" * len(s.table_head)]
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in s.table_rows]
            lines += [""]
    lines += ["## Data and configuration", ""]
    lines += [f"- **{k}**: {v}" for k, v in c.facts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
