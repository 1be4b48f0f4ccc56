"""Every finished plain-ce run of a study, of every training-set size, for the experiment
sections.

The main views (Frames.shown, measured.Measured) only show the study's main training-set size;
the experiments compare sizes, so they read each run on its own: its per-epoch series (the
epochs table and the named per-epoch metrics, index e − 1 for epoch e, NaN where the run has
no value, e.g. after it stopped) and its after-training numbers (named metrics at epoch 0).
A run belongs to a group, (setup, level), the clean baseline being (CLEAN, 0.0) once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..study import CLEAN
from ..summary import Estimate, estimate
from .finding import Finding
from .frames import Frames
from .measured import level_text as measured_level_text

FINISHED = ("done", "diverged")
EPOCH_COLUMNS = ("train_loss", "train_acc", "test_loss", "test_acc", "test_conf")
RANDOM_NOISES = ("labels.uniform", "labels.shuffle")  # at X = 100 %: labels carry nothing
Group = tuple[str, float]  # (setup, level); the clean baseline is (CLEAN, 0.0)


@dataclass
class Run:
    run_id: str
    setup: str
    noise: str | None
    level: float
    seed: int
    subset: int | None  # the configured train_size (None: the whole training set)
    pack_size: int
    series: dict[str, np.ndarray] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    @property
    def group(self) -> Group:
        return (self.setup, self.level)

    @property
    def epochs(self) -> int:
        """Epochs recorded (a stopped run has none after its stop)."""
        acc = self.series.get("test_acc")
        return int(np.flatnonzero(np.isfinite(acc))[-1] + 1) if acc is not None and acc.size else 0

    def curve(self, name: str) -> np.ndarray:
        return self.series.get(name, np.full(0, np.nan))

    def last(self, name: str) -> float:
        """The value at the run's last epoch with one (NaN: none)."""
        values = self.curve(name)
        finite = values[np.isfinite(values)]
        return float(finite[-1]) if finite.size else math.nan

    def best(self, name: str) -> float:
        """The highest value over its epochs (NaN: none)."""
        values = self.curve(name)
        return float(np.nanmax(values)) if np.isfinite(values).any() else math.nan

    def at(self, name: str, epoch: int) -> float:
        values = self.curve(name)
        return float(values[epoch - 1]) if 1 <= epoch <= len(values) else math.nan

    def value(self, name: str) -> float:
        """An after-training number (NaN: not measured)."""
        v = self.after.get(name)
        return float(v) if v is not None else math.nan

    def reach_epoch(self, name: str, target: float) -> int | None:
        """The first epoch at which `name` is at least `target` (None: never)."""
        hits = np.flatnonzero(self.curve(name) >= target)
        return int(hits[0] + 1) if hits.size else None

    @property
    def best_val_epoch(self) -> int | None:
        """The best-validation epoch: the early-stopping record, else the lowest val loss."""
        b = self.value("best_epoch")
        if math.isfinite(b) and b >= 1:
            return int(b)
        loss = self.curve("val_loss")
        return int(np.nanargmin(loss) + 1) if np.isfinite(loss).any() else None

    @property
    def seconds(self) -> float:
        """Training-step time of this run: its pack's per-epoch step time over the pack size."""
        times = self.curve("train_s")
        times = times[np.isfinite(times)]
        return float(times.sum() / max(self.pack_size, 1)) if times.size else math.nan


def _array(by_epoch: dict[int, float | None]) -> np.ndarray:
    width = max(by_epoch, default=0)
    out = np.full(width, np.nan)
    for epoch, v in by_epoch.items():
        if epoch >= 1 and v is not None and math.isfinite(v):
            out[epoch - 1] = v
    return out


class StudyRuns:
    """The finished runs of a study with their series, grouped by setup × level and by N."""

    def __init__(self, frames: Frames) -> None:
        self.frames = frames
        self.cap = frames.study.train.epochs  # the study's training length
        # plain-ce runs only, as in the main views: other training methods have their section
        kept = frames.runs[frames.runs.status.isin(FINISHED) & (frames.runs.method == "ce")]
        series = frames.by_run()
        per_epoch = {
            run_id: {m: {e: v for e, v in s.items() if e >= 1} for m, s in found.items()}
            for run_id, found in series.items()
        }
        after = {
            run_id: {m: s[0] for m, s in found.items() if 0 in s}
            for run_id, found in series.items()
        }
        self.runs = [
            Run(
                run_id=r.run_id,
                setup=r.setup,
                noise=r.noise,
                level=float(r.level),
                seed=int(r.seed),
                subset=None if pd.isna(r.train_size) else int(r.train_size),
                pack_size=int(r.pack_size) if pd.notna(r.pack_size) and r.pack_size else 1,
                series={k: _array(v) for k, v in per_epoch.get(r.run_id, {}).items() if v},
                after=after.get(r.run_id, {}),
            )
            for r in kept.itertuples()
        ]
        self.full_size = self._full_size()

    def _full_size(self) -> int:
        """N of the whole training set: what a clean run without subset trained on."""
        found = [r.value("train_size") for r in self.runs if r.subset is None]
        found = [v for v in found if math.isfinite(v)]
        if found:
            return int(min(found))  # label noises that add copies train on more
        n = int(self.frames.meta.get("train_size") or 0)
        return round(n * (1 - self.frames.study.validation))

    def size(self, run: Run) -> int:
        return run.subset if run.subset is not None else self.full_size

    def sizes(self) -> list[int]:
        return sorted({self.size(r) for r in self.runs})

    def has(self, name: str) -> bool:
        return any(name in r.series or name in r.after for r in self.runs)

    def groups(self) -> list[Group]:
        """Groups with runs, in study order: the clean baseline first."""
        present = {r.group for r in self.runs}
        out: list[Group] = [(CLEAN, 0.0)] if (CLEAN, 0.0) in present else []
        for setup in self.frames.infos:
            out += [(setup.name, lv) for lv in setup.levels if (setup.name, lv) in present]
        return out

    def select(self, group: Group, n: int | None = None) -> list[Run]:
        return [r for r in self.runs if r.group == group and (n is None or self.size(r) == n)]

    def by_seed(self, group: Group, n: int, name: str = "test_acc") -> pd.Series:
        """Each run's last value of `name` in the group at N, indexed by seed (for paired
        comparisons: runs with one seed share their initialisation and data order)."""
        return pd.Series({r.seed: r.last(name) for r in self.select(group, n)}, dtype=float)

    def finding(
        self, key: str, text: str | None, holds: bool = True, statistic: str = "", ref: str = ""
    ) -> Finding | None:
        """A sentence of an experiment section as a Finding (None when there is nothing to say):
        `holds` is False where its check could not confirm what it compares."""
        if not text:
            return None
        return Finding(key, text, holds, statistic or "means over runs", self.frames.scope, ref)

    def label(self, group: Group) -> str:
        setup, level = group
        if setup == CLEAN:
            return "clean labels"
        return f"{setup} at {level_text(self.frames, setup, level)}"

    def level_label(self, group: Group) -> str:
        """'X = 50 %' (or the noisy copies of labels.dilution); the clean baseline is X = 0."""
        return "X = 0 %" if group[0] == CLEAN else level_text(self.frames, *group)

    def random_labels(self) -> list[Group]:
        """Groups whose labels are all random: uniform or shuffled labels at X = 100 %."""
        noises = {s.name: s.noise for s in self.frames.infos}
        return [g for g in self.groups() if g[1] == 1.0 and noises.get(g[0]) in RANDOM_NOISES]

    def n_text(self, n: int) -> str:
        return f"N = {n:,} (the whole set)" if n == self.full_size else f"N = {n:,}"


def level_text(frames: Frames, setup: str, level: float) -> str:
    info = next((s for s in frames.infos if s.name == setup), None)
    return f"X = {level * 100:.0f} %" if info is None else measured_level_text(info, level)


def curves(runs: list[Run], name: str, carry: bool = False) -> np.ndarray:
    """[runs, epochs] of `name`; with `carry`, a run that stopped keeps its last value (its
    kept parameters do not change after the stop)."""
    width = max((len(r.curve(name)) for r in runs), default=0)
    out = np.full((len(runs), width), np.nan)
    for i, run in enumerate(runs):
        values = run.curve(name)
        out[i, : len(values)] = values
        if carry:
            finite = np.flatnonzero(np.isfinite(values))
            if finite.size:
                out[i, finite[-1] + 1 :] = values[finite[-1]]
    return out


def per_epoch(runs: list[Run], name: str, carry: bool = False) -> list[Estimate]:
    arr = curves(runs, name, carry)
    return [estimate(list(arr[:, e])) for e in range(arr.shape[1])]


def over(runs: list[Run], value) -> Estimate:
    """Estimate over runs of `value(run)`."""
    return estimate([value(r) for r in runs])
