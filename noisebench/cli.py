"""The command line: a thin typer layer over the study runner, the store and the report."""

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from .errors import NoisebenchError, StudyError, disk_full_is_one_line

INTERRUPTED = "interrupted: finished runs are stored; rerun with --resume"
# typer carries its own copy of click; its exception base is reached through one typer exports
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown option or command, a value that is not a number) as one line
    on stderr and exit code 2, like every other bad input; Ctrl-C as one line and code 130."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # the help text, as click prints it
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            message = escape(" ".join(exc.format_message().split()))
            console.print(f"[bold red]error:[/] {message}{where}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        if code == 130:  # Ctrl-C, in a command or while typer parses its arguments
            console.print(INTERRUPTED, highlight=False, soft_wrap=True)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="Measure how label and pixel noise change what a neural network learns.",
)
console = Console(stderr=True)
out_console = Console()
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn our errors into one line on stderr and exit code 2; Ctrl-C into exit code 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NoisebenchError as exc:
            message = escape(" ".join(str(exc).split()))  # "[ray]" is text, not rich markup
            console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None  # OneLineErrors says so

    return wrapper  # type: ignore[return-value]


def _warn(message: str) -> None:
    one_line = escape(" ".join(message.split()))
    console.print(f"[bold yellow]WARNING:[/] {one_line}", highlight=False, soft_wrap=True)


def _path(text: str | None, option: str) -> Path | None:
    """`text` as a path; an empty one is an error (Path("") would mean the current directory)."""
    if text is None:
        return None
    if not text.strip():
        raise NoisebenchError(f"{option} is empty: name a directory")
    return Path(text)


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise StudyError(f"--seeds must be comma-separated integers, got '{text}'") from None


def _load(study_file: Path | None, preset: str | None, epochs: int | None, seeds: str | None):
    from .study import load_preset, load_study, parse_study

    if study_file is not None and preset is not None:
        raise StudyError("give a study file or --preset, not both")
    study = load_study(study_file) if study_file else load_preset(preset or "seed000")
    data = study.model_dump()
    if epochs is not None:
        data["train"]["epochs"] = epochs
    if seeds is not None:
        data["seeds"] = _parse_seeds(seeds)
    return parse_study(data, "options")


class _LazyProgress:
    """A progress bar that appears with the first training step, not before validation."""

    def __init__(self) -> None:
        self.bar: Progress | None = None

    def __enter__(self) -> "_LazyProgress":
        return self

    def __call__(self, done: int, total: int, text: str) -> None:
        if self.bar is None:
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=True,  # gone when training ends: what follows is the outcome
            )
            self.bar.start()
            self.task = self.bar.add_task(text, total=total)
        self.bar.update(self.task, completed=done, total=total, description=text)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _link_latest(out: Path) -> None:
    latest = out.parent / "latest"
    if latest.is_symlink() or not latest.exists():
        tmp = out.parent / ".latest.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(out.name)
        os.replace(tmp, latest)


@app.command()
@friendly
def run(
    study_file: Annotated[Path | None, typer.Argument(help="Study TOML file.")] = None,
    preset: Annotated[str | None, typer.Option(help="A shipped study (see `presets`).")] = None,
    out: Annotated[str | None, typer.Option(help="Results directory.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name; never falls back.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="IDX files, or an image folder.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the study's epochs.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Override seeds, e.g. 0,1,2.")] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: cuda if present).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the study in --out (or runs/latest).")
    ] = False,
    report: Annotated[bool, typer.Option(help="Write the report when training ends.")] = True,
    backend: Annotated[str, typer.Option(help="Where packs train: local or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local one).")
    ] = None,
) -> None:
    """Train every run of a study, store the metrics, and print the summary table."""
    from .runner import run_study

    out_dir, data_path = _path(out, "--out"), _path(data_dir, "--data-dir")
    study = _load(study_file, preset, epochs, seeds)
    if out_dir is None and resume:
        latest = Path("runs") / "latest"
        if not latest.exists():
            raise NoisebenchError("--resume needs --out DIR (there is no runs/latest)")
        out_dir = latest.resolve()
    target = out_dir if out_dir is not None else _default_out(study.name)

    began = time.perf_counter()
    with _LazyProgress() as progress:
        run_study(
            study,
            target,
            dataset=dataset,
            data_dir=data_path,
            device=device,
            warn=_warn,
            progress=progress,
            backend=backend,
            address=ray_address,
        )
    if out_dir is None:
        _link_latest(target)
    console.print(
        f"trained in {time.perf_counter() - began:.1f} s; results in {target}",
        highlight=False,
        soft_wrap=True,
    )
    _show(target)
    if report:
        paths = _write_report(target)
        console.print(
            f"report: {paths['html']}  (also {paths['pdf'].name}, {paths['md'].name})",
            highlight=False,
            soft_wrap=True,
        )


def _write_report(directory: Path) -> dict[str, Path]:
    from .report import write_report

    then = f"the results are intact: free space and run `noisebench report {directory}`"
    with disk_full_is_one_line(directory, then):
        return write_report(directory)


def _show(directory: Path) -> None:
    from .noise import level_text
    from .store import Store
    from .summary import final_table

    with Store.open_existing(directory, readonly=True) as store:
        meta = store.meta()
        rows = final_table(store)
        diverged = [r for r in store.runs() if r["status"] == "diverged"]
    title = f"{meta['study_name']} on {meta['dataset']}" + (
        " (FALLBACK SAMPLE)" if meta.get("dataset_fallback") else ""
    )
    table = Table(title=f"{title}: final test metrics, mean ± 95 % CI over seeds")
    for col in ("setup", "level X", "test accuracy %", "test cross-entropy", "seeds"):
        table.add_column(col, justify="left" if col == "setup" else "right")
    for row in rows:
        table.add_row(
            row["setup"],
            level_text(row["noise"], row["level"]),
            row["test_acc"].fmt(100, 2),
            row["test_loss"].fmt(1, 3),
            str(row["seeds"]),
        )
    out_console.print(table)
    if diverged:
        listed = ", ".join(
            f"{r['setup']} {level_text(r['noise'], r['level'])} seed {r['seed']}"
            for r in diverged[:5]
        )
        more = f" and {len(diverged) - 5} more" if len(diverged) > 5 else ""
        out_console.print(
            f"{len(diverged)} run(s) DIVERGED (training loss not finite or above 100 × ln K; "
            f"their numbers are in the table): {listed}{more}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
@friendly
def show(directory: Annotated[Path, typer.Argument(help="A study's results directory.")]) -> None:
    """Print final test accuracy and cross-entropy per setup and level."""
    _show(directory)


@app.command()
@friendly
def report(directory: Annotated[Path, typer.Argument(help="A study's results directory.")]) -> None:
    """Write report.html, report.pdf, report.md and figures/ from DIR/results.sqlite alone."""
    paths = _write_report(directory)
    for key in ("html", "pdf", "md"):
        out_console.print(str(paths[key]), highlight=False, soft_wrap=True)


@app.command()
@friendly
def presets() -> None:
    """List the studies shipped with noisebench."""
    from .study import load_preset, plan, preset_names

    table = Table(title="presets (noisebench run --preset NAME)")
    for col in ("name", "runs", "epochs", "description"):
        table.add_column(col)
    for name in preset_names():
        study = load_preset(name)
        table.add_row(name, str(len(plan(study))), str(study.train.epochs), study.description)
    out_console.print(table)


@app.command()
@friendly
def datasets(
    download: Annotated[str | None, typer.Option(help="Fetch this dataset into the cache.")] = None,
) -> None:
    """Where each dataset is found (and optionally download one)."""
    from .data import describe_locations
    from .data import download as fetch

    if download is not None:
        path = fetch(download)
        console.print(f"downloaded {download} to {path}", highlight=False, soft_wrap=True)
    table = Table(title="datasets (--dataset NAME)")
    table.add_column("name")
    table.add_column("where")
    for name, where in describe_locations():
        table.add_row(name, where)
    out_console.print(table)


def main() -> None:  # pragma: no cover - console-script shim
    app(prog_name="noisebench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
