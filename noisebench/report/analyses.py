"""Report sections on what noise does to the trained models (issue #5), from the named metrics.

Each builder returns a Section (sentences, a figure) or None when the study has no data for
it: memorisation of noisy labels over epochs, calibration, robustness to FGSM, finding the
wrong labels, and (with four or more setups) the setups ranked by accuracy lost. Every number
in a sentence is a mean over seeds with its 95 % CI (summary.estimate); a comparison whose
CIs overlap is said to be not distinguishable.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..summary import Estimate, estimate
from . import analysis_figures as figs
from .data import ReportData, SetupInfo
from .measured import Measured, counts_copies, level_text, middle, spread
from .sections import Section, SectionBuilder, save_figure
from .words import acc, has_ci

CI = "Lines: mean over seeds; bands: 95 % confidence interval."


# --- wording -------------------------------------------------------------------------------
def pct(e: Estimate) -> str:
    """'71.2 ± 3.1 %' (no ± with one seed)."""
    if not math.isfinite(e.half):
        return acc(e.mean)
    return f"{e.mean * 100:.1f} ± {e.half * 100:.1f} %"


def signed(e: Estimate) -> str:
    """'+12.3 ± 1.0 points'."""
    half = f" ± {e.half * 100:.1f}" if math.isfinite(e.half) else ""
    return f"{e.mean * 100:+.1f}{half} points"


def versus(a: Estimate, b: Estimate) -> str:
    if not has_ci(a, b):
        return "one seed, so no CI: uncertain"
    return "not distinguishable: the 95 % CIs overlap" if a.overlaps(b) else "95 % CIs separate"


def sign_of(e: Estimate) -> int:
    """+1 / -1 when the 95 % CI lies above / below zero, 0 when it includes zero or is unknown."""
    if not math.isfinite(e.half):
        return 0
    return 1 if e.low > 0 else -1 if e.high < 0 else 0


def listing(items: list[str], most: int = 5) -> str:
    shown = items[:most] + ([f"{len(items) - most} more"] if len(items) > most else [])
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _finite(e: Estimate) -> bool:
    return math.isfinite(e.mean)


def _label_setups(data: ReportData, m: Measured, name: str) -> list[SetupInfo]:
    return [s for s in data.of_kind("labels") if any(lv > 0 for lv in m.levels(s.name, name))]


# --- memorisation ----------------------------------------------------------------------------
def overtakes(noisy: list[Estimate], true: list[Estimate]) -> int | None:
    """First epoch (1-based) at which the mean fit_noisy exceeds the mean fit_true."""
    for epoch, (n, t) in enumerate(zip(noisy, true, strict=False), 1):
        if _finite(n) and _finite(t) and n.mean > t.mean:
            return epoch
    return None


def _last(ests: list[Estimate]) -> tuple[int, Estimate]:
    """(epoch, estimate) of the last epoch with a value."""
    for epoch in range(len(ests), 0, -1):
        if _finite(ests[epoch - 1]):
            return epoch, ests[epoch - 1]
    return 0, Estimate(math.nan, math.nan, 0)


def memorised(m: Measured, setup: SetupInfo, lv: float, cross: int | None) -> str | None:
    noisy = m.per_epoch(setup.name, lv, "fit_noisy")
    true = m.per_epoch(setup.name, lv, "fit_true")
    last, n_last = _last(noisy)
    if not last or not _finite(_last(true)[1]):
        return None
    t_last = true[last - 1]
    peak = max(range(last), key=lambda i: true[i].mean if _finite(true[i]) else -1)
    where = f"Under {setup.name} at {level_text(setup, lv)}"
    end = (
        f"by the last epoch ({last}) the noisy label wins for {pct(n_last)} of them and the true "
        f"one for {pct(t_last)} ({versus(n_last, t_last)})"
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
            f"({versus(n_last, t_last)})."
        )
    if cross is None:
        return f"{first}; it does not memorise the noise within {last} epochs: {end}."
    return f"{first}; from epoch {cross} on it memorises the noise, and {end}."


def crossings_sentence(m: Measured, setup: SetupInfo, levels: list[float], crossings) -> str:
    """At which epoch the noisy label overtakes the true one, level by level."""
    crossed = [lv for lv in levels if crossings[(setup.name, lv)]]
    never = [lv for lv in levels if not crossings[(setup.name, lv)]]
    ends = {lv: _last(m.per_epoch(setup.name, lv, "fit_noisy")) for lv in levels}
    if not crossed:
        epochs = max(ends[lv][0] for lv in never)
        return (
            f"At none of {_levels(setup, never)} does the noisy label overtake the true one "
            f"within {epochs} epochs under {setup.name}; by the last epoch it wins for "
            f"{listing([pct(ends[lv][1]) for lv in never])} of the corrupted examples"
            + (" respectively." if len(never) > 1 else ".")
        )
    text = f"Under {setup.name} the noisy label overtakes the true one " + listing(
        [f"at epoch {crossings[(setup.name, lv)]} at {level_text(setup, lv)}" for lv in crossed]
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
    if counts_copies(setup):
        return listing([level_text(setup, lv) for lv in levels])
    return "X = " + listing([f"{lv * 100:.0f}" for lv in levels]) + " %"


def memorisation_section(data: ReportData, folder: Path) -> Section | None:
    m = Measured(data)
    setups = _label_setups(data, m, "fit_noisy")
    if not setups:
        return None
    shown = {s.name: spread([lv for lv in m.levels(s.name, "fit_noisy") if lv > 0]) for s in setups}
    crossings: dict[tuple[str, float], int | None] = {}
    for s in setups:
        for lv in shown[s.name]:
            noisy, true = (m.per_epoch(s.name, lv, n) for n in ("fit_noisy", "fit_true"))
            crossings[(s.name, lv)] = overtakes(noisy, true)
    texts = []
    for s in setups if len(setups) <= 2 else setups[:1]:
        top = shown[s.name][-1]
        texts.append(memorised(m, s, top, crossings[(s.name, top)]))
        if len(shown[s.name]) > 1:
            texts.append(crossings_sentence(m, s, shown[s.name], crossings))
    if len(setups) > 2:
        texts.append(others_sentence(m, setups[1:], shown, crossings))
    texts = [t for t in texts if t]
    if not texts:
        return None
    fig = figs.memorisation(data, m, shown, crossings)
    figure = save_figure(
        fig,
        folder,
        "fitting-noise",
        "Fitting the true pattern, then memorising the noisy labels",
        "Per label-noise setup and level: of the watched training examples whose label was "
        "corrupted, the share the network predicts as their noisy (trained-on) label and as "
        "their true label, and the accuracy on the uncorrupted ones, per epoch (clean inputs). "
        f"A dotted line marks the first epoch at which the noisy label wins. {CI}",
    )
    return Section(
        "fitting-noise",
        "Fitting the true pattern, then memorising the noisy labels",
        texts,
        [figure],
    )


# --- calibration ----------------------------------------------------------------------------
def _final_gap(data: ReportData, setup: str, lv: float) -> Estimate:
    """Per seed: mean test confidence minus test accuracy at the last epoch."""
    curves = data.stats[(setup, lv)].curves
    gaps = []
    for conf, accuracy in zip(curves["test_conf"], curves["test_acc"], strict=True):
        ok = [i for i in range(len(conf)) if math.isfinite(conf[i]) and math.isfinite(accuracy[i])]
        if ok:
            gaps.append(float(conf[ok[-1]] - accuracy[ok[-1]]))
    return estimate(gaps)


def _confident(gap: Estimate) -> str:
    return {1: "over-confident", -1: "under-confident", 0: "neither over- nor under-confident"}[
        sign_of(gap)
    ]


def calibration_sentences(data: ReportData, m: Measured, setups: list[SetupInfo]) -> list[str]:
    first = setups[0].name
    if (first, 0.0) not in data.stats:
        return []
    b_gap, b_ece = _final_gap(data, first, 0.0), m.final(first, 0.0, "test_ece")
    base = data.stats[(first, 0.0)].final
    out = [
        f"The clean baseline ends {_confident(b_gap)}: its mean confidence (max softmax) on the "
        f"test set is {pct(base['test_conf'])} against an accuracy of {pct(base['test_acc'])} "
        f"(confidence minus accuracy {signed(b_gap)}), with an ECE of {pct(b_ece)}."
    ]
    everything: list[tuple[SetupInfo, float]] = []
    for kind, what in (("labels", "noisy labels"), ("pixels", "noisy pixels"), ("", "other noise")):
        picked = [(s, middle([lv for lv in data.levels(s.name) if lv > 0])) for s in setups]
        picked = [(s, lv) for s, lv in picked if s.kind == kind and lv is not None]
        if not picked:
            continue
        everything += picked
        at = _shared_level(picked)
        gaps = [(s, lv, _final_gap(data, s.name, lv)) for s, lv in picked]
        ways = {_confident(g) for _, _, g in gaps}
        verdict = f"end {ways.pop()}" if len(ways) == 1 else "differ"
        items = [f"{signed(g)} for {_named(s, lv, at)}" for s, lv, g in gaps]
        groups = [
            (against(g, b_gap, "more over-confident", "more under-confident"), _named(s, lv, at))
            for s, lv, g in gaps
        ]
        out.append(
            f"Trained on {what} at {at}, the models {verdict}: confidence minus accuracy is "
            f"{listing(items, 6)}; against the clean baseline's {signed(b_gap)} that is "
            f"{grouped(groups) if len(groups) > 1 else groups[0][0]} (95 % CIs)."
        )
    if everything:
        at = _shared_level(everything)
        eces = [
            (against(e, b_ece, "higher", "lower"), f"{_named(s, lv, at)} ({pct(e)})")
            for s, lv in everything
            for e in [m.final(s.name, lv, "test_ece")]
        ]
        out.append(
            f"Against the clean baseline's {pct(b_ece)}, the ECE at {at} is {grouped(eces)} "
            "(95 % CIs)."
        )
    return out


UNSURE = ("not distinguishable", "uncertain with one seed (no CI)")


def against(e: Estimate, base: Estimate, above: str, below: str) -> str:
    """How `e` compares with the clean baseline's `base`, as far as the 95 % CIs tell."""
    if not has_ci(e, base):
        return UNSURE[1]
    if e.overlaps(base):
        return UNSURE[0]
    return above if e.mean > base.mean else below


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


def calibration_section(data: ReportData, folder: Path) -> Section | None:
    m = Measured(data)
    setups = [s for s in data.setups if any(m.levels(s.name, "test_ece"))]
    if not setups or not data.stats:
        return None
    texts = calibration_sentences(data, m, setups)
    if not texts:
        return None

    def conf(s: SetupInfo):
        return [(lv, data.stats[(s.name, lv)].final["test_conf"]) for lv in data.levels(s.name)]

    def gap(s: SetupInfo):
        return [(lv, _final_gap(data, s.name, lv)) for lv in data.levels(s.name)]

    def ece(s: SetupInfo):
        return [(lv, m.final(s.name, lv, "test_ece")) for lv in m.levels(s.name, "test_ece")]

    figure = save_figure(
        figs.calibration(data, setups, conf, gap, ece),
        folder,
        "calibration",
        "Calibration: confidence against accuracy",
        "After the last epoch, on the test set: left, mean confidence (max softmax); middle, "
        "mean confidence minus accuracy (above zero: over-confident); right, expected "
        "calibration error (15 equal-width confidence bins). One line per setup; setups whose "
        f"level counts noisy copies sit at their share of noisy examples, k / (k + 1). {CI}",
    )
    return Section("calibration", "Calibration: does confidence match accuracy?", texts, [figure])


# --- robustness ----------------------------------------------------------------------------
def eps_values(m: Measured) -> list[float]:
    eps = {float(n.split("@")[1]) for n in m.names if n.startswith("fgsm@")}
    return sorted(e for e in eps if f"randsign@{e:g}" in m.names)


def robustness_sentences(data: ReportData, m: Measured, eps: float) -> list[str]:
    first = next((s for s in data.setups if (s.name, 0.0) in data.stats), None)
    if first is None:
        return []
    b_fgsm = m.final(first.name, 0.0, f"fgsm@{eps:g}")
    b_rand = m.final(first.name, 0.0, f"randsign@{eps:g}")
    if not (_finite(b_fgsm) and _finite(b_rand)):
        return []
    clean = data.stats[(first.name, 0.0)].final["test_acc"]
    out = [
        f"The clean baseline is right on {pct(clean)} of test images; FGSM at ε = {eps:g} "
        f"leaves {pct(b_fgsm)}, while random ±ε signs of the same size leave {pct(b_rand)} "
        f"({versus(b_fgsm, b_rand)}), so it is the gradient's direction, not the size of the "
        "change, that breaks the model"
        + ("." if b_fgsm.high < b_rand.low else " — as far as these CIs can tell.")
    ]
    for kind, question in (
        ("pixels", "Is a model trained on noisy pixels more robust to FGSM than the clean one?"),
        ("labels", "Is one trained on noisy labels less robust?"),
    ):
        wanted = "more robust" if kind == "pixels" else "less robust"
        picked = [
            (s, middle([lv for lv in m.levels(s.name, f"fgsm@{eps:g}") if lv > 0]))
            for s in data.of_kind(kind)
        ]
        picked = [(s, lv) for s, lv in picked if lv is not None]
        found = [(s, lv, m.final(s.name, lv, f"fgsm@{eps:g}")) for s, lv in picked]
        found = [(s, lv, e) for s, lv, e in found if _finite(e)]
        if not found:
            continue
        at = _shared_level([(s, lv) for s, lv, _ in found])
        answers = []
        for s, lv, e in found:
            way = against(e, b_fgsm, "more robust", "less robust")
            answer = "yes" if way == wanted else way if way in UNSURE else f"no, {way},"
            answers.append((answer, f"{_named(s, lv, at)} ({pct(e)})"))
        text = grouped(answers)
        out.append(
            f"{question} {text[0].upper() + text[1:]}: accuracy under FGSM at ε = {eps:g} after "
            f"training at {at}, against the clean baseline's {pct(b_fgsm)} (95 % CIs)."
        )
    return out


def robustness_section(data: ReportData, folder: Path) -> Section | None:
    m = Measured(data)
    eps = eps_values(m)
    if not eps or not data.stats:
        return None
    mid = eps[len(eps) // 2]
    texts = robustness_sentences(data, m, mid)
    if not texts:
        return None
    shown = {}
    for s in data.setups:
        noisy = [lv for lv in m.levels(s.name, f"fgsm@{mid:g}") if lv > 0]
        picked = [0.0] + sorted({lv for lv in (middle(noisy), noisy[-1] if noisy else None) if lv})
        shown[s.name] = [lv for lv in picked if (s.name, lv) in data.stats]
    figure = save_figure(
        figs.robustness(data, m, shown, eps, mid),
        folder,
        "robustness",
        "Robustness: accuracy under FGSM and under random signs",
        "Test accuracy when every pixel (in [0, 1]) moves by ε along the sign of the loss "
        "gradient (FGSM, solid) or along random signs (dashed), for the clean baseline and two "
        f"noise levels per setup; ε = 0 is the unperturbed accuracy. The dotted line marks ε = "
        f"{mid:g}, compared in the text. {CI}",
    )
    return Section("robustness", "Robustness: adversarial vs random perturbations", texts, [figure])


# --- finding the wrong labels ----------------------------------------------------------------
ISSUES = ("issues_precision", "issues_recall", "issues_precision_at_k", "issues_flagged_share")


def corrupted_share(m: Measured, s: SetupInfo, lv: float) -> Estimate:
    """Per run, the share of training labels the noise changed: precision × flagged share /
    recall (what a random pick's precision would be)."""
    p, r, _, f = (m.by_run(s.name, lv, n) for n in ISSUES)
    shares = []
    for run, precision in p.items():
        recall, flagged = r.get(run), f.get(run)
        if precision is not None and flagged is not None and recall:
            shares.append(precision * flagged / recall)
    return estimate(shares)


def issues_sentences(data: ReportData, m: Measured, setups: list[SetupInfo]) -> list[str]:
    out = []
    for s in setups[:3]:
        levels = [lv for lv in m.levels(s.name, "issues_precision") if lv > 0]
        lv = middle(levels)
        p, r, pk, flagged = (m.final(s.name, lv, n) for n in ISSUES)
        share = corrupted_share(m, s, lv)
        out.append(
            f"Under {s.name} at {level_text(s, lv)}, flagging each training example whose "
            "probability for its given label is below the average for that label marks "
            f"{pct(flagged)} of the training set; {pct(p)} of those are truly corrupted "
            f"(precision; a random pick would reach {pct(share)}: {versus(p, share)}), they "
            f"cover {pct(r)} of the corrupted labels "
            f"(recall), and the k least trusted examples are {pct(pk)} corrupted (precision@k)."
        )
        if len(levels) > 1 and len(setups) == 1:
            lo, hi = levels[0], levels[-1]
            parts = [
                f"{what} from {pct(m.final(s.name, lo, n))} to {pct(m.final(s.name, hi, n))} "
                f"({versus(m.final(s.name, lo, n), m.final(s.name, hi, n))})"
                for what, n in (("precision", ISSUES[0]), ("recall", ISSUES[1]))
            ]
            out.append(
                f"From {level_text(s, lo)} to {level_text(s, hi)}, {s.name} moves "
                f"{' and '.join(parts)}."
            )
    shares = [s for s in setups if not counts_copies(s)]
    common = set.intersection(*(set(m.levels(s.name, ISSUES[2])) for s in shares)) - {0.0}
    if len(shares) > 1 and common:
        lv = middle(sorted(common))
        ranked = sorted(shares, key=lambda s: m.final(s.name, lv, ISSUES[2]).mean)
        lo, hi = ranked[0], ranked[-1]
        e_lo, e_hi = m.final(lo.name, lv, ISSUES[2]), m.final(hi.name, lv, ISSUES[2])
        out.append(
            f"At {level_text(hi, lv)}, the corrupted labels are easiest to find under {hi.name} "
            f"(precision@k {pct(e_hi)}) and hardest under {lo.name} ({pct(e_lo)}; "
            f"{versus(e_lo, e_hi)})."
        )
    return out[:5]


def issues_section(data: ReportData, folder: Path) -> Section | None:
    m = Measured(data)
    setups = _label_setups(data, m, "issues_precision")
    if not setups:
        return None
    texts = issues_sentences(data, m, setups)

    def series(s: SetupInfo, name: str):
        return [(lv, m.final(s.name, lv, name)) for lv in m.levels(s.name, name) if lv > 0]

    figure = save_figure(
        figs.label_issues(data, setups, series),
        folder,
        "label-issues",
        "Finding the wrong labels by the model's own confidence",
        "After training, each training example is flagged when the model's probability for its "
        "given label is below the mean of that probability over the examples with the same "
        "given label (confident learning's per-class threshold); precision and recall are "
        "against the labels the noise corrupted, "
        f"precision@k over the k least trusted examples, k = the number corrupted. {CI}",
    )
    head = ["setup", "level", "precision (%)", "recall (%)", "precision@k (%)", "flagged (%)"]
    rows = [
        [s.name, level_text(s, lv).removeprefix("X = ")]
        + [m.final(s.name, lv, n).fmt(100, 1) for n in ISSUES]
        for s in setups
        for lv in m.levels(s.name, ISSUES[0])
        if lv > 0
    ]
    return Section(
        "label-issues",
        "Finding the wrong labels",
        texts,
        [figure],
        table_head=head,
        table_rows=rows,
    )


# --- setups ranked ---------------------------------------------------------------------------
def ranking_section(data: ReportData, folder: Path) -> Section | None:
    if len(data.setups) < 4:
        return None
    shares = [s for s in data.setups if not counts_copies(s)]
    common = set.intersection(*(set(data.levels(s.name)) for s in shares)) if shares else set()
    top = max(common - {0.0}, default=None)
    if top is None or (shares[0].name, 0.0) not in data.stats:
        return None
    base = data.stats[(shares[0].name, 0.0)].final["test_acc"]
    rows = [(s, data.stats[(s.name, top)].final["test_acc"]) for s in shares]
    rows = [r for r in rows if _finite(r[1])]
    if len(rows) < 2:
        return None
    rows.sort(key=lambda r: r[1].mean)
    (worst, e_w), (best, e_b) = rows[0], rows[-1]
    lvl = level_text(worst, top)
    texts = [
        f"At {lvl}, the highest level {len(rows)} setups share, {worst.name} costs the most "
        f"accuracy ({acc(base.mean - e_w.mean).removesuffix(' %')} points: {pct(e_w)} against "
        f"{pct(base)} for the clean baseline) and {best.name} the least "
        f"({acc(base.mean - e_b.mean).removesuffix(' %')} points, {pct(e_b)}); {versus(e_w, e_b)}.",
        "From most to least accuracy lost: "
        + ", ".join(f"{s.name} ({(base.mean - e.mean) * 100:.1f})" for s, e in rows)
        + " points"
        + _ties(rows)
        + ".",
    ]
    others = [s for s in data.setups if counts_copies(s) and data.levels(s.name)]
    if others:
        parts = [
            f"{s.name} ({acc(data.stats[(s.name, data.levels(s.name)[-1])].final['test_acc'].mean)}"
            f" at {level_text(s, data.levels(s.name)[-1])})"
            for s in others
        ]
        texts.append(f"Left out because their level counts noisy copies: {listing(parts)}.")
    figure = save_figure(
        figs.ranking(base, rows, lvl, data.chance),
        folder,
        "setup-ranking",
        f"Every setup at {lvl}",
        f"Final test accuracy of each setup at {lvl}, most accuracy lost at the bottom; bars: "
        "95 % CI over seeds. The vertical line and its band are the clean baseline.",
    )
    return Section("setup-ranking", "Which noise costs the most accuracy", texts, [figure])


def _ties(rows: list[tuple[SetupInfo, Estimate]]) -> str:
    tied = [
        f"{a.name} and {b.name}"
        for (a, ea), (b, eb) in zip(rows, rows[1:], strict=False)
        if ea.overlaps(eb)
    ]
    if not tied:
        return "; each differs from the next with separate 95 % CIs"
    if len(tied) > 3:
        return (
            f"; {len(tied)} of the {len(rows) - 1} neighbouring pairs are not distinguishable "
            "(95 % CIs overlap)"
        )
    return f"; neighbours not distinguishable (95 % CIs overlap): {listing(tied)}"


SECTIONS: list[SectionBuilder] = [
    ranking_section,
    memorisation_section,
    calibration_section,
    robustness_section,
    issues_section,
]
