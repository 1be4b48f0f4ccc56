"""Sentences of the sample-size and early-stopping sections, and the interpolation behind
"how much more data buys back the accuracy lost to noise". Every number is read from the runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..study import CLEAN
from ..summary import Estimate, estimate
from .experiment_runs import Group, Run, StudyRuns
from .stats import paired
from .words import acc, pts

Series = list[tuple[int, Estimate]]  # (N, test accuracy over seeds), N ascending


def epochs_text(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def seconds_text(value: float) -> str:
    """Two significant digits, never in scientific notation."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:.2f} s"
    return f"{value:.{max(0, 1 - math.floor(math.log10(value)))}f} s"


def diff_note(e: Estimate) -> str:
    """How sure a difference over runs is, as a clause."""
    if not math.isfinite(e.half):
        return "one seed: the data cannot tell"
    if e.low > 0 or e.high < 0:
        return "the 95 % CI excludes zero"
    return "within the seeds' noise"


def rounded(value: float) -> str:
    """A count to two significant digits: 3,414 -> '3,400'."""
    digits = max(0, math.floor(math.log10(abs(value))) - 1) if value else 0
    return f"{round(value, -digits):,.0f}"


def _means(series: Series) -> list[tuple[int, float]]:
    return [(n, e.mean) for n, e in series if math.isfinite(e.mean)]


# --- sample size ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuyBack:
    """The clean accuracy at N = n0 (`target`) and the N at which a noisy level reaches it,
    interpolated linearly in log N between its sizes `below` and `above` (nx None: never)."""

    n0: int
    target: float
    nx: float | None
    below: int = 0
    above: int = 0


def buyback(clean: Series, noisy: Series) -> BuyBack | None:
    """For the largest clean N whose accuracy the noisy curve reaches at a larger N, where;
    else the smallest clean N it stays below. None: the noisy level is nowhere below clean."""
    c, z = dict(_means(clean)), _means(noisy)
    below = [n for n, a in z if n in c and a < c[n]]
    if not below:
        return None
    for n0 in sorted(below, reverse=True):
        later = [(n, a) for n, a in z if n >= n0]
        for (na, aa), (nb, ab) in zip(later, later[1:], strict=False):
            if aa < c[n0] <= ab:
                t = (c[n0] - aa) / (ab - aa)
                nx = math.exp(math.log(na) + t * (math.log(nb) - math.log(na)))
                return BuyBack(n0, c[n0], nx, na, nb)
    return BuyBack(min(below), c[min(below)], None)


def buyback_sentence(sr: StudyRuns, group: Group, accuracy, found: BuyBack | None):
    text = _buyback_text(sr, group, accuracy, found)
    stat = "means over seeds, interpolated in log N"
    return sr.finding(f"buyback-{group[0]}-{group[1]}", text, True, stat, "sample-size")


def _buyback_text(sr: StudyRuns, group: Group, accuracy, found: BuyBack | None) -> str:
    where = sr.label(group)
    if found is None:
        return f"With {where}, test accuracy is at or above the clean one at every N."
    if found.nx is None:
        top_n, top = _means(accuracy[group])[-1]
        return (
            f"With {where}, even the largest N = {top_n:,} reaches only {acc(top)}, below the "
            f"clean test accuracy at N = {found.n0:,} ({acc(found.target)}): within this sweep, "
            "more data does not buy back that noise."
        )
    return (
        f"With {where}, about N = {rounded(found.nx)} examples (interpolated in log N between "
        f"{found.below:,} and {found.above:,}, from the means over seeds) reach "
        f"{acc(found.target)}, the clean test accuracy at N = {found.n0:,}: "
        f"{found.nx / found.n0:.1f} times the data buys back what this noise costs there."
    )


def growth_sentence(sr: StudyRuns, name: str, groups: list[Group], accuracy):
    text = _growth_text(sr, name, groups, accuracy)
    return sr.finding(f"growth-{name}", text, ref="sample-size")


def _growth_text(sr: StudyRuns, name: str, groups: list[Group], accuracy) -> str | None:
    """How test accuracy changes from the smallest to the largest N, per level."""
    parts, span = [], ""
    for group in groups:
        points = _means(accuracy[group])
        if len(points) < 2:
            continue
        (na, a), (nb, b) = points[0], points[-1]
        span = span or f"N = {na:,} to {nb:,}"
        if group[0] == CLEAN:
            verb = "rises" if b > a else "falls"
            parts.append(
                f"clean test accuracy {verb} from {acc(a)} at N = {na:,} to {acc(b)} at "
                f"{sr.n_text(nb)}"
            )
        else:
            parts.append(f"from {acc(a)} to {acc(b)} at {sr.level_label(group)}")
    noisy = parts[1:] if parts and parts[0].startswith("clean") else parts
    text = parts[0] if noisy is not parts else ""
    if noisy:
        listed = noisy[0] if len(noisy) == 1 else f"{', '.join(noisy[:-1])} and {noisy[-1]}"
        where = "" if text else f" ({span})"
        text += f"{'; ' if text else ''}under {name}, test accuracy goes {listed}{where}"
    return text[0].upper() + text[1:] + "." if text else None


def gap_sentence(sr: StudyRuns, groups: list[Group], accuracy):
    clean = dict(_means(accuracy.get((CLEAN, 0.0), [])))
    parts, signs = [], []
    name = ""
    for group in groups:
        if group[0] == CLEAN:
            continue
        name = group[0]
        shared = [(n, clean[n] - a) for n, a in _means(accuracy[group]) if n in clean]
        if len(shared) < 2:
            continue
        (na, ga), (nb, gb) = shared[0], shared[-1]
        # per seed: the gap at the largest N minus the gap at the smallest (paired by seed)
        gaps = [sr.by_seed((CLEAN, 0.0), n) - sr.by_seed(group, n) for n in (na, nb)]
        signs.append(paired(gaps[1], gaps[0]).sign)
        parts.append(
            f"at {sr.level_label(group)} from {pts(ga)} at N = {na:,} to {pts(gb)} at N = {nb:,}"
        )
    if not parts:
        return None
    verb = (
        {1: "widens", -1: "narrows"}.get(int(signs[0]), "changes by no clear amount")
        if len(set(signs)) == 1
        else "changes"
    )
    how = " (paired over seeds)" if set(signs) - {0} else ""
    text = f"The test accuracy lost to {name} {verb} with N{how}: {', and '.join(parts)}."
    stat = "change of the gap to clean, paired by seed"
    return sr.finding(f"gap-{name}", text, 0 not in signs, stat, "sample-size")


def time_sentence(sr: StudyRuns, seconds: dict[int, Estimate]):
    return sr.finding("time", _time_text(sr, seconds), True, "means over runs", "sample-size")


def _time_text(sr: StudyRuns, seconds: dict[int, Estimate]) -> str | None:
    if len(seconds) < 2:
        return None
    na, nb = min(seconds), max(seconds)
    a, b = seconds[na].mean, seconds[nb].mean
    if not (a > 0 and math.isfinite(b)):
        return None
    return (
        f"Training takes {seconds_text(a)} per run at N = {na:,} and {seconds_text(b)} at "
        f"{sr.n_text(nb)}: ×{nb / na:.1f} the examples cost ×{b / a:.1f} the time, over "
        f"{sr.cap} epochs (a pack's step time shared among its runs)."
    )


# --- early stopping ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EarlyRow:
    """One setup × level under validation: per-run best epochs and test accuracies."""

    group: Group
    runs: list[Run]
    best: Estimate  # best-validation epoch
    last: Estimate  # last epoch trained
    at_best: Estimate  # test accuracy at the best-validation epoch
    at_last: Estimate  # test accuracy at the last epoch
    diffs: list[float]  # per run: at best minus at last

    @classmethod
    def of(cls, group: Group, runs: list[Run]) -> EarlyRow:
        best = [r.best_val_epoch or r.epochs for r in runs]
        at_best = [r.at("test_acc", b) for r, b in zip(runs, best, strict=True)]
        at_last = [r.last("test_acc") for r in runs]
        return cls(
            group,
            runs,
            estimate(best),
            estimate([r.epochs for r in runs]),
            estimate(at_best),
            estimate(at_last),
            [a - b for a, b in zip(at_best, at_last, strict=True)],
        )

    @property
    def diff(self) -> Estimate:
        return estimate(self.diffs)


def _signed_pts(value: float) -> str:
    return f"{'+' if value >= 0 else '−'}{pts(abs(value))}"


def early_sentences(sr: StudyRuns, rows: list[EarlyRow], n: int) -> list:
    """The early-stopping section's Findings."""
    ref = "early-stopping-curves"
    return [
        sr.finding(key, text, holds, stat, ref)
        for key, text, holds, stat in _early_claims(sr, rows, n)
    ]


def _early_claims(sr: StudyRuns, rows: list[EarlyRow], n: int) -> list[tuple]:
    """(key, sentence, whether its check holds, the check) per claim."""
    study, cap = sr.frames.study, sr.cap
    runs = [r for row in rows for r in row.runs]
    stopped = [r for r in runs if r.epochs < cap]
    best_all = estimate([r.best_val_epoch or r.epochs for r in runs])
    texts = []
    if study.early_stopping is not None:
        es = study.early_stopping
        text = (
            f"Early stopping (patience {es.patience}, min_delta {es.min_delta:g}, on a "
            f"{study.validation * 100:g} % validation hold-out) ends {len(stopped)} of "
            f"{len(runs)} runs at N = {n:,} before the {cap}-epoch cap"
        )
        if stopped:
            mean_stop = float(np.mean([r.epochs for r in stopped]))
            text += f", after {epochs_text(mean_stop)} epochs on average"
        text += f"; the best validation loss comes at epoch {epochs_text(best_all.mean)} "
        texts.append(("stopping", text + "on average.", True, "counts and means over runs"))
    else:
        text = (
            f"The validation loss ({study.validation * 100:g} % hold-out) is lowest at epoch "
            f"{epochs_text(best_all.mean)} on average, of {cap}."
        )
        texts.append(("best-epoch", text, True, "mean over runs"))
    most = max(rows, key=lambda row: abs(row.diff.mean) if math.isfinite(row.diff.mean) else -1)
    overall = estimate([d for row in rows for d in row.diffs])
    text = (
        f"Test accuracy at the best-validation epoch against the last epoch differs most with "
        f"{sr.label(most.group)}: {acc(most.at_best.mean)} against {acc(most.at_last.mean)} "
        f"({_signed_pts(most.diff.mean)}, {diff_note(most.diff)}); over all {len(runs)} runs "
        f"the best-validation epoch is {_signed_pts(overall.mean)} on average "
        f"({diff_note(overall)})."
    )
    clear = math.isfinite(overall.half) and (overall.low > 0 or overall.high < 0)
    texts.append(("best-vs-last", text, clear, "per-run difference best − last, 95 % t"))
    base = next((row for row in rows if row.group[0] == CLEAN), None)
    noisy = [row for row in rows if row.group[0] != CLEAN]
    if base is not None and noisy:
        top = max(noisy, key=lambda row: row.group[1])
        b0, b1 = base.best.mean, top.best.mean
        epochs = f"epoch {epochs_text(b1)} against {epochs_text(b0)}"
        d = paired(*(_best_by_seed(row) for row in (top, base)))
        if d.clear:
            order = "earlier" if d.mean < 0 else "later"
            text = (
                f"With {sr.label(top.group)} the best validation epoch comes {order} than with "
                f"clean labels ({epochs}; paired over {d.n} seeds)."
            )
        else:
            text = (
                f"Whether the best validation epoch comes earlier with {sr.label(top.group)} than "
                f"with clean labels, the data cannot tell ({epochs})."
            )
        texts.append(("earlier", text, d.clear, "best-validation epoch, paired by seed"))
    return texts


def _best_by_seed(row: EarlyRow) -> pd.Series:
    return pd.Series({r.seed: r.best_val_epoch or r.epochs for r in row.runs}, dtype=float)
