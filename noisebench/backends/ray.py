"""Train packs as tasks on a Ray cluster; stream each finished pack back to the driver.

One pack is one Ray task. It asks for `NOISEBENCH_RAY_CPUS` CPUs (default 1) and, when the
device is cuda, `NOISEBENCH_RAY_GPUS` GPUs (default 1; a fraction such as 0.25 puts four packs
on one GPU). The dataset goes into the object store once; every task reads it from there.

Without an address (neither `--ray-address` nor `RAY_ADDRESS`), a private Ray instance with
every CPU of this machine is started on 127.0.0.1 for the study and shut down after it. With an
address, the driver connects to that cluster and only disconnects at the end. A process that
already called `ray.init` keeps its connection.

A worker that dies mid-pack (killed, node lost) makes Ray run the pack again, up to
`MAX_RETRIES` times; an exception raised by the pack itself is not retried. Packs resume from
their per-epoch checkpoint when it is reachable: the checkpoint path is on the driver's
filesystem, so it is used by packs that run on the driver's node, or on every node when
`NOISEBENCH_RAY_SHARED_CHECKPOINTS=1` says the results directory is shared (e.g. NFS).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset
from ..engine import RunResult, train_pack
from ..engine.trainset import train_set_size
from ..errors import NoisebenchError
from ..study import AnalysisSpec, RunSpec
from . import PackJob, PackOutcome, PackProgress

ENV_CPUS = "NOISEBENCH_RAY_CPUS"
ENV_GPUS = "NOISEBENCH_RAY_GPUS"
ENV_SHARED = "NOISEBENCH_RAY_SHARED_CHECKPOINTS"
MAX_RETRIES = 3  # extra attempts of a pack whose worker died; user errors are never retried
POLL_S = 1.0  # how often the driver collects step progress while packs run
INSTALL_HINT = "the ray backend needs the extra: pip install 'noisebench[ray]'"
TASK_NAME = "noisebench_pack"  # the process title of a worker running a pack: ray::noisebench_pack


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise NoisebenchError(INSTALL_HINT) from None
    return ray


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise NoisebenchError(f"{name} must be a positive number, got '{text}'")
    return value


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a HOST:PORT address.

    (`ray.init` keeps retrying an unreachable address for minutes.) Other forms, such as
    "auto" or "ray://...", are left to Ray.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise NoisebenchError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def _train_task(
    runs: list[RunSpec],
    data: Dataset,
    device: str,
    checkpoint: str | None,
    driver_node: str,
    shared: bool,
    index: int,
    sink: Any,
    threads: int,
    analysis: AnalysisSpec | None,
) -> tuple[list[RunResult], float]:
    """The body of one pack's Ray task: train it where Ray placed it."""
    import ray

    started = time.time()
    if not shared and ray.get_runtime_context().get_node_id() != driver_node:
        checkpoint = None  # the driver's path means nothing on another node
    if device == "cpu":
        torch.set_num_threads(threads)

    def report(step: int, of: int) -> None:
        sink.report.remote(index, step, of)

    results = train_pack(
        runs,
        data,
        torch.device(device),  # "cuda" is the GPU Ray assigned to this task
        checkpoint=None if checkpoint is None else Path(checkpoint),
        progress=report,
        analysis=analysis,
    )
    return results, started


class _ProgressSink:
    """A tiny actor that keeps the latest (step, of) each running pack reported."""

    def __init__(self) -> None:
        self.latest: dict[int, tuple[int, int]] = {}

    def report(self, index: int, step: int, of: int) -> None:
        self.latest[index] = (step, of)

    def take(self) -> dict[int, tuple[int, int]]:
        latest, self.latest = self.latest, {}
        return latest


class RayBackend:
    """Packs as Ray tasks; outcomes are yielded in the order packs finish."""

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_pack: float | None = None,
        gpus_per_pack: float | None = None,
    ) -> None:
        self.ray = _import_ray()
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.cpus = cpus_per_pack if cpus_per_pack is not None else _env_float(ENV_CPUS, 1.0)
        self.gpus = gpus_per_pack if gpus_per_pack is not None else _env_float(ENV_GPUS, 1.0)
        self.shared = os.environ.get(ENV_SHARED, "").strip().lower() in ("1", "true", "yes")
        if self.address is not None:
            _check_reachable(self.address)  # before the study writes anything

    def _connect(self) -> bool:
        """Make sure this process talks to a Ray cluster; True when this call made it so."""
        ray = self.ray
        if ray.is_initialized():
            return False
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if self.address is None:
            # Ray warns that it enabled token authentication: true, and noise for a private
            # instance that listens on 127.0.0.1 only.
            auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
            level = auth_log.level
            auth_log.setLevel(logging.ERROR)
            try:
                ray.init(
                    address="local",
                    num_cpus=os.cpu_count() or 1,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    **quiet,
                )
            finally:
                auth_log.setLevel(level)
            return True
        try:
            ray.init(address=self.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            message = " ".join(str(exc).split())
            raise NoisebenchError(
                f"cannot connect to the Ray cluster at {self.address}: {message}"
            ) from None
        return True

    def _check_resources(self, device: torch.device) -> None:
        have = self.ray.cluster_resources()
        if device.type == "cuda" and have.get("GPU", 0) < self.gpus:
            raise NoisebenchError(
                f"device cuda needs {self.gpus:g} GPU per pack but the Ray cluster has "
                f"{have.get('GPU', 0):g}; use --device cpu"
            )
        if have.get("CPU", 0) < self.cpus:
            raise NoisebenchError(
                f"{ENV_CPUS}={self.cpus:g} but the Ray cluster has {have.get('CPU', 0):g} CPUs"
            )

    def train(
        self, jobs: list[PackJob], data: Dataset, device: torch.device, progress: PackProgress
    ) -> Iterator[PackOutcome]:
        if not jobs:
            return
        ray = self.ray
        started_here = self._connect()
        pending: dict[Any, PackJob] = {}
        sink = None
        try:
            if started_here and self.address is None:
                self._check_resources(device)  # a private instance never grows
            cuda = device.type == "cuda"
            task = ray.remote(_train_task).options(
                name=TASK_NAME,
                num_cpus=self.cpus,
                num_gpus=self.gpus if cuda else 0,
                max_retries=MAX_RETRIES,
                retry_exceptions=False,
            )
            sink = ray.remote(num_cpus=0)(_ProgressSink).remote()
            data_ref = ray.put(data)
            driver_node = ray.get_runtime_context().get_node_id()
            shared = self.shared
            if self.address is not None and self.address.startswith("ray://"):
                driver_node = ""  # Ray Client: the driver's files are on no node of the cluster
            threads = max(1, int(self.cpus))
            for job in jobs:
                ckpt = None if job.checkpoint is None else str(job.checkpoint.resolve())
                ref = task.remote(
                    job.runs,
                    data_ref,
                    "cuda" if cuda else "cpu",
                    ckpt,
                    driver_node,
                    shared,
                    job.index,
                    sink,
                    threads,
                    job.analysis,
                )
                pending[ref] = job
            yield from self._collect(pending, data, sink, progress)
        finally:
            for ref in pending:  # left only when the study stopped early
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # best effort: the task may be gone already
                    pass
            if sink is not None and ray.is_initialized():
                try:
                    ray.kill(sink)
                except Exception:
                    pass
            if started_here:
                ray.shutdown()

    def _collect(
        self,
        pending: dict[Any, PackJob],
        data: Dataset,
        sink: Any,
        progress: PackProgress,
    ) -> Iterator[PackOutcome]:
        """Yield packs as they finish; a failed pack is raised once every other has finished."""
        ray = self.ray
        failure: BaseException | None = None
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            running = {job.index for ref, job in pending.items() if ref not in ready}
            try:
                latest = ray.get(sink.take.remote()) if sink is not None else {}
            except ray.exceptions.RayError:  # progress is a nicety: go on without it
                latest, sink = {}, None
            for index, (step, of) in latest.items():
                if index in running:
                    progress(index, step, of)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    results, started = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the pack itself raised
                    failure = failure or _pack_error(exc)
                    continue
                except ray.exceptions.RayError as exc:  # retries used up, node gone, cancelled
                    message = " ".join(str(exc).split())[:300]
                    failure = failure or NoisebenchError(
                        f"pack {job.index} failed on Ray (tried {MAX_RETRIES + 1} times at most):"
                        f" {message}"
                    )
                    continue
                spec = job.runs[0].train
                steps = -(-train_set_size(job.runs[0], data) // spec.batch_size) * spec.epochs
                progress(job.index, steps, steps)
                yield PackOutcome(job=job, results=results, started_at=started)
        if failure is not None:
            raise failure


def _pack_error(exc: Exception) -> BaseException:
    """The pack's own exception: our one-line errors as they are, others with Ray's traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, NoisebenchError):
        return cause
    as_cause = getattr(exc, "as_instanceof_cause", None)
    return as_cause() if as_cause is not None else exc
