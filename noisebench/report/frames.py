"""The report's one data model: the store read once into tidy pandas frames.

`Frames.runs` has one row per run (run_id, setup, noise, level, seed, train_size, method,
peer, status, pack_size, wall_s; method "ce" is plain cross-entropy, peer 1 the second
network of a co-teaching pair). `Frames.values` has one row per run × epoch × metric (run_id, epoch,
metric, value) for every metric, whether the store keeps it in its `epochs` table
(train_loss, test_acc, ...) or in its `metrics` table (fit_noisy, fgsm@0.1, ...); epoch 0 is
measured after training. `Frames.shown` places each finished run of the main training size
in the setup × level cells the report shows: the shared clean baseline appears at level 0
of every setup; only plain-ce runs are shown there (other training methods have their own
section, methods_section.py). Findings, tables and figures read these frames and nothing else.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import NoisebenchError, StudyError
from ..noise import LabelNoise, PixelNoise, make_noise
from ..store import EPOCH_COLUMNS, Store
from ..study import Setup, Study, method_label
from ..summary import main_views

FINISHED = ("done", "diverged")


@dataclass(frozen=True)
class SetupInfo:
    """One setup of the study and what kind of noise it is ("labels", "pixels" or "")."""

    name: str
    noise: str
    params: dict[str, Any]
    kind: str
    levels: list[float]
    index: int  # position in the study: picks the setup's colour everywhere


def _kind(setup: Setup) -> str:
    try:
        noise = make_noise(setup.noise, setup.params)
    except StudyError:
        return ""
    if isinstance(noise, LabelNoise):
        return "labels"
    if isinstance(noise, PixelNoise):
        return "pixels"
    return ""


@dataclass(frozen=True)
class Frames:
    meta: dict[str, Any]
    study: Study
    runs: pd.DataFrame  # one row per run
    values: pd.DataFrame  # run_id, epoch, metric, value
    shown: pd.DataFrame  # run_id, setup (the cell's setup), level, seed
    # the stored arrays the report draws: per finished label-noise run, the true and the
    # assigned label of each relabelled example; per pixel setup, its example images
    labels: dict[str, tuple[np.ndarray, np.ndarray]]
    examples: dict[str, np.ndarray]

    # --- what was studied -------------------------------------------------------------
    @property
    def setups(self) -> list[str]:
        return [s.name for s in self.study.setups]

    @functools.cached_property
    def infos(self) -> list[SetupInfo]:
        """The study's setups with their kind of noise and colour index, in study order."""
        return [
            SetupInfo(s.name, s.noise, dict(s.params), _kind(s), self.study.levels_of(s), i)
            for i, s in enumerate(self.study.setups)
        ]

    def of_kind(self, kind: str) -> list[SetupInfo]:
        return [s for s in self.infos if s.kind == kind]

    def noise_of(self, setup: str) -> str | None:
        return next((s.noise for s in self.study.setups if s.name == setup), None)

    def levels(self, setup: str) -> list[float]:
        """The setup's levels that have at least one finished run, in study order."""
        have = set(self.shown.loc[self.shown.setup == setup, "level"])
        spec = next(s for s in self.study.setups if s.name == setup)
        return [lv for lv in self.study.levels_of(spec) if lv in have]

    @property
    def num_classes(self) -> int:
        return len(self.meta.get("class_names") or range(10))

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes

    @property
    def epochs(self) -> int:
        """The last epoch any shown run measured (the study's training length when done)."""
        per_epoch = self.values[self.values.epoch > 0]
        return int(per_epoch.epoch.max()) if len(per_epoch) else 0

    @property
    def seeds(self) -> list[int]:
        return sorted(int(s) for s in self.shown.seed.unique())

    @property
    def n_test(self) -> int | None:
        """How many test images every test accuracy is measured on (None: not recorded)."""
        return int(self.meta.get("test_size") or 0) or None

    @property
    def scope(self) -> str:
        """What a finding covers: 'mnist-sample, 3 seeds (0, 1, 2), epochs 1–10'."""
        seeds = self.seeds
        many = "seed" if len(seeds) == 1 else "seeds"
        return (
            f"{self.meta.get('dataset')}, {len(seeds)} {many} ({', '.join(map(str, seeds))}), "
            f"epochs 1–{self.epochs}"
        )

    # --- numbers ----------------------------------------------------------------------
    def curves(self, setup: str, level: float, metric: str) -> pd.DataFrame:
        """seed × epoch table of `metric` for the runs shown at (setup, level); epochs ≥ 1."""
        cell = self.shown[(self.shown.setup == setup) & (self.shown.level == level)]
        rows = self.values[(self.values.metric == metric) & (self.values.epoch > 0)]
        rows = rows.merge(cell[["run_id", "seed"]], on="run_id")
        if rows.empty:
            return pd.DataFrame()
        return rows.pivot_table(index="seed", columns="epoch", values="value", aggfunc="first")

    def at_epoch(self, setup: str, level: float, metric: str, epoch: int) -> pd.Series:
        """Per-seed value of `metric` at `epoch` (the last measured epoch for a run that
        stopped earlier); index: seed."""
        table = self.curves(setup, level, metric)
        if table.empty:
            return pd.Series(dtype=float)
        upto = table.loc[:, [e for e in table.columns if e <= epoch]]
        return upto.ffill(axis=1).iloc[:, -1].dropna()

    def last(self, setup: str, level: float, metric: str) -> pd.Series:
        """Per-seed value after each run's last epoch; index: seed."""
        table = self.curves(setup, level, metric)
        if table.empty:
            return pd.Series(dtype=float)
        return table.ffill(axis=1).iloc[:, -1].dropna()

    def by_run(self) -> dict[str, dict[str, dict[int, float]]]:
        """run_id -> metric -> epoch -> value, for every finished run (every training size;
        epoch 0: measured after training)."""
        done = set(self.runs.loc[self.runs.status.isin(FINISHED), "run_id"])
        out: dict[str, dict[str, dict[int, float]]] = {}
        rows = self.values[self.values.run_id.isin(done)]
        for run_id, metric, epoch, value in zip(
            rows.run_id, rows.metric, rows.epoch, rows.value, strict=True
        ):
            out.setdefault(run_id, {}).setdefault(metric, {})[int(epoch)] = float(value)
        return out

    def shown_series(self) -> dict[tuple[str, float], dict[str, dict[str, dict[int, float]]]]:
        """(setup, level) -> run_id -> metric -> epoch -> value, for the runs `shown` there."""
        series = self.by_run()
        out: dict[tuple[str, float], dict[str, dict[str, dict[int, float]]]] = {}
        for run_id, setup, level in zip(
            self.shown.run_id, self.shown.setup, self.shown.level, strict=True
        ):
            out.setdefault((setup, float(level)), {})[run_id] = series.get(run_id, {})
        return out

    def train_size(self, setup: str, level: float) -> str:
        """The training-set size of the runs shown at (setup, level), as the table writes it."""
        cell = self.shown[(self.shown.setup == setup) & (self.shown.level == level)]
        sizes = self.runs[self.runs.run_id.isin(cell.run_id)].train_size
        known = {int(n) for n in sizes if n is not None and not _nan(n)}
        if not known:
            whole = self.meta.get("train_size")
            return f"{int(whole):,}" if whole else "all"
        return ", ".join(f"{n:,}" for n in sorted(known))

    def after_training(self, setup: str, level: float, metric: str) -> pd.Series:
        """Per-seed value of a metric measured once after training (epoch 0); index: seed."""
        cell = self.shown[(self.shown.setup == setup) & (self.shown.level == level)]
        rows = self.values[(self.values.metric == metric) & (self.values.epoch == 0)]
        rows = rows.merge(cell[["run_id", "seed"]], on="run_id")
        return rows.set_index("seed")["value"].sort_index().dropna()


def read(store: Store) -> Frames:
    """Every table and array the report needs, read from `store` once."""
    meta = store.meta()
    if "study" not in meta:
        raise NoisebenchError(f"{store.path} holds no study yet (no metadata); nothing to report")
    study = Study.model_validate(meta["study"])
    runs = pd.DataFrame(
        [
            {
                "run_id": r["run_id"],
                "setup": r["setup"],
                "noise": r["noise"],
                "level": float(r["level"]),
                "seed": int(r["seed"]),
                "train_size": r["config"].get("train_size"),  # None: the whole set
                "method": method_label(tuple(r["config"].get("method", {}).items())),
                "peer": r["config"].get("method", {}).get("peer", 0),
                "status": r["status"],
                "pack_size": r["pack_size"],
                "started_at": r["started_at"],  # shared by the runs of one pack
                "wall_s": r["wall_s"],
            }
            for r in store.runs()
        ],
        columns=[
            "run_id",
            "setup",
            "noise",
            "level",
            "seed",
            "train_size",
            "method",
            "peer",
            "status",
            "pack_size",
            "started_at",
            "wall_s",
        ],
    )
    epoch_rows = pd.DataFrame(store.epochs())
    if epoch_rows.empty:
        core = pd.DataFrame(columns=["run_id", "epoch", "metric", "value"])
    else:
        core = epoch_rows.melt(
            id_vars=["run_id", "epoch"],
            value_vars=[c for c in EPOCH_COLUMNS if c in epoch_rows],
            var_name="metric",
            value_name="value",
        )
    named = pd.DataFrame(store.metrics(), columns=["run_id", "epoch", "name", "value"])
    named = named.rename(columns={"name": "metric"})[["run_id", "epoch", "metric", "value"]]
    values = pd.concat([core, named], ignore_index=True)
    values["value"] = pd.to_numeric(values["value"], errors="coerce").astype(float)
    values["epoch"] = values["epoch"].astype(int)
    values = values[np.isfinite(values["value"]) | values["value"].isna()]
    shown = _shown(study, runs)
    labels = {}
    for r in runs[runs.status.isin(FINISHED) & runs.noise.str.startswith("labels.")].itertuples():
        pair = store.array(r.run_id, "label_original"), store.array(r.run_id, "label_assigned")
        if pair[0] is not None and pair[1] is not None:
            labels[r.run_id] = pair
    examples = {}
    for setup in study.setups:
        images = store.array("study", f"examples/{setup.name}")
        if images is not None:
            examples[setup.name] = images
    return Frames(meta, study, runs, values, shown, labels, examples)


def _shown(study: Study, runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in runs.itertuples():
        if r.status not in FINISHED or r.method != "ce":
            continue
        size = None if r.train_size is None or _nan(r.train_size) else int(r.train_size)
        for target in main_views(study, r.setup, r.level, size):
            rows.append({"run_id": r.run_id, "setup": target, "level": r.level, "seed": r.seed})
    return pd.DataFrame(rows, columns=["run_id", "setup", "level", "seed"])


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
