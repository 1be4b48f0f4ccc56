"""Run a study: resolve data, plan runs, train packs, store every finished run."""

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import filelock
import numpy as np
import torch

from . import __version__, crossval, seeding
from .backends import Backend, PackJob, make_backend
from .data import FOLDER_NAME, Dataset, is_image_folder, load_dataset
from .engine.methods import check_methods
from .engine.pack import CheckpointWarning
from .engine.threads import SingleThreadedOps
from .engine.trainset import check_folds, check_sizes, split_validation, train_set_size
from .errors import DataError, DataUnavailable, NoisebenchError, StudyError, disk_full_is_one_line
from .memory import check_fits
from .noise import LabelNoise, PixelNoise, make_noise
from .store import DB_NAME, STORE_VERSION, EmptyStore, Store
from .study import RunSpec, Study, fold_runs, packs, plan

FALLBACK = "mnist-sample"
DEFAULT_DATASET = "mnist"
Warn = Callable[[str], None]


@dataclass(frozen=True)
class DataChoice:
    dataset: Dataset
    requested: str
    fallback: bool


def pick_device(name: str | None, here: bool = True) -> torch.device:
    """cuda when present, else cpu; an explicit name must be usable here (when `here`)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NoisebenchError(f"unknown device '{name}' (try cpu or cuda)") from None
    if device.type == "cuda" and here and not torch.cuda.is_available():
        raise NoisebenchError(f"device '{name}' requested but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise NoisebenchError(f"device '{name}' is not supported (use cpu or cuda)")
    return device


def resolve_data(
    study: Study, dataset: str | None, data_dir: Path | None, warn: Warn
) -> DataChoice:
    """The dataset to train on; only the default (nothing named, no data directory given) may
    fall back to the sample.

    A `data_dir` holding an image folder needs no dataset name; one that does not exist is an
    error.
    """
    shape = {"image_size": study.data.image_size, "channels": study.data.channels}
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"data directory {data_dir} does not exist (or is not a directory)")
    explicit = dataset or study.dataset
    if not explicit and data_dir is not None and is_image_folder(data_dir):
        explicit = FOLDER_NAME
    if explicit or data_dir is not None:
        name = explicit or DEFAULT_DATASET
        return DataChoice(load_dataset(name, data_dir, **shape), name, False)
    try:
        dataset_ = load_dataset(DEFAULT_DATASET, data_dir, **shape)
        return DataChoice(dataset_, DEFAULT_DATASET, False)
    except DataUnavailable as exc:
        warn(
            f"{exc}. FALLING BACK to '{FALLBACK}' (5,000 real MNIST digits: 4,000 train / "
            "1,000 test). Results are NOT full-MNIST results; name a dataset with --dataset "
            "to forbid this."
        )
        return DataChoice(load_dataset(FALLBACK, **shape), DEFAULT_DATASET, True)


LOCK_NAME = ".noisebench.lock"  # held in the results directory while a run writes there
OUTPUTS = (DB_NAME, "results.csv", "metrics.csv", "checkpoints")  # what a run writes


def check_writable(out: Path) -> None:
    """Fail before any work when `out` cannot become a results directory: a name too long,
    a file, an unwritable place, or a directory holding other things than a noisebench study."""
    too_long = [part for part in out.parts if len(os.fsencode(part)) > 255]
    if too_long:
        raise NoisebenchError(
            f"output directory name '{too_long[0][:40]}...' is {len(os.fsencode(too_long[0]))}"
            " bytes long; file systems allow at most 255"
        )
    if out.exists() and not out.is_dir():
        raise NoisebenchError(f"output path {out} exists and is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise NoisebenchError(f"output directory {out} is not writable")
    if (out / DB_NAME).exists() and not os.access(out / DB_NAME, os.W_OK):
        raise NoisebenchError(f"the results store {out / DB_NAME} is read-only")
    if out.is_dir() and not (out / DB_NAME).exists():
        others = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
        if others:
            raise NoisebenchError(
                f"output directory {out} is not empty and holds no noisebench study "
                f"(it has {others[0]}{', ...' if len(others) > 1 else ''}); choose a new or "
                "empty directory"
            )


class OutputClaim:
    """A results directory held by this run: locked, and put back as it was if the run fails
    before it has anything worth keeping (a finished run or a pack checkpoint)."""

    def __init__(self, out: Path):
        self.out = out
        self.fresh = not (out / DB_NAME).exists()
        self.created: list[Path] = []  # directories this run made, outermost last
        probe = out
        while not probe.exists():
            self.created.append(probe)
            probe = probe.parent
        self.lock = filelock.FileLock(out / LOCK_NAME, timeout=0)

    def __enter__(self) -> "OutputClaim":
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NoisebenchError(
                f"cannot create output directory {self.out}: {exc.strerror}"
            ) from None
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise NoisebenchError(
                f"another noisebench run is writing into {self.out}; wait for it to finish or "
                "choose another --out"
            ) from None
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        restore = kind is not None and self.fresh and not self._worth_keeping()
        try:
            if restore:
                for name in OUTPUTS:
                    path = self.out / name
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    for suffix in ("", "-wal", "-shm", "-journal"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
        finally:
            # Unlinked while still held: a run waiting on the old file sees it gone (filelock
            # checks) and locks a new one, so the directory keeps no trace of the lock.
            (self.out / LOCK_NAME).unlink(missing_ok=True)
            self.lock.release()
            if restore:
                self._remove_created()

    def _worth_keeping(self) -> bool:
        if any((self.out / "checkpoints").glob("*.pt")):
            return True
        if not (self.out / DB_NAME).exists():
            return False
        try:
            with Store(self.out, readonly=True) as store:
                return bool(store.finished_ids())
        except Exception:  # a store that cannot be read holds nothing worth keeping
            return False

    def _remove_created(self) -> None:
        for directory in self.created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty


def check_noises(study: Study, data: Dataset) -> None:
    """Fail before any work when a label noise's parameters do not fit the dataset's classes."""
    for setup in study.setups:
        noise = make_noise(setup.noise, setup.params)
        if isinstance(noise, LabelNoise):
            try:
                noise.check_classes(data.num_classes)
            except StudyError as exc:
                raise StudyError(f"setup '{setup.name}': {exc}") from None


def check_validation(study: Study, data: Dataset) -> None:
    if study.validation > 0 and len(split_validation(data, study.validation)[1]) == 0:
        raise StudyError(
            f"validation = {study.validation:g} holds out no example of the "
            f"{len(data.train_y):,}-example training set; raise it or use more data"
        )


def pack_bytes(runs: list[RunSpec], data: Dataset) -> int:
    """A lower bound of the memory one pack needs while it trains: each run's parameters,
    gradients, optimizer state and kept best parameters, its activations on a batch and on
    an evaluation chunk, its labels, and its pre-noised training set with `fixed` noise."""
    run = runs[0]
    widths = [data.num_features, *run.model.hidden, data.num_classes]
    params = sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))
    copies = 3 + (run.train.optimizer == "adam")  # parameters, gradients, one or two states
    copies += run.early_stopping is not None or run.stop_at_train_acc is not None
    examples = train_set_size(run, data)
    activations = (min(run.train.batch_size, examples) * 3 + 1000 * 2) * sum(widths[1:])
    fixed = any(
        getattr(make_noise(r.noise, dict(r.params)), "fixed", False) for r in runs if r.noise
    )
    per_run = 4 * (params * copies + activations) + 3 * 8 * examples
    per_run += examples * data.num_features if fixed else 0
    return len(runs) * per_run


def check_memory(runs: list[RunSpec], study: Study, data: Dataset, dev: torch.device) -> None:
    """Refuse a study whose largest pack would not fit in this machine's (or GPU's) memory."""
    groups = packs(runs, study.max_pack)
    if not groups:
        return
    biggest = max(groups, key=lambda group: pack_bytes(group, data))
    widths = "-".join(str(w) for w in [data.num_features, *study.model.hidden, data.num_classes])
    what = f"a pack of {len(biggest)} runs of a {widths} MLP"
    if dev.type == "cuda":
        free = torch.cuda.mem_get_info(dev)[0]
        check_fits(pack_bytes(biggest, data), what, free, "GPU memory")
    else:
        check_fits(pack_bytes(biggest, data), what)


def study_identity(study: Study, dataset_name: str, fingerprint: str) -> str:
    blob = f"{study.digest()}/{dataset_name}/{fingerprint}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fitted_pixel_noises(study: Study, data: Dataset) -> dict[str, PixelNoise]:
    """Each pixel-noise setup's noise, fitted to the training images, by setup name."""
    noises = {}
    for setup in study.setups:
        noise = make_noise(setup.noise, setup.params)
        if isinstance(noise, PixelNoise):
            noise.fit(data.train_x)
            noises[setup.name] = noise
    return noises


def noise_examples(
    study: Study, data: Dataset, noises: dict[str, PixelNoise], count: int = 8
) -> dict[str, np.ndarray]:
    """For each pixel-noise setup: the same `count` training images at every level (uint8)."""
    first_of_class = [int((data.train_y == c).nonzero()[0]) for c in range(data.num_classes)]
    picks = torch.tensor(first_of_class[:count])
    clean = data.train_x[picks].float() / 255
    out = {}
    for setup in study.setups:
        if setup.name not in noises:
            continue
        levels = study.levels_of(setup)
        gens = [seeding.generator(0, f"examples/{setup.name}") for _ in levels]
        x = clean.expand(len(levels), -1, -1).clone()
        x = noises[setup.name].apply(x, torch.tensor(levels), gens)
        out[setup.name] = (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def changed_share(noise: PixelNoise, data: Dataset, samples: int = 2000) -> float:
    """Of the pixels the noise replaces (at level 1), the share whose value really changes."""
    x = data.train_x[:samples].float().unsqueeze(0) / 255
    noisy = noise.apply(x.clone(), torch.ones(1), [seeding.generator(0, "changed-share")])
    before, after = (x * 255).round(), (noisy * 255).round()
    return float((before != after).float().mean())


def _arrays(result) -> dict[str, np.ndarray]:
    ln = result.label_noise
    if ln is None:
        return result.arrays
    return result.arrays | {
        "label_picked": ln.picked.numpy().astype(np.int32),
        "label_original": ln.original.numpy().astype(np.uint8),
        "label_assigned": ln.labels[ln.picked].numpy().astype(np.uint8),
    }


def run_study(
    study: Study,
    out: Path,
    *,
    dataset: str | None = None,
    data_dir: Path | None = None,
    device: str | None = None,
    warn: Warn = lambda msg: print(f"warning: {msg}", file=sys.stderr),
    progress: Callable[[int, int, str], None] | None = None,
    backend: str = "local",
    address: str | None = None,
) -> Path:
    """Train every unfinished run of `study` into `out`/results.sqlite; return that directory.

    Runs already finished in `out` are skipped, so an interrupted study resumes where it
    stopped. `progress(done, total, text)` reports run-steps done across the whole study.
    """
    out = Path(out)
    check_writable(out)
    # With ray the packs train on the cluster's machines: this one may have no GPU.
    dev = pick_device(device, here=backend == "local")
    trainer = make_backend(backend, address)
    with OutputClaim(out) as claim:
        previous = None if claim.fresh else _stored_identity(out)
        choice = resolve_data(study, dataset, data_dir, warn)
        data = choice.dataset
        fingerprint = data.fingerprint()
        identity = study_identity(study, data.name, fingerprint)
        if previous is not None and previous != identity:
            raise NoisebenchError(
                f"{out} holds results of a different study or dataset; choose another --out"
            )
        runs = plan(study)
        check_sizes(runs, data)
        check_folds(fold_runs(study, runs), data)
        check_noises(study, data)
        check_validation(study, data)
        check_methods(runs, data.num_classes)
        if backend == "local":
            check_memory([*runs, *fold_runs(study, runs)], study, data, dev)
        meta = _study_meta(study, choice, identity, fingerprint)
        disk_full = f"finished runs are stored: free space and rerun with --out {out} --resume"
        with disk_full_is_one_line(out, disk_full), _checkpoint_warnings_to(warn):
            _write_study(study, runs, data, meta, out, dev, progress, trainer)
    return out


def _study_meta(study: Study, choice: DataChoice, identity: str, fingerprint: str) -> dict:
    """What the store records once about the study and its data."""
    data = choice.dataset
    return {
        "store_version": STORE_VERSION,
        "identity": identity,
        "study": study.model_dump(mode="json"),
        "study_name": study.name,
        "dataset": data.name,
        "dataset_requested": choice.requested,
        "dataset_source": data.source,
        "dataset_fallback": choice.fallback,
        "train_size": len(data.train_y),
        "test_size": len(data.test_y),
        "test_fingerprint": fingerprint,
        "class_names": list(data.class_names),
        "image_shape": list(data.image_shape),
        "channels": data.channels,
    }


def _stored_identity(out: Path) -> str | None:
    """The identity of the study stored in `out` (None for a store that never began); a
    damaged or foreign store is a StoreError line."""
    try:
        with Store.open_existing(out, readonly=True) as existing:
            return existing.meta().get("identity")
    except EmptyStore:
        return None


@contextlib.contextmanager
def _checkpoint_warnings_to(warn: Warn) -> Iterator[None]:
    """Pass the engine's CheckpointWarnings (a damaged checkpoint) to `warn`, one line each."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", CheckpointWarning)
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs) -> None:  # noqa: ANN001
            if issubclass(category, CheckpointWarning):
                warn(str(message))
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _write_study(
    study: Study,
    runs: list[RunSpec],
    data: Dataset,
    meta: dict,
    out: Path,
    dev: torch.device,
    progress: Callable[[int, int, str], None] | None,
    trainer: Backend,
) -> None:
    """Store the study (once), then train every unfinished run and export the CSV tables."""
    with Store(out) as store:
        if "identity" not in store.meta():
            with SingleThreadedOps(torch.device("cpu")):  # like a pack's, whatever the threads
                noises = fitted_pixel_noises(study, data)
                examples = noise_examples(study, data, noises)
                shares = {name: changed_share(noise, data) for name, noise in noises.items()}
                background = float((data.train_x == 0).float().mean())
            store.set_meta(
                **meta, changed_share=shares, background_share=background, created_at=time.time()
            )
            for name, images in examples.items():
                store.put_array("study", f"examples/{name}", images)
        store.add_pending((r.run_id, r.setup, r.noise, r.level, r.seed, r.config) for r in runs)
        store.set_meta(
            device=str(dev),
            versions={
                "noisebench": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
        )
        finished = store.finished_ids()
        todo = [r for r in runs if r.run_id not in finished]
        folds = fold_runs(study, runs)  # label_issues = "cv": models that are not runs
        todo += crossval.unfinished(store, folds)
        _train_all(todo, len(runs) + len(folds), study, data, dev, out, store, progress, trainer)
        crossval.join_folds(store, folds, data.num_classes)
        store.export_csv(out / "results.csv")
        store.export_csv(out / "metrics.csv", metrics=True)


def _pack_jobs(todo: list[RunSpec], study: Study, ckpt_dir: Path) -> list[PackJob]:
    """The packs of the unfinished runs, each with its checkpoint file."""
    jobs = []
    for index, group in enumerate(packs(todo, study.max_pack)):
        key = hashlib.sha256("".join(r.run_id for r in group).encode()).hexdigest()[:12]
        jobs.append(PackJob(index, group, ckpt_dir / f"pack-{key}.pt", study.analysis))
    return jobs


class _StudyProgress:
    """Study-wide progress in run-steps, so a pack of 39 runs weighs 39 times a single run."""

    def __init__(self, jobs: list[PackJob], data: Dataset, done_runs: int, total_runs: int, report):
        self.jobs, self.report = jobs, report
        self.done_runs, self.total_runs = done_runs, total_runs
        self.weights = [len(j.runs) for j in jobs]
        self.totals = [
            w
            * -(-train_set_size(j.runs[0], data) // j.runs[0].train.batch_size)
            * j.runs[0].train.epochs
            for w, j in zip(self.weights, jobs, strict=True)
        ]
        self.done = [0] * len(jobs)

    def step(self, index: int, step: int, of: int) -> None:
        self.done[index] = self.weights[index] * step
        if self.report is not None:
            epochs = self.jobs[index].runs[0].train.epochs
            epoch = min(epochs, step * epochs // max(of, 1) + 1)
            text = (
                f"runs {self.done_runs}/{self.total_runs} · pack of {self.weights[index]}"
                f" · epoch {epoch}/{epochs}"
            )
            self.report(sum(self.done), sum(self.totals), text)

    def finished(self, index: int) -> None:
        self.done_runs += self.weights[index]
        self.done[index] = self.totals[index]
        if self.report is not None:
            self.report(
                sum(self.done), sum(self.totals), f"runs {self.done_runs}/{self.total_runs}"
            )


def _train_all(
    todo: list[RunSpec],
    total: int,
    study: Study,
    data: Dataset,
    dev: torch.device,
    out: Path,
    store: Store,
    progress: Callable[[int, int, str], None] | None,
    trainer: Backend,
) -> None:
    """Train the unfinished runs pack by pack; store each pack's runs as soon as it is done."""
    ckpt_dir = out / "checkpoints"
    jobs = _pack_jobs(todo, study, ckpt_dir)
    if not jobs:
        return
    ckpt_dir.mkdir(exist_ok=True)
    tracker = _StudyProgress(jobs, data, total - len(todo), total, progress)
    folds = {r.run_id for r in todo if r.fold is not None}
    for outcome in trainer.train(jobs, data, dev, tracker.step):
        for result in outcome.results:
            if result.run_id in folds:
                crossval.store_fold(store, result.run_id, result.arrays)
                continue
            store.finish_run(
                result.run_id,
                result.status,
                result.epochs,
                _arrays(result),
                outcome.started_at,
                len(outcome.results),
                result.final,
            )
        if outcome.job.checkpoint is not None:
            outcome.job.checkpoint.unlink(missing_ok=True)
        tracker.finished(outcome.job.index)
    if ckpt_dir.exists() and not any(ckpt_dir.iterdir()):
        ckpt_dir.rmdir()
