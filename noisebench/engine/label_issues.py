"""Finding the corrupted training labels with cleanlab, scored against the truth noisebench
knows (which labels its noise changed).

One run at a time, in numpy, from predicted probabilities [N, C] of the run's training set:
in-sample (the run's own model, which saw every example) or out-of-sample (each example
from the fold model that did not see it, as cleanlab's documentation asks for).

Metric names, after a prefix ("issues_" in-sample, "cv_issues_" out-of-sample):
- `{filter}_{precision,recall,f1,flagged_share}` for each cleanlab.filter.find_label_issues
  `filter_by` in FILTERS; precision is NaN when nothing is flagged;
- `{score}_{auroc,precision_at_k}` for each cleanlab.rank label quality score in SCORES
  (low score = likely wrong; k = the number of corrupted labels);
- `base_rate`: the share of labels really changed, what flagging at random reaches as
  precision and precision@k;
- `noise_matrix_mae`, `prior_mae`: mean absolute error per entry of cleanlab's estimated
  noise matrix P(given = i | true = j) and prior P(true = j) against the run's actual ones;
- `precision`, `recall`, `flagged_share`, `precision_at_k`: the names noisebench stored
  before cleanlab, now cleanlab's default filter (prune_by_noise_rate) and self-confidence.
"""

import math
import threading
import warnings

import numpy as np
from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.metrics import roc_auc_score

FILTERS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
)
SCORES = ("self_confidence", "normalized_margin")
SOURCES = {"in_sample": "issues_", "cv": "cv_issues_"}  # stored arrays' folder: metric prefix
DEFAULT_FILTER, DEFAULT_SCORE = "prune_by_noise_rate", "self_confidence"
# find_label_issues hands its per-class work to helpers through module globals (cleanlab 2.9,
# filter.py), so two shard threads calling it at once overwrite each other's: one at a time.
_CLEANLAB = threading.Lock()


def _share(hit: np.ndarray, among: np.ndarray | None = None) -> float:
    """Share of True in `hit` among the True of `among` (all if None); NaN if that is empty."""
    among = np.ones_like(hit) if among is None else among
    return float(hit[among].mean()) if among.any() else math.nan


def flag_quality(flagged: np.ndarray, corrupted: np.ndarray) -> dict[str, float]:
    """Precision (flagged that are corrupted), recall (corrupted that are flagged), their
    harmonic mean F1 (0 when both are 0, NaN when either is undefined) and flagged share."""
    precision, recall = _share(corrupted, flagged), _share(flagged, corrupted)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    return {"precision": precision, "recall": recall, "f1": f1, "flagged_share": _share(flagged)}


def precision_at_k(score: np.ndarray, corrupted: np.ndarray) -> float:
    """Share of corrupted among the k lowest scores, k = the number of corrupted labels (NaN
    when none are); ties go to the lower index."""
    k = int(corrupted.sum())
    return float(corrupted[np.argsort(score, kind="stable")[:k]].mean()) if k else math.nan


def auroc(score: np.ndarray, corrupted: np.ndarray) -> float:
    """P(a corrupted label scores lower than a clean one), ties counting half; NaN when
    either group is empty."""
    if corrupted.all() or not corrupted.any():
        return math.nan
    return float(roc_auc_score(corrupted, -score))


def true_noise(given: np.ndarray, true: np.ndarray, num_classes: int):
    """(noise matrix P(given = i | true = j) [C, C], prior P(true = j) [C]) of the run's
    actual labels; a column of a class absent from `true` is NaN."""
    joint = np.zeros((num_classes, num_classes))
    np.add.at(joint, (given, true), 1)
    per_true = joint.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return joint / per_true, per_true / len(true)


def find_issues(
    pred_probs: np.ndarray, given: np.ndarray, true: np.ndarray, num_classes: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(metrics, arrays) of one run: every filter and score of cleanlab on `pred_probs`
    [N, C] (rows summing to 1) and the given labels [N], scored against the true ones [N].

    The arrays say what was found, compactly: `index` int32, the positions flagged by any
    filter; `flags` uint8, bit f set when FILTERS[f] flags it; each score as float32 at those
    positions; cleanlab's `noise_matrix` [C, C] and `prior` [C] as float32."""
    probs = pred_probs.astype(np.float64)
    probs /= probs.sum(1, keepdims=True)  # float32 softmax sums stray from 1 by ~1e-7
    corrupted = given != true
    values = {"base_rate": _share(corrupted)}
    bits = np.zeros(len(given), dtype=np.uint8)
    for f, method in enumerate(FILTERS):
        with _CLEANLAB, warnings.catch_warnings():
            # "may not flag all label issues in class k": a class with few given labels
            warnings.filterwarnings("ignore", "May not flag all", UserWarning)
            flagged = find_label_issues(given, probs, filter_by=method, n_jobs=1)
        bits |= flagged.astype(np.uint8) << f
        quality = flag_quality(flagged, corrupted)
        values |= {f"{method}_{k}": v for k, v in quality.items()}
        if method == DEFAULT_FILTER:
            values |= {k: v for k, v in quality.items() if k != "f1"}
    scores = {}
    for method in SCORES:
        scores[method] = get_label_quality_scores(given, probs, method=method)
        values[f"{method}_auroc"] = auroc(scores[method], corrupted)
        values[f"{method}_precision_at_k"] = precision_at_k(scores[method], corrupted)
    values["precision_at_k"] = values[f"{DEFAULT_SCORE}_precision_at_k"]
    prior, noise_matrix, _, _ = estimate_py_and_noise_matrices_from_probabilities(given, probs)
    actual_matrix, actual_prior = true_noise(given, true, num_classes)
    values["noise_matrix_mae"] = float(np.nanmean(np.abs(noise_matrix - actual_matrix)))
    values["prior_mae"] = float(np.abs(prior - actual_prior).mean())
    index = np.flatnonzero(bits).astype(np.int32)
    arrays = {"index": index, "flags": bits[index]}
    arrays |= {name: score[index].astype(np.float32) for name, score in scores.items()}
    arrays |= {"noise_matrix": noise_matrix.astype(np.float32), "prior": prior.astype(np.float32)}
    return values, arrays


def stored(source: str, values: dict[str, float], arrays: dict[str, np.ndarray]):
    """(metrics, arrays) under their stored names for `source` ("in_sample" or "cv")."""
    prefix = SOURCES[source]
    return (
        {prefix + k: v for k, v in values.items()},
        {f"issues/{source}/{k}": v for k, v in arrays.items()},
    )
