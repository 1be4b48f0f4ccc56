"""When each run of a pack stops, and which parameters it keeps.

Early stopping watches the validation loss: a run stops after `patience` epochs without an
improvement of at least `min_delta`, and keeps its parameters of the best epoch. A training
accuracy target stops a run once its clean training accuracy reaches it, keeping that epoch's
parameters. A stopped run's epochs are no longer recorded; the pack goes on while any of its
runs trains (stopped runs are still computed, so nothing about the others changes).
"""

import math
from typing import Any

import torch

from ..study import RunSpec


class Stopping:
    """Per-run stopping state of a pack, and the kept copy of its tensors."""

    def __init__(self, runs: list[RunSpec], tensors: list[torch.Tensor]):
        n = len(runs)
        # per run, (patience, min_delta) or None: the method "early-stop" stops only its runs
        self.early = [r.early_stopping for r in runs]
        self.target = runs[0].stop_at_train_acc
        self.active = [True] * n
        self.best_loss = [math.inf] * n
        self.best_epoch = [0] * n
        self.waited = [0] * n
        self.reached = [0] * n  # epoch at which the target was reached (0: not)
        self.kept_at = [0] * n  # epoch of the kept parameters (0: keep the last)
        watching = any(e is not None for e in self.early) or self.target is not None
        self.kept = [t.detach().clone() for t in tensors] if watching else []

    @property
    def any_active(self) -> bool:
        return any(self.active)

    def observe(self, r: int, epoch: int, metrics: dict[str, float], tensors) -> None:
        """Run r finished `epoch` with `metrics`: keep its parameters or stop it."""
        if self.early[r] is not None:
            patience, min_delta = self.early[r]
            # the method "early-stop" watches its noisy validation labels
            loss = metrics.get("val_noisy_loss", metrics["val_loss"])
            if loss < self.best_loss[r] - min_delta:
                self.best_loss[r], self.best_epoch[r], self.waited[r] = (
                    loss,
                    epoch,
                    0,
                )
                self._keep(r, epoch, tensors)
            else:
                self.waited[r] += 1
                if self.waited[r] >= patience:
                    self.active[r] = False
        if self.target is not None and metrics.get("train_clean_acc", 0.0) >= self.target:
            self.reached[r] = epoch
            self.active[r] = False
            if self.early[r] is None:
                self._keep(r, epoch, tensors)

    def _keep(self, r: int, epoch: int, tensors: list[torch.Tensor]) -> None:
        for kept, t in zip(self.kept, tensors, strict=True):
            kept[r].copy_(t[r])
        self.kept_at[r] = epoch

    def restore(self, tensors: list[torch.Tensor]) -> None:
        """Put every run's kept parameters back (training is over)."""
        for r, at in enumerate(self.kept_at):
            if at:
                for kept, t in zip(self.kept, tensors, strict=True):
                    t[r].copy_(kept[r])

    def final(self, r: int, last_epoch: int) -> dict[str, float]:
        out: dict[str, float] = {"stopped_epoch": last_epoch}
        if self.early[r] is not None:
            out["best_epoch"] = self.best_epoch[r]
        if self.target is not None:
            out["reached_target"] = float(self.reached[r] > 0)
        return out

    def state_dict(self) -> dict[str, Any]:
        keys = ("active", "best_loss", "best_epoch", "waited", "reached", "kept_at", "kept")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any], rows: list[int]) -> None:
        """Load a saved state whose runs are in another order: run r was saved as rows[r]."""
        for key, value in state.items():
            if key == "kept":
                for mine, saved in zip(self.kept, value, strict=True):
                    mine.copy_(saved[rows])
            else:
                setattr(self, key, [value[i] for i in rows])
