"""The report's section on finding the corrupted labels: cleanlab on in-sample and on
out-of-sample (K-fold) probabilities, against the labels the noise really changed.

Self-contained: `label_issues_section(runs, metrics)` takes two pandas frames and returns the
section's sentences, its figure and its table.
- `runs`: one row per run: run_id, setup, level, seed (other columns are ignored);
- `metrics`: long, as `Results.metrics()` returns it: run_id, epoch, name (or metric), value;
  only epoch 0 (measured after training) is read, names "issues_*" (in-sample) and
  "cv_issues_*" (out-of-sample), see engine/label_issues.py.

Claims follow the report's rules: every rate stands next to its base rate (precision and
precision@k next to the share of labels really changed, recall next to the share flagged,
what flagging at random would reach; AUROC next to 0.5); in- vs out-of-sample is a paired
comparison across seeds (the same run, two sources) with a 95 % t-interval of the mean
difference; with one seed no interval is given and no difference is called real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .finding import Finding
from .frames import Frames
from .sections import Section as ReportSection
from .sections import from_findings, save_figure
from .stats import mean_half

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SOURCES = {"cv_issues_": "out-of-sample", "issues_": "in-sample"}  # longest prefix first
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given")  # fmt: skip
SCORES = ("self_confidence", "normalized_margin")
STATISTICS = ("flagged_share", "precision_at_k", "precision", "recall", "f1", "auroc")
MAIN = "prune_by_noise_rate"  # cleanlab's default filter: the one the sentences name


@dataclass
class Section:
    paragraphs: list[str]  # sentences
    figure: Figure | None
    table: pd.DataFrame  # setup, level, source, method, statistic, mean, ci, seeds
    claims: list[tuple[str, bool]] = field(default_factory=list)  # per sentence: key, holds


def _tidy(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run x source x metric: setup, level, seed, source, key, value."""
    metrics = metrics.rename(columns={"metric": "name"})
    m = metrics[metrics.epoch == 0]
    rows = []
    for prefix, source in SOURCES.items():
        part = m[m.name.str.startswith(prefix)].copy()
        if prefix == "issues_":
            part = part[~part.name.str.startswith("cv_")]
        part["source"] = source
        part["key"] = part.name.str.slice(len(prefix))
        rows.append(part[["run_id", "source", "key", "value"]])
    long = pd.concat(rows, ignore_index=True)
    return long.merge(runs[["run_id", "setup", "level", "seed"]], on="run_id")


def mean_ci(values: pd.Series) -> tuple[float, float]:
    """Mean and half-width of its 95 % t-interval (NaN with fewer than two finite values)."""
    mean, half, _ = mean_half(values)
    return mean, half


def _pct(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "undefined"
    return f"{mean:.0%}" if math.isnan(half) else f"{mean:.0%} ± {half * 100:.0f} points"


def _table(tidy: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (setup, level, source, key), group in tidy.groupby(["setup", "level", "source", "key"]):
        statistic = next((st for st in STATISTICS if key.endswith(f"_{st}")), key)
        method = key.removesuffix(f"_{statistic}") if statistic != key else ""
        if method not in ("", *FILTERS, *SCORES):
            continue
        if not method and key not in ("base_rate", "noise_matrix_mae", "prior_mae"):
            continue  # the names kept from before cleanlab repeat the default filter
        mean, half = mean_ci(group.value)
        out.append((setup, level, source, method, statistic, mean, half, group.value.count()))
    columns = ["setup", "level", "source", "method", "statistic", "mean", "ci", "seeds"]
    return pd.DataFrame(out, columns=columns)


def _paired(tidy: pd.DataFrame, setup: str, level: float, key: str) -> pd.Series:
    """Per seed: out-of-sample minus in-sample value of `key`."""
    part = tidy[(tidy.setup == setup) & (tidy.level == level) & (tidy.key == key)]
    wide = part.pivot_table(index="seed", columns="source", values="value")
    if set(SOURCES.values()) - set(wide.columns):
        return pd.Series(dtype=float)
    return (wide["out-of-sample"] - wide["in-sample"]).dropna()


def _f1_claim(where: str, diff: pd.Series, f1: dict[str, tuple[float, float]]) -> tuple[str, bool]:
    """The section's answer for one setting: do out-of-sample probabilities change the F1 of
    the default filter, by the paired difference over seeds (no claim from one seed)?"""
    values = (
        f"{_pct(*f1['in-sample'])} in sample against {_pct(*f1['out-of-sample'])} out of sample"
    )
    mean, half = mean_ci(diff)
    if math.isnan(half):
        return (
            f"{where}, cleanlab's {MAIN} reaches an F1 of {values}; with one seed that is no "
            "claim either way."
        ), False
    points = f"{round(mean * 100) + 0:+d} ± {half * 100:.0f} points"  # + 0: no "-0"
    if mean - half > 0 or mean + half < 0:
        way = "raise" if mean > 0 else "lower"
        return (
            f"{where}, out-of-sample probabilities {way} the F1 of cleanlab's {MAIN}: {values} "
            f"({points}, paired over {len(diff)} seeds, 95 % t-interval)."
        ), True
    return (
        f"{where}, the data cannot tell in-sample from out-of-sample probabilities by the F1 "
        f"of cleanlab's {MAIN}: {values} (paired difference {points} over {len(diff)} seeds)."
    ), False


def _sentences(tidy: pd.DataFrame) -> list[tuple[str, str, bool]]:
    """(key, sentence, whether its check holds) per claim, setting by setting."""
    out = []
    for (setup, level), part in tidy.groupby(["setup", "level"]):

        def stat(source: str, key: str, part: pd.DataFrame = part) -> tuple[float, float]:
            return mean_ci(part[(part.source == source) & (part.key == key)].value)

        base = stat("in-sample", "base_rate")
        if math.isnan(base[0]):
            base = stat("out-of-sample", "base_rate")
        base = (base[0], math.nan)  # the share the noise changed: a fact of each run, not a guess
        where = f"Under {setup} at X = {100 * level:g} %"
        f1 = {source: stat(source, f"{MAIN}_f1") for source in SOURCES.values()}
        if not any(math.isnan(v[0]) for v in f1.values()):
            text, holds = _f1_claim(where, _paired(tidy, setup, level, f"{MAIN}_f1"), f1)
            out.append((f"f1-{setup}-{level}", text, holds))
            where = "There"
        precision = stat("out-of-sample", f"{MAIN}_precision")
        if not math.isnan(precision[0]):
            flagged = stat("out-of-sample", f"{MAIN}_flagged_share")
            out.append((f"precision-{setup}-{level}",
                f"{where}, out of sample it flags {_pct(*flagged)} of the labels with precision "
                f"{_pct(*precision)}, against a base rate of {_pct(*base)} (the share of labels "
                f"really changed), and recall {_pct(*stat('out-of-sample', f'{MAIN}_recall'))}.",
                True))  # fmt: skip
        auroc = {source: stat(source, "self_confidence_auroc")[0] for source in SOURCES.values()}
        if not math.isnan(auroc["out-of-sample"]):
            out.append((f"auroc-{setup}-{level}",
                "Self-confidence ranks a changed label below a kept one with AUROC "
                f"{auroc['out-of-sample']:.2f} out of sample and {auroc['in-sample']:.2f} in "
                "sample (chance 0.50).", True))  # fmt: skip
        matrix = {source: stat(source, "noise_matrix_mae")[0] for source in SOURCES.values()}
        if not math.isnan(matrix["out-of-sample"]):
            out.append((f"matrix-{setup}-{level}",
                "The noise matrix P(given | true) that cleanlab estimates is off by "
                f"{matrix['out-of-sample']:.3f} per entry on average out of sample and "
                f"{matrix['in-sample']:.3f} in sample.", True))  # fmt: skip
    return out


def _figure(table: pd.DataFrame) -> Figure | None:
    from matplotlib.figure import Figure

    points = table[table.method.isin(FILTERS) & table.statistic.isin(["precision", "recall"])]
    if points.empty:
        return None
    cells = sorted({(s, lv) for s, lv in zip(points.setup, points.level, strict=True)})
    figure = Figure(figsize=(3.2 * len(cells), 3.2), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(cells), sharey=True, squeeze=False)[0])
    markers = dict(zip(FILTERS, "osD^v", strict=True))
    colours = {"out-of-sample": "tab:blue", "in-sample": "tab:orange"}
    for ax, (setup, level) in zip(axes, cells, strict=True):
        cell = table[(table.setup == setup) & (table.level == level)]
        for (source, method), group in cell[cell.method.isin(FILTERS)].groupby(
            ["source", "method"]
        ):
            values = dict(zip(group.statistic, group["mean"], strict=True))
            label = f"{source}, {method}" if ax is axes[0] else None
            ax.plot(values.get("recall"), values.get("precision"), markers[method],
                    color=colours[source], label=label)  # fmt: skip
        base = cell[cell.statistic == "base_rate"]["mean"].mean()
        ax.axhline(base, color="grey", ls="--", lw=1)
        ax.text(0.02, base, "base rate", va="bottom", fontsize=7, color="grey")
        ax.set(title=f"{setup}, level {level:g}", xlabel="recall", xlim=(0, 1.02), ylim=(0, 1.02))
    axes[0].set_ylabel("precision")
    figure.legend(loc="outside lower center", ncol=2, fontsize=7)
    return figure


def label_issues_section(runs: pd.DataFrame, metrics: pd.DataFrame) -> Section | None:
    """Sentences, precision-recall figure (a panel per setup and level) and table; None when
    the study measured no label issues."""
    if metrics.empty:
        return None
    tidy = _tidy(runs, metrics)
    if tidy.empty:
        return None
    table = _table(tidy)
    claims = _sentences(tidy)
    return Section(
        [text for _, text, _ in claims], _figure(table), table, [(k, h) for k, _, h in claims]
    )


def section(frames: Frames, folder: Path) -> ReportSection | None:
    """The report's out-of-sample section (sections.py interface): only for studies with
    label_issues = "cv"; the in-sample flags alone are reported by diagnostics.issues_section."""
    if not frames.values.metric.str.startswith("cv_issues_").any():
        return None
    runs = frames.runs[frames.runs.run_id.isin(frames.shown.run_id)]
    built = label_issues_section(runs, frames.values)
    if built is None:
        return None
    figures = []
    if built.figure is not None:
        figures.append(
            save_figure(
                built.figure,
                folder,
                "label-issues-cv",
                "Finding the wrong labels: in-sample vs out-of-sample probabilities",
                "Precision against recall of each cleanlab filter after training, on the "
                "trained model's own (in-sample) probabilities and on K-fold out-of-sample "
                "ones; dashed: the base rate, the share of labels the noise changed. Means "
                "over seeds.",
            )
        )
    t = built.table
    keep = ((t.method == MAIN) & t.statistic.isin(["precision", "recall", "f1"])) | (
        (t.method == "self_confidence") & (t.statistic == "auroc")
    )
    wide = t[keep].pivot_table(
        index=["setup", "level", "source"], columns="statistic", values="mean"
    )
    base = t[t.statistic == "base_rate"].groupby(["setup", "level"])["mean"].mean()
    head = ["setup", "level", "probabilities", "labels changed %", "precision %", "recall %",
            "F1 %", "AUROC"]  # fmt: skip
    rows = [
        [setup, f"{100 * level:g} %", source, f"{100 * base.get((setup, level), math.nan):.1f}"]
        + [f"{100 * r.get(k, math.nan):.1f}" for k in ("precision", "recall", "f1")]
        + [f"{r.get('auroc', math.nan):.2f}"]
        for (setup, level, source), r in wide.iterrows()
    ]
    findings = [
        Finding(
            key,
            text,
            holds,
            "paired difference out- minus in-sample over seeds, 95 % t-interval"
            if key.startswith("f1-")
            else "means over seeds, against the base rate or chance",
            frames.scope,
            "label-issues-cv",
        )
        for (key, holds), text in zip(built.claims, built.paragraphs, strict=True)
    ]
    title = "Finding the wrong labels out of sample (K folds, cleanlab)"
    return from_findings("label-issues-cv", title, findings, figures, head, rows)
