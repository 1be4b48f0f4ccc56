"""`Results`: a finished (or partly finished) study, read from its results store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NoisebenchError, disk_full_is_one_line
from .store import Store
from .summary import final_table

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


class Results:
    """The results of one study directory: tables, figures, the explanation, the report."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        # fail early, one line, when the store is absent, damaged or foreign
        Store.open_existing(self.directory, readonly=True).close()

    def __repr__(self) -> str:
        return f"Results({str(self.directory)!r})"

    def meta(self) -> dict[str, Any]:
        """What was run: the study spec, the dataset actually used, device, versions."""
        with Store.open_existing(self.directory, readonly=True) as store:
            return store.meta()

    def to_frame(self) -> pd.DataFrame:
        """The tidy table: one row per run × epoch."""
        import pandas as pd

        with Store.open_existing(self.directory, readonly=True) as store:
            return pd.DataFrame(store.epochs())

    def metrics(self, name_like: str = "%") -> pd.DataFrame:
        """The named metrics, tidy: one row per run × epoch × metric (epoch 0: measured after
        training, e.g. "fgsm@0.1"); `name_like` is a SQL LIKE pattern ("fit_%")."""
        import pandas as pd

        with Store.open_existing(self.directory, readonly=True) as store:
            return pd.DataFrame(store.metrics(name_like))

    def label_issues(self, run_id: str, source: str | None = None) -> pd.DataFrame:
        """The training labels cleanlab flagged in run `run_id`, from out-of-sample ("cv",
        analysis.label_issues = "cv") or in-sample ("in_sample") probabilities (None: "cv"
        where the study cross-validated, else "in_sample"): one row per
        position of the run's training set that any filter flagged, a bool column per
        cleanlab `filter_by`, the label quality scores (self_confidence, normalized_margin;
        low: likely wrong) and `corrupted` (whether noisebench changed that label)."""
        import numpy as np
        import pandas as pd

        from .engine.label_issues import FILTERS, SCORES, SOURCES

        if source is not None and source not in SOURCES:
            raise NoisebenchError(f"unknown source '{source}' (known: {', '.join(SOURCES)})")
        wanted = [source] if source else ["cv", "in_sample"]
        with Store.open_existing(self.directory, readonly=True) as store:
            stored = {s: store.arrays_of(run_id, f"issues/{s}/") for s in wanted}
            picked = store.array(run_id, "label_picked")
            original = store.array(run_id, "label_original")
            assigned = store.array(run_id, "label_assigned")
        source = next((s for s in wanted if stored[s]), None)
        if source is None:
            raise NoisebenchError(
                f"run {run_id} has no label issues stored ({' or '.join(wanted)})"
            )
        found = stored[source]
        index = found[f"issues/{source}/index"]
        frame = pd.DataFrame({"position": index})
        for f, method in enumerate(FILTERS):
            frame[method] = (found[f"issues/{source}/flags"] >> f) & 1 == 1
        for score in SCORES:
            frame[score] = found[f"issues/{source}/{score}"]
        wrong = np.empty(0) if picked is None else picked[original != assigned]
        frame["corrupted"] = np.isin(index, wrong)
        return frame

    def summary(self) -> pd.DataFrame:
        """Final-epoch test metrics per setup × level: mean and 95 % CI half-width over seeds."""
        import pandas as pd

        with Store.open_existing(self.directory, readonly=True) as store:
            rows = final_table(store)
        flat = []
        for row in rows:
            item: dict[str, Any] = {"setup": row["setup"], "level": row["level"]}
            item["seeds"] = row["seeds"]
            for metric in ("test_acc", "test_loss", "test_conf", "train_acc", "train_loss"):
                item[metric] = row[metric].mean
                item[f"{metric}_ci"] = row[metric].half
            flat.append(item)
        return pd.DataFrame(flat)

    def methods(self):
        """The training methods side by side (report/methods_section.py): per noise setting,
        the ranked table, the test-accuracy figure and the checked headlines."""
        from .report.frames import read
        from .report.methods_section import methods_section

        with Store.open_existing(self.directory, readonly=True) as store:
            frames = read(store)
        return methods_section(frames.runs, frames.values)

    def plot_kinds(self) -> list[str]:
        """The figure names `plot` accepts (those of the report)."""
        from .report.figures import catalogue

        return [name for name, *_ in catalogue(self._report_data())]

    def plot(self, kind: str = "final_accuracy") -> Figure:
        """One of the report's figures as a matplotlib Figure (see `plot_kinds()`)."""
        from .report.figures import catalogue

        makers = {name: maker for name, _, _, maker in catalogue(self._report_data())}
        if kind not in makers:
            raise NoisebenchError(f"unknown plot '{kind}' (known: {', '.join(makers)})")
        figure = makers[kind]()
        if figure is None:
            raise NoisebenchError(f"plot '{kind}' has no data in this study")
        return figure

    def explanation(self) -> list[str]:
        """The Summary's sentences, most important first (each a checked finding)."""
        from .report import explain, read

        with Store.open_existing(self.directory, readonly=True) as store:
            return explain(read(store))

    def report(self, directory: str | Path | None = None) -> dict[str, Path]:
        """Write report.html/pdf/md and figures/ (into the study directory, or a copy into
        `directory`); return the paths."""
        import shutil

        from .report import write_report

        then = "the results are intact: free space and call report() again"
        with disk_full_is_one_line(self.directory, then):
            paths = write_report(self.directory)
        if directory is None or Path(directory).resolve() == self.directory.resolve():
            return paths
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.directory / "figures", target / "figures", dirs_exist_ok=True)
        return {key: Path(shutil.copy2(path, target / path.name)) for key, path in paths.items()}

    def _report_data(self):
        from .report import load

        with Store.open_existing(self.directory, readonly=True) as store:
            return load(store, self.directory)
