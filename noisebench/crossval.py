"""Out-of-sample probabilities for label_issues = "cv": the fold models of every label-noise
run, and what cleanlab finds from their probabilities.

A fold model (study.fold_runs) is not a run of the study: it has no row in the store's
`runs` table. When its pack finishes, its held-out fold's probabilities are stored as arrays
under its own id; once all K of a run's fold models are stored, they are joined into one
out-of-sample probability per training example, cleanlab is run on them, the results are
added to the run (metrics "cv_issues_*", arrays "issues/cv/*") and the fold arrays deleted.
A study interrupted part way resumes with the fold models not yet stored.
"""

import math

import numpy as np

from .engine import label_issues
from .store import Store
from .study import RunSpec

DONE = "cv_issues_base_rate"  # the metric that says a run's folds are joined


def _joined(store: Store, run_id: str) -> bool:
    row = store.db.execute(
        "SELECT 1 FROM metrics WHERE run_id = ? AND epoch = 0 AND name = ?", (run_id, DONE)
    ).fetchone()
    return row is not None


def unfinished(store: Store, folds: list[RunSpec]) -> list[RunSpec]:
    """The fold models still to train: neither stored nor joined into their run."""
    return [
        f
        for f in folds
        if not _joined(store, f.parent.run_id) and not store.arrays_of(f.run_id, "fold/")
    ]


def store_fold(store: Store, fold_id: str, arrays: dict[str, np.ndarray]) -> None:
    """A trained fold model's held-out probabilities (measure.held_out); a diverged one,
    which has none, is stored as `fold/diverged`."""
    store.add_final(fold_id, {}, arrays or {"fold/diverged": np.ones(1, dtype=np.uint8)})


def join_folds(store: Store, folds: list[RunSpec], num_classes: int) -> None:
    """For every run whose K fold models are all stored (and which finished training itself):
    cleanlab on the out-of-sample probabilities, stored with the run."""
    by_parent: dict[str, list[RunSpec]] = {}
    for f in folds:
        by_parent.setdefault(f.parent.run_id, []).append(f)
    done = store.finished_ids()
    for parent, group in by_parent.items():
        if parent not in done or _joined(store, parent):
            continue
        parts = [store.arrays_of(f.run_id, "fold/") for f in group]
        if any(not part for part in parts):
            continue
        if any("fold/diverged" in part for part in parts):  # no out-of-sample answer
            store.add_final(parent, {DONE: math.nan}, {})
        else:
            n = sum(len(p["fold/positions"]) for p in parts)
            probs = np.zeros((n, num_classes), dtype=np.float32)
            given = np.zeros(n, dtype=np.int64)
            true = np.zeros(n, dtype=np.int64)
            for part in parts:
                at = part["fold/positions"]
                probs[at], given[at], true[at] = (
                    part[f"fold/{k}"] for k in ("probs", "given", "true")
                )
            found = label_issues.find_issues(probs, given, true, num_classes)
            store.add_final(parent, *label_issues.stored("cv", *found))
        store.delete_arrays(f.run_id for f in group)
