"""The Python API: build a study in code or from files, run it, read and plot the results."""

from pathlib import Path

import pytest
from matplotlib.figure import Figure

import noisebench
from noisebench import NoisebenchError, Results, Study


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Results:
    study = Study(
        name="api",
        seeds=[0, 1],
        levels=[0.0, 0.5, 0.9],
        train={"epochs": 2, "batch_size": 128},
        setups=[
            {"name": "label noise", "noise": "labels.uniform"},
            {"name": "pixel noise", "noise": "pixels.replace"},
        ],
    )
    return study.run(tmp_path_factory.mktemp("api"), dataset="mnist-sample")


def test_public_names_are_exactly_those_in_all():
    assert set(noisebench.__all__) == {"NoisebenchError", "Results", "Study", "__version__"}
    for name in noisebench.__all__:
        assert hasattr(noisebench, name)


def test_studies_come_from_presets_files_or_code(tmp_path):
    assert Study.from_preset("seed000").train.epochs == 10
    path = tmp_path / "s.toml"
    path.write_text('seeds = [4]\n[[setups]]\nname = "l"\nnoise = "labels.uniform"\n')
    from_file = Study.from_toml(path)
    assert from_file.name == "s" and from_file.seeds == [4]
    with pytest.raises(NoisebenchError, match="unknown preset"):
        Study.from_preset("nope")


def test_to_frame_is_the_tidy_table(results):
    frame = results.to_frame()
    assert len(frame) == 5 * 2 * 2  # 5 runs per seed... (clean + 2 setups x 2 levels) x 2 epochs
    for column in ("setup", "level", "seed", "epoch", "test_acc", "test_loss", "train_acc"):
        assert column in frame.columns
    assert set(frame["status"]) == {"done"}


def test_summary_has_one_row_per_setup_and_level_with_intervals(results):
    summary = results.summary()
    assert list(zip(summary["setup"], summary["level"], strict=True)) == [
        ("label noise", 0.0),
        ("label noise", 0.5),
        ("label noise", 0.9),
        ("pixel noise", 0.0),
        ("pixel noise", 0.5),
        ("pixel noise", 0.9),
    ]
    assert (summary["seeds"] == 2).all()
    assert (summary["test_acc_ci"] > 0).all()
    clean = summary[summary["level"] == 0.0]["test_acc"]
    assert clean.nunique() == 1  # one shared baseline
    noisy = summary[summary["level"] == 0.9]["test_acc"]
    assert (noisy < clean.iloc[0]).all()


def test_every_report_figure_can_be_plotted(results):
    kinds = results.plot_kinds()
    assert {"final_accuracy", "final_loss", "accuracy_epochs", "best_vs_final"} <= set(kinds)
    for kind in kinds:
        assert isinstance(results.plot(kind), Figure)
    with pytest.raises(NoisebenchError, match="unknown plot 'pie'"):
        results.plot("pie")


def test_explanation_and_report(results, tmp_path):
    sentences = results.explanation()
    assert 5 <= len(sentences) <= 20
    paths = results.report(tmp_path / "copy")
    for key in ("html", "pdf", "md"):
        assert paths[key].exists() and paths[key].parent == tmp_path / "copy"
    assert any((tmp_path / "copy" / "figures").glob("*.png"))


def test_results_of_a_missing_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(NoisebenchError, match="no results found"):
        Results(tmp_path / "nowhere")


def test_the_example_notebook_runs(tmp_path):
    import nbclient
    import nbformat

    notebook = Path(__file__).parents[1] / "examples" / "noise_study.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2
    text = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "label noise" in text
