"""Every metric as estimates over seeds, for the diagnostic sections.

`Measured(frames)` indexes the Frames by setup × level × name like the main views: only
finished runs of the main training-set size count, and the clean runs are level 0 of every
setup. `final` is each run's value at its last epoch (epoch 0 for numbers measured after
training), `per_seed` the same values indexed by seed (for paired comparisons),
`per_epoch` one estimate per epoch 1, 2, … Also here: how a setup's level reads
and where it sits on a shared X axis (labels.dilution counts noisy copies, not a share).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pandas as pd

from ..noise import counts_copies
from ..noise import level_text as noise_level_text
from ..summary import Estimate, estimate
from .frames import Frames, SetupInfo


class Measured:
    def __init__(self, frames: Frames) -> None:
        self.frames = frames
        # (setup, level, name) -> run_id -> epoch -> value
        self._values: dict[tuple[str, float, str], dict[str, dict[int, float | None]]] = (
            defaultdict(dict)
        )
        for (setup, level), runs in frames.shown_series().items():
            for run_id, series in runs.items():
                for name, by_epoch in series.items():
                    self._values[(setup, level, name)][run_id] = by_epoch
        self.names = {name for _, _, name in self._values}
        self._seed_of = dict(zip(frames.runs.run_id, frames.runs.seed, strict=True))

    def levels(self, setup: str, name: str) -> list[float]:
        """The setup's levels that have values of `name`."""
        return sorted(lv for s, lv, n in self._values if s == setup and n == name)

    def by_run(self, setup: str, level: float, name: str) -> dict[str, float | None]:
        """run_id -> its value at its last epoch, or the after-training value (epoch 0)."""
        runs = self._values.get((setup, level, name), {})
        return {run: by_epoch[max(by_epoch)] for run, by_epoch in runs.items() if by_epoch}

    def seeds(self, setup: str, level: float, name: str) -> list[float | None]:
        """One value per run (see by_run)."""
        return list(self.by_run(setup, level, name).values())

    def per_seed(self, setup: str, level: float, name: str) -> pd.Series:
        """The by_run values indexed by seed: what paired comparisons (stats.paired) take."""
        values = {self._seed_of[run]: v for run, v in self.by_run(setup, level, name).items()}
        return pd.Series(values, dtype=float).sort_index().dropna()

    def final(self, setup: str, level: float, name: str) -> Estimate:
        return estimate(self.seeds(setup, level, name))

    def curves(self, setup: str, level: float, name: str) -> np.ndarray:
        """Per-run values per epoch [runs, epochs], NaN where a run has none (stopped early)."""
        runs = [r for r in self._values.get((setup, level, name), {}).values() if r]
        width = max((max(r) for r in runs), default=0)
        out = np.full((len(runs), width), np.nan)
        for i, by_epoch in enumerate(runs):
            for epoch, value in by_epoch.items():
                if epoch >= 1 and value is not None and math.isfinite(value):
                    out[i, epoch - 1] = value
        return out

    def per_epoch(self, setup: str, level: float, name: str) -> list[Estimate]:
        """One estimate over runs per epoch 1, 2, …"""
        arr = self.curves(setup, level, name)
        return [estimate(list(arr[:, e])) for e in range(arr.shape[1])]


# --- levels --------------------------------------------------------------------------------
def level_text(setup: SetupInfo, level: float) -> str:
    """'X = 30 %', or '2 noisy copies per example' where the level counts noisy copies."""
    text = noise_level_text(setup.noise, level)
    return (
        text.replace("cop", "noisy cop") + " per example"
        if counts_copies(setup.noise)
        else f"X = {text}"
    )


def level_short(setup: SetupInfo, level: float) -> str:
    text = noise_level_text(setup.noise, level)
    return text if counts_copies(setup.noise) else f"X = {text}"


def x_share(setup: SetupInfo, level: float) -> float:
    """Where a level sits on a shared 0–100 % axis: X, or for k noisy copies per example the
    share of noisy examples k / (k + 1)."""
    return 100 * (level / (level + 1) if counts_copies(setup.noise) else level)


def spread(levels: list[float], most: int = 3) -> list[float]:
    """Up to `most` of the levels: all of them, or the lowest, middle and highest."""
    if len(levels) <= most:
        return list(levels)
    picks = np.linspace(0, len(levels) - 1, most).round().astype(int)
    return [levels[i] for i in sorted(set(picks.tolist()))]


def middle(levels: list[float]) -> float | None:
    """The level nearest 50 % (for copy counts: the middle one)."""
    if not levels:
        return None
    return (
        min(levels, key=lambda lv: abs(lv - 0.5)) if max(levels) <= 1 else levels[len(levels) // 2]
    )


def unperturbed(m: Measured, setup: str, level: float) -> Estimate:
    """Accuracy on the images the robustness analysis attacks, unperturbed (ε = 0), of the
    model it attacked; studies stored before it was measured fall back to the test accuracy."""
    if level in m.levels(setup, "attacked_acc"):
        return m.final(setup, level, "attacked_acc")
    return m.final(setup, level, "test_acc")
