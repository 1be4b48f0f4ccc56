"""Sentences of the diagnostic sections (diagnostics.py), and the wording they share.

Every number in a sentence is a mean over seeds with its 95 % CI (summary.estimate). Every
comparison is a paired difference over seeds (stats.paired: same seed, same initialisation
and batch order) and is called a difference only when its 95 % t-interval excludes zero; with
one seed, only a test-set accuracy difference larger than the test set's sampling error is.
"""

from __future__ import annotations

import math

import pandas as pd

from ..summary import Estimate, estimate
from .finding import Finding
from .frames import Frames, SetupInfo
from .measured import Measured, counts_copies, level_text, middle, unperturbed, x_share
from .stats import Paired, paired
from .words import acc, has_ci, listing, pct, pts, signed


# --- wording -------------------------------------------------------------------------------
def versus(d: Paired) -> str:
    """What a paired difference a − b tells, for brackets after the two values."""
    if d.n >= 2:
        verdict = "a clear difference" if d.clear else "not distinguishable"
        return f"{verdict}: paired difference {signed(d)} over {d.n} seeds"
    if d.n == 1 and math.isfinite(d.binomial):
        within = "larger than" if d.clear else "within"
        return f"one seed: {within} the test set's sampling error of about {pts(d.binomial)}"
    return "one seed: the data cannot tell"


def checked(fr: Frames, key: str, text: str | None, checks: list[Paired], ref: str):
    """A sentence as a Finding: it holds when every paired check it reports is clear (a
    sentence whose check fails already says what the data cannot tell)."""
    if not text:
        return None
    if not checks:
        statistic = "means over seeds"
    elif len(fr.seeds) > 1:
        statistic = "paired difference over seeds, 95 % t-interval"
    else:
        statistic = "one seed: a difference beyond the test set's binomial error"
    return Finding(key, text, all(d.clear for d in checks), statistic, fr.scope, ref)


def sign_of(e: Estimate) -> int:
    """+1 / -1 when the 95 % CI lies above / below zero, 0 when it includes zero or is unknown."""
    if not math.isfinite(e.half):
        return 0
    return 1 if e.low > 0 else -1 if e.high < 0 else 0


def _finite(e: Estimate) -> bool:
    return math.isfinite(e.mean)


# how a comparison was judged: paired over seeds, or (one seed) nothing to add
BY_SEEDS = {True: " (paired differences over seeds, 95 % t-intervals)", False: ""}
UNSURE = ("not distinguishable", "not told apart with one seed")


def against(d: Paired, above: str, below: str) -> str:
    """`above` or `below` when the paired difference (a model − the clean baseline) is clear."""
    if not d.clear:
        return UNSURE[0] if d.n >= 2 else UNSURE[1]
    return above if d.mean > 0 else below


def grouped(pairs: list[tuple[str, str]], most: int = 6) -> str:
    """'higher for A and B; lower for C; not distinguishable for D': items by group, the
    groups in order of first appearance, the unsure ones last."""
    groups: dict[str, list[str]] = {}
    for group, item in sorted(pairs, key=lambda p: p[0] in UNSURE):
        groups.setdefault(group, []).append(item)
    return "; ".join(f"{g} for {listing(items, most)}" for g, items in groups.items())


def _shared_level(picked: list[tuple[SetupInfo, float]]) -> str:
    """The level text most of the picked setups share ('X = 60 %'); _named states the others'."""
    texts = [level_text(s, lv) for s, lv in picked]
    return max(texts, key=texts.count)


def _named(s: SetupInfo, lv: float, shared: str) -> str:
    text = level_text(s, lv)
    return s.name if text == shared else f"{s.name} at {text}"


# --- memorisation ----------------------------------------------------------------------------
def overtakes(noisy: list[Estimate], true: list[Estimate]) -> int | None:
    """First epoch (1-based) from which the mean fit_noisy exceeds the mean fit_true at every
    later epoch measured (None: the true label still wins at some later epoch)."""
    both = [
        (epoch, n.mean > t.mean)
        for epoch, (n, t) in enumerate(zip(noisy, true, strict=False), 1)
        if _finite(n) and _finite(t)
    ]
    first = None
    for epoch, ahead in both:
        first = (first or epoch) if ahead else None
    return first


def _last(ests: list[Estimate]) -> tuple[int, Estimate]:
    """(epoch, estimate) of the last epoch with a value."""
    for epoch in range(len(ests), 0, -1):
        if _finite(ests[epoch - 1]):
            return epoch, ests[epoch - 1]
    return 0, Estimate(math.nan, math.nan, 0)


def random_labels(setup: SetupInfo, lv: float) -> bool:
    """Every training label redrawn or shuffled: they carry no information about the image."""
    return x_share(setup, lv) >= 100 and setup.noise in ("labels.uniform", "labels.shuffle")


def noisy_fit_sentence(m: Measured, setup: SetupInfo, lv: float, cross: int | None) -> str | None:
    noisy = m.per_epoch(setup.name, lv, "fit_noisy")
    true = m.per_epoch(setup.name, lv, "fit_true")
    last, n_last = _last(noisy)
    if not last or not _finite(_last(true)[1]):
        return None
    t_last = true[last - 1]
    d_last = paired(*(m.per_seed(setup.name, lv, n) for n in ("fit_noisy", "fit_true")))
    peak = max(range(last), key=lambda i: true[i].mean if _finite(true[i]) else -1)
    where = f"Under {setup.name} at {level_text(setup, lv)}"
    if random_labels(setup, lv):
        return (
            f"{where} the labels carry no information about the images, so there is no true "
            f"pattern to fit: by the last epoch ({last}) the network predicts the given random "
            f"label for {pct(n_last)} of the training examples whose label changed and their "
            f"original one for {pct(t_last)}, against {acc(m.frames.chance)} by guessing."
        )
    end = (
        f"by the last epoch ({last}) the noisy label wins for {pct(n_last)} of them and the true "
        f"one for {pct(t_last)} ({versus(d_last)})"
    )
    if cross == 1:
        return (
            f"{where}, the network predicts the noisy label of the corrupted training examples "
            f"more often than their true one from the first epoch on: {end}."
        )
    first = (
        f"{where}, the network first fits the true pattern: at epoch {peak + 1} it predicts the "
        f"true label for {pct(true[peak])} of the corrupted training examples and their noisy "
        f"label for only {pct(noisy[peak])}"
    )
    if cross is None and peak + 1 == last:
        return (
            f"{where}, the network fits the true pattern and does not memorise the noise within "
            f"{last} epochs: by the last epoch the noisy label wins for {pct(n_last)} of the "
            f"corrupted training examples and the true one for {pct(t_last)} "
            f"({versus(d_last)})."
        )
    if cross is None:
        return f"{first}; it does not memorise the noise within {last} epochs: {end}."
    return f"{first}; from epoch {cross} on it memorises the noise, and {end}."


def noisy_fit_finding(m: Measured, setup: SetupInfo, lv: float, cross: int | None):
    text = noisy_fit_sentence(m, setup, lv, cross)
    checks = [] if random_labels(setup, lv) else [
        paired(*(m.per_seed(setup.name, lv, n) for n in ("fit_noisy", "fit_true")))
    ]  # fmt: skip
    return checked(m.frames, f"noisy-fit-{setup.name}", text, checks, "fitting-noise")


def crossings_sentence(m: Measured, setup: SetupInfo, levels: list[float], crossings) -> str:
    """At which epoch the noisy label overtakes the true one, level by level (not where the
    labels are all random: there is no true one to overtake)."""
    levels = [lv for lv in levels if not random_labels(setup, lv)]
    if not levels:
        return ""
    crossed = [lv for lv in levels if crossings[(setup.name, lv)]]
    never = [lv for lv in levels if not crossings[(setup.name, lv)]]
    ends = {lv: _last(m.per_epoch(setup.name, lv, "fit_noisy")) for lv in levels}
    if not crossed:
        epochs = max(ends[lv][0] for lv in never)
        return (
            f"At none of {_levels(setup, never)} does the noisy label overtake the true one "
            f"within {epochs} epochs under {setup.name}; by the last epoch it wins for "
            f"{listing([pct(ends[lv][1]) for lv in never], 5)} of the corrupted examples"
            + (" respectively." if len(never) > 1 else ".")
        )
    text = f"Under {setup.name} the noisy label overtakes the true one " + listing(
        [f"at epoch {crossings[(setup.name, lv)]} at {level_text(setup, lv)}" for lv in crossed], 5
    )
    if never:
        epochs = max(ends[lv][0] for lv in never)
        text += f", but not within {epochs} epochs at {_levels(setup, never)}"
    return text + "."


def others_sentence(
    m: Measured, setups: list[SetupInfo], shown: dict[str, list[float]], crossings
) -> str:
    """Where the noisy label overtakes the true one for each setup at its highest level."""
    at = _shared_level([(s, shown[s.name][-1]) for s in setups])
    pairs = []
    for s in setups:
        lv = shown[s.name][-1]
        epochs, noisy = _last(m.per_epoch(s.name, lv, "fit_noisy"))
        cross = crossings[(s.name, lv)]
        when = (
            "from the first epoch"
            if cross == 1
            else f"at epoch {cross}"
            if cross
            else f"not within {epochs} epochs"
        )
        pairs.append((when, f"{_named(s, lv, at)} ({pct(noisy)})"))
    return (
        f"In the other label-noise setups at {at}, the noisy label overtakes the true one "
        f"{grouped(pairs)}; in brackets, the share of corrupted examples predicted as their "
        "noisy label by the last epoch."
    )


def _levels(setup: SetupInfo, levels: list[float]) -> str:
    if counts_copies(setup.noise):
        return listing([level_text(setup, lv) for lv in levels], 5)
    return "X = " + listing([f"{lv * 100:.0f}" for lv in levels], 5) + " %"


# --- calibration ----------------------------------------------------------------------------
def final_gaps(fr: Frames, setup: str, lv: float) -> pd.Series:
    """Per seed: mean test confidence minus test accuracy at the last epoch."""
    return (fr.last(setup, lv, "test_conf") - fr.last(setup, lv, "test_acc")).dropna()


def final_gap(fr: Frames, setup: str, lv: float) -> Estimate:
    return estimate(list(final_gaps(fr, setup, lv)))


def _confident(gap: Estimate) -> str:
    if not has_ci(gap) and math.isfinite(gap.mean) and gap.mean != 0:  # one seed: no CI
        return f"{'over' if gap.mean > 0 else 'under'}-confident (one seed, so uncertain)"
    return {1: "over-confident", -1: "under-confident", 0: "neither over- nor under-confident"}[
        sign_of(gap)
    ]


def _shifts(gap: float, base: float) -> tuple[str, str]:
    """How a model's confidence − accuracy `gap` reads against the baseline's `base` when it
    is clearly (above, below) it: over-confidence grows or under-confidence shrinks."""
    above = (
        "less under-confident" if gap <= 0
        else "more over-confident" if base >= 0
        else "over- instead of under-confident"
    )  # fmt: skip
    below = (
        "less over-confident" if gap >= 0
        else "more under-confident" if base <= 0
        else "under- instead of over-confident"
    )  # fmt: skip
    return above, below


def calibration_sentences(fr: Frames, m: Measured, setups: list[SetupInfo]) -> list[Finding]:
    first = setups[0].name
    if 0.0 not in fr.levels(first):
        return []
    b_gap, b_ece = final_gap(fr, first, 0.0), m.final(first, 0.0, "test_ece")
    b_gaps, b_eces = final_gaps(fr, first, 0.0), m.per_seed(first, 0.0, "test_ece")
    base = {name: m.final(first, 0.0, name) for name in ("test_conf", "test_acc")}
    baseline = (
        f"The clean baseline ends {_confident(b_gap)}: its mean confidence (max softmax) on the "
        f"test set is {pct(base['test_conf'])} against an accuracy of {pct(base['test_acc'])} "
        f"(confidence minus accuracy {signed(b_gap)}), with an ECE of {pct(b_ece)}."
    )
    out = [checked(fr, "calibration-clean", baseline, [], "calibration")]
    everything: list[tuple[SetupInfo, float]] = []
    for kind, what in (("labels", "noisy labels"), ("pixels", "noisy pixels"), ("", "other noise")):
        picked = [(s, middle([lv for lv in fr.levels(s.name) if lv > 0])) for s in setups]
        picked = [(s, lv) for s, lv in picked if s.kind == kind and lv is not None]
        if not picked:
            continue
        everything += picked
        at = _shared_level(picked)
        gaps = [(s, lv, final_gap(fr, s.name, lv)) for s, lv in picked]
        ways = {_confident(g) for _, _, g in gaps}
        verdict = f"end {ways.pop()}" if len(ways) == 1 else "differ"
        items = [f"{signed(g)} for {_named(s, lv, at)}" for s, lv, g in gaps]
        checks = [paired(final_gaps(fr, s.name, lv), b_gaps) for s, lv, _ in gaps]
        groups = [
            (against(d, *_shifts(g.mean, b_gap.mean)), _named(s, lv, at))
            for d, (s, lv, g) in zip(checks, gaps, strict=True)
        ]
        text = (
            f"Trained on {what} at {at}, the models {verdict}: confidence minus accuracy is "
            f"{listing(items, 6)}; against the clean baseline's {signed(b_gap)} that is "
            f"{grouped(groups) if len(groups) > 1 else groups[0][0]}"
            f"{BY_SEEDS[len(fr.study.seeds) > 1]}."
        )
        out.append(checked(fr, f"calibration-{kind or 'other'}", text, checks, "calibration"))
    if everything:
        at = _shared_level(everything)
        checks = [paired(m.per_seed(s.name, lv, "test_ece"), b_eces) for s, lv in everything]
        eces = [
            (
                against(d, "higher", "lower"),
                f"{_named(s, lv, at)} ({pct(m.final(s.name, lv, 'test_ece'))})",
            )
            for d, (s, lv) in zip(checks, everything, strict=True)
        ]
        text = (
            f"Against the clean baseline's {pct(b_ece)}, the ECE at {at} is {grouped(eces)}"
            f"{BY_SEEDS[len(fr.study.seeds) > 1]}."
        )
        out.append(checked(fr, "calibration-ece", text, checks, "calibration"))
    return out


# --- robustness ----------------------------------------------------------------------------
def attacked_count(fr: Frames, m: Measured) -> int | None:
    """How many test images the robustness analysis attacked (None: unknown)."""
    wanted = fr.study.analysis.robustness_examples
    test = fr.n_test
    # stores from before robustness_examples (no attacked_acc) attacked the whole test set
    if wanted == "all" or test is None or "attacked_acc" not in m.names:
        return test
    return min(int(wanted), test)


def robustness_sentences(fr: Frames, m: Measured, eps: float) -> list[Finding]:
    first = next((s for s in fr.infos if 0.0 in fr.levels(s.name)), None)
    if first is None:
        return []
    fgsm, rand = f"fgsm@{eps:g}", f"randsign@{eps:g}"
    b_fgsm, b_rand = m.final(first.name, 0.0, fgsm), m.final(first.name, 0.0, rand)
    if not (_finite(b_fgsm) and _finite(b_rand)):
        return []
    n = attacked_count(fr, m)
    clean = unperturbed(m, first.name, 0.0)
    base = m.per_seed(first.name, 0.0, fgsm)
    d = paired(base, m.per_seed(first.name, 0.0, rand), n)
    if d.clear and d.mean < 0:
        verdict = "so it is the gradient's direction, not the size of the change, that breaks it."
    else:
        verdict = "so the data cannot tell the gradient's direction from the size of the change."
    text = (
        f"The clean baseline is right on {pct(clean)} of the attacked test images; FGSM at "
        f"ε = {eps:g} leaves {pct(b_fgsm)}, while random ±ε signs of the same size leave "
        f"{pct(b_rand)} ({versus(d)}), {verdict}"
    )
    out = [checked(fr, "robustness-clean", text, [d], "robustness")]
    for kind, question in (
        ("pixels", "Is a model trained on noisy pixels more robust to FGSM than the clean one?"),
        ("labels", "Is one trained on noisy labels less robust?"),
    ):
        wanted = "more robust" if kind == "pixels" else "less robust"
        picked = [
            (s, middle([lv for lv in m.levels(s.name, f"fgsm@{eps:g}") if lv > 0]))
            for s in fr.of_kind(kind)
        ]
        picked = [(s, lv) for s, lv in picked if lv is not None]
        found = [(s, lv, m.final(s.name, lv, fgsm)) for s, lv in picked]
        found = [(s, lv, e) for s, lv, e in found if _finite(e)]
        if not found:
            continue
        at = _shared_level([(s, lv) for s, lv, _ in found])
        answers, checks = [], []
        for s, lv, e in found:
            d_s = paired(m.per_seed(s.name, lv, fgsm), base, n)
            checks.append(d_s)
            way = against(d_s, "more robust", "less robust")
            answer = "yes" if way == wanted else way if way in UNSURE else f"no, {way},"
            answers.append((answer, f"{_named(s, lv, at)} ({pct(e)})"))
        said = grouped(answers)
        text = (
            f"{question} {said[0].upper() + said[1:]}: accuracy under FGSM at ε = {eps:g} after "
            f"training at {at}, against the clean baseline's {pct(b_fgsm)}"
            f"{BY_SEEDS[len(fr.study.seeds) > 1]}."
        )
        out.append(checked(fr, f"robustness-{kind}", text, checks, "robustness"))
    return out


# --- finding the wrong labels ----------------------------------------------------------------
ISSUES = ("issues_precision", "issues_recall", "issues_precision_at_k", "issues_flagged_share")


def corrupted_shares(m: Measured, s: SetupInfo, lv: float) -> pd.Series:
    """Per seed, the share of training labels the noise changed: precision × flagged share /
    recall (what a random pick's precision would be)."""
    p, r, _, f = (m.per_seed(s.name, lv, n) for n in ISSUES)
    return (p * f / r.where(r > 0)).dropna()


def corrupted_share(m: Measured, s: SetupInfo, lv: float) -> Estimate:
    return estimate(list(corrupted_shares(m, s, lv)))


def issues_sentences(fr: Frames, m: Measured, setups: list[SetupInfo]) -> list[Finding]:
    out = []
    for s in setups[:3]:
        levels = [lv for lv in m.levels(s.name, "issues_precision") if lv > 0]
        lv = middle(levels)
        p, r, pk, flagged = (m.final(s.name, lv, n) for n in ISSUES)
        share = corrupted_share(m, s, lv)
        d_base = paired(m.per_seed(s.name, lv, ISSUES[0]), corrupted_shares(m, s, lv))
        text = (
            f"Under {s.name} at {level_text(s, lv)}, cleanlab's default filter "
            "(prune_by_noise_rate) on the trained model's own probabilities flags "
            f"{pct(flagged)} of the training set; {pct(p)} of those are truly corrupted "
            f"(precision; a random pick would reach {pct(share)}; {versus(d_base)}), they "
            f"cover {pct(r)} of the corrupted labels "
            f"(recall), and the k examples of lowest self-confidence are {pct(pk)} corrupted "
            "(precision@k)."
        )
        out.append(checked(fr, f"issues-{s.name}", text, [d_base], "label-issues"))
        if len(levels) > 1 and len(setups) == 1:
            lo, hi = levels[0], levels[-1]
            b_lo, b_hi = corrupted_share(m, s, lo), corrupted_share(m, s, hi)
            d_recall = paired(*(m.per_seed(s.name, v, ISSUES[1]) for v in (hi, lo)))
            parts = [
                f"precision from {pct(m.final(s.name, lo, ISSUES[0]))} (base rate "
                f"{acc(b_lo.mean)}) to {pct(m.final(s.name, hi, ISSUES[0]))} (base rate "
                f"{acc(b_hi.mean)})",
                f"recall from {pct(m.final(s.name, lo, ISSUES[1]))} to "
                f"{pct(m.final(s.name, hi, ISSUES[1]))} ({versus(d_recall)})",
            ]
            text = (
                f"From {level_text(s, lo)} to {level_text(s, hi)}, {s.name} moves "
                f"{' and '.join(parts)}."
            )
            out.append(checked(fr, f"issues-levels-{s.name}", text, [d_recall], "label-issues"))
    shares = [s for s in setups if not counts_copies(s.noise)]
    common = set.intersection(*(set(m.levels(s.name, ISSUES[2])) for s in shares)) - {0.0}
    if len(shares) > 1 and common:
        lv = middle(sorted(common))
        ranked = sorted(shares, key=lambda s: m.final(s.name, lv, ISSUES[2]).mean)
        lo, hi = ranked[0], ranked[-1]
        e_lo, e_hi = m.final(lo.name, lv, ISSUES[2]), m.final(hi.name, lv, ISSUES[2])
        d = paired(*(m.per_seed(t.name, lv, ISSUES[2]) for t in (hi, lo)))
        text = (
            f"At {level_text(hi, lv)}, the corrupted labels are easiest to find under {hi.name} "
            f"(precision@k {pct(e_hi)}) and hardest under {lo.name} ({pct(e_lo)}; {versus(d)})."
        )
        out.append(checked(fr, "issues-easiest", text, [d], "label-issues"))
    return out[:5]


# --- setups ranked ---------------------------------------------------------------------------
def ties(rows: list[tuple[SetupInfo, pd.Series]], n_test: int | None) -> str:
    """Which neighbours of a ranking (per-seed accuracies, worst first) the paired check
    cannot tell apart."""
    tied = [
        f"{a.name} vs {b.name}"
        for (a, va), (b, vb) in zip(rows, rows[1:], strict=False)
        if not paired(vb, va, n_test).clear
    ]
    if not tied:
        how = "paired differences over seeds" if len(rows[0][1]) > 1 else "beyond sampling error"
        return f"; each clearly differs from the next ({how})"
    if len(tied) > 3:
        return f"; {len(tied)} of the {len(rows) - 1} neighbouring pairs are not distinguishable"
    return f"; neighbours not distinguishable: {listing(tied, 5)}"
