"""Study files: a validated spec (TOML), the shipped presets, and the plan of runs and packs."""

import hashlib
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import StudyError
from .noise import make_noise

if TYPE_CHECKING:
    from .results import Results

Level = Annotated[float, Field(ge=0.0, le=1.0)]
CLEAN = "clean"  # the setup name of the shared X = 0 baseline runs


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(Spec):
    """The MLP: hidden layer sizes and activation; softmax + cross-entropy on top."""

    hidden: list[Annotated[int, Field(gt=0)]] = Field(default=[128, 128], min_length=1)
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"


class TrainSpec(Spec):
    """Optimiser and schedule; the defaults reproduce the source study."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: Annotated[float, Field(gt=0.0)] = 0.01
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    batch_size: Annotated[int, Field(gt=0)] = 64
    epochs: Annotated[int, Field(gt=0)] = 10


class DataSpec(Spec):
    """How images become inputs: resized to `image_size` (H, W), grey (1) or RGB (3)."""

    image_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] = (28, 28)
    channels: Literal[1, 3] = 1


class Setup(Spec):
    """One noise setup: a registered noise, its parameters, and optionally its own levels."""

    name: Annotated[str, Field(min_length=1)]
    noise: str
    params: dict[str, Any] = {}
    levels: list[Level] | None = None

    @model_validator(mode="after")
    def _noise_exists(self) -> "Setup":
        make_noise(self.noise, self.params)
        if self.name == CLEAN:
            raise ValueError(f"setup name '{CLEAN}' is reserved for the shared baseline")
        return self


class Study(Spec):
    """A noise study: setups × levels × seeds, one model and training recipe."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    dataset: str | None = None  # None: mnist, falling back to mnist-sample when offline
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1)
    levels: list[Level] = Field(default=[0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0], min_length=1)
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    setups: list[Setup] = Field(min_length=1)
    max_pack: Annotated[int, Field(gt=0)] = 64

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be unique")
        return seeds

    @field_validator("setups")
    @classmethod
    def _unique_setups(cls, setups: list[Setup]) -> list[Setup]:
        names = [s.name for s in setups]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate setup name '{sorted(dup)[0]}'")
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
    field = ".".join(str(p) for p in err["loc"]) or "study"
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
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"study file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: not valid TOML ({exc})") from None
    data.setdefault("name", path.stem)
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


def preset_summary(name: str) -> str:
    study = load_preset(name)
    return study.description or name


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

    @property
    def config(self) -> dict[str, Any]:
        return {
            "noise": self.noise,
            "params": dict(self.params),
            "level": self.level,
            "seed": self.seed,
            "model": self.model.model_dump(),
            "train": self.train.model_dump(),
        }

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.config, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def pack_key(self) -> str:
        """Runs sharing this key train together: same architecture, recipe and batches."""
        blob = json.dumps([self.model.model_dump(), self.train.model_dump()], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def plan(study: Study) -> list[RunSpec]:
    """Every run of the study, once: level 0 of any setup is the shared clean baseline."""
    runs: dict[str, RunSpec] = {}
    for setup in study.setups:
        for level in study.levels_of(setup):
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
                )
                runs.setdefault(run.run_id, run)
    return list(runs.values())


def packs(runs: Iterable[RunSpec], max_pack: int) -> list[list[RunSpec]]:
    """Group runs that can train as one stacked model, at most `max_pack` per pack."""
    groups: dict[str, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(run.pack_key, []).append(run)
    out = []
    for group in groups.values():
        for start in range(0, len(group), max_pack):
            out.append(group[start : start + max_pack])
    return out
