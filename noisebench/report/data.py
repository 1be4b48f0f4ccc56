"""What the main figures and the report's frame (title, table, run notes) read, derived from
the Frames (frames.read reads the store once): per setup × level the mean ± 95 % CI of the
epochs table's metrics, the label-noise transition matrices, the example images, run
statuses and wall times. Sections read the Frames alone (sections.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..store import Store
from ..study import Study
from ..summary import Estimate, estimate
from .frames import Frames, SetupInfo, read

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "test_conf")


@dataclass
class LevelStats:
    """One setup at one level: estimates over seeds."""

    seeds: int
    final: dict[str, Estimate]  # metric -> final-epoch estimate
    epochs: dict[str, list[Estimate]]  # metric -> one estimate per epoch
    best_acc: Estimate  # test accuracy at the best epoch, over seeds
    best_epoch: float  # the epoch (1-based) at which the mean test-accuracy curve peaks
    drop: Estimate  # accuracy at the best epoch minus the last epoch's, per seed
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> [seeds, epochs]


@dataclass
class LabelMatrix:
    """Share of training examples of true class i carrying label j, mean over seeds."""

    matrix: np.ndarray  # [K, K], rows sum to 1
    seeds: int
    exact_counts: bool  # class sizes known exactly (a run relabelled every example)

    @property
    def true_share(self) -> float:
        return float(np.mean(np.diag(self.matrix)))

    @property
    def max_wrong_share(self) -> float:
        off = self.matrix[~np.eye(len(self.matrix), dtype=bool)]
        return float(off.max()) if off.size else float("nan")


@dataclass
class ReportData:
    directory: Path
    stats: dict[tuple[str, float], LevelStats]
    frames: Frames  # the store's one reading: what was studied and measured is asked of it
    label_matrices: dict[str, dict[float, LabelMatrix]] = field(default_factory=dict)
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    pack_walls: list[float] = field(default_factory=list)
    epoch_wall_s: float = 0.0

    @property
    def meta(self) -> dict[str, Any]:
        return self.frames.meta

    @property
    def study(self) -> Study:
        return self.frames.study

    @property
    def setups(self) -> list[SetupInfo]:
        return self.frames.infos

    @property
    def num_classes(self) -> int:
        return self.frames.num_classes

    @property
    def chance(self) -> float:
        return self.frames.chance

    @property
    def epochs(self) -> int:
        """The study's training length (Frames.epochs: the last epoch measured)."""
        return self.study.train.epochs

    def levels(self, setup: str) -> list[float]:
        """The setup's levels that have at least one finished run."""
        return self.frames.levels(setup)

    def get(self, setup: str, level: float) -> LevelStats | None:
        return self.stats.get((setup, level))

    def of_kind(self, kind: str) -> list[SetupInfo]:
        return self.frames.of_kind(kind)

    def status_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.frames.runs.status.value_counts().items()}


def _padded(seqs: list[list[float]]) -> np.ndarray:
    """Per-seed sequences as [seeds, epochs]; NaN where a run stopped early or a value is
    not finite (SQLite stores NaN as NULL)."""
    width = max((len(s) for s in seqs), default=0)
    out = np.full((len(seqs), width), np.nan)
    for i, seq in enumerate(seqs):
        out[i, : len(seq)] = [v if v is not None and math.isfinite(v) else np.nan for v in seq]
    return out


def _last_finite(row: np.ndarray) -> float:
    finite = row[np.isfinite(row)]
    return float(finite[-1]) if finite.size else float("nan")


def _slot(runs: dict[str, dict[str, dict[int, float]]]) -> dict[str, list[list[float]]]:
    """metric -> one list per run of its values at epochs 1 … its last epoch."""
    slot: dict[str, list[list[float]]] = {m: [] for m in METRICS}
    for series in runs.values():
        last = max((e for e in series.get("test_acc", {}) if e >= 1), default=0)
        for m in METRICS:
            by_epoch = series.get(m, {})
            slot[m].append([by_epoch.get(e, float("nan")) for e in range(1, last + 1)])
    return slot


def level_stats(slot: dict[str, list[list[float]]]) -> LevelStats:
    """Estimates over seeds for one setup × level from its per-seed per-epoch curves."""
    arrays = {m: _padded(slot[m]) for m in METRICS}  # NULL (a NaN in SQLite) becomes NaN
    ends = [len(seq) - 1 for seq in slot["test_acc"]]
    final = {
        m: estimate([float(arrays[m][i, end]) for i, end in enumerate(ends) if end >= 0])
        for m in METRICS
    }
    per_epoch = {
        m: [estimate(list(arrays[m][:, e])) for e in range(arrays[m].shape[1])] for m in METRICS
    }
    # the best epoch is the mean curve's peak (as in the main table), the same for every seed
    acc = pd.DataFrame(arrays["test_acc"]).ffill(axis=1).to_numpy()
    bests, drops, best_epoch = [], [], float("nan")
    if np.isfinite(acc).any():
        i = int(np.nanargmax(np.nanmean(acc, axis=0)))
        best_epoch = float(i + 1)
        kept = [row for row in acc if np.isfinite(row[i])]
        bests = [float(row[i]) for row in kept]
        drops = [float(row[i]) - _last_finite(row) for row in kept]
    return LevelStats(
        seeds=len(slot["test_acc"]),
        final=final,
        epochs=per_epoch,
        best_acc=estimate(bests),
        best_epoch=best_epoch,
        drop=estimate(drops),
        curves=arrays,
    )


def _class_counts(originals: list[np.ndarray], k: int, n: int):
    """Training-set class sizes: exact from a run that relabelled every example, else scaled."""
    best = max(originals, key=len, default=None)
    if best is None or len(best) == 0:
        return np.full(k, n / k), False
    counts = np.bincount(best.astype(np.int64), minlength=k)[:k].astype(float)
    if len(best) >= n:
        return counts, True
    return counts * n / len(best), False


def label_matrices(frames: Frames, setup: SetupInfo, n: int) -> dict[float, LabelMatrix]:
    """Per level: true label -> assigned label shares over all training examples.

    Unpicked examples keep their label, so each seed's matrix is diag(class size - picked)
    plus the picked examples' transitions, divided by the class size.
    """
    k = frames.num_classes
    mine = frames.runs[(frames.runs.setup == setup.name) & frames.runs.run_id.isin(frames.labels)]
    pairs = [(r.level, frames.labels[r.run_id]) for r in mine.itertuples()]
    sizes, exact = _class_counts([original for _, (original, _) in pairs], k, n)
    by_level: dict[float, list[np.ndarray]] = defaultdict(list)
    for level, (original, assigned) in pairs:
        moves = np.zeros((k, k))
        np.add.at(moves, (original.astype(np.int64), assigned.astype(np.int64)), 1)
        kept = np.clip(sizes - moves.sum(1), 0, None)
        full = moves + np.diag(kept)
        by_level[level].append(full / np.maximum(full.sum(1, keepdims=True), 1e-12))
    return {
        lv: LabelMatrix(np.mean(mats, axis=0), len(mats), exact)
        for lv, mats in sorted(by_level.items())
    }


def _pack_walls(runs: pd.DataFrame) -> list[float]:
    """Wall time of each pack: its runs share `started_at`, the slowest finishes it."""
    timed = runs.dropna(subset=["started_at", "wall_s"])
    return [float(w) for w in timed.groupby("started_at").wall_s.max()]


def _epoch_wall(frames: Frames) -> float:
    """Summed per-epoch training time, counting each pack (runs with one start) once."""
    walls = frames.values[frames.values.metric == "wall_s"].merge(
        frames.runs[["run_id", "started_at"]], on="run_id"
    )
    per_pack_epoch = walls.groupby(["started_at", "epoch"]).value.max()
    return float(per_pack_epoch[np.isfinite(per_pack_epoch)].sum())


def load(store: Store, directory: Path | None = None) -> ReportData:
    """Read everything the report needs from an open store (through frames.read, once)."""
    frames = read(store)
    data = ReportData(
        directory=Path(directory) if directory is not None else store.path.parent,
        stats={key: level_stats(_slot(runs)) for key, runs in frames.shown_series().items()},
        frames=frames,
        pack_walls=_pack_walls(frames.runs),
        epoch_wall_s=_epoch_wall(frames),
    )
    n = int(frames.meta.get("train_size") or 0)
    for setup in data.setups:
        if setup.kind == "labels":
            mats = label_matrices(frames, setup, n)
            if mats:
                data.label_matrices[setup.name] = mats
        elif setup.kind == "pixels":
            images = frames.examples.get(setup.name)
            if images is not None and images.ndim == 3 and len(images) == len(setup.levels):
                data.examples[setup.name] = images
    return data
