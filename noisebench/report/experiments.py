"""Report sections of the experiment presets: model size, fitting small training sets, zero
training loss, sample size and early stopping (builders in SECTIONS, see sections.py).

Each builder reads every finished run of every training-set size (experiment_runs.StudyRuns)
and returns None when the study has nothing for it. Every number in a sentence is read from
the stored metrics; a comparison is only worded as established when the numbers say so.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..engine import parameter_count
from ..study import CLEAN
from ..summary import estimate, main_train_size
from . import experiment_figures as figs
from .experiment_runs import Group, StudyRuns, per_epoch
from .experiment_text import (
    EarlyRow,
    buyback,
    buyback_sentence,
    early_sentences,
    gap_sentence,
    growth_sentence,
    time_sentence,
)
from .figures import FigureFile, spread_note
from .finding import Finding
from .fits import LogisticFit, fit_logistic
from .frames import Frames
from .sections import Section, SectionBuilder, from_findings, save_figure
from .small_set_text import (
    DEFAULT_TARGET,
    missed_sentence,
    plateau_sentence,
    reach_epoch,
    reach_sentence,
    scaling_sentence,
    test_sentence,
    zero_loss_sentences,
    zero_rows,
)

MAX_PANELS = 4
ACTIVATIONS = {"relu": "ReLU", "tanh": "tanh", "sigmoid": "sigmoid"}


def _target(fr: Frames) -> float:
    return fr.study.stop_at_train_acc or DEFAULT_TARGET


# --- model size -------------------------------------------------------------------------------
def model_size_section(fr: Frames, folder: Path) -> Section | None:
    study, meta = fr.study, fr.meta
    shape = meta.get("image_shape") or list(study.data.image_size)
    features = math.prod(shape) * int(meta.get("channels") or study.data.channels)
    count = parameter_count(study.model, features, fr.num_classes)
    layers = " → ".join(str(n) for n in (features, *study.model.hidden, fr.num_classes))
    extras = [ACTIVATIONS.get(study.model.activation, study.model.activation)]
    if study.model.batchnorm:
        extras.append("batch normalisation")
    if study.model.dropout:
        extras.append(f"dropout {study.model.dropout:g}")
    text = f"Each run trains an MLP {layers} ({', '.join(extras)}) with {count:,} parameters"
    sizes = StudyRuns(fr).sizes() if len(fr.runs) else []
    if sizes:
        ratios = [f"{count / n:,.0f} at N = {n:,}" for n in sizes[::-1]]
        text += f": {ratios[0].replace(' at', ' per training example at')}" + (
            f" ({ratios[-1]})" if len(ratios) > 1 else ""
        )
    size = Finding("model-size", text + ".", True, "the study and the dataset", fr.scope, None)
    return from_findings("model-size", "Model size", [size])


# --- memorisation -----------------------------------------------------------------------------
def _fit(sr: StudyRuns, group: Group, n: int) -> LogisticFit | None:
    ests = per_epoch(sr.select(group, n), "train_clean_acc", carry=True)
    return fit_logistic([e.mean for e in ests], sr.frames.chance) if ests else None


def small_set_section(fr: Frames, folder: Path) -> Section | None:
    sr = StudyRuns(fr)
    if not sr.has("train_clean_acc"):
        return None
    if fr.study.stop_at_train_acc is None:
        return None  # without a target to fit, the Summary and fitting-noise section say it
    randoms = sr.random_labels()
    if not (randoms or len(sr.sizes()) > 1):
        return None
    target = _target(fr)
    noisy = randoms or [g for g in sr.groups() if g[0] != CLEAN]
    groups = ([(CLEAN, 0.0)] if (CLEAN, 0.0) in sr.groups() else []) + noisy
    groups = groups[:MAX_PANELS]
    reach = {r.run_id: reach_epoch(r, target) for g in groups for r in sr.select(g)}
    fits = {(g, n): _fit(sr, g, n) for g in groups for n in sr.sizes() if sr.select(g, n)}
    texts = [reach_sentence(sr, g, reach, target) for g in groups]
    texts += [
        missed_sentence(sr, groups, reach, target),
        scaling_sentence(sr, groups, reach),
        test_sentence(sr, groups, reach),
        plateau_sentence(sr, groups, fits),
    ]
    curves = save_figure(
        figs.small_set_curves(sr, groups, target, {k: v for k, v in fits.items() if v}),
        folder,
        "memorisation-curves",
        "Fitting random labels: training accuracy per epoch, per training-set size",
        "Training accuracy on clean inputs, against the labels the network trains on (random "
        "ones under random labels), per epoch; one line per N. A run that reached the target "
        "stopped and keeps its last value. "
        + (
            "Dashed: a logistic in the epoch fitted to the mean curve, where it fits well, "
            "drawn over the epochs measured. "
            if any(f is not None and f.ok for f in fits.values())
            else ""
        )
        + spread_note(len(fr.study.seeds)),
    )
    figures = [curves]
    if len(sr.sizes()) > 1:
        figures.append(epochs_to_target_figure(sr, groups, reach, target, folder))
    scales = ", and how it scales with N" if len(sr.sizes()) > 1 else ""
    title = f"Fitting {'random' if randoms else 'noisy'} labels{scales}"
    return from_findings("memorisation", title, texts, figures)


def epochs_to_target_figure(
    sr: StudyRuns, groups: list[Group], reach: dict, target: float, folder: Path
) -> FigureFile:
    return save_figure(
        figs.epochs_to_target(sr, groups, reach, target),
        folder,
        "memorisation-epochs",
        "Fitting random labels: epochs needed and test accuracy against N",
        f"Left: epochs until {target * 100:g} % training accuracy, over the runs that got "
        f"there; a cross at the cap ({sr.cap} epochs) counts those that did not. Right: "
        f"test accuracy of the trained network; the dotted line is chance. "
        + spread_note(len(sr.frames.study.seeds)),
    )


# --- zero training loss -----------------------------------------------------------------------
def zero_loss_section(fr: Frames, folder: Path) -> Section | None:
    sr = StudyRuns(fr)
    if fr.study.stop_at_train_acc is None or not sr.has("train_clean_acc"):
        return None
    target = _target(fr)
    rows = zero_rows(sr, target)
    if not rows:
        return None
    table = [
        [
            sr.label(row.group),
            f"{row.n:,}",
            f"{row.reached} of {row.runs}",
            row.epochs.fmt(1, 1) if row.reached else "—",
            row.loss.fmt(1, 4),
            row.train.fmt(100, 2),
            row.test.fmt(100, 1),
        ]
        for row in rows
    ]
    figure = save_figure(
        figs.zero_loss_bars(sr, rows),
        folder,
        "zero-loss-gap",
        "Zero training loss: training vs test accuracy",
        "Per labelling and N: accuracy on the training examples (clean inputs, against the "
        "labels trained on) when training stopped, and on the clean test set. The dotted line "
        "is chance. Bars: mean over seeds; whiskers: 95 % CI.",
    )
    head = [
        "labels",
        "N",
        "reached target",
        "epochs to target",
        "final train loss (nats)",
        "train acc, clean inputs (%)",
        "test acc (%)",
    ]
    title = f"Zero training loss: fitting {target * 100:g} % of the training set"
    return from_findings(
        "zero-loss", title, zero_loss_sentences(sr, rows, target), [figure], head, table
    )


# --- sample size ------------------------------------------------------------------------------
def sample_size_section(fr: Frames, folder: Path) -> Section | None:
    sr = StudyRuns(fr)
    sizes = sr.sizes()
    if len(sizes) < 2 or fr.study.stop_at_train_acc is not None:
        return None
    clean = [(CLEAN, 0.0)] if (CLEAN, 0.0) in sr.groups() else []
    panels = []
    for setup in fr.infos[:MAX_PANELS]:
        noisy = [g for g in sr.groups() if g[0] == setup.name]
        if noisy:
            panels.append((setup.name, clean + noisy))
    if not panels:
        return None
    accuracy = {
        g: [(n, estimate([r.last("test_acc") for r in sr.select(g, n)])) for n in sizes]
        for _, groups in panels
        for g in groups
    }
    seconds = {n: estimate([r.seconds for r in sr.runs if sr.size(r) == n]) for n in sizes}
    seconds = {n: e for n, e in seconds.items() if e.n}
    found = {
        g: buyback(accuracy[clean[0]], accuracy[g]) for g in accuracy if clean and g[0] != CLEAN
    }
    texts = [  # the clean baseline once, with the first setup
        growth_sentence(sr, name, groups if i == 0 else groups[len(clean) :], accuracy)
        for i, (name, groups) in enumerate(panels)
    ]
    texts += [gap_sentence(sr, groups, accuracy) for _, groups in panels if clean]
    texts += [buyback_sentence(sr, g, accuracy, found[g]) for g in found]
    texts.append(time_sentence(sr, seconds))
    arrows = [(g, b.n0, b.target, b.nx) for g, b in found.items() if b and b.nx is not None]
    figure = save_figure(
        figs.sample_size(sr, panels, seconds, arrows),
        folder,
        "sample-size",
        "Sample size: test accuracy and training time against N",
        "Final test accuracy against the number of training examples N (equal per class), one "
        "line per noise level; an arrow runs from the clean accuracy at one N to the N at which "
        "a noisy level reaches it (interpolated in log N). Last panel: training time per run "
        "(its pack's step time shared among the pack's runs). " + spread_note(len(fr.study.seeds)),
    )
    title = "Sample size: how much data buys back the accuracy lost to noise"
    return from_findings("sample-size", title, texts, [figure])


# --- early stopping / validation --------------------------------------------------------------
def early_stopping_section(fr: Frames, folder: Path) -> Section | None:
    sr = StudyRuns(fr)
    if fr.study.validation == 0 or not sr.has("val_loss"):
        return None
    main = main_train_size(fr.study)
    n = main if main is not None else sr.full_size
    best = {r.run_id: b for r in sr.runs if (b := r.best_val_epoch) is not None}
    rows = [EarlyRow.of(g, runs) for g in sr.groups() if (runs := sr.select(g, n))]
    if not rows:
        return None
    texts = early_sentences(sr, rows, n)
    table = [
        [
            sr.label(row.group),
            str(len(row.runs)),
            row.best.fmt(1, 1),
            row.last.fmt(1, 1),
            row.at_best.fmt(100, 1),
            row.at_last.fmt(100, 1),
            row.diff.fmt(100, 1),
        ]
        for row in rows
    ]
    clean = [(CLEAN, 0.0)] if (CLEAN, 0.0) in sr.groups() else []
    panels = [
        (s.name, clean + [g for g in sr.groups() if g[0] == s.name]) for s in fr.infos[:MAX_PANELS]
    ]
    figure = save_figure(
        figs.early_stopping(sr, panels, best, n),
        folder,
        "early-stopping-curves",
        "Validation loss per epoch, with the best epoch and the stop",
        f"Validation cross-entropy of every run at N = {n:,} (a line per run, coloured by noise "
        "level); a dot marks its lowest validation loss, whose parameters are kept under early "
        "stopping, and a cross the epoch at which it stopped, if before the cap.",
    )
    stopping = fr.study.early_stopping
    title = "Early stopping" if stopping else "Validation: the best epoch vs the last"
    head = [
        "labels",
        "runs",
        "best val epoch",
        "last epoch",
        "test acc @ best val (%)",
        "test acc @ last epoch (%)",
        "best minus last (points)",
    ]
    return from_findings("early-stopping", title, texts, [figure], head, table)


SECTIONS: list[SectionBuilder] = [
    model_size_section,
    small_set_section,
    zero_loss_section,
    sample_size_section,
    early_stopping_section,
]
