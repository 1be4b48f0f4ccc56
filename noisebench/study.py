"""Study files: a validated spec (TOML), the shipped presets, and the plan of runs and packs."""

import hashlib
import json
import math
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from .errors import StudyError
from .noise import NOISES, LabelNoise, make_noise

if TYPE_CHECKING:
    from .results import Results

# Levels lie in [0, 1] unless a noise allows more (labels.dilution: copies per example); each
# setup checks its levels against its own noise's range.
MAX_LEVEL = max(noise.max_level for noise in NOISES.values())
Level = Annotated[float, Field(ge=0.0, le=MAX_LEVEL)]
CLEAN = "clean"  # the setup name of the shared X = 0 baseline runs

# Upper bounds: far beyond any study that fits a machine, low enough that a typo is refused at
# once instead of running for ever or growing a store of gigabytes.
MAX_EPOCHS = 10_000
MAX_LIST = 1_000  # seeds, levels, train sizes, setups
MAX_RUNS = 100_000
MAX_WIDTH = 65_536  # units in a hidden layer
MAX_LAYERS = 64
MAX_IMAGE_SIDE = 4_096
MAX_COUNT = 10**9  # examples: train sizes, batch, measured subsets
MAX_NAME = 100  # characters of a study or setup name
MAX_DESCRIPTION = 4_000
MAX_STUDY_FILE = 1 << 20  # bytes
Seed = Annotated[int, Field(ge=0, lt=2**63)]  # what SQLite's INTEGER holds
Side = Annotated[int, Field(gt=0, le=MAX_IMAGE_SIDE)]


def _unique(values: list | None, what: str) -> list | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{what} must be unique")
    return values


def _plain_text(text: str, what: str) -> str:
    if not text.strip():
        raise ValueError(f"{what} is blank")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"{what} holds a control character (newline, tab, ...)")
    return text


class Spec(BaseModel):
    """Strict: `true` is not 1 and "0" is not 0; every float finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelSpec(Spec):
    """The MLP: hidden layer sizes, activation and training options.

    - `batchnorm`: batch normalisation after each hidden Linear, before the activation
      (torch.nn.BatchNorm1d: learnable scale and shift, batch statistics in training, running
      mean and variance with momentum 0.1 and eps 1e-5 in evaluation).
    - `dropout`: inverted dropout with this probability after each hidden activation, in
      training only.
    - `loss`: the training objective. "cross-entropy": softmax + cross-entropy. "mse": sigmoid
      outputs against one-hot targets, mean squared error over classes and batch (as
      torch.nn.MSELoss(sigmoid(z), one_hot)). The recorded train loss is the objective; test
      metrics are the same for both: cross-entropy of softmax(z), accuracy of argmax(z) and
      confidence max softmax(z), where z are the output pre-activations.
    """

    hidden: list[Annotated[int, Field(gt=0, le=MAX_WIDTH)]] = Field(
        default=[128, 128], min_length=1, max_length=MAX_LAYERS
    )
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"
    batchnorm: bool = False
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    loss: Literal["cross-entropy", "mse"] = "cross-entropy"

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        """The options are left out at their defaults: the run ids, pack keys and digests
        of studies that do not use them stay what they were before the options existed."""
        options = {"batchnorm": False, "dropout": 0.0, "loss": "cross-entropy"}
        return {k: v for k, v in handler(self).items() if k not in options or options[k] != v}


class TrainSpec(Spec):
    """Optimiser and schedule; the defaults reproduce the source study."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: Annotated[float, Field(gt=0.0, le=1e6)] = 0.01
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0, le=1e3)] = 0.0
    batch_size: Annotated[int, Field(gt=0, le=MAX_COUNT)] = 64
    epochs: Annotated[int, Field(gt=0, le=MAX_EPOCHS)] = 10
    # The learning rate over training, from `lr` (as torch.optim.lr_scheduler's):
    # "constant"; "step": × gamma every `step_size` epochs (StepLR); "cosine": to 0 over all
    # steps, updated every step (CosineAnnealingLR); "onecycle": OneCycleLR with max_lr = lr
    # (pct_start 0.3, div_factor 25, final_div_factor 1e4, cosine), which also cycles SGD's
    # momentum (Adam's beta1) between 0.95 and 0.85 in place of `momentum`.
    schedule: Literal["constant", "step", "cosine", "onecycle"] = "constant"
    step_size: Annotated[int, Field(gt=0, le=MAX_EPOCHS)] = 5  # epochs, for "step"
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1  # for "step"

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        """The schedule's fields are left out at their defaults (see ModelSpec._dump)."""
        options = {"schedule": "constant", "step_size": 5, "gamma": 0.1}
        return {k: v for k, v in handler(self).items() if k not in options or options[k] != v}


METHODS = ("ce", "gce", "sce", "bootstrap", "forward", "backward", "coteaching", "early-stop")
# Each method's parameters and their defaults (None: no default; the method's docstring).
METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "ce": {},
    "gce": {"q": 0.7},
    "sce": {"alpha": 0.1, "beta": 1.0, "log_zero": -4.0},
    "bootstrap": {"hard": False, "beta": None},  # β: 0.95 soft, 0.8 hard (Reed et al. 2015)
    "forward": {"T": "true", "estimate_after": 5},
    "backward": {"T": "true", "estimate_after": 5},
    "coteaching": {"forget_rate": None, "t_k": 10},  # τ: the setup's noise level
    "early-stop": {"patience": 5},
}


def _check_transition(matrix: list[list[float]]) -> None:
    k = len(matrix)
    for i, row in enumerate(matrix):
        if len(row) != k:
            raise ValueError(f"T must be square: row {i} has {len(row)} entries, not {k}")
        if min(row) < 0:
            raise ValueError(f"T is not row-stochastic: row {i} has a negative entry")
        if abs(math.fsum(row) - 1) > 1e-6:
            raise ValueError(f"T is not row-stochastic: row {i} sums to {math.fsum(row):.9g}")


class Method(Spec):
    """How a run trains against its (noisy) labels; "ce", plain cross-entropy, is the default.

    - "gce": generalized cross-entropy (Zhang & Sabuncu 2018), `q` in (0, 1] (0.7).
    - "sce": symmetric cross-entropy (Wang et al. 2019): `alpha`·CE + `beta`·reverse CE with
      log 0 taken as `log_zero` (0.1, 1.0, −4).
    - "bootstrap": soft (or `hard`) bootstrapping (Reed et al. 2015), `beta` in [0, 1] (0.95
      soft, 0.8 hard).
    - "forward", "backward": loss correction (Patrini et al. 2017) with the transition matrix
      `T`: "true" (the one the setup's label noise implies), "estimated" (the anchor-point
      estimate from the run's own probabilities after `estimate_after` epochs of plain
      cross-entropy, which are its `ce` twin's epochs), or a K×K row-stochastic matrix.
    - "coteaching": two networks (two runs, peers 0 and 1) each updating on the small-loss
      examples of its peer (Han et al. 2018); forget rate `forget_rate` (default: the level),
      reached linearly over `t_k` epochs.
    - "early-stop": cross-entropy, stopped when the loss on the (noisy) validation split has
      not improved for `patience` epochs; the study needs `validation` > 0.
    """

    name: Literal[
        "ce", "gce", "sce", "bootstrap", "forward", "backward", "coteaching", "early-stop"
    ]
    q: float | None = None
    alpha: float | None = None
    beta: float | None = None
    log_zero: float | None = None
    hard: bool | None = None
    T: Literal["true", "estimated"] | list[list[float]] | None = None
    estimate_after: Annotated[int, Field(gt=0, le=MAX_EPOCHS)] | None = None
    forget_rate: float | None = None
    t_k: Annotated[int, Field(gt=0, le=MAX_EPOCHS)] | None = None
    patience: Annotated[int, Field(gt=0, le=MAX_EPOCHS)] | None = None

    @model_validator(mode="after")
    def _parameters_in_range(self) -> "Method":
        allowed = METHOD_PARAMS[self.name]
        for key in type(self).model_fields:
            if key != "name" and getattr(self, key) is not None and key not in allowed:
                raise ValueError(f"method '{self.name}' takes no parameter '{key}'")
        if self.q is not None and not 0 < self.q <= 1:
            raise ValueError(f"gce's q must lie in (0, 1], not {self.q:g}")
        for key in ("alpha", "beta"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"{self.name}'s {key} must not be negative, not {value:g}")
        if self.name == "bootstrap" and self.beta is not None and self.beta > 1:
            raise ValueError(f"bootstrap's beta must lie in [0, 1], not {self.beta:g}")
        if self.log_zero is not None and self.log_zero >= 0:
            raise ValueError(f"sce's log_zero stands for log 0: negative, not {self.log_zero:g}")
        if self.forget_rate is not None and not 0 <= self.forget_rate < 1:
            raise ValueError(
                f"coteaching's forget_rate must lie in [0, 1), not {self.forget_rate:g}"
            )
        if isinstance(self.T, list):
            _check_transition(self.T)
        return self

    def resolved(self) -> tuple[tuple[str, Any], ...]:
        """The method with every default filled in, as RunSpec.method holds it; () for "ce"
        (the run ids of studies without methods stay what they were)."""
        if self.name == "ce":
            return ()
        params = dict(METHOD_PARAMS[self.name])
        params |= {k: v for k, v in self.model_dump().items() if k in params and v is not None}
        if self.name == "bootstrap" and params["beta"] is None:
            params["beta"] = 0.8 if params["hard"] else 0.95
        if isinstance(params.get("T"), list):
            params["T"] = tuple(tuple(row) for row in params["T"])
        return (("name", self.name), *sorted((k, v) for k, v in params.items() if v is not None))


def method_label(method: tuple[tuple[str, Any], ...]) -> str:
    """A short name for a run's method: "ce", "gce", "bootstrap-hard", "forward (estimated T)",
    with any parameter off its default: "gce q=0.5"."""
    params = dict(method)
    name = params.pop("name", "ce")
    params.pop("peer", None)
    label = name
    if name == "bootstrap":
        label = "bootstrap-hard" if params["hard"] else "bootstrap-soft"
        default_beta = 0.8 if params.pop("hard") else 0.95
        if params["beta"] == default_beta:
            params.pop("beta")
    if name in ("forward", "backward"):
        t = params.pop("T")
        label = f"{name} ({t if isinstance(t, str) else 'given'} T)"
        if t != "estimated":
            params.pop("estimate_after")
    defaults = METHOD_PARAMS.get(name, {})
    changed = [f"{k}={v:g}" for k, v in params.items() if k in defaults and defaults[k] != v]
    return " ".join([label, *changed])


class DataSpec(Spec):
    """How images become inputs: resized to `image_size` (H, W), grey (1) or RGB (3)."""

    # lax for the pair only: TOML and JSON give a list; its sides stay strict integers
    image_size: tuple[Side, Side] = Field(default=(28, 28), strict=False)
    channels: Literal[1, 3] = 1


class EarlyStopping(Spec):
    """Stop a run once its validation loss has not improved by `min_delta` for `patience`
    epochs; its test metrics are reported at the best-validation epoch as well as the last."""

    patience: Annotated[int, Field(gt=0, le=MAX_EPOCHS)] = 3
    min_delta: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0  # nats


class AnalysisSpec(Spec):
    """What is measured beyond the per-epoch test metrics; none of it changes training."""

    # training examples measured each epoch on clean inputs (memorisation split); 0: none
    train_eval: Annotated[int, Field(ge=0, le=MAX_COUNT)] | Literal["all"] = 10000
    calibration_bins: Annotated[int, Field(gt=1, le=1000)] = 15
    fgsm_eps: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default=[0.02, 0.05, 0.1, 0.2], max_length=100
    )
    # test images attacked (a fixed random subset; "all": the whole test set)
    robustness_examples: Annotated[int, Field(gt=0, le=MAX_COUNT)] | Literal["all"] = 2000
    # finding the corrupted training labels with cleanlab (label_issues.py): True (or
    # "in-sample"): from each run's own probabilities on its training set; "cv": from those
    # and from out-of-sample ones, `folds` extra models per label-noise run, each trained on
    # the other folds; False: not measured
    label_issues: bool | Literal["in-sample", "cv"] = True
    folds: Annotated[int, Field(ge=2, le=100)] = 5

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        """`folds` is left out unless cross-validated (see ModelSpec._dump)."""
        dumped = handler(self)
        if self.label_issues == "cv":
            return dumped
        return {k: v for k, v in dumped.items() if k != "folds"}

    @field_validator("fgsm_eps")
    @classmethod
    def _unique_eps(cls, eps: list[float]) -> list[float]:
        return _unique(eps, "fgsm_eps")


TrainSize = Annotated[int, Field(gt=0, le=MAX_COUNT)] | Literal["all"]


class Setup(Spec):
    """One noise setup: a registered noise, its parameters, and optionally its own levels and
    training sizes (instead of the study's)."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
    noise: Annotated[str, Field(max_length=MAX_NAME)]
    params: dict[str, Any] = {}
    levels: list[Level] | None = Field(default=None, min_length=1, max_length=MAX_LIST)
    train_sizes: list[TrainSize] | None = Field(default=None, min_length=1, max_length=MAX_LIST)

    @field_validator("name")
    @classmethod
    def _readable_name(cls, name: str) -> str:
        return _plain_text(name, "setup name")

    @field_validator("levels")
    @classmethod
    def _unique_levels(cls, levels: list[float] | None) -> list[float] | None:
        return _unique(levels, "levels")

    @field_validator("train_sizes")
    @classmethod
    def _unique_sizes(cls, sizes: list[int | str] | None) -> list[int | str] | None:
        return _unique(sizes, "train sizes")

    @model_validator(mode="after")
    def _noise_exists(self) -> "Setup":
        make_noise(self.noise, self.params)
        if self.name == CLEAN:
            raise ValueError(f"setup name '{CLEAN}' is reserved for the shared baseline")
        if self.levels is not None:
            self.check_levels(self.levels)
        return self

    def check_levels(self, levels: list[float], which: str = "") -> None:
        """ValueError naming the setup if its noise cannot run at one of `levels`."""
        noise = make_noise(self.noise, self.params)
        for i, level in enumerate(levels):
            try:
                noise.check_level(level)
            except ValueError as exc:
                msg = f"setup '{self.name}' ({self.noise}), {which}levels.{i}: {exc}"
                raise ValueError(msg) from None


class Study(Spec):
    """A noise study: setups × levels × seeds, one model and training recipe."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] = ""
    # None: mnist, falling back to mnist-sample when offline
    dataset: Annotated[str, Field(min_length=1, max_length=MAX_NAME)] | None = None
    seeds: list[Seed] = Field(default=[0, 1, 2], min_length=1, max_length=MAX_LIST)
    levels: list[Level] = Field(
        default=[0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0], min_length=1, max_length=MAX_LIST
    )
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    setups: list[Setup] = Field(min_length=1, max_length=MAX_LIST)
    max_pack: Annotated[int, Field(gt=0, le=MAX_LIST)] = 64
    # balanced training subsets (equal per class), a sweep dimension like seeds
    train_sizes: list[TrainSize] = Field(default=["all"], min_length=1, max_length=MAX_LIST)
    validation: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.0  # stratified hold-out share
    early_stopping: EarlyStopping | None = None
    stop_at_train_acc: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    analysis: AnalysisSpec = AnalysisSpec()
    # training methods, crossed with every setup, level and seed (a name or a table each)
    methods: list[Method] = Field(default=[Method(name="ce")], min_length=1, max_length=MAX_LIST)

    @field_validator("methods", mode="before")
    @classmethod
    def _names_are_methods(cls, methods: Any) -> Any:
        if isinstance(methods, list):
            return [{"name": m} if isinstance(m, str) else m for m in methods]
        return methods

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, methods: list[Method]) -> list[Method]:
        _unique([m.resolved() for m in methods], "methods")
        return methods

    @model_validator(mode="after")
    def _early_stop_needs_validation(self) -> "Study":
        if self.validation == 0 and any(m.name == "early-stop" for m in self.methods):
            raise ValueError("method 'early-stop' needs a validation share (validation = 0.1)")
        return self

    @model_validator(mode="after")
    def _estimate_before_the_end(self) -> "Study":
        for m in self.methods:
            after = dict(m.resolved()).get("estimate_after")
            if m.T == "estimated" and after >= self.train.epochs:
                raise ValueError(
                    f"method {m.name} estimates T after {after} epochs, but training has "
                    f"{self.train.epochs}: lower estimate_after"
                )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        """`methods` is left out at its default (see ModelSpec._dump)."""
        out = handler(self)
        if self.methods == [Method(name="ce")]:
            out.pop("methods", None)
        return out

    @field_validator("train_sizes")
    @classmethod
    def _unique_sizes(cls, sizes: list[int | str]) -> list[int | str]:
        return _unique(sizes, "train sizes")

    @model_validator(mode="after")
    def _stopping_needs_validation(self) -> "Study":
        if self.early_stopping is not None and self.validation == 0:
            raise ValueError("early_stopping needs a validation share (validation = 0.1)")
        return self

    @model_validator(mode="after")
    def _folds_need_label_noise(self) -> "Study":
        if self.analysis.label_issues != "cv":
            return self
        noises = [make_noise(s.noise, s.params) for s in self.setups]
        if not any(isinstance(n, LabelNoise) for n in noises):
            raise ValueError('analysis.label_issues = "cv" needs a setup with label noise')
        for setup, noise in zip(self.setups, noises, strict=True):
            if (
                isinstance(noise, LabelNoise)
                and type(noise).size_factor is not LabelNoise.size_factor
            ):
                raise ValueError(
                    f"analysis.label_issues = \"cv\" cannot split setup '{setup.name}' "
                    f"({setup.noise}) into folds: copies of one image would fall in several"
                )
        return self

    @model_validator(mode="after")
    def _not_too_many_runs(self) -> "Study":
        runs = sum(
            len(setup.levels or self.levels) * len(setup.train_sizes or self.train_sizes)
            for setup in self.setups
        ) * len(self.seeds)
        runs *= sum(2 if m.name == "coteaching" else 1 for m in self.methods)
        if runs > MAX_RUNS:
            raise ValueError(f"the study has {runs:,} runs, more than {MAX_RUNS:,}")
        return self

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        return _unique(seeds, "seeds")

    @field_validator("levels")
    @classmethod
    def _unique_levels(cls, levels: list[float]) -> list[float]:
        return _unique(levels, "levels")

    @field_validator("setups")
    @classmethod
    def _unique_setups(cls, setups: list[Setup]) -> list[Setup]:
        names = [s.name for s in setups]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate setup name '{sorted(dup)[0]}'")
        return setups

    @field_validator("setups")
    @classmethod
    def _levels_in_range(cls, setups: list[Setup], info: ValidationInfo) -> list[Setup]:
        levels = info.data.get("levels")  # absent if the study's levels are invalid themselves
        for setup in setups:
            if setup.levels is None and levels is not None:
                setup.check_levels(levels, "study ")
        return setups

    def levels_of(self, setup: Setup) -> list[float]:
        return sorted(set(setup.levels if setup.levels is not None else self.levels))

    @classmethod
    def from_preset(cls, name: str) -> "Study":
        """A study shipped with noisebench.

        >>> Study.from_preset("quick").levels
        [0.0, 0.5, 0.9]
        """
        return load_preset(name)

    @classmethod
    def from_toml(cls, path: str | Path) -> "Study":
        """A study read from a TOML file, validated field by field."""
        return load_study(path)

    def run(
        self,
        out: str | Path,
        *,
        dataset: str | None = None,
        data_dir: str | Path | None = None,
        device: str | None = None,
        backend: str = "local",
        address: str | None = None,
    ) -> "Results":
        """Train every unfinished run into `out` and return its Results.

        >>> study = Study(name="tiny", seeds=[0], levels=[0.0, 0.5], train={"epochs": 1},
        ...               setups=[{"name": "labels", "noise": "labels.uniform"}])
        >>> len(study.plan())
        2
        >>> import tempfile
        >>> results = study.run(tempfile.mkdtemp(), dataset="mnist-sample")
        >>> results.summary()[["setup", "level", "seeds"]].values.tolist()
        [['labels', 0.0, 1], ['labels', 0.5, 1]]
        """
        from .results import Results
        from .runner import run_study

        directory = run_study(
            self,
            Path(out),
            dataset=dataset,
            data_dir=Path(data_dir) if data_dir else None,
            device=device,
            backend=backend,
            address=address,
        )
        return Results(directory)

    def plan(self) -> list["RunSpec"]:
        """Every run of the study (the shared clean baseline once)."""
        return plan(self)

    def digest(self) -> str:
        """A short hash of everything that determines the study's numbers."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def _fail(exc: ValidationError, origin: str) -> StudyError:
    err = exc.errors()[0]
    # field names and list positions; not the union members pydantic names ("constrained-int")
    field = ".".join(str(p) for p in err["loc"] if str(p).isidentifier() or isinstance(p, int))
    field = field or "study"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return StudyError(f"{origin}: field '{field}': {msg}")


def parse_study(data: dict[str, Any], origin: str = "study") -> Study:
    """Validate a study dict; the error names the offending field."""
    try:
        return Study.model_validate(data)
    except ValidationError as exc:
        raise _fail(exc, origin) from None
    except StudyError as exc:
        raise StudyError(f"{origin}: {exc}") from None


def load_study(path: str | Path) -> Study:
    """Read and validate a study TOML file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_STUDY_FILE + 1)
    except FileNotFoundError:
        raise StudyError(f"study file not found: {path}") from None
    except IsADirectoryError:
        raise StudyError(f"{path} is a directory, not a study file") from None
    except OSError as exc:
        raise StudyError(f"cannot read study file {path}: {exc.strerror}") from None
    if len(raw) > MAX_STUDY_FILE:
        raise StudyError(f"{path}: larger than {MAX_STUDY_FILE >> 20} MiB, not a study file")
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise StudyError(f"{path}: not valid TOML (nested too deeply)") from None
    data.setdefault("name", path.stem[:MAX_NAME])
    return parse_study(data, str(path))


def preset_names() -> list[str]:
    folder = resources.files("noisebench") / "presets"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_preset(name: str) -> Study:
    """A study shipped with the package."""
    if name not in preset_names():
        raise StudyError(f"unknown preset '{name}' (known: {', '.join(preset_names())})")
    text = (resources.files("noisebench") / "presets" / f"{name}.toml").read_text()
    return parse_study(tomllib.loads(text), f"preset '{name}'")


@dataclass(frozen=True)
class RunSpec:
    """One training run: a noise (or none) at one level, one seed, one model and recipe."""

    setup: str
    noise: str | None
    params: tuple[tuple[str, Any], ...]
    level: float
    seed: int
    model: ModelSpec
    train: TrainSpec
    # what the run trains on and when it stops, beyond the defaults (full set, no stopping):
    # train_size, validation, early_stopping (patience, min_delta), stop_at_train_acc
    regime: tuple[tuple[str, Any], ...] = ()
    # the training method (Method.resolved(); () is plain cross-entropy); a co-teaching run
    # also names its peer (0 or 1): the pair trains together
    method: tuple[tuple[str, Any], ...] = ()

    @property
    def method_name(self) -> str:
        return dict(self.method).get("name", "ce")

    @property
    def train_size(self) -> int | None:
        """Size of the run's balanced training subset (None: the whole training set)."""
        return dict(self.regime).get("train_size")

    @property
    def validation(self) -> float:
        return dict(self.regime).get("validation", 0.0)

    @property
    def early_stopping(self) -> tuple[int, float] | None:
        if self.method_name == "early-stop":
            return (dict(self.method)["patience"], 0.0)
        return dict(self.regime).get("early_stopping")

    @property
    def stop_at_train_acc(self) -> float | None:
        return dict(self.regime).get("stop_at_train_acc")

    @property
    def fold(self) -> tuple[int, int] | None:
        """(k, K) for a cross-validation model: it trains on every fold of its parent's
        training set but fold k of K (label_issues = "cv"); None for a study's own runs."""
        regime = dict(self.regime)
        return (regime["fold"], regime["folds"]) if "fold" in regime else None

    @property
    def parent(self) -> "RunSpec":
        """The run whose training set a fold model splits (itself for a study's own runs)."""
        regime = tuple((k, v) for k, v in self.regime if k not in ("fold", "folds"))
        return replace(self, regime=regime)

    @property
    def size_factor(self) -> int:
        """N'/N: label noises like labels.dilution add examples."""
        if self.noise is None or self.level == 0:
            return 1
        noise = make_noise(self.noise, dict(self.params))
        return noise.size_factor(self.level) if hasattr(noise, "size_factor") else 1

    @property
    def config(self) -> dict[str, Any]:
        config = {
            "noise": self.noise,
            "params": dict(self.params),
            "level": self.level,
            "seed": self.seed,
            "model": self.model.model_dump(),
            "train": self.train.model_dump(),
        }
        if self.method:
            config["method"] = dict(self.method)
        return config | dict(self.regime)  # the defaults add nothing: run ids stay stable

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.config, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def pack_key(self) -> str:
        """Runs sharing this key train together: same architecture, recipe and batches."""
        regime = tuple((k, v) for k, v in self.regime if k != "fold")  # all K folds together
        same = [self.model.model_dump(), self.train.model_dump(), regime, self.size_factor]
        blob = json.dumps(same, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _regime(study: Study, size: int | str) -> tuple[tuple[str, Any], ...]:
    stopping = study.early_stopping
    regime = {
        "train_size": None if size == "all" else size,
        "validation": study.validation or None,
        "early_stopping": (stopping.patience, stopping.min_delta) if stopping else None,
        "stop_at_train_acc": study.stop_at_train_acc,
    }
    return tuple(sorted((k, v) for k, v in regime.items() if v is not None))


def plan(study: Study) -> list[RunSpec]:
    """Every run of the study, once: level 0 of any setup is the shared clean baseline."""
    runs: dict[str, RunSpec] = {}
    for setup in study.setups:
        for size in setup.train_sizes or study.train_sizes:
            for level in study.levels_of(setup):
                for method in study.methods:
                    for seed in study.seeds:
                        clean = level == 0.0
                        params = tuple(sorted(setup.params.items()))
                        run = RunSpec(
                            setup=CLEAN if clean else setup.name,
                            noise=None if clean else setup.noise,
                            params=() if clean else params,
                            level=level,
                            seed=seed,
                            model=study.model,
                            train=study.train,
                            regime=_regime(study, size),
                            method=method.resolved(),
                        )
                        for peer in _peers(run):
                            runs.setdefault(peer.run_id, peer)
    return list(runs.values())


def fold_runs(study: Study, runs: Iterable[RunSpec]) -> list[RunSpec]:
    """The cross-validation models of label_issues = "cv": `folds` per plain-ce run with label
    noise, each the run's recipe on all but one fold of its training set (engine/trainset.py).
    They are not runs of the study: their only output is their held-out fold's probabilities.
    Runs of other training methods get in-sample label issues only."""
    if study.analysis.label_issues != "cv":
        return []
    folds = study.analysis.folds
    return [
        replace(run, regime=tuple(sorted((*run.regime, ("fold", k), ("folds", folds)))))
        for run in runs
        if run.method_name == "ce"
        and run.noise is not None
        and isinstance(make_noise(run.noise, dict(run.params)), LabelNoise)
        for k in range(folds)
    ]


def _peers(run: RunSpec) -> list[RunSpec]:
    """The runs a planned run trains as: itself, or a co-teaching pair (peers 0 and 1)."""
    if run.method_name != "coteaching":
        return [run]
    return [replace(run, method=(*run.method, ("peer", peer))) for peer in (0, 1)]


def _units(group: list[RunSpec]) -> list[list[RunSpec]]:
    """The runs of a pack group in what cannot be split: co-teaching peers stay together."""
    units: dict[tuple, list[RunSpec]] = {}
    for run in group:
        key: tuple = (run.run_id,)
        if run.method_name == "coteaching":
            key = (
                run.setup,
                run.level,
                run.seed,
                tuple(kv for kv in run.method if kv[0] != "peer"),
            )
        units.setdefault(key, []).append(run)
    return list(units.values())


def packs(runs: Iterable[RunSpec], max_pack: int) -> list[list[RunSpec]]:
    """Group runs that can train as one stacked model, at most `max_pack` per pack."""
    groups: dict[str, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(run.pack_key, []).append(run)
    out = []
    for group in groups.values():
        part: list[RunSpec] = []
        for unit in _units(group):
            if part and len(part) + len(unit) > max_pack:
                out.append(part)
                part = []
            part.extend(unit)
        out.append(part)
    return out
