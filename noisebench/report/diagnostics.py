"""Report sections on what noise does to the trained models, from the named metrics.

Each builder reads the Frames (the SectionBuilder of sections.py) and returns a Section
(sentences, a figure) or None when the study has no data for it: fitting the noisy labels
over epochs, calibration, robustness to FGSM, finding the wrong labels, and (with four or
more setups) the setups ranked by accuracy lost. The sentences are written by
diagnostic_text.py, the figures drawn by diagnostic_figures.py.
"""

from __future__ import annotations

from pathlib import Path

from . import diagnostic_figures as figs
from .diagnostic_text import (
    ISSUES,
    _finite,
    attacked_count,
    calibration_sentences,
    checked,
    corrupted_share,
    crossings_sentence,
    final_gap,
    issues_sentences,
    noisy_fit_finding,
    others_sentence,
    overtakes,
    random_labels,
    robustness_sentences,
    ties,
    versus,
)
from .figures import spread_note
from .frames import Frames, SetupInfo
from .measured import Measured, counts_copies, level_text, middle, spread
from .sections import Section, SectionBuilder, from_findings, save_figure
from .stats import paired
from .words import acc, listing, pct, verb


def _label_setups(fr: Frames, m: Measured, name: str) -> list[SetupInfo]:
    return [s for s in fr.of_kind("labels") if any(lv > 0 for lv in m.levels(s.name, name))]


# --- memorisation ----------------------------------------------------------------------------
def noisy_fit_section(fr: Frames, folder: Path) -> Section | None:
    m = Measured(fr)
    setups = _label_setups(fr, m, "fit_noisy")
    if not setups:
        return None
    shown = {s.name: spread([lv for lv in m.levels(s.name, "fit_noisy") if lv > 0]) for s in setups}
    crossings: dict[tuple[str, float], int | None] = {}
    for s in setups:
        for lv in shown[s.name]:
            noisy, true = (m.per_epoch(s.name, lv, n) for n in ("fit_noisy", "fit_true"))
            crossings[(s.name, lv)] = None if random_labels(s, lv) else overtakes(noisy, true)
    texts: list = []  # Findings
    for s in setups if len(setups) <= 2 else setups[:1]:
        informative = [lv for lv in shown[s.name] if not random_labels(s, lv)]
        top = (informative or shown[s.name])[-1]
        texts.append(noisy_fit_finding(m, s, top, crossings[(s.name, top)]))
        if len(shown[s.name]) > 1:
            text = crossings_sentence(m, s, shown[s.name], crossings)
            texts.append(checked(fr, f"overtakes-{s.name}", text, [], "fitting-noise"))
    if len(setups) > 2:
        text = others_sentence(m, setups[1:], shown, crossings)
        texts.append(checked(fr, "overtakes-others", text, [], "fitting-noise"))
    texts = [t for t in texts if t]
    if not texts:
        return None
    fig = figs.noisy_fit(fr, m, shown, crossings)
    figure = save_figure(
        fig,
        folder,
        "fitting-noise",
        "Fitting the true pattern, then memorising the noisy labels",
        "Per label-noise setup and level: of the watched training examples whose label was "
        "corrupted, the share the network predicts as their noisy (trained-on) label and as "
        "their true label, and the accuracy on the uncorrupted ones, per epoch (clean inputs). "
        "A dotted line marks the first epoch at which the noisy label wins. "
        + spread_note(len(fr.study.seeds)),
    )
    return from_findings(
        "fitting-noise",
        "Fitting the true pattern, then memorising the noisy labels",
        texts,
        [figure],
    )


# --- calibration ----------------------------------------------------------------------------
def calibration_section(fr: Frames, folder: Path) -> Section | None:
    m = Measured(fr)
    setups = [s for s in fr.infos if any(m.levels(s.name, "test_ece"))]
    if not setups or fr.shown.empty:
        return None
    texts = calibration_sentences(fr, m, setups)
    if not texts:
        return None

    def conf(s: SetupInfo):
        return [(lv, m.final(s.name, lv, "test_conf")) for lv in fr.levels(s.name)]

    def gap(s: SetupInfo):
        return [(lv, final_gap(fr, s.name, lv)) for lv in fr.levels(s.name)]

    def ece(s: SetupInfo):
        return [(lv, m.final(s.name, lv, "test_ece")) for lv in m.levels(s.name, "test_ece")]

    figure = save_figure(
        figs.calibration(fr, setups, conf, gap, ece),
        folder,
        "calibration",
        "Calibration: confidence against accuracy",
        "After the last epoch, on the test set: left, mean confidence (max softmax); middle, "
        "mean confidence minus accuracy (above zero: over-confident); right, expected "
        "calibration error (15 equal-width confidence bins). One line per setup. "
        + (
            "Setups whose level counts noisy copies sit at their share of noisy examples, "
            "k / (k + 1). "
            if any(counts_copies(s.noise) for s in setups)
            else ""
        )
        + spread_note(len(fr.study.seeds)),
    )
    title = "Calibration: does confidence match accuracy?"
    return from_findings("calibration", title, texts, [figure])


# --- robustness ----------------------------------------------------------------------------
def _attacked_text(fr: Frames, m: Measured) -> str:
    n, test = attacked_count(fr, m), fr.n_test or 0
    if n is None or n >= test:
        return "the whole test set"
    return f"a fixed random {n:,} of the {test:,}"


def eps_values(m: Measured) -> list[float]:
    eps = {float(n.split("@")[1]) for n in m.names if n.startswith("fgsm@")}
    return sorted(e for e in eps if f"randsign@{e:g}" in m.names)


def robustness_section(fr: Frames, folder: Path) -> Section | None:
    m = Measured(fr)
    eps = eps_values(m)
    if not eps or fr.shown.empty:
        return None
    mid = eps[len(eps) // 2]
    texts = robustness_sentences(fr, m, mid)
    if not texts:
        return None
    shown = {}
    for s in fr.infos:
        noisy = [lv for lv in m.levels(s.name, f"fgsm@{mid:g}") if lv > 0]
        picked = [0.0] + sorted({lv for lv in (middle(noisy), noisy[-1] if noisy else None) if lv})
        shown[s.name] = [lv for lv in picked if lv in fr.levels(s.name)]
    figure = save_figure(
        figs.robustness(fr, m, shown, eps, mid),
        folder,
        "robustness",
        "Robustness: accuracy under FGSM and under random signs",
        f"Accuracy on the attacked test images ({_attacked_text(fr, m)}) when every pixel (in "
        "[0, 1]) moves by ε along the sign of the loss gradient (FGSM, solid) or along random "
        "signs (dashed), for the clean baseline and two "
        f"noise levels per setup; ε = 0 is the unperturbed accuracy. The dotted line marks ε = "
        f"{mid:g}, compared in the text. " + spread_note(len(fr.study.seeds)),
    )
    title = "Robustness: adversarial vs random perturbations"
    return from_findings("robustness", title, texts, [figure])


# --- finding the wrong labels ----------------------------------------------------------------
def issues_section(fr: Frames, folder: Path) -> Section | None:
    m = Measured(fr)
    setups = _label_setups(fr, m, "issues_precision")
    if not setups:
        return None
    texts = issues_sentences(fr, m, setups)

    def series(s: SetupInfo, name: str):
        return [(lv, m.final(s.name, lv, name)) for lv in m.levels(s.name, name) if lv > 0]

    def base_rate(s: SetupInfo):
        levels = m.levels(s.name, "issues_precision")
        return [(lv, corrupted_share(m, s, lv)) for lv in levels if lv > 0]

    figure = save_figure(
        figs.label_issues(fr, setups, series, base_rate),
        folder,
        "label-issues",
        "Finding the wrong labels by the model's own confidence",
        "After training, cleanlab's find_label_issues (prune_by_noise_rate) flags training "
        "examples from the model's own probabilities on them; precision and recall are "
        "against the labels the noise corrupted, "
        "precision@k over the k examples of lowest self-confidence, k = the number corrupted. "
        "Dotted: the "
        "base rate, the share of training labels the noise changed (the precision of a random "
        "pick). " + spread_note(len(fr.study.seeds)),
    )
    head = [
        "setup",
        "level",
        "labels changed (%)",
        "precision (%)",
        "recall (%)",
        "precision@k (%)",
        "flagged (%)",
    ]
    rows = [
        [s.name, level_text(s, lv).removeprefix("X = "), corrupted_share(m, s, lv).fmt(100, 1)]
        + [m.final(s.name, lv, n).fmt(100, 1) for n in ISSUES]
        for s in setups
        for lv in m.levels(s.name, ISSUES[0])
        if lv > 0
    ]
    return from_findings(
        "label-issues",
        "Finding the wrong labels",
        texts,
        [figure],
        table_head=head,
        table_rows=rows,
    )


# --- setups ranked ---------------------------------------------------------------------------
def ranking_section(fr: Frames, folder: Path) -> Section | None:
    if len(fr.infos) < 4:
        return None
    shares = [s for s in fr.infos if not counts_copies(s.noise)]
    common = set.intersection(*(set(fr.levels(s.name)) for s in shares)) if shares else set()
    top = max(common - {0.0}, default=None)
    if top is None or 0.0 not in fr.levels(shares[0].name):
        return None
    m = Measured(fr)
    base = m.final(shares[0].name, 0.0, "test_acc")
    rows = [(s, m.final(s.name, top, "test_acc")) for s in shares]
    rows = [r for r in rows if _finite(r[1])]
    if len(rows) < 2:
        return None
    rows.sort(key=lambda r: r[1].mean)
    (worst, e_w), (best, e_b) = rows[0], rows[-1]
    n_test = fr.n_test
    seeded = [(s, fr.last(s.name, top, "test_acc")) for s, _ in rows]
    lvl = level_text(worst, top)
    d_ends = paired(seeded[0][1], seeded[-1][1], n_test)
    neighbours = [paired(b, a, n_test) for (_, a), (_, b) in zip(seeded, seeded[1:], strict=False)]
    texts = [
        f"At {lvl}, the highest level {len(rows)} setups share, {worst.name} "
        f"{verb(worst.name, 'costs', 'cost')} the most "
        f"accuracy ({acc(base.mean - e_w.mean).removesuffix(' %')} points: {pct(e_w)} against "
        f"{pct(base)} for the clean baseline) and {best.name} the least "
        f"({acc(base.mean - e_b.mean).removesuffix(' %')} points, {pct(e_b)}); "
        f"{versus(d_ends)}.",
        "From most to least accuracy lost: "
        + ", ".join(f"{s.name} ({(base.mean - e.mean) * 100:.1f})" for s, e in rows)
        + " points"
        + ties(seeded, n_test)
        + ".",
    ]
    findings = [
        checked(fr, "ranking-ends", texts[0], [d_ends], "setup-ranking"),
        checked(fr, "ranking-order", texts[1], neighbours, "setup-ranking"),
    ]
    others = [s for s in fr.infos if counts_copies(s.noise) and fr.levels(s.name)]
    if others:
        parts = [
            f"{s.name} ({acc(m.final(s.name, lv, 'test_acc').mean)} at {level_text(s, lv)})"
            for s in others
            for lv in fr.levels(s.name)[-1:]
        ]
        text = f"Left out because their level counts noisy copies: {listing(parts, 5)}."
        findings.append(checked(fr, "ranking-left-out", text, [], "setup-ranking"))
    figure = save_figure(
        figs.ranking(base, rows, lvl, fr.chance),
        folder,
        "setup-ranking",
        f"Every setup at {lvl}",
        f"Final test accuracy of each setup at {lvl}, most accuracy lost at the bottom; bars: "
        "95 % CI over seeds. The vertical line and its band are the clean baseline.",
    )
    title = "Which noise costs the most accuracy"
    return from_findings("setup-ranking", title, findings, [figure])


SECTIONS: list[SectionBuilder] = [
    ranking_section,
    noisy_fit_section,
    calibration_section,
    robustness_section,
    issues_section,
]
