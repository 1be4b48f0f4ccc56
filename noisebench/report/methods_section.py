"""The methods section: noise-robust training methods side by side, per noise setting.

Self-contained: `methods_section(runs, metrics)` takes two pandas frames and returns the
section's tables (first), figures and the few sentences its numbers support.

- `runs`: one row per run: run_id, setup, level, seed, method (study.method_label; a
  co-teaching run also has `peer`, 0 or 1: the section reads peer 0, the pair's first network).
- `metrics`: long, one row per run × epoch × metric: run_id, epoch, metric, value. Per epoch:
  test_acc, fit_noisy (share of the corrupted training examples predicted with their wrong
  label); epoch 0 (after training): best_epoch of runs that stopped early.

Per setting (setup, level) and method: test accuracy at the last epoch (for "early-stop", the
epoch it kept) and at its best epoch (the epoch at which the method's mean test-accuracy curve
peaks, as in the report's main table: an oracle, it looks at the test set), each with the
paired (same seed) difference against `ce` and its 95 % t-interval over seeds; the share of
the clean accuracy lost by `ce` that the method buys back (where that loss is clear); the
share of corrupted examples fitted; the compute it used relative to `ce` (networks × epochs
trained; the per-step cost of each loss is measured by bench/methods.py, not here: a pack's
runs share its wall clock); for an estimated T, its mean L1 distance per row from the true T
(epoch 0: transition_l1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .finding import Finding  # noqa: E402
from .frames import Frames  # noqa: E402
from .sections import Section, from_findings, save_figure  # noqa: E402
from .stats import mean_half  # noqa: E402

BASELINE = "ce"
CLEAN = "clean"


@dataclass
class Interval:
    """A mean over seeds with its 95 % t-interval (nan without two seeds)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray) -> Interval:
        mean, half, n = mean_half(values)
        return cls(mean, mean - half, mean + half, n)

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def points(self) -> str:
        """In percentage points: "+3.1 [1.2, 5.0]"."""
        if math.isnan(self.mean):
            return "–"
        if math.isnan(self.low):
            return f"{100 * self.mean:+.1f}"
        return f"{100 * self.mean:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


@dataclass
class MethodsSection:
    tables: dict[tuple[str, float], pd.DataFrame]  # per (setup, level): methods, ranked
    figures: dict[tuple[str, float], Figure]  # per (setup, level): test accuracy per epoch
    paragraphs: list[str] = field(default_factory=list)


def _per_run(runs: pd.DataFrame, metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run: last, best accuracy, fitted share, epochs; test accuracy per epoch)."""
    if "peer" in runs:
        runs = runs[runs["peer"].fillna(0) == 0]
    wide = metrics[metrics.epoch > 0].pivot_table(
        index=["run_id", "epoch"], columns="metric", values="value"
    )
    after = metrics[metrics.epoch == 0].pivot_table(
        index="run_id", columns="metric", values="value"
    )
    rows = []
    for run in runs.itertuples():
        if run.run_id not in wide.index.get_level_values(0):
            continue
        epochs = wide.loc[run.run_id]
        kept = len(epochs)
        if "best_epoch" in after and run.run_id in after.index:
            best_epoch = after.at[run.run_id, "best_epoch"]
            kept = int(best_epoch) if best_epoch > 0 else kept
        at_kept = epochs.loc[kept] if kept in epochs.index else epochs.iloc[-1]
        l1 = math.nan
        if "transition_l1" in after and run.run_id in after.index:
            l1 = after.at[run.run_id, "transition_l1"]
        rows.append(
            {
                "run_id": run.run_id,
                "setup": run.setup,
                "level": run.level,
                "seed": run.seed,
                "method": run.method,
                "last": at_kept["test_acc"],
                "best": epochs["test_acc"].max(),
                "fit_noisy": at_kept.get("fit_noisy", math.nan),
                "epochs": len(epochs),
                "transition_l1": l1,
                "networks": 2 if run.method.startswith("coteaching") else 1,
            }
        )
    curves = wide["test_acc"].rename("test_acc").reset_index()
    return pd.DataFrame(rows), curves


def _at_mean_peak(table: pd.DataFrame, curves: pd.DataFrame) -> pd.Series:
    """Per run (aligned with `table`): test accuracy at the epoch where its method's mean
    curve over seeds peaks, a stopped run keeping its last value (the main table's best epoch)."""
    wide = curves[curves.run_id.isin(table.run_id)].pivot_table(
        index="run_id", columns="epoch", values="test_acc"
    )
    wide = wide.ffill(axis=1)
    method = table.set_index("run_id").method
    best = pd.Series(math.nan, index=wide.index)
    for _, runs in wide.groupby(method.reindex(wide.index)):
        epoch = runs.mean(axis=0).idxmax()
        best[runs.index] = runs[epoch]
    return table.run_id.map(best)


def _paired(table: pd.DataFrame, method: str, column: str) -> Interval:
    """method − ce in `column`, paired by seed."""
    mine = table[table.method == method].set_index("seed")[column]
    base = table[table.method == BASELINE].set_index("seed")[column]
    both = mine.index.intersection(base.index)
    return Interval.of((mine[both] - base[both]).to_numpy())


def _setting_table(table: pd.DataFrame, clean_by_seed: pd.Series) -> pd.DataFrame:
    """The methods of one setting, ranked by last-epoch accuracy. The share of the clean gap
    bought back is given only where ce's loss against clean labels is clear (paired by seed):
    a ratio to a gap within seed noise means nothing."""
    base = table[table.method == BASELINE]
    ce_by_seed = base.set_index("seed")["last"]
    lost = Interval.of((clean_by_seed - ce_by_seed).dropna().to_numpy())
    gap = lost.mean if lost.excludes_zero and lost.mean > 0 else math.nan
    rows = []
    for method, part in table.groupby("method", sort=False):
        last = Interval.of(part["last"].to_numpy())
        bought = (last.mean - base["last"].mean()) / gap
        cost = part.networks * part.epochs
        base_cost = (base.networks * base.epochs).mean() if len(base) else math.nan
        rows.append(
            {
                "method": method,
                "seeds": last.n,
                "last_acc": last.mean,
                "last_vs_ce": _paired(table, method, "last"),
                "best_acc": part["best"].mean(),
                "best_vs_ce": _paired(table, method, "best"),
                "bought_back": bought,
                "fit_noisy": part["fit_noisy"].mean(),
                "compute_vs_ce": cost.mean() / base_cost,
                "transition_l1": part["transition_l1"].mean(),
            }
        )
    return pd.DataFrame(rows).sort_values("last_acc", ascending=False, ignore_index=True)


def _figure(curves: pd.DataFrame, table: pd.DataFrame, title: str, clean: float) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    cmap = plt.get_cmap("tab20")
    for i, (method, part) in enumerate(table.groupby("method", sort=False)):
        mine = curves[curves.run_id.isin(part.run_id)]
        mean = mine.groupby("epoch")["test_acc"].mean()
        width = 2.2 if method == BASELINE else 1.2
        ax.plot(mean.index, 100 * mean.to_numpy(), label=method, color=cmap(i % 20), lw=width)
    if not math.isnan(clean):
        ax.axhline(100 * clean, color="0.4", ls=":", lw=1, label="ce, clean labels")
    ax.set(xlabel="epoch", ylabel="test accuracy %", title=title)
    ax.legend(fontsize=7, ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def clear_of_ce(ranked: pd.DataFrame) -> tuple[list, list]:
    """The methods of a ranked table that end above and below ce beyond seed noise (the
    paired 95 % t-interval of the last-epoch difference excludes zero), best first."""
    clear = [r for r in ranked.itertuples() if r.method != BASELINE and r.last_vs_ce.excludes_zero]
    return [r for r in clear if r.last_vs_ce.mean > 0], [r for r in clear if r.last_vs_ce.mean < 0]


def _headline(setup: str, level: float, ranked: pd.DataFrame) -> str:
    """One checked sentence per setting: which methods end above (below) ce beyond seed
    noise, and the largest mean gain among those above."""
    where = f"Under {setup} at X = {100 * level:g} %"
    up, down = clear_of_ce(ranked)
    n = int(ranked.seeds.max())
    if n < 2:
        return f"{where}, one seed: no difference against plain ce is claimed."
    if up:
        top = up[0]
        who = "1 method ends" if len(up) == 1 else f"{len(up)} methods end"
        text = (
            f"{where}, {who} clearly above plain ce at the last epoch (paired 95 % CI over {n} "
            f"seeds); the largest mean gain is {top.method}'s, {top.last_vs_ce.points()} points"
        )
    else:
        text = f"{where}, no method ends clearly above plain ce at the last epoch ({n} seeds)"
    if down:
        names = [r.method for r in down]
        text += f"; {', '.join(names)} {'ends' if len(names) == 1 else 'end'} clearly below it"
    return text + "."


def _settings(runs: pd.DataFrame, metrics: pd.DataFrame):
    """(test accuracy per epoch, clean ce's mean, [(setup, level, per-run table, ranked
    table)] per noise setting)."""
    per_run, curves = _per_run(runs, metrics)
    clean_ce = per_run[(per_run.setup == CLEAN) & (per_run.method == BASELINE)]
    clean = float(clean_ce["last"].mean()) if len(clean_ce) else math.nan
    settings = []
    for (setup, level), table in per_run.groupby(["setup", "level"], sort=True):
        if setup == CLEAN:
            continue
        table = table.assign(best=_at_mean_peak(table, curves))
        ranked = _setting_table(table, clean_ce.set_index("seed")["last"])
        settings.append((setup, level, table, ranked))
    return curves, clean, settings


def ranked_tables(
    runs: pd.DataFrame, metrics: pd.DataFrame
) -> dict[tuple[str, float], pd.DataFrame]:
    """Per noise setting, the methods ranked (no figures drawn)."""
    return {(setup, level): ranked for setup, level, _, ranked in _settings(runs, metrics)[2]}


def methods_section(runs: pd.DataFrame, metrics: pd.DataFrame) -> MethodsSection:
    """Tables, figures and headlines of the methods section (see the module docstring)."""
    curves, clean, settings = _settings(runs, metrics)
    section = MethodsSection({}, {})
    for setup, level, table, ranked in settings:
        name = f"{setup} at {100 * level:g} %"
        section.tables[(setup, level)] = ranked
        section.figures[(setup, level)] = _figure(curves, table, name, clean)
        section.paragraphs.append(_headline(setup, level, ranked))
    return section


def as_text(table: pd.DataFrame) -> pd.DataFrame:
    """A ranked table as people read it: percentages and points."""

    def pct(v: float) -> str:
        return "–" if math.isnan(v) else f"{100 * v:.1f}"

    return pd.DataFrame(
        {
            "method": table.method,
            "test acc % (last)": table.last_acc.map(pct),
            "vs ce, points [95 % CI]": table.last_vs_ce.map(Interval.points),
            "test acc % (best epoch)": table.best_acc.map(pct),
            "best vs ce": table.best_vs_ce.map(Interval.points),
            "of the clean gap bought back %": table.bought_back.map(pct),
            "corrupted fitted %": table.fit_noisy.map(pct),
            "compute vs ce": table.compute_vs_ce.map(lambda v: f"{v:.2f}×"),
            "estimated T: L1 per row": table.transition_l1.map(
                lambda v: "–" if math.isnan(v) else f"{v:.2f}"
            ),
        }
    )


def section(frames: Frames, folder: Path) -> Section | None:
    """The report's methods section (sections.py interface); None for a plain-ce study."""
    if set(frames.runs.method) <= {BASELINE}:
        return None
    built = methods_section(frames.runs, frames.values)
    figures, head, rows = [], [], []
    for i, ((setup, level), fig) in enumerate(built.figures.items()):
        name = f"{setup} at {100 * level:g} %"
        figures.append(
            save_figure(
                fig,
                folder,
                f"methods-{i + 1}",
                f"Training methods: {name}",
                "Mean test accuracy per epoch of each training method (co-teaching: the "
                "pair's first network); dotted: plain ce on clean labels.",
            )
        )
        text = as_text(built.tables[(setup, level)])
        head = ["setting", *text.columns]
        rows += [[name, *row] for row in text.astype(str).itertuples(index=False)]
    findings = [
        Finding(
            f"methods-{setup}-{level}",
            text,
            any(clear_of_ce(table)),  # a method ends clearly above or below ce
            "paired difference against ce over seeds, 95 % t-interval",
            frames.scope,
            "methods",
        )
        for ((setup, level), table), text in zip(
            built.tables.items(), built.paragraphs, strict=True
        )
    ]
    title = "Training methods against label noise"
    return from_findings("methods", title, findings, figures, head, rows)
