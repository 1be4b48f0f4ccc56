"""Sentences of the small-set fitting (memorization preset) and zero-training-loss sections:
how many runs reach the training-accuracy target, after how many epochs, how that scales with
N, and what the trained networks score on the test set. Every number is read from the runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..study import CLEAN
from ..summary import Estimate, estimate
from .experiment_runs import Group, Run, StudyRuns
from .experiment_text import epochs_text
from .finding import Finding
from .fits import LogisticFit
from .stats import paired
from .words import acc, pts

DEFAULT_TARGET = 0.9999  # "fitted" when the study sets no training-accuracy target
NEAR_CHANCE = 0.05  # a test accuracy this close to 1/K is at chance
FITTED = 0.999  # training accuracy that counts as fitting the training labels


def reach_epoch(run: Run, target: float) -> int | None:
    """The epoch at which the run reached the target (None: never): the stopping record when
    the study stops at the target, else its first epoch at or above it."""
    if math.isfinite(run.value("reached_target")):
        return int(run.value("stopped_epoch")) if run.value("reached_target") == 1 else None
    return run.reach_epoch("train_clean_acc", target)


def _runs_text(k: int, total: int) -> str:
    return f"{k} of {total} run{'s' if total != 1 else ''}"


# --- memorisation -----------------------------------------------------------------------------
def reach_by_n(sr: StudyRuns, group: Group, reach: dict) -> list[tuple[int, Estimate, int, int]]:
    """(N, epochs to the target over the runs that reached it, reached, runs) per N."""
    out = []
    for n in sr.sizes():
        runs = sr.select(group, n)
        hit = [reach[r.run_id] for r in runs if reach[r.run_id] is not None]
        if runs:
            out.append((n, estimate(hit), len(hit), len(runs)))
    return out


def reach_sentence(sr: StudyRuns, group: Group, reach: dict, target: float) -> Finding | None:
    rows = reach_by_n(sr, group, reach)
    hit, total = sum(r[2] for r in rows), sum(r[3] for r in rows)
    verb = "reaches" if total == 1 else "reach"
    text = f"With {sr.label(group)}, {_runs_text(hit, total)} {verb} {target * 100:g} % training "
    text += "accuracy"
    done = [(n, e) for n, e, k, _ in rows if k]
    seeds = max((r[3] for r in rows), default=1)
    mean = ", on average" if seeds > 1 else ","
    if len(done) == 1:
        text += f"{mean} in {epochs_text(done[0][1].mean)} epochs at {sr.n_text(done[0][0])}"
    elif done:
        (n0, e0), (n1, e1) = done[0], done[-1]
        text += f"{mean} in {epochs_text(e0.mean)} epochs at N = {n0:,} and "
        text += f"{epochs_text(e1.mean)} at {sr.n_text(n1)}"
    return sr.finding(f"reach-{group[0]}-{group[1]}", text + ".", ref="memorisation-curves")


def missed_sentence(
    sr: StudyRuns, groups: list[Group], reach: dict, target: float
) -> Finding | None:
    parts, count = [], 0
    for group in groups:
        for n in sr.sizes():
            never = [r for r in sr.select(group, n) if reach[r.run_id] is None]
            if never:
                count += len(never)
                best = max(r.best("train_clean_acc") for r in never)
                parts.append(f"{sr.label(group)}, N = {n:,} (best {acc(best)})")
    if not parts:
        return None
    runs = "run never reaches" if count == 1 else "runs never reach"
    text = f"{count} {runs} {target * 100:g} % within {sr.cap} epochs: {'; '.join(parts)}."
    return sr.finding("missed", text, statistic="counts of runs", ref="memorisation-curves")


def scaling_sentence(sr: StudyRuns, groups: list[Group], reach: dict) -> Finding | None:
    rows = {g: [(n, e) for n, e, k, _ in reach_by_n(sr, g, reach) if k] for g in groups}
    noisy = next((g for g in groups if g[0] != CLEAN and len(rows[g]) > 1), None)
    if noisy is None:
        return None
    (n0, e0), (n1, e1) = rows[noisy][0], rows[noisy][-1]
    text = (
        f"From N = {n0:,} to {n1:,} (×{n1 / n0:.0f} the examples) the epochs needed grow "
        f"×{e1.mean / e0.mean:.1f} with {sr.label(noisy)}"
    )
    clean = dict(rows.get((CLEAN, 0.0), []))
    holds = True
    if n0 in clean and n1 in clean:
        text += f" and ×{clean[n1].mean / clean[n0].mean:.1f} with clean labels"
        mine = dict(rows[noisy])
        shared = [n for n in mine if n in clean]
        ratios = [mine[n].mean / clean[n].mean for n in shared]
        low, high = f"{min(ratios):.1f}", f"{max(ratios):.1f}"
        times = low if low == high else f"{low} to {high}"
        checks = [
            paired(
                _epochs_by_seed(sr, noisy, n, reach), _epochs_by_seed(sr, (CLEAN, 0.0), n, reach)
            )
            for n in shared
        ]
        if all(d.clear and d.mean > 0 for d in checks):
            text += (
                "; at every N the noisy labels need more epochs than the true ones "
                f"({times} times as many; paired over seeds)"
            )
        elif all(r > 1 for r in ratios) and max(d.n for d in checks) < 2:
            holds = False
            text += (
                f"; the noisy labels took {times} times as many epochs as the true ones, from "
                "one seed, which no check can confirm"
            )
        elif all(r > 1 for r in ratios):
            holds = False
            text += (
                f"; on average the noisy labels need {times} times as many epochs as the true "
                "ones, but the paired check over seeds cannot confirm it at every N"
            )
    stat = "epochs to the target, paired by seed at every N"
    return sr.finding("scaling", text + ".", holds, stat, "memorisation-epochs")


def _epochs_by_seed(sr: StudyRuns, group: Group, n: int, reach: dict) -> pd.Series:
    """Epochs to the target per seed, over the runs that reached it."""
    hits = {r.seed: reach[r.run_id] for r in sr.select(group, n) if reach[r.run_id] is not None}
    return pd.Series(hits, dtype=float)


def _test(sr: StudyRuns, group: Group, n: int) -> Estimate:
    return estimate([r.last("test_acc") for r in sr.select(group, n)])


def test_sentence(sr: StudyRuns, groups: list[Group], reach: dict) -> Finding | None:
    chance = sr.frames.chance
    randoms = [g for g in groups if g in sr.random_labels()]
    clean = [(n, e) for n in sr.sizes() if (e := _test(sr, (CLEAN, 0.0), n)).n]
    means = [e.mean for g in randoms for n in sr.sizes() if (e := _test(sr, g, n)).n]
    if not means or not clean:
        return None
    lo, hi = min(means), max(means)
    far = max(abs(m - chance) for m in means)
    names = " and ".join(sr.label(g) for g in randoms)
    span = acc(lo) if len(means) == 1 else f"{acc(lo)} to {acc(hi)} across N"
    (na, ea), (nb, eb) = clean[0], clean[-1]
    text = (
        f"After training, test accuracy with {names} is {span}, within {pts(far)} of chance "
        f"({acc(chance)}), against {acc(ea.mean)} at N = {na:,}"
        + (f" to {acc(eb.mean)} at N = {nb:,}" if nb != na else "")
        + " with clean labels"
    )
    runs = [r for g in randoms for r in sr.select(g)]
    fitted = sum(reach[r.run_id] is not None for r in runs)
    if far <= NEAR_CHANCE and fitted == len(runs):
        text += ": the network fits labels that carry nothing it can use on new images"
    elif fitted == 0:
        best = max(r.best("train_clean_acc") for r in runs)
        text += (
            f"; no run fitted its random labels within {sr.cap} epochs (the best "
            f"reached {acc(best)} training accuracy)"
        )
    elif fitted < len(runs):
        best = max(r.best("train_clean_acc") for r in runs if reach[r.run_id] is None)
        text += (
            f"; {fitted} of {len(runs)} runs fitted their random labels (the best of the others "
            f"reached {acc(best)} training accuracy)"
        )
    stat = f"means over runs against chance (within {pts(NEAR_CHANCE)})"
    return sr.finding("test-accuracy", text + ".", True, stat, "memorisation-epochs")


def plateau_sentence(sr: StudyRuns, groups: list[Group], fits: dict) -> Finding | None:
    """The logistic fitted to the largest N's curve of the first noisy group."""
    noisy = [g for g in groups if g[0] != CLEAN]
    found = [(g, n) for g in noisy for n in sr.sizes()[::-1] if fits.get((g, n))]
    if not found:
        return None
    group, n = found[0]
    fit: LogisticFit = fits[(group, n)]
    where = f"{sr.label(group)} with N = {n:,}"
    stat = "logistic fit to the mean curve (R², levels measured)"
    if not fit.ok:
        text = (
            f"The mean training-accuracy curve of {where} {fit.problem}, so no logistic "
            "plateau is read from it."
        )
        return sr.finding("plateau", text, False, stat, "memorisation-curves")
    text = (
        f"A logistic in the epoch describes the mean training-accuracy curve of {where} "
        f"(R² = {fit.r2:.2f}): it rises half-way from chance by epoch {fit.midpoint:.1f} and "
        f"levels off at {acc(fit.plateau)}, above the {acc(fit.last)} of its last epoch"
    )
    base = fits.get(((CLEAN, 0.0), n))
    if base is not None and base.ok and base.midpoint >= 1:
        text += f", against epoch {base.midpoint:.1f} for clean labels at the same N"
    elif base is not None and base.ok:
        text += ", while the clean curve is past half-way after its first epoch"
    return sr.finding("plateau", text + ".", True, stat, "memorisation-curves")


# --- zero training loss -----------------------------------------------------------------------
@dataclass(frozen=True)
class ZeroRow:
    """One labelling at one N: how its runs fitted the training set, and their test accuracy."""

    group: Group
    n: int
    runs: int
    reached: int
    epochs: Estimate  # to the target, over the runs that reached it
    loss: Estimate  # final training loss (on the labels trained on)
    train: Estimate  # final training accuracy, clean inputs
    test: Estimate  # final test accuracy


def zero_rows(sr: StudyRuns, target: float) -> list[ZeroRow]:
    rows = []
    for group in sr.groups():
        for n in sr.sizes():
            runs = sr.select(group, n)
            if not runs:
                continue
            hit = [e for r in runs if (e := reach_epoch(r, target)) is not None]
            rows.append(
                ZeroRow(
                    group,
                    n,
                    len(runs),
                    len(hit),
                    estimate(hit),
                    estimate([r.last("train_loss") for r in runs]),
                    estimate([r.last("train_clean_acc") for r in runs]),
                    estimate([r.last("test_acc") for r in runs]),
                )
            )
    return rows


def zero_loss_sentences(sr: StudyRuns, rows: list[ZeroRow], target: float) -> list[Finding]:
    chance = sr.frames.chance
    clean = {row.n: row for row in rows if row.group == (CLEAN, 0.0)}
    texts = []
    if clean:
        row = clean[max(clean)]
        when = f"in {epochs_text(row.epochs.mean)} epochs" if row.reached else "never"
        text = (
            f"Trained until {target * 100:g} % of its training labels are fitted, the network "
            f"with clean labels at {sr.n_text(row.n)} gets there {when} "
            f"({_runs_text(row.reached, row.runs)}), with a final training loss of "
            f"{row.loss.mean:.2g} nats, and scores {acc(row.test.mean)} on the clean test set."
        )
        texts.append(sr.finding("zero-clean", text, ref="zero-loss-gap"))
    memorised = []
    for group in sr.random_labels():
        shared = [row for row in rows if row.group == group and row.n in clean]
        if not shared:
            continue
        fitted_all = [row for row in shared if row.reached == row.runs]
        row = (fitted_all or shared)[-1]  # the largest N, preferring one where all runs fitted
        base = clean[row.n]
        text = (
            f"With {sr.label(group)} and N = {row.n:,}, the same network reaches "
            f"{acc(row.train.mean)} training accuracy ({_runs_text(row.reached, row.runs)} hit "
            "the target"
            + (f", in {epochs_text(row.epochs.mean)} epochs" if row.reached else "")
            + f"; training loss {row.loss.mean:.2g} nats), yet {acc(row.test.mean)} on the test "
            f"set, {pts(abs(row.test.mean - chance))} from chance; clean labels at that N score "
            f"{acc(base.test.mean)}."
        )
        texts.append(sr.finding(f"zero-{group[0]}", text, ref="zero-loss-gap"))
        fitted = min(row.train.mean, base.train.mean) >= FITTED
        clean_acc, noisy_acc = sr.by_seed((CLEAN, 0.0), row.n), sr.by_seed(group, row.n)
        apart = paired(clean_acc, noisy_acc, sr.frames.n_test).clear
        at_chance = abs(row.test.mean - chance) <= NEAR_CHANCE < base.test.mean - chance
        gaps = (base.train.mean - base.test.mean, row.train.mean - row.test.mean)
        memorised.append((group, row.n, gaps, fitted and apart and at_chance))
    if memorised:
        holds = all(ok for *_, ok in memorised)
        stat = "fitted (training accuracy), at chance and apart from clean (paired over seeds)"
        texts.append(sr.finding("zero-gap", gap_sentence(memorised), holds, stat, "zero-loss-gap"))
    return [t for t in texts if t is not None]


def gap_sentence(memorised: list[tuple[Group, int, tuple[float, float], bool]]) -> str:
    """(random-label group, N, (clean gap, its gap), fitted and at chance) -> one sentence."""
    sizes = sorted({n for _, n, _, _ in memorised})
    one = len(sizes) == 1

    def at(n: int) -> str:
        return "" if one else f" at N = {n:,}"

    clean = sorted({(n, g[0]) for _, n, g, _ in memorised})
    base = " and ".join(f"{pts(gap)}{at(n)}" for n, gap in clean)
    parts = " and ".join(f"{pts(g[1])} with {grp[0]}{at(n)}" for grp, n, g, _ in memorised)
    gap = f"the train–test gap is {base} with clean labels, against {parts}"
    where = f"at N = {sizes[0]:,}, " if one else ""
    if not all(ok for *_, ok in memorised):
        text = f"{where}{gap}."
    else:
        who = (
            "both labellings fit their"
            if len(memorised) == 1
            else f"all {len(memorised) + 1} labellings fit their"
        )
        text = (
            f"{where}{who} training labels (at least {acc(FITTED)}), but {gap}: the network "
            "can memorise any labelling of these images, and how well it generalises depends "
            "on the labels, not on how well it fits them."
        )
    return text[0].upper() + text[1:]
