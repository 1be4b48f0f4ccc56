"""Aggregates over seeds: means with 95 % confidence intervals, per setup and level."""

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from .store import Store
from .study import CLEAN, Study


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds and the half-width of its 95 % t-interval (NaN for one seed)."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half if math.isfinite(self.half) else self.mean

    @property
    def high(self) -> float:
        return self.mean + self.half if math.isfinite(self.half) else self.mean

    def overlaps(self, other: "Estimate") -> bool:
        """True when the two intervals overlap (or either is unknown)."""
        if not (math.isfinite(self.half) and math.isfinite(other.half)):
            return True
        return self.low <= other.high and other.low <= self.high

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        if not math.isfinite(self.mean):
            return "—"
        if not math.isfinite(self.half):
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.half * scale:.{digits}f}"


def estimate(values: list[float | None]) -> Estimate:
    """Mean and 95 % CI of the finite values (SQLite hands back NaN as None)."""
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(vals) == 0:
        return Estimate(float("nan"), float("nan"), 0)
    if len(vals) == 1:
        return Estimate(float(vals[0]), float("nan"), 1)
    half = stats.t.ppf(0.975, len(vals) - 1) * vals.std(ddof=1) / math.sqrt(len(vals))
    return Estimate(float(vals.mean()), float(half), len(vals))


def study_of(store: Store) -> Study:
    return Study.model_validate(store.meta()["study"])


def setup_levels(study: Study) -> dict[str, list[float]]:
    """Each setup's levels, in study order; level 0 is the shared clean baseline."""
    return {s.name: study.levels_of(s) for s in study.setups}


def main_train_size(study: Study, setup: str | None = None) -> int | None:
    """The training-set size the setup × level views show (of `setup`, which may have its own
    sizes): the whole set if it has it (None), else its largest subset. Sweeps over sizes
    have their own report section."""
    own = next((s.train_sizes for s in study.setups if s.name == setup), None)
    sizes = own or study.train_sizes
    return None if "all" in sizes else max(int(s) for s in sizes)


def main_views(study: Study, setup: str, level: float, train_size: int | None) -> list[str]:
    """The setups whose setup × level views show a run: its own setup at its main size, or,
    for a clean baseline run, every setup with that level whose main size it has."""
    levels = setup_levels(study)
    targets = [s for s in levels if level in levels[s]] if setup == CLEAN else [setup]
    return [t for t in targets if main_train_size(study, t) == train_size]


def curves(store: Store) -> dict[tuple[str, float], dict[str, list[list[float]]]]:
    """(setup, level) -> metric -> per-seed list of per-epoch values, for finished runs of
    the main training-set size trained with plain cross-entropy (other training methods have
    their own section: report/methods_section.py). The clean baseline appears at level 0 of
    every setup.
    """
    study = study_of(store)
    size = {r["run_id"]: r["config"].get("train_size") for r in store.runs()}
    plain = {r["run_id"] for r in store.runs() if "method" not in r["config"]}
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    run_info: dict[str, tuple[str, float]] = {}
    for row in store.epochs():
        if row["status"] in ("done", "diverged") and row["run_id"] in plain:
            by_run[row["run_id"]].append(row)
            run_info[row["run_id"]] = (row["setup"], row["level"])
    out: dict[tuple[str, float], dict[str, list[list[float]]]] = {}
    for run_id, rows in by_run.items():
        setup, level = run_info[run_id]
        for target in main_views(study, setup, level, size[run_id]):
            slot = out.setdefault((target, level), defaultdict(list))
            for metric in ("train_loss", "train_acc", "test_loss", "test_acc", "test_conf"):
                slot[metric].append([r[metric] for r in rows])
    return out


def final_table(store: Store) -> list[dict[str, Any]]:
    """One row per setup × level: final-epoch test accuracy, loss and confidence."""
    study = study_of(store)
    data = curves(store)
    noises = {s.name: s.noise for s in study.setups}
    rows = []
    for setup, levels in setup_levels(study).items():
        for level in levels:
            slot = data.get((setup, level))
            if slot is None:
                continue
            row: dict[str, Any] = {
                "setup": setup,
                "noise": noises[setup],
                "level": level,
                "seeds": len(slot["test_acc"]),
            }
            for metric in ("test_acc", "test_loss", "test_conf", "train_acc", "train_loss"):
                row[metric] = estimate([seq[-1] for seq in slot[metric]])
            rows.append(row)
    return rows
